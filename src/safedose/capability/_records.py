"""Capability records: one benchmark metric of one variant, the paired change between two variants, a win-rate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from safedose.run import CellFields, CellKey
from safedose.stats import Interval

# A sweep's cells by variant name.
Cells: TypeAlias = Mapping[str, CellKey]


class TaskScore(CellFields):
    """One lm-eval metric of one variant on one task, with lm-eval's standard error and a 95% interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    metric: str = Field(description="lm-eval's metric name: acc, acc_norm (for truthfulqa-mc2, the MC2 score)")
    value: float | None
    stderr: float | None = Field(description="lm-eval's standard error of the mean")
    lo: float | None
    hi: float | None
    interval: Interval
    n: int = Field(description="items scored")
    items: dict[str, float] = Field(default_factory=dict, description="per item (lm-eval doc id) value")


class ScoreChange(BaseModel):
    """Change of a task metric (or of the mean over tasks, task `mean`) from one variant to another, paired by item."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    metric: str
    from_variant: str
    to_variant: str
    from_dose: int | None
    to_dose: int | None
    value: float | None
    lo: float | None
    hi: float | None
    interval: Interval
    n: int


class WinRate(CellFields):
    """A variant's win-rate against the reference: raw (ties count half) and length-controlled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    judge: str
    reference: str
    n: int = Field(description="verdicts that parsed")
    wins: int
    losses: int
    ties: int
    parse_errors: int = Field(description="verdicts that did not parse: counted here, never given to a side")
    model_first: int = Field(description="items where the variant's answer was shown first")
    win_rate: float | None
    lo: float | None
    hi: float | None
    stderr: float | None
    lc_win_rate: float | None
    lc_lo: float | None
    lc_hi: float | None
    lc_note: str | None = None


Placed = TypeVar("Placed", TaskScore, WinRate)


def placed(row: Placed, cells: Cells) -> Placed:
    """`row` with its variant's cell axes (None for a variant that is not a cell, the untuned base)."""
    return row.model_copy(update=cells.get(row.variant, CellKey()).as_dict())
