"""Building safety data: build-safety, the concrete responders and rewriting prompts with a model."""

from safedose.build._build_safety import build_safety, rewrites_cache_path
from safedose.build._prompts import Prompt, context_reason, is_english, prompt_id
from safedose.build._responders import (
    DEFAULT_MAX_NEW_TOKENS,
    HH_HARMLESS,
    HFResponder,
    OpenAIResponder,
    PreferenceResponder,
    make_responder,
)
from safedose.build._rewrite import convert_file, datasheet_path, make_rewriter, rewrite_decoding

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "HH_HARMLESS",
    "HFResponder",
    "OpenAIResponder",
    "PreferenceResponder",
    "Prompt",
    "build_safety",
    "context_reason",
    "convert_file",
    "datasheet_path",
    "is_english",
    "make_responder",
    "make_rewriter",
    "prompt_id",
    "rewrite_decoding",
    "rewrites_cache_path",
]
