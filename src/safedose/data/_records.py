"""The record types every loader produces."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Kind = Literal["base", "safety", "eval-unsafe", "eval-safe", "labelled", "benchmark", "attack"]


class InstructionRecord(BaseModel):
    """One instruction-tuning example (Alpaca fields plus provenance)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    id: str
    instruction: str
    input: str = ""
    output: str
    source: str


class EvalPrompt(BaseModel):
    """One evaluation prompt; `expected_label` is `safe` / `unsafe` where the set says so."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    id: str
    prompt: str
    eval_set: str
    category: str | None = None
    expected_label: Literal["safe", "unsafe"] | None = None
    reference: str | None = None
    choices: list[str] | None = None
    gold: int | None = None
