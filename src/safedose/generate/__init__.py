"""Generation: batched HF, vLLM or any OpenAI-compatible endpoint; many adapters on one base; cached."""

from safedose.generate._api import Backend, Generation, generate
from safedose.generate._hf import Job, generate_batch, load_model, load_tokenizer, use_variant
from safedose.generate._openai import OpenAISettings
from safedose.generate._settings import Adapter, Decoding, choose_template, load_adapter_info, parse_decoding

__all__ = [
    "Adapter",
    "Backend",
    "Decoding",
    "Generation",
    "Job",
    "OpenAISettings",
    "choose_template",
    "generate",
    "generate_batch",
    "load_adapter_info",
    "load_model",
    "load_tokenizer",
    "parse_decoding",
    "use_variant",
]
