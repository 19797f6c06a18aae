"""What every backend shares: their names, the job to complete, the callback for finished jobs, tokenisation and
stop strings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

Backend = Literal["hf", "vllm", "openai"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)


class Job(NamedTuple):
    """One prompt to complete with one variant (`None` = the base model without adapters). `prefill`: token ids the
    answer starts with, placed after the prompt's ids (a prefilled answer); the model continues from them."""

    key: str
    variant: str | None
    text: str
    prefill: tuple[int, ...] = ()


Done = Callable[[dict[str, dict[str, Any]]], None]


def prompt_token_ids(tokenizer: Any, text: str, prefill: Sequence[int], *, add_special_tokens: bool) -> list[int]:
    """The ids a job's prompt is generated from: the rendered prompt tokenised as training tokenises it, then the
    prefill's ids, so the prefix starts exactly where a trained answer starts (no token merges across the two)."""
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]) + list(prefill)


def load_tokenizer(model_dir: str | Path) -> Any:
    from transformers import AutoTokenizer  # transformers: loaded only when a model is run

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut].strip()
