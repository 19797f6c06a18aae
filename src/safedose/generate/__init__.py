"""Generation: batched HF, vLLM or any OpenAI-compatible endpoint; many adapters on one base; cached."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safedose.generate._api import Generation, check_base_model, generate
    from safedose.generate._hf import generate_batch, generation_kwargs, load_model, use_variant
    from safedose.generate._jobs import BACKENDS, Backend, Job, load_tokenizer
    from safedose.generate._openai import OpenAISettings, post_json
    from safedose.generate._settings import (
        Adapter,
        Decoding,
        choose_template,
        evaluated_dtype,
        fastest_request_dtype,
        load_adapter_info,
        parse_decoding,
        resolve_dtype,
    )
    from safedose.generate._vllm import VllmSettings

# Imported on first use, so that settings, endpoints and adapters come without torch (the hf backend loads it).
_WHERE = {
    "Generation": "_api", "check_base_model": "_api", "generate": "_api", "generate_batch": "_hf",
    "generation_kwargs": "_hf", "load_model": "_hf", "use_variant": "_hf", "BACKENDS": "_jobs", "Backend": "_jobs",
    "Job": "_jobs", "load_tokenizer": "_jobs", "OpenAISettings": "_openai", "post_json": "_openai",
    "Adapter": "_settings", "Decoding": "_settings", "choose_template": "_settings", "evaluated_dtype": "_settings",
    "fastest_request_dtype": "_settings", "load_adapter_info": "_settings", "parse_decoding": "_settings",
    "resolve_dtype": "_settings", "VllmSettings": "_vllm",
}  # fmt: skip

__all__ = [
    "BACKENDS",
    "Adapter",
    "Backend",
    "Decoding",
    "Generation",
    "Job",
    "OpenAISettings",
    "VllmSettings",
    "check_base_model",
    "choose_template",
    "evaluated_dtype",
    "fastest_request_dtype",
    "generate",
    "generate_batch",
    "generation_kwargs",
    "load_adapter_info",
    "load_model",
    "load_tokenizer",
    "parse_decoding",
    "post_json",
    "resolve_dtype",
    "use_variant",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'safedose.generate' has no attribute {name!r}")
    return getattr(importlib.import_module(f"safedose.generate.{_WHERE[name]}"), name)
