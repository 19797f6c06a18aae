"""The answer to "how many safety examples does my model need, and what will it cost?": the smallest dose whose
fitted curves meet the target, its 95% interval, and what the other curves expect at that dose."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from safedose.errors import SafedoseError
from safedose.evaluate import MetricRow
from safedose.recommend._curves import Curve, arms_of, change_between, curve_at, fit_capability, fit_curves
from safedose.recommend._target import EXAMPLE, TARGET_METRICS, Target, check_target_sets
from safedose.recommend._text import few_cells, limit_label, sentence, source_clause
from safedose.run import CellKey, JudgedAnswer, safety_field

ALPHA = 0.05
INTERVAL_METHOD = (
    "every limit's curve gets a two-sided band at level 1 - 0.05/K for K limits (Bonferroni), so that all K bands hold "
    "together with at least 95% probability; doses where every band's upper (pessimistic) edge is under its limit, "
    "falling and rising limits alike, are acceptable with 95% confidence. The recommended dose is the smallest where "
    "every fitted curve meets its limit; its interval runs from the smallest dose where every lower (optimistic) edge "
    "does to the smallest where every pessimistic edge does. Bands come from the two-stage fit over training cells, "
    "so they include run-to-run variation; a monotone fit is known only at tested doses and is bracketed between them"
)


class Constraint(BaseModel):
    """One limit on one eval set, as its fitted curve answers it. A falling curve `needs` at least some dose; a
    rising one `caps` the dose."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    eval_set: str
    max: float
    kind: Literal["needs", "caps"]
    model: str
    dose: int | None = Field(description="needs: smallest tested-range dose whose fit meets it; caps: largest")
    crossing: float | None = Field(None, description="logistic: dose where the fitted curve crosses the limit")
    run_variation: bool = Field(True, description="its band includes run-to-run variation")


class Expected(BaseModel):
    """What a fitted curve expects at one dose (capability: the change from the smallest tested dose)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    eval_set: str
    dose: int
    value: float | None
    lo: float | None
    hi: float | None
    limit: float | None = None
    change_from: int | None = Field(None, description="capability: the dose the change is measured from")
    tested: bool = Field(True, description="the dose was tested (otherwise the value is a prediction)")


class Observed(BaseModel):
    """A limit's observed share at one tested dose, pooled over seeds, with its Wilson interval over the answers
    (prompt variation only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    eval_set: str
    dose: int
    value: float
    lo: float | None
    hi: float | None
    limit: float


class Recommendation(BaseModel):
    """results/recommendation.json: the recommended dose, its interval, what binds, and the curves behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: Target | None
    met: bool | None = Field(
        description="a tested dose meets every limit at the pessimistic edge of the joint 95% bands (None: no target, "
        "or too few cells to estimate run-to-run variation)"
    )
    dose: int | None = Field(description="smallest dose where every fitted curve meets its limit")
    lo: int | None = Field(description="95% interval of that dose")
    hi: int | None = Field(description="None with lo set: beyond the tested range")
    tested_dose: int | None = Field(
        None, description="smallest tested dose meeting every limit at the pessimistic edge"
    )
    predicted_dose: int | None = Field(
        None, description="smallest dose meeting every limit at the pessimistic edge, when it was not tested"
    )
    tested: list[int]
    cells: int = Field(0, description="training cells behind the curves")
    run_variation: bool = Field(True, description="every limit's band includes run-to-run variation")
    level: float = Field(0.95, description="two-sided level of each limit's band (1 - 0.05 / K)")
    at_dose: int | None = Field(description="the dose `expected` and `capability` describe")
    binding: list[str] = Field(description="the limits no tested dose meets together with the others")
    beyond_range: bool = Field(description="the target lies beyond the tested doses (extrapolation)")
    constraints: list[Constraint]
    expected: list[Expected]
    capability: list[Expected]
    observed: list[Observed] = Field(default_factory=list, description="per tested dose and limit (few cells)")
    interval_method: str
    text: str
    curves: list[Curve]
    safety: str | None = safety_field()
    other_sources: list[Recommendation] = Field(
        default_factory=list, exclude_if=lambda v: not v,
        description="the same answer for each other safety source the sweep compared (this one is the first's)",
    )  # fmt: skip

    @property
    def width(self) -> float:
        """Width of the dose interval (inf when open or undefined)."""
        return math.inf if self.lo is None or self.hi is None else float(self.hi - self.lo)


# Where the clauses comparing safety sources start in the first source's text.
BY_SOURCE = " By safety source: "


def recommend(answers: Sequence[JudgedAnswer], capability: Sequence[MetricRow] = (), *,
              target: Target | None, arm: CellKey | None = None,
              sources: Sequence[str] = ()) -> Recommendation:  # fmt: skip
    """Fit every curve of one arm (default: the first) and answer the target (or, without one, say how to set it).
    With several safety sources and no arm given, the first source's answer (in the order of `sources`, the sweep's,
    then the others') holds each other source's in `other_sources`, and its text ends with one clause per source."""
    arms = arms_of(answers)
    found: list[str | None] = list(dict.fromkeys(a.safety for a in arms))
    order = [s for s in sources if s in found] + [s for s in found if s not in sources]
    arms = sorted(arms, key=lambda a: order.index(a.safety))  # stable: formats keep their order
    if arm is not None or len(order) < 2:
        chosen = arm or (arms[0] if arms else None)
        curves = fit_curves(answers, metrics=_metrics(target), arm=chosen)
        curves += fit_capability(capability, arm=chosen)
        rec = recommend_from_curves(curves, target=target)
        return rec.model_copy(update={"safety": chosen.safety}) if chosen is not None else rec
    by_source = [recommend(answers, capability, target=target, arm=next(a for a in arms if a.safety == s))
                 for s in order]  # fmt: skip
    first, others = by_source[0], by_source[1:]
    text = first.text + BY_SOURCE + "; ".join(f"with {r.safety}, {source_clause(r)}" for r in by_source)
    return first.model_copy(update={"other_sources": others, "text": text + "."})


def _metrics(target: Target | None) -> list[str]:
    extra = [m for m in (target.limits() if target else {}) if m not in ("harmful_compliance", "over_refusal")]
    return ["harmful_compliance", "over_refusal", *extra]


def recommend_from_curves(curves: Sequence[Curve], *, target: Target | None) -> Recommendation:
    """The recommendation from fitted curves: arithmetic on their values and joint bands over integer doses."""
    binary = [c for c in curves if c.eval_set != "capability"]
    tested = sorted({d for c in binary for d in c.doses})
    cells = max((c.n_cells for c in binary), default=0)
    empty = Recommendation(target=target, met=None, dose=None, lo=None, hi=None, tested=tested, cells=cells,
                           at_dose=None, binding=[], beyond_range=False, constraints=[], expected=[], capability=[],
                           interval_method=INTERVAL_METHOD, text="", curves=list(curves))  # fmt: skip
    if target is None:
        text = (f"No target is set, so there is no recommended dose: add `{EXAMPLE}` to the sweep config (or run "
                "`safedose recommend RUN_DIR --target '{harmful_compliance: {max: 0.05}}'`); the fitted curves are "
                "shown below.")  # fmt: skip
        return empty.model_copy(update={"text": text})
    if len(tested) < 2:
        return empty.model_copy(update={"text": "Fewer than two doses were tested: no dose-response curve to answer "
                                                "the target with."})  # fmt: skip
    _check_sets(target, binary)
    grid = np.arange(tested[0], tested[-1] + 1)
    limits = _limits(target, binary)
    level = 1 - ALPHA / len(limits)
    masks = {key: _masks(curve, limit, grid, level) for key, (curve, limit) in limits.items()}
    constraints = [_constraint(curve, limit, masks[key][0], grid) for key, (curve, limit) in limits.items()]
    by_key = dict(zip(limits, constraints, strict=True))
    fitted_ok, optimistic_ok, pessimistic_ok = (np.all([m[i] for m in masks.values()], axis=0) for i in range(3))
    point, low, high = _first(fitted_ok, grid), _first(optimistic_ok, grid), _first(pessimistic_ok, grid)
    in_tested = np.isin(grid, tested)
    tested_dose = _first(pessimistic_ok & in_tested, grid)
    run_variation = all(curve.run_variation for curve, _ in limits.values())
    needs = [k for k, c in by_key.items() if c.kind == "needs"]
    at = point if point is not None else int(grid[-1])
    binding = [k for k in limits if not masks[k][0][at - grid[0]]] if point is None else []
    if point is not None and tested_dose is None:
        binding = [k for k in limits if not masks[k][2][at - grid[0]]]
    expected = _expected(binary, at, {k: limit for k, (_, limit) in limits.items()}, tested)
    lines = sorted((c for c in curves if c.eval_set == "capability" and c.model != "none"),
                   key=lambda c: (c.metric != "benchmark_accuracy", c.metric != "test_loss", c.metric))  # fmt: skip
    capability = [_capability(c, tested[0], at, tested) for c in lines]
    rec = empty.model_copy(update={
        "met": tested_dose is not None, "dose": point, "lo": low, "hi": high, "tested_dose": tested_dose,
        "predicted_dose": high if tested_dose is None and high is not None else None, "at_dose": at,
        "binding": [limit_label(k) for k in binding], "beyond_range": point is None, "constraints": constraints,
        "expected": expected, "capability": capability, "level": level, "run_variation": run_variation,
    })  # fmt: skip
    if not run_variation:
        observed = _observed(limits)
        rec = rec.model_copy(update={"met": None, "lo": None, "hi": None, "tested_dose": None, "predicted_dose": None,
                                     "observed": observed})  # fmt: skip
        return rec.model_copy(update={"text": few_cells(rec, limits)})
    text = sentence(rec, [by_key[k] for k in needs], [by_key[k] for k in binding])
    return rec.model_copy(update={"text": text})


def _check_sets(target: Target, curves: Sequence[Curve]) -> None:
    measured = {"harm": sorted({c.eval_set for c in curves if TARGET_METRICS.get(c.metric) == "harm"}),
                "over_refusal": sorted({c.eval_set for c in curves if c.metric == "over_refusal"})}  # fmt: skip
    check_target_sets(target, measured, where="target")
    for metric in target.limits():
        if not any(c.metric == metric for c in curves):
            raise SafedoseError(f"target.{metric}: this run measured no {metric} on tuned cells")


Key = tuple[str, str]


def _limits(target: Target, curves: Sequence[Curve]) -> dict[Key, tuple[Curve, float]]:
    out: dict[Key, tuple[Curve, float]] = {}
    for metric, limit in target.limits().items():
        for c in curves:
            if c.metric == metric and (limit.sets is None or c.eval_set in limit.sets):
                out[(metric, c.eval_set)] = (c, limit.max)
    return out


def _masks(curve: Curve, limit: float, grid: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over the grid: the fitted value, the optimistic band edge and the pessimistic edge (at `level`) under the
    limit. Every limit is a maximum, so the lower edge is optimistic and the upper edge pessimistic."""
    fitted, lo, hi = curve_at(curve, grid, level=level)
    with np.errstate(invalid="ignore"):
        return fitted <= limit, lo <= limit, hi <= limit


def _first(mask: np.ndarray, grid: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(grid[hits[0]]) if len(hits) else None


def _constraint(curve: Curve, limit: float, mask: np.ndarray, grid: np.ndarray) -> Constraint:
    kind: Literal["needs", "caps"] = "caps" if curve.direction == "rises" else "needs"
    hits = np.flatnonzero(mask)
    dose = None if not len(hits) else int(grid[hits[0]] if kind == "needs" else grid[hits[-1]])
    crossing = None
    if curve.model == "logistic" and curve.coef is not None and curve.coef[1] != 0:
        x = (math.log(limit / (1 - limit)) - curve.coef[0]) / curve.coef[1]
        crossing = math.expm1(x) if x < 700 else math.inf
    return Constraint(metric=curve.metric, eval_set=curve.eval_set, max=limit, kind=kind, model=curve.model,
                      dose=dose, crossing=crossing, run_variation=curve.run_variation)  # fmt: skip


def _expected(curves: Sequence[Curve], dose: int, limits: dict[Key, float], tested: Sequence[int]) -> list[Expected]:
    out = []
    for c in curves:
        fitted, lo, hi = (float(v[0]) for v in curve_at(c, [dose]))
        if not c.run_variation:
            lo = hi = math.nan
        out.append(Expected(metric=c.metric, eval_set=c.eval_set, dose=dose, value=_num(fitted), lo=_num(lo),
                            hi=_num(hi), limit=limits.get((c.metric, c.eval_set)), tested=dose in tested))  # fmt: skip
    return out


def _capability(curve: Curve, start: int, dose: int, tested: Sequence[int]) -> Expected:
    value, lo, hi = change_between(curve, start, dose)
    if not curve.run_variation:
        lo = hi = None
    return Expected(metric=curve.metric, eval_set="capability", dose=dose, value=_num(value), lo=lo, hi=hi,
                    change_from=start, tested=dose in tested)  # fmt: skip


def _observed(limits: dict[Key, tuple[Curve, float]]) -> list[Observed]:
    return [Observed(metric=c.metric, eval_set=c.eval_set, dose=k.dose, value=k.observed, lo=k.observed_lo,
                     hi=k.observed_hi, limit=limit)
            for c, limit in limits.values() for k in c.knots]  # fmt: skip


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x
