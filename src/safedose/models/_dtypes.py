"""The precisions a model is loaded, trained, generated or exported in, and their torch dtypes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from safedose.errors import SafedoseError

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a precision name (`fp32`, `bf16`, `fp16`)."""
    import torch  # torch: loaded only when a model is loaded

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in dtypes:
        raise SafedoseError(f"precision {name!r}: choose {', '.join(PRECISIONS)}")
    return dtypes[name]
