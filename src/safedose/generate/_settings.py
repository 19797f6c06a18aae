"""Decoding settings and the adapters a generation run evaluates."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safedose.errors import SafedoseError
from safedose.files import sha256_file
from safedose.models import PRECISIONS, Precision
from safedose.run import read_manifest


class Decoding(BaseModel):
    """How to decode. Everything here except `batch_size` and `merge_adapters` is part of the cache key.

    `merge_adapters` (hf backend) runs each adapter's batches on weights with the adapter merged in, which is ~1.6x
    faster than PEFT's unmerged layers. In fp32 that leaves greedy answers unchanged; in bf16 / fp16 rounding the
    merged weights to the model dtype loses much of a small adapter's delta and changes answers, so `auto` merges in
    fp32 only and `always` with a half dtype gets a cache key of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(128, gt=0)
    num_beams: int = Field(1, gt=0)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    stop: tuple[str, ...] = ()
    dtype: Literal["auto", Precision] = "auto"
    batch_size: int = Field(64, gt=0, description="first batch size tried; halved when memory runs out")
    merge_adapters: Literal["auto", "always", "never"] = Field(
        "auto", description="hf backend: generate with each adapter merged into the base weights; auto: in fp32 only"
    )

    def key(self) -> dict[str, Any]:
        """The fields that change outputs, with `dtype` resolved to what will actually run."""
        key = {**self.model_dump(exclude={"batch_size", "merge_adapters"}), "dtype": resolve_dtype(self.dtype)}
        if key["dtype"] != "fp32" and merges_adapters(self):  # merging changes answers in half precision only
            key["merged_adapters"] = True
        return key


def merges_adapters(decoding: Decoding) -> bool:
    """Whether the hf backend merges adapters into the base weights (`auto`: when the dtype resolves to fp32)."""
    if decoding.merge_adapters == "auto":
        return resolve_dtype(decoding.dtype) == "fp32"
    return decoding.merge_adapters == "always"


def parse_decoding(data: dict[str, Any], *, source: str = "decoding") -> Decoding:
    try:
        return Decoding.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise SafedoseError(f"{source}: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None


def resolve_dtype(dtype: str) -> str:
    """`auto`: bf16 on GPUs and on CPUs with native bf16 matmul, else fp32."""
    if dtype != "auto":
        return dtype
    import torch  # torch: loaded only when a precision is chosen for a model run

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def fastest_request_dtype() -> str:
    """The precision that answers a single request fastest: on GPUs the half precision `auto` resolves to; on CPUs
    fp32 (bf16 decodes small batches no faster, often slower, even with AVX-512 BF16 / AMX; docs/performance.md)."""
    import torch  # torch: loaded only when a precision is chosen for a model run

    return resolve_dtype("auto") if torch.cuda.is_available() else "fp32"


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter directory: its name in outputs, content hash and the template it was trained with."""

    name: str
    path: Path
    hash: str
    template: str | None
    base_model_hash: str | None


def load_adapter_info(spec: str | Path) -> Adapter:
    """`NAME=PATH` or `PATH` (named after its directory)."""
    text = str(spec)
    name, sep, path_text = text.partition("=")
    if not sep:
        name, path_text = Path(text).name, text
    path = Path(path_text).expanduser()
    config = path / "adapter_config.json"
    if not config.is_file():
        raise SafedoseError(f"{path}: not a PEFT adapter directory (no adapter_config.json)")
    weights = sorted(path.glob("adapter_model.*"))
    if not weights:
        raise SafedoseError(f"{path}: no adapter_model.safetensors or adapter_model.bin")
    digest = "-".join(sha256_file(f)[:32] for f in [config, *weights])
    manifest = path / "safedose.json"
    template = base_hash = None
    if manifest.is_file():
        try:
            info = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise SafedoseError(f"{manifest}: malformed JSON: {e}") from None
        template, base_hash = info.get("template"), info.get("base_model_hash")
    return Adapter(name=name, path=path, hash=digest, template=template, base_model_hash=base_hash)


def evaluated_dtype(adapter: Adapter) -> str | None:
    """The precision a sweep generated this adapter's answers in, from the manifest of the run that holds it
    (RUN/adapters/CELL/); None for an adapter outside a finished run or a run answered by an endpoint."""
    path = adapter.path.expanduser().absolute()
    run = path.parent.parent
    try:
        manifest = read_manifest(run)
    except (OSError, SafedoseError):
        return None
    if manifest.config.get("backend", "hf") == "openai":
        return None
    if not any(run / c.adapter == path for c in manifest.cells.values()):
        return None
    return manifest.generation_dtype if manifest.generation_dtype in PRECISIONS else None


def choose_template(adapters: list[Adapter], template: str | None, *, allow_mismatch: bool, default: str) -> str:
    """The template the adapters were trained with; another one only when explicitly allowed."""
    recorded = {a.template for a in adapters if a.template}
    if len(recorded) > 1 and not allow_mismatch:
        raise SafedoseError(
            f"adapters were trained with different templates {sorted(recorded)}; evaluate them separately "
            "or pass allow_template_mismatch"
        )
    if template is None:
        return recorded.pop() if len(recorded) == 1 else default
    for a in adapters:
        if a.template and a.template != template and not allow_mismatch:
            raise SafedoseError(
                f"adapter {a.name!r} was trained with template {a.template!r}, not {template!r}: outputs would "
                "not measure what it learnt (pass --allow-template-mismatch to do it anyway)"
            )
    return template
