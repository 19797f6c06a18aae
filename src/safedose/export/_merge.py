"""An adapter's base model, and the adapter merged into it (fp32, in memory)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from safedose.errors import SafedoseError
from safedose.generate import Adapter, load_adapter_info
from safedose.models import PRECISIONS, Precision, model_hash, resolve_model

ExportDtype = Literal["auto", Precision]
DTYPES: tuple[ExportDtype, ...] = ("auto", *PRECISIONS)
_CONFIG_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class ResolvedBase:
    """The base model an adapter is exported onto."""

    spec: str
    path: Path
    hash: str


def parse_dtype(text: str) -> ExportDtype:
    for d in DTYPES:
        if text == d:
            return d
    raise SafedoseError(f"dtype {text!r}: choose {', '.join(DTYPES)}")


def config_dtype(model_dir: Path) -> str:
    """The dtype a model directory's config.json records (fp32 when it records none)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SafedoseError(f"{model_dir / 'config.json'}: unreadable: {e}") from None
    recorded = config.get("dtype") or config.get("torch_dtype") or "float32"
    return _CONFIG_DTYPES.get(str(recorded), "fp32")


def load_adapter(path: str | Path) -> Adapter:
    """The adapter at `path`, with a one-line error for anything else."""
    return load_adapter_info(Path(path).expanduser())


def recorded_base(adapter: Adapter) -> str:
    """The base model the adapter's manifest (safedose.json), else its adapter_config.json, names."""
    manifest = adapter.path / "safedose.json"
    if manifest.is_file():
        base = json.loads(manifest.read_text(encoding="utf-8")).get("base_model")
        if base:
            return str(base)
    config = json.loads((adapter.path / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise SafedoseError(f"{adapter.path}: the adapter records no base model; pass --base")
    return str(base)


def resolve_base(adapter: Adapter, *, base: str | None, allow_base_mismatch: bool) -> ResolvedBase:
    """Resolve the base (`base`, else the recorded one) and check it is the one the adapter was trained on."""
    spec = base or recorded_base(adapter)
    try:
        path = resolve_model(spec)
    except SafedoseError as e:
        hint = "" if base else " (the base model the adapter records; pass --base to use another path)"
        raise SafedoseError(f"{e}{hint}") from None
    digest = model_hash(path)
    if adapter.base_model_hash and adapter.base_model_hash != digest and not allow_base_mismatch:
        raise SafedoseError(
            f"adapter {adapter.name!r} was trained on another base model than {spec!r} (recorded hash "
            f"{adapter.base_model_hash[:16]}, this one {digest[:16]}); pass --allow-base-mismatch to export it anyway"
        )
    return ResolvedBase(spec=spec, path=path, hash=digest)


def merge(adapter: Adapter, base: ResolvedBase) -> Any:
    """The base model in fp32 with the adapter's weights merged in (a plain transformers model, no PEFT)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    try:
        peft_model = PeftModel.from_pretrained(model, adapter.path)
    except (ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SafedoseError(f"{adapter.path}: does not load onto {base.spec!r}: {first}") from None
    return peft_model.merge_and_unload().eval()
