"""Turn a model name, local path or HF id into a local model directory."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

from safedose.errors import SafedoseError
from safedose.models._embedded import EMBEDDED, MANIFEST, content_hash, prepare


def resolve_model(model: str) -> Path:
    """A local HF model directory for an embedded name, a local path or a Hugging Face id."""
    if model in EMBEDDED:
        return prepare(model)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise SafedoseError(f"{path}: not a model directory (no config.json)")
        return path
    if model.count("/") != 1 or model.startswith(("/", ".", "~")):
        raise SafedoseError(EMBEDDED.unknown_message(model) + "; nor is it a local path or a Hugging Face id")
    return _from_hub(model)


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE"):
        raise SafedoseError(_offline_message(repo_id, "HF_HUB_OFFLINE is set"))
    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SafedoseError(_offline_message(repo_id, reason)) from None


def _offline_message(repo_id: str, reason: str) -> str:
    return (
        f"model {repo_id!r} is not available offline ({reason}): it is not in the Hugging Face cache. "
        f"On a machine with a network run `hf download {repo_id}` (then copy ~/.cache/huggingface), "
        "or pass the path of a local model directory"
    )


@cache
def _hash_of(path: str, mtime_ns: int) -> str:
    manifest = Path(path) / MANIFEST
    if manifest.is_file():
        return str(json.loads(manifest.read_text())["content_hash"])
    return content_hash(Path(path))


def model_hash(model_dir: str | Path) -> str:
    """The content hash of a model directory (recorded at preparation, else computed once per process)."""
    path = Path(model_dir).resolve()
    return _hash_of(str(path), path.stat().st_mtime_ns)
