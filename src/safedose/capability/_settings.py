"""The capability section of a sweep config (`eval_sets.capability`) and the standalone command's settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class WinRateSettings(BaseModel):
    """Pairwise win-rate of each variant's answers to AlpacaEval instructions against a reference."""

    model_config = ConfigDict(extra="forbid")

    judge: str | None = Field(None, description="`llm:<model>[#preset]` (default preset alpaca-eval); none: skipped")
    reference: Literal["untuned", "alpaca-eval"] = Field(
        "untuned", description="the untuned model's answers, or AlpacaEval 2.0's gpt4_1106_preview outputs"
    )
    limit: int | None = Field(100, gt=0, description="a seeded sample of N AlpacaEval instructions (None: all 805)")
    seed: int = Field(0, description="seed of the sample and of the answer order shown to the judge")
    base_url: str | None = Field(None, description="the judge's OpenAI-compatible endpoint (else $OPENAI_BASE_URL)")
    max_new_tokens: int = Field(256, gt=0, description="answer length of the variants on these instructions")


class BenchmarkSettings(BaseModel):
    """How lm-eval scores the benchmark tasks."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(default_factory=list, description="safedose task names, lm-eval task names or YAMLs")
    num_fewshot: int = Field(0, ge=0)
    limit: int | None = Field(None, gt=0, description="a seeded sample of N items per task, stratified by subject")
    sample_seed: int = 0
    batch_size: int = Field(16, gt=0)


class CapabilitySettings(BenchmarkSettings):
    """`eval_sets.capability`: benchmarks, the reference NLL and the win-rate (the test loss is always measured)."""

    references: str | None = Field("alpaca-eval", description="eval set whose reference answers' NLL is measured")
    references_limit: int = Field(50, gt=0)
    win_rate: WinRateSettings = Field(default_factory=WinRateSettings)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        """`capability: NAME` (or null), the older form, sets only the reference set."""
        if data is None or isinstance(data, str):
            return {"references": data}
        return data
