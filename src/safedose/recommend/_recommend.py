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
from safedose.recommend._curves import Curve, change_between, curve_at, fit_capability, fit_curves
from safedose.recommend._target import EXAMPLE, TARGET_METRICS, Target, check_target_sets
from safedose.run import JudgedAnswer

DASH = "\u2013"
ALPHA = 0.05
INTERVAL_METHOD = (
    "every limit's curve gets a two-sided band at level 1 - 0.05/K for K limits (Bonferroni), so that all K bands hold "
    "together with at least 95% probability; doses where every band's upper (pessimistic) edge is under its limit, "
    "falling and rising limits alike, are acceptable with 95% confidence. The recommended dose is the smallest where "
    "every fitted curve meets its limit; its interval runs from the smallest dose where every lower (optimistic) edge "
    "does to the smallest where every pessimistic edge does. Bands come from the two-stage fit over training cells, "
    "so they include run-to-run variation; a monotone fit is known only at tested doses and is bracketed between them"
)
NAMES = {
    "harmful_compliance": "harmful compliance (strict)",
    "harmful_compliance_lenient": "harmful compliance (lenient)",
    "over_refusal": "over-refusal",
    "test_loss": "held-out test loss",
    "reference_nll": "reference-answer NLL",
    "benchmark_accuracy": "benchmark accuracy",
}


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

    @property
    def width(self) -> float:
        """Width of the dose interval (inf when open or undefined)."""
        return math.inf if self.lo is None or self.hi is None else float(self.hi - self.lo)


def recommend(answers: Sequence[JudgedAnswer], capability: Sequence[MetricRow] = (), *,
              target: Target | None) -> Recommendation:  # fmt: skip
    """Fit every curve and answer the target (or, without one, say how to set it)."""
    curves = fit_curves(answers, metrics=_metrics(target))
    curves += fit_capability(capability)
    return recommend_from_curves(curves, target=target)


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
        "binding": [_label(k) for k in binding], "beyond_range": point is None, "constraints": constraints,
        "expected": expected, "capability": capability, "level": level, "run_variation": run_variation,
    })  # fmt: skip
    if not run_variation:
        observed = _observed(limits)
        rec = rec.model_copy(update={"met": None, "lo": None, "hi": None, "tested_dose": None, "predicted_dose": None,
                                     "observed": observed})  # fmt: skip
        return rec.model_copy(update={"text": _few_cells(rec, limits)})
    text = _sentence(rec, [by_key[k] for k in needs], [by_key[k] for k in binding])
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


def _label(key: Key) -> str:
    return f"{key[0]} on {key[1]}"


# --- the sentence


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{x:.0%}"


def _rate(e: Expected) -> str:
    band = f" [{_pct(e.lo)}, {_pct(e.hi)}]" if e.lo is not None and e.hi is not None else ""
    return f"{_pct(e.value)}{band}"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _needs_phrase(needs: Sequence[Constraint]) -> str:
    parts = []
    for metric in dict.fromkeys(c.metric for c in needs):
        group = [c for c in needs if c.metric == metric]
        limits = sorted({c.max for c in group})
        under = _join([f"{x:.0%}" for x in limits])
        parts.append(f"{NAMES.get(metric, metric)} under {under} on {_join([c.eval_set for c in group])}")
    return _join(parts)


def _interval(rec: Recommendation) -> str:
    joint = "" if len(rec.constraints) == 1 else f" (each limit's band at {rec.level:.1%}, jointly 95%)"
    if rec.lo is None:
        return "95% interval: not within the tested range"
    if rec.hi is None:
        return f"95% interval from {rec.lo} to beyond the largest tested dose, {rec.tested[-1]}{joint}"
    return f"95% interval {rec.lo}{DASH}{rec.hi}{joint}"


def _limit(e: Expected) -> str:
    if e.limit is None:
        return ""
    above = e.value is not None and e.value > e.limit
    return f" (above its {e.limit:.0%} limit)" if above else f" (limit {e.limit:.0%})"


def _capability_phrase(rec: Recommendation) -> str:
    changes = []
    for e in rec.capability:
        if e.value is None:
            continue
        points = e.metric == "benchmark_accuracy"
        scale, unit = (100.0, " points") if points else (1.0, "")
        fmt = "{:+.1f}" if points else "{:+.3f}"
        band = (f" [{fmt.format(e.lo * scale)}, {fmt.format(e.hi * scale)}]" if e.lo is not None and e.hi is not None
                else " (no interval: too few cells)")  # fmt: skip
        changes.append(f"{NAMES.get(e.metric, e.metric)} changes by {fmt.format(e.value * scale)}{unit}{band}")
    if not changes:
        return ""
    start = rec.capability[0].change_from
    return f"capability from dose {start}: {_join(changes)} (NLL per token: lower is better)"


def _at_dose(rec: Recommendation, skip: Sequence[str] = ()) -> str:
    """What the other curves expect at the recommendation's dose."""
    phrases = []
    for metric in ("over_refusal", "harmful_compliance", "harmful_compliance_lenient"):
        if metric != "over_refusal" and rec.met:
            continue
        items = [e for e in rec.expected if e.metric == metric and _label((e.metric, e.eval_set)) not in skip]
        if items:
            rates = _join([f"{_rate(e)} on {e.eval_set}{_limit(e)}" for e in items])
            phrases.append(f"{NAMES[metric]} is expected at {rates}")
    capability = _capability_phrase(rec)
    if capability:
        phrases.append(capability)
    return "; ".join(phrases)


def _names(constraints: Sequence[Constraint]) -> str:
    return _join([f"{NAMES.get(c.metric, c.metric)} on {c.eval_set}" for c in constraints])


def _sentence(rec: Recommendation, needs: Sequence[Constraint], binding: Sequence[Constraint]) -> str:
    tested = f"{rec.tested[0]}{DASH}{rec.tested[-1]}"
    if rec.dose is None:
        return " ".join(_out_of_range(rec, binding))
    what = (f"the smallest dose expected to bring {_needs_phrase(needs)} is {rec.dose} ({_interval(rec)})" if needs
            else f"every limit is expected to hold from dose {rec.dose} ({_interval(rec)})")  # fmt: skip
    if rec.met:
        first = f"Dose {rec.tested_dose}, a tested dose, meets every limit of the target with 95% confidence; {what}."
    elif rec.predicted_dose is not None:
        first = (f"No tested dose ({tested}) meets every limit with 95% confidence, but dose {rec.predicted_dose}, "
                 f"which was not tested, is predicted to (a prediction from the fitted curves: test it before relying "
                 f"on it); {what}.")  # fmt: skip
    else:
        which = _names(binding) if binding else "the limits together"
        first = (f"No dose in the tested range ({tested}) meets every limit with 95% confidence: {what[0].upper()}"
                 f"{what[1:]}, but at the pessimistic edge of the bands {which} is over its limit.")  # fmt: skip
    lines = [first]
    rest = _at_dose(rec)
    if rest:
        lines.append(f"At dose {rec.dose} {rest}{'' if rec.dose in rec.tested else ' (predicted: not tested)'}.")
    if rec.met and rec.hi is None:
        lines.append(f"The interval's upper end lies beyond the tested doses ({tested}).")
    return " ".join(lines)


def _out_of_range(rec: Recommendation, binding: Sequence[Constraint]) -> list[str]:
    tested = f"{rec.tested[0]}{DASH}{rec.tested[-1]}"
    at = rec.at_dose
    keys = {(c.metric, c.eval_set) for c in binding}
    still = []
    for metric in dict.fromkeys(c.metric for c in binding):
        rates = _join([f"{_rate(e)} on {e.eval_set}" for e in rec.expected
                       if e.metric == metric and (e.metric, e.eval_set) in keys])  # fmt: skip
        limits = _join([f"{x:.0%}" for x in sorted({c.max for c in binding if c.metric == metric})])
        still.append(f"{NAMES.get(metric, metric)} is still expected at {rates}, above the {limits} limit")
    lines = [f"No tested dose ({tested}) meets the target: at the largest tested dose, {at}, {'; '.join(still)}, so "
             f"{NAMES.get(binding[0].metric, binding[0].metric)} binds."]  # fmt: skip
    crossings = [c for c in binding if c.crossing is not None and math.isfinite(c.crossing) and c.crossing > (at or 0)]
    if crossings and len(crossings) == len(binding) and all(c.kind == "needs" for c in binding):
        worst = max(crossings, key=lambda c: c.crossing or 0.0)
        lines.append(f"The fitted logistic curve would reach {worst.max:.0%} on {worst.eval_set} at about dose "
                     f"{_round(worst.crossing or 0.0)}, beyond the tested range: that is extrapolation, not a "
                     "measurement; test larger doses before relying on it.")  # fmt: skip
    elif any(c.kind == "needs" for c in binding):
        lines.append("The target lies beyond the tested range, and the fitted curves do not say where it would be "
                     "met (a monotone fit does not extrapolate, and a curve that does not fall never reaches the "
                     "limit); test larger doses.")  # fmt: skip
    rest = _at_dose(rec, skip=[_label(k) for k in keys])
    if rest:
        lines.append(f"At dose {at} {rest}.")
    return lines


def _few_cells(rec: Recommendation, limits: dict[Key, tuple[Curve, float]]) -> str:
    """The statement for a run with too few cells to estimate run-to-run variation: what it shows and what not."""
    seeds = sorted({s for curve, _ in limits.values() for s in curve.seeds})
    tested = f"{rec.tested[0]}{DASH}{rec.tested[-1]}"
    first = (f"This run has {rec.cells} training cells ({len(rec.tested)} doses x {max(len(seeds), 1)} seed"
             f"{'s' if len(seeds) > 1 else ''}): too few to estimate how much another training run (another seed, mix "
             "or data order) would move the curves, so no dose interval is given; an interval over prompts alone "
             "would claim more certainty than the data holds.")  # fmt: skip
    lines = [first]
    observed = []
    for (metric, eval_set), (curve, limit) in limits.items():
        shares = ", ".join(f"{k.observed:.0%} [{_pct(k.observed_lo)}, {_pct(k.observed_hi)}] at {k.dose}"
                           for k in curve.knots)  # fmt: skip
        observed.append(f"{NAMES.get(metric, metric)} on {eval_set} (limit {limit:.0%}) {curve.direction} with the dose"
                        f": {shares}")  # fmt: skip
    lines.append("Observed, with 95% Wilson intervals over prompts only: " + "; ".join(observed) + ".")
    if rec.dose is not None:
        lines.append(f"The fitted curves first meet every limit at dose {rec.dose} (range tested: {tested}), a point "
                     "estimate without an interval.")  # fmt: skip
    else:
        lines.append(f"No dose in the tested range ({tested}) meets every limit on the fitted curves.")
    lines.append(
        "To measure run-to-run variation, rerun with more seeds (e.g. `seeds=[0,1]`) or more doses: "
        "`safedose sweep CONFIG seeds=[0,1] --dry-run` prints what it would train and its expected time."
    )
    return " ".join(lines)


def _round(x: float) -> str:
    """A dose estimated by extrapolation, to two significant figures."""
    if x < 100:
        return f"{x:.0f}"
    digits = math.floor(math.log10(x)) - 1
    return f"{round(x, -digits):.0f}"
