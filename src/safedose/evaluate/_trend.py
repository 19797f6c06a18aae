"""The dose-trend test: one slope on log(1 + dose) over the training cells of each metric, eval set and format."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from safedose.evaluate._metrics import BINARY_METRICS, Variant, observations, variants
from safedose.run import CellKey, JudgedAnswer, safety_field
from safedose.stats import MIN_DF, Cell, cell_value, fit_line, slope_test

TREND_MODEL = (
    "two-stage over training cells: each cell's empirical logit of its share (scores: its mean) = a + b * log(1 + "
    "dose) by least squares; t test of b on cells - 2 degrees of freedom, covariance from the cells' residual scatter "
    "(run-to-run variation) plus the part shared through common prompts"
)


class TrendRow(BaseModel):
    """Dose-trend test over every tuned cell of one arm (format, safety source): slope on log(1 + dose) across
    training cells."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    eval_set: str
    format: str | None
    safety: str | None = safety_field()
    model: str = TREND_MODEL
    slope: float | None = Field(description="change in log-odds per unit of log(1 + dose)")
    lo: float | None
    hi: float | None
    se: float | None
    p_value: float | None
    df: int | None = Field(None, description="residual degrees of freedom across cells (cells - 2)")
    n_cells: int = Field(0, description="training cells (dose x seed) in the fit")
    n: int = Field(description="answers in the fit")
    n_prompts: int
    n_unlabelled: int
    doses: list[int]
    seeds: list[int]
    reason: str | None = Field(default=None, description="why the slope is undefined, when it is")


@dataclass(frozen=True)
class TrendFit:
    slope: float | None
    lo: float | None
    hi: float | None
    se: float | None
    p_value: float | None
    df: int | None
    reason: str | None


def _undefined(reason: str, df: int | None = None) -> TrendFit:
    return TrendFit(None, None, None, None, None, df, reason)


def cell_trend(cells: Sequence[Cell], *, binary: bool) -> TrendFit:
    """Two-stage trend test over training cells: each cell's empirical logit (0/1 values) or mean (scores) regressed
    on log(1 + dose) by least squares; t interval and p-value of the slope on cells - 2 degrees of freedom, with the
    covariance shared through common prompts added (`safedose.stats.fit_line`)."""
    doses = {c.dose for c in cells}
    if len(doses) < 2:
        return _undefined("fewer than two doses")
    if len({cell_value(c, logit=binary) for c in cells}) == 1:
        return _undefined("every cell has the same value: no trend can be estimated", len(cells) - 2)
    line = fit_line(cells, logit=binary)
    if line is None or line.df < 1:
        return _undefined(f"{len(cells)} cells over {len(doses)} doses leave no degree of freedom to estimate "
                          "run-to-run variation: add seeds or doses", 0)  # fmt: skip
    test = slope_test(line)
    if test is None:
        return _undefined("every cell has the same value: no trend can be estimated", line.df)
    reason = None
    if line.df < MIN_DF:
        reason = (f"{line.df} degree of freedom across cells: run-to-run variation is barely estimated, so the "
                  "interval is very wide; add seeds or doses")  # fmt: skip
    return TrendFit(test.slope, test.lo, test.hi, test.se, test.p_value, test.df, reason)


def dose_trend(answers: Sequence[JudgedAnswer], *, cells: Sequence[Mapping[str, Any]] = ()) -> list[TrendRow]:
    """One trend test per metric, eval set (category `all`) and arm over every tuned cell (all doses and seeds): the
    training cell, not the answer, is the unit."""
    info = variants(answers, cells)
    data: dict[tuple[str, str, CellKey], list[tuple[Variant, str, float | None]]] = defaultdict(list)
    for o in observations(answers):
        v = info[o.variant]
        if v.dose is not None:
            data[(o.metric, o.eval_set, v.key.arm)].append((v, o.prompt_id, o.value))
    rows = []
    for (metric, eval_set, arm), obs in sorted(data.items(), key=lambda kv: str(kv[0])):
        by_cell: dict[tuple[int, int | None], dict[str, float]] = defaultdict(dict)
        for v, i, y in obs:
            if y is not None:
                by_cell[(v.dose or 0, v.seed)][i] = y
        trend_cells = [Cell(dose, values) for (dose, _), values in sorted(by_cell.items(), key=str) if values]
        fit = cell_trend(trend_cells, binary=metric in BINARY_METRICS)
        usable = [(v, i) for v, i, y in obs if y is not None]
        rows.append(TrendRow(
            metric=metric, eval_set=eval_set, **arm.arm_dict(), slope=fit.slope, lo=fit.lo, hi=fit.hi, se=fit.se,
            p_value=fit.p_value, df=fit.df, n_cells=len(trend_cells), n=len(usable),
            n_prompts=len({i for _, i in usable}), n_unlabelled=len(obs) - len(usable),
            doses=sorted({v.dose for v, _, _ in obs if v.dose is not None}),
            seeds=sorted({v.seed for v, _, _ in obs if v.seed is not None}), reason=fit.reason,
        ))  # fmt: skip
    return rows
