"""Fitted dose-response curves with 95% bands in which the training cell (dose x seed), not the answer, is the unit:
a line in log(1 + dose) through the cells' empirical logits (`safedose.stats.fit_line`), a monotone (isotonic) fit of
the per-dose means where the line does not fit, and a straight line in log(1 + dose) for capability."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from safedose.evaluate import MetricRow, answer_values
from safedose.run import CellKey, JudgedAnswer, safety_field
from safedose.stats import (
    MIN_DF,
    Cell,
    dose_means,
    fit_line,
    t_quantile,
    wilson_share,
)

CURVE_METRICS = ("harmful_compliance", "harmful_compliance_lenient", "over_refusal")
CAPABILITY_METRICS = ("test_loss", "reference_nll", "benchmark_accuracy")
RULE = (
    "two-stage fit over training cells (dose x seed): each cell's share as an empirical logit, log((k + 1/2) / (n - k "
    "+ 1/2)), then a least-squares line in log(1 + dose) through the cells; its covariance adds the cells' residual "
    "scatter (run-to-run variation, on cells - 2 degrees of freedom) to the part all cells share through answering "
    "the same prompts. Where replicate cells allow an F test of the line against one mean per dose and it rejects "
    "(p < 0.05), a monotone (isotonic, scikit-learn) fit of the per-dose means instead, which says nothing between "
    "tested doses beyond the bracket that monotonicity gives"
)
BANDS = {
    "logistic": "pointwise t band on the cells' residual degrees of freedom, on the logit scale, from the line's "
    "covariance (run-to-run scatter of the cells plus the part shared through common prompts)",
    "isotonic": "at each tested dose, a t interval of the mean of its cells' empirical logits from the pooled "
    "within-dose variance of replicate cells plus the shared-prompt part; between tested doses, the bracket of the "
    "two neighbouring tested doses (a monotone curve lies between its values there)",
    "prompt-only": "at each tested dose, the Wilson interval over that dose's answers: prompt variation only, because "
    "too few cells were run to estimate run-to-run variation; between tested doses, the bracket of the two "
    "neighbouring tested doses",
    "linear": "pointwise 95% t band from ordinary least squares over cells (none when there are no more cells than "
    "the line's two parameters)",
    "none": "no band",
}
Model = Literal["logistic", "isotonic", "linear", "none"]


class Knot(BaseModel):
    """The fit at one tested dose beside what was observed there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dose: int
    n: int = Field(description="answers (capability: cells) at this dose")
    cells: int = Field(1, description="training cells at this dose")
    observed: float
    observed_lo: float | None = Field(description="95% Wilson interval of the observed share over the dose's answers")
    observed_hi: float | None
    fitted: float
    lo: float | None
    hi: float | None
    residual: float | None = Field(description="Pearson residual (observed - fitted) / sqrt(fitted (1 - fitted) / n)")
    centre: float | None = Field(None, description="isotonic: mean of the cells' empirical logits")
    se: float | None = Field(None, description="isotonic: standard error of `centre` (NaN-free; None: not estimated)")


class Curve(BaseModel):
    """One metric on one eval set as a function of the dose, with its 95% band and the check of its fit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    eval_set: str = Field(description="`capability` for capability metrics")
    format: str | None
    safety: str | None = safety_field()
    model: Model
    why: str = Field(description="why this model was used")
    band: str
    direction: Literal["falls", "rises", "flat"]
    coef: list[float] | None = Field(None, description="logistic / linear: intercept and slope on log(1 + dose)")
    cov: list[list[float]] | None = None
    df: int | None = Field(None, description="residual degrees of freedom of the t band (cells - parameters)")
    residual_var: float | None = Field(None, description="logistic: the cells' residual variance about the line")
    run_variation: bool = Field(
        True, description="the band includes run-to-run variation (enough cells to estimate it); else prompts only"
    )
    n_cells: int = 0
    knots: list[Knot]
    n: int
    n_prompts: int
    n_unlabelled: int
    seeds: list[int]

    @property
    def doses(self) -> list[int]:
        return [k.dose for k in self.knots]


def curve_at(
    curve: Curve, doses: Sequence[float] | np.ndarray, *, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fitted value and two-sided band at `level` at `doses`. NaN where the curve says nothing: outside the tested
    range of a monotone fit, its fitted value between tested doses (where only the band's bracket is known), or no
    band."""
    d = np.asarray(doses, dtype=float)
    x = np.log1p(d)
    nan = np.full(d.shape, np.nan)
    if curve.model in ("logistic", "linear") and curve.coef is not None:
        a, b = curve.coef
        eta = a + b * x
        if curve.cov is None or curve.df is None or curve.df < 1:
            lo = hi = nan
        else:
            c = np.asarray(curve.cov)
            se = np.sqrt(np.maximum(c[0, 0] + 2 * x * c[0, 1] + x * x * c[1, 1], 0.0))
            q = t_quantile(1 - (1 - level) / 2, curve.df)
            lo, hi = eta - q * se, eta + q * se
        if curve.model == "logistic":
            return _expit(eta), _expit(lo), _expit(hi)
        return eta, lo, hi
    if not curve.knots:
        return nan, nan, nan
    return _bracket(curve, x, level)


def _knot_band(curve: Curve, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Each knot's band at `level`: from its cells (isotonic) or Wilson over its answers (prompt-only)."""
    lo, hi = [], []
    for k in curve.knots:
        if curve.run_variation and k.centre is not None and k.se is not None and curve.df:
            q = t_quantile(1 - (1 - level) / 2, curve.df)
            lo.append(float(_expit(np.asarray(k.centre - q * k.se))))
            hi.append(float(_expit(np.asarray(k.centre + q * k.se))))
        elif k.observed_lo is not None and k.observed_hi is not None:
            from scipy.stats import norm

            a, b = wilson_share(k.observed, k.n, z=float(norm.ppf(1 - (1 - level) / 2)))
            lo.append(min(a, k.fitted))
            hi.append(max(b, k.fitted))
        else:
            lo.append(math.nan)
            hi.append(math.nan)
    return np.asarray(lo), np.asarray(hi)


def _bracket(curve: Curve, x: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A monotone fit: its values at the tested doses; between two of them, NaN for the fit and, for the band, the
    lower edge of the lower neighbour's band and the upper edge of the higher one's (the true curve lies between its
    values at the two tested doses)."""
    kx = np.log1p([k.dose for k in curve.knots])
    fitted_k = np.asarray([k.fitted for k in curve.knots])
    lo_k, hi_k = _knot_band(curve, level)
    fitted, lo, hi = (np.full(x.shape, np.nan) for _ in range(3))
    for i, xi in enumerate(x):
        exact = np.flatnonzero(np.isclose(kx, xi, atol=1e-12))
        if len(exact):
            j = int(exact[0])
            fitted[i], lo[i], hi[i] = fitted_k[j], lo_k[j], hi_k[j]
            continue
        right = int(np.searchsorted(kx, xi))
        if right == 0 or right >= len(kx):
            continue
        left = right - 1
        lo[i] = min(lo_k[left], lo_k[right])
        hi[i] = max(hi_k[left], hi_k[right])
    return fitted, lo, hi


def _expit(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return out


# --- binary metrics

Row = tuple[int, int | None, str, float | None]  # dose, seed, prompt id, value (None: unlabelled)


def arms_of(answers: Sequence[JudgedAnswer]) -> list[CellKey]:
    """The arms (format, safety source) of the tuned answers, in a stable order."""
    return sorted({a.cell.arm for a in answers if a.dose is not None}, key=CellKey.sort_key)


def fit_curves(answers: Sequence[JudgedAnswer], *, metrics: Sequence[str] = CURVE_METRICS,
               arm: CellKey | None = None) -> list[Curve]:  # fmt: skip
    """One curve per metric and eval set over every tuned answer of one arm (all doses and seeds; the untuned rows
    are not in it); by default the first arm (with several formats, the first format's cells)."""
    arms = arms_of(answers)
    if not arms:
        return []
    chosen = arm or arms[0]
    roles = {role for a in answers for role in a.verdicts}
    data: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for a in answers:
        if a.dose is None or a.cell.arm != chosen:
            continue
        for metric, value in answer_values(a, roles).items():
            if metric in metrics:
                data[(metric, a.eval_set)].append((a.dose or 0, a.seed, a.id, value))
    return [fit_binary(metric, eval_set, rows, arm=chosen) for (metric, eval_set), rows in sorted(data.items())]


def _cells(rows: Sequence[Row]) -> list[Cell]:
    by_cell: dict[tuple[int, int | None], dict[str, float]] = defaultdict(dict)
    for d, s, p, y in rows:
        if y is not None:
            by_cell[(d, s)][p] = y
    return [Cell(dose, values) for (dose, _), values in sorted(by_cell.items(), key=str) if values]


def fit_binary(metric: str, eval_set: str, rows: Sequence[Row], *, arm: CellKey | None = None) -> Curve:
    """The curve of one 0/1 metric from (dose, seed, prompt id, value or None) rows, by the stated rule."""
    usable = [(d, s, p, y) for d, s, p, y in rows if y is not None]
    cells = _cells(usable)
    common: dict[str, Any] = {"metric": metric, "eval_set": eval_set, **(arm or CellKey()).arm_dict(), "n": len(usable),
              "n_prompts": len({p for _, _, p, _ in usable}), "n_unlabelled": len(rows) - len(usable),
              "seeds": sorted({s for _, s, _, _ in usable if s is not None}), "n_cells": len(cells)}  # fmt: skip
    if not usable:
        return Curve(model="none", why="no answer has a usable label", band=BANDS["none"], direction="flat", knots=[],
                     run_variation=False, **common)  # fmt: skip
    line = fit_line(cells)
    if line is None:
        return _isotonic(cells, common, why="fewer than two doses: no curve can be fitted")
    direction = _direction(line.coef[1])
    if line.lack_of_fit_p is not None and line.lack_of_fit_p < 0.05:
        why = (f"the line misses the per-dose means of the replicate cells (lack-of-fit F test p = "
               f"{line.lack_of_fit_p:.3f}); monotone fit instead")  # fmt: skip
        return _isotonic(cells, common, why=why, direction=direction)
    run_variation = line.df >= MIN_DF
    curve = Curve(model="logistic", why="", band=BANDS["logistic"], direction=direction, coef=list(line.coef),
                  cov=[list(r) for r in line.cov], df=line.df, run_variation=run_variation, knots=[],
                  residual_var=None if math.isnan(line.residual_var) else line.residual_var,
                  **common)  # fmt: skip
    if not run_variation:
        why = (f"{len(cells)} cells leave {line.df} residual degree(s) of freedom (at least {MIN_DF} are needed to "
               "estimate run-to-run variation): the line is drawn, but its band and the dose interval are not "
               "given; run more seeds or doses")  # fmt: skip
        curve = curve.model_copy(update={"band": BANDS["prompt-only"]})
    elif line.lack_of_fit_p is None:
        why = (f"line through {len(cells)} cells on {line.df} residual degrees of freedom; no replicate cells to test "
               "its form, so a wrong form shows only as wider bands")  # fmt: skip
    else:
        why = (f"line through {len(cells)} cells on {line.df} residual degrees of freedom; lack-of-fit F test against "
               f"one mean per dose p = {line.lack_of_fit_p:.2f}")  # fmt: skip
    return curve.model_copy(update={"knots": _knots(curve, cells), "why": why})


def _direction(slope: float) -> Literal["falls", "rises", "flat"]:
    return "falls" if slope < 0 else "rises" if slope > 0 else "flat"


def _per_dose(cells: Sequence[Cell]) -> list[tuple[int, int, int, float]]:
    """Per tested dose: (dose, answers, cells, observed share over its answers)."""
    out = []
    for d in sorted({c.dose for c in cells}):
        group = [c for c in cells if c.dose == d]
        values = [v for c in group for v in c.values.values()]
        out.append((d, len(values), len(group), float(np.mean(values))))
    return out


def _knots(curve: Curve, cells: Sequence[Cell]) -> list[Knot]:
    per_dose = _per_dose(cells)
    fitted, lo, hi = curve_at(curve, [d for d, _, _, _ in per_dose])
    if not curve.run_variation:
        lo = hi = np.full(len(per_dose), np.nan)
    return [_knot(d, n, m, o, float(f), float(a), float(b))
            for (d, n, m, o), f, a, b in zip(per_dose, fitted, lo, hi, strict=True)]  # fmt: skip


def _knot(dose: int, n: int, cells: int, observed: float, fitted: float, lo: float, hi: float, *,
          centre: float | None = None, se: float | None = None) -> Knot:  # fmt: skip
    olo, ohi = wilson_share(observed, n)
    var = fitted * (1 - fitted) / n
    residual = (observed - fitted) / math.sqrt(var) if var > 0 else None
    return Knot(dose=dose, n=n, cells=cells, observed=observed, observed_lo=olo, observed_hi=ohi, fitted=fitted,
                lo=None if math.isnan(lo) else lo, hi=None if math.isnan(hi) else hi, residual=residual,
                centre=centre, se=se)  # fmt: skip


def _isotonic(cells: Sequence[Cell], common: dict[str, Any], *, why: str,
              direction: Literal["falls", "rises", "flat"] | None = None) -> Curve:  # fmt: skip
    """Monotone fit of the per-dose shares; bands from replicate cells where there are enough, else Wilson over the
    dose's answers (prompt variation only)."""
    per_dose = _per_dose(cells)
    means, df = dose_means(cells)
    observed = np.asarray([o for _, _, _, o in per_dose])
    n = np.asarray([m for _, m, _, _ in per_dose], dtype=float)
    if direction is None:
        x = np.log1p([d for d, _, _, _ in per_dose])
        slope = float(np.polyfit(x, observed, 1, w=np.sqrt(n))[0]) if len(per_dose) > 1 else 0.0
        direction = _direction(slope)
    fitted = _pava(observed, n, increasing=direction == "rises") if len(per_dose) > 1 else observed
    run_variation = df >= MIN_DF
    q = t_quantile(0.975, df)
    knots = []
    for (d, m, c, o), f, mean in zip(per_dose, fitted, means, strict=True):
        if run_variation:
            lo, hi = (
                float(_expit(np.asarray(mean.mean - q * mean.se))),
                float(_expit(np.asarray(mean.mean + q * mean.se))),
            )
            knots.append(_knot(d, m, c, o, float(f), min(lo, float(f)), max(hi, float(f)), centre=mean.mean,
                               se=mean.se))  # fmt: skip
        else:
            wlo, whi = wilson_share(o, m)
            knots.append(_knot(d, m, c, o, float(f), min(wlo, float(f)), max(whi, float(f))))
    if len(per_dose) < 2 or math.isclose(fitted[0], fitted[-1]):
        direction = "flat"
    if not run_variation:
        why += (f"; {len(cells)} cells over {len(per_dose)} doses leave {df} degree(s) of freedom for run-to-run "
                f"variation (at least {MIN_DF} are needed): bands cover prompt variation only")  # fmt: skip
    band = BANDS["isotonic" if run_variation else "prompt-only"]
    return Curve(model="isotonic", why=why, band=band, direction=direction, knots=knots, df=df if df > 0 else None,
                 run_variation=run_variation, **common)  # fmt: skip


def _pava(values: np.ndarray, weights: np.ndarray, *, increasing: bool) -> np.ndarray:
    from sklearn.isotonic import isotonic_regression

    w = np.maximum(np.asarray(weights, dtype=float), 1e-12)
    out: np.ndarray = isotonic_regression(np.asarray(values, dtype=float), sample_weight=w, increasing=increasing)
    return out


# --- capability


def fit_capability(rows: Sequence[MetricRow], *, arm: CellKey | None = None) -> list[Curve]:
    """A straight line in log(1 + dose) per capability metric over the tuned cells of one arm (each cell one point);
    by default the first arm."""
    by_metric: dict[str, list[MetricRow]] = defaultdict(list)
    for r in rows:
        if r.dose is not None and r.value is not None and r.metric in CAPABILITY_METRICS:
            by_metric[r.metric].append(r)
    curves = []
    for metric, group in sorted(by_metric.items()):
        chosen = arm or min((r.cell.arm for r in group), key=CellKey.sort_key)
        if mine := [r for r in group if r.cell.arm == chosen]:
            curves.append(_linear(metric, mine, chosen))
    return curves


def _linear(metric: str, rows: Sequence[MetricRow], arm: CellKey) -> Curve:
    doses = np.asarray([r.dose or 0 for r in rows], dtype=float)
    values = np.asarray([r.value or 0.0 for r in rows], dtype=float)
    common: dict[str, Any] = {"metric": metric, "eval_set": "capability", **arm.arm_dict(), "n": len(rows),
              "n_prompts": max((r.n for r in rows), default=0), "n_unlabelled": 0,
              "seeds": sorted({r.seed for r in rows if r.seed is not None}), "n_cells": len(rows)}  # fmt: skip
    levels = np.unique(doses)
    if len(levels) < 2:
        knots = [Knot(dose=int(d), n=int((doses == d).sum()), observed=float(values[doses == d].mean()),
                      observed_lo=None, observed_hi=None, fitted=float(values[doses == d].mean()), lo=None, hi=None,
                      residual=None) for d in levels]  # fmt: skip
        return Curve(model="none", why="fewer than two doses: no line", band=BANDS["none"], direction="flat",
                     knots=knots, run_variation=False, **common)  # fmt: skip
    design = np.column_stack([np.ones_like(doses), np.log1p(doses)])
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    df = len(values) - 2
    cov = None
    if df > 0:
        s2 = float(np.sum((values - design @ coef) ** 2)) / df
        cov = (s2 * np.linalg.inv(design.T @ design)).tolist()
    curve = Curve(model="linear", why="capability: one value per cell, a straight line in log(1 + dose)",
                  band=BANDS["linear"], direction=_direction(float(coef[1])), coef=[float(c) for c in coef], cov=cov,
                  df=df, run_variation=df >= MIN_DF, knots=[], **common)  # fmt: skip
    fitted, lo, hi = curve_at(curve, levels)
    knots = [Knot(dose=int(d), n=int((doses == d).sum()), observed=float(values[doses == d].mean()), observed_lo=None,
                  observed_hi=None, fitted=float(f), lo=None if math.isnan(a) else float(a),
                  hi=None if math.isnan(b) else float(b), residual=None)
             for d, f, a, b in zip(levels, fitted, lo, hi, strict=True)]  # fmt: skip
    return curve.model_copy(update={"knots": knots})


def change_between(curve: Curve, start: int, end: int) -> tuple[float, float | None, float | None]:
    """The fitted change of a line from dose `start` to dose `end`, with its 95% t interval where there is one."""
    if curve.coef is None:
        first = next((k.fitted for k in curve.knots if k.dose == start), math.nan)
        last = next((k.fitted for k in curve.knots if k.dose == end), math.nan)
        return last - first, None, None
    dx = math.log1p(end) - math.log1p(start)
    value = curve.coef[1] * dx
    if curve.cov is None:
        return value, None, None
    half = t_quantile(0.975, curve.df) * math.sqrt(max(curve.cov[1][1], 0.0)) * abs(dx)
    if math.isnan(half):
        return value, None, None
    return value, value - half, value + half


def expected_after(curve: Curve, dose: int, cells: int) -> Curve | None:
    """The logistic curve expected after `cells` more cells at `dose`: the same line, its covariance's residual part
    recomputed for the larger design (the shared-prompt part unchanged) and `cells` more degrees of freedom. None for
    other models, which this cannot predict."""
    if curve.model != "logistic" or curve.cov is None or curve.residual_var is None or curve.df is None:
        return None
    rows = [(math.log1p(k.dose), k.cells) for k in curve.knots]
    xtx = sum(m * np.outer([1.0, x], [1.0, x]) for x, m in rows)
    x_new = math.log1p(dose)
    after = xtx + cells * np.outer([1.0, x_new], [1.0, x_new])
    shared = np.asarray(curve.cov) - curve.residual_var * np.linalg.inv(xtx)
    cov = curve.residual_var * np.linalg.inv(after) + shared
    fitted = float(_expit(np.asarray(curve.coef[0] + curve.coef[1] * x_new))) if curve.coef else math.nan
    knots = sorted([*curve.knots, Knot(dose=dose, n=0, cells=cells, observed=fitted, observed_lo=None,
                                       observed_hi=None, fitted=fitted, lo=None, hi=None, residual=None)],
                   key=lambda k: k.dose)  # fmt: skip
    df = curve.df + cells
    return curve.model_copy(update={"cov": cov.tolist(), "df": df, "knots": knots, "run_variation": df >= MIN_DF,
                                    "n_cells": curve.n_cells + cells})  # fmt: skip
