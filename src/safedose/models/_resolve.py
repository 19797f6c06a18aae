"""Turn a model name, local path or HF id into a local model directory, and say what identifies it."""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path

from safedose.errors import SafedoseError
from safedose.models._embedded import EMBEDDED, MANIFEST, content_hash, is_prepared, prepare, prepared_dir

_COMMIT = re.compile(r"[0-9a-f]{40}")


def resolve_model(model: str) -> Path:
    """A local HF model directory for an embedded name, a local path or a Hugging Face id."""
    if model in EMBEDDED:
        return prepare(model)
    path = _local_path(model)
    if path is not None:
        return path
    return _from_hub(model)


def local_model_dir(model: str) -> Path | None:
    """Check `model` the way `resolve_model` does, without converting or downloading anything.

    The local directory when it is there already (a prepared embedded model, a local path, a hub id in the HF
    cache), else None (an embedded model not yet prepared, a hub id not in the cache). A name that can never
    resolve (a typo, a directory without config.json) is an error.
    """
    if model in EMBEDDED:
        return prepared_dir(model) if is_prepared(model) else None
    path = _local_path(model)
    if path is not None:
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception:
        return None


def _local_path(model: str) -> Path | None:
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise SafedoseError(f"{path}: not a model directory (no config.json)")
        return path
    if model.count("/") != 1 or model.startswith(("/", ".", "~")):
        raise SafedoseError(EMBEDDED.unknown_message(model) + "; nor is it a local path or a Hugging Face id")
    return None


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


def snapshot_commit(model_dir: str | Path) -> str | None:
    """The commit hash of a Hugging Face cache snapshot (`models--ORG--NAME/snapshots/<commit>`), else None."""
    path = Path(model_dir).resolve()
    if _COMMIT.fullmatch(path.name) and path.parent.name == "snapshots" and path.parents[1].name.startswith("models--"):
        return path.name
    return None


@cache
def _hash_of(path: str, mtime_ns: int) -> str:
    manifest = Path(path) / MANIFEST
    if manifest.is_file():
        return str(json.loads(manifest.read_text())["content_hash"])
    return content_hash(Path(path))


def model_hash(model_dir: str | Path) -> str:
    """What identifies a model directory's weights.

    A snapshot in the Hugging Face cache: its commit hash (40 hex digits; the hub's files at that commit never
    change, so nothing is re-read). Any other directory: the sha256 of its files (64 hex digits), recorded at
    preparation for embedded models, else computed once per process.
    """
    commit = snapshot_commit(model_dir)
    if commit is not None:
        return commit
    path = Path(model_dir).resolve()
    return _hash_of(str(path), path.stat().st_mtime_ns)
