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
INTERVAL_METHOD = (
    "inverting the fitted curves' pointwise 95% bands: from the smallest dose where the optimistic band edge meets "
    "every falling limit to the smallest dose where the pessimistic edge does (for a logistic curve this is "
    "Fieller's interval for the crossing dose); one seed covers prompt variation only"
)
NAMES = {
    "harmful_compliance": "harmful compliance (strict)",
    "harmful_compliance_lenient": "harmful compliance (lenient)",
    "over_refusal": "over-refusal",
    "test_loss": "held-out test loss",
    "reference_nll": "reference-answer NLL",
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
    dose: int | None = Field(description="needs: smallest tested-range dose meeting it; caps: largest")
    crossing: float | None = Field(None, description="logistic: dose where the fitted curve crosses the limit")


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


class Recommendation(BaseModel):
    """results/recommendation.json: the recommended dose, its interval, what binds, and the curves behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: Target | None
    met: bool | None = Field(description="a tested dose meets every limit (None: no target)")
    dose: int | None = Field(description="smallest dose meeting every falling limit (the recommendation when met)")
    lo: int | None = Field(description="95% interval of that dose")
    hi: int | None = Field(description="None with lo set: beyond the tested range")
    tested: list[int]
    at_dose: int | None = Field(description="the dose `expected` and `capability` describe")
    binding: list[str] = Field(description="the limits no tested dose meets together with the others")
    beyond_range: bool = Field(description="the target lies beyond the tested doses (extrapolation)")
    constraints: list[Constraint]
    expected: list[Expected]
    capability: list[Expected]
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
    """The recommendation from fitted curves: pure arithmetic on their values and bands over integer doses."""
    binary = [c for c in curves if c.eval_set != "capability"]
    tested = sorted({d for c in binary for d in c.doses})
    empty = Recommendation(target=target, met=None, dose=None, lo=None, hi=None, tested=tested, at_dose=None,
                           binding=[], beyond_range=False, constraints=[], expected=[], capability=[],
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
    masks = {key: _masks(curve, limit, grid) for key, (curve, limit) in limits.items()}
    constraints = [_constraint(curve, limit, masks[key][0], grid) for key, (curve, limit) in limits.items()]
    needs = [k for k, c in zip(limits, constraints, strict=True) if c.kind == "needs"]
    caps = [k for k, c in zip(limits, constraints, strict=True) if c.kind == "caps"]
    point, low, high = (_first(np.all([masks[k][i] for k in needs], axis=0), grid) if needs else int(grid[0])
                        for i in range(3))  # fmt: skip
    if point is not None:
        violated = [k for k in caps if not masks[k][0][point - grid[0]]]
        met, at, binding = not violated, point, violated
    else:
        met, at = False, int(grid[-1])
        binding = [k for k in needs if not masks[k][0][-1]] or needs
    beyond = point is None or (high is None and low is not None)
    by_key = dict(zip(limits, constraints, strict=True))
    expected = _expected(binary, at, {k: limit for k, (_, limit) in limits.items()})
    lines = sorted((c for c in curves if c.eval_set == "capability" and c.model != "none"),
                   key=lambda c: (c.metric != "test_loss", c.metric))  # fmt: skip
    capability = [_capability(c, tested[0], at) for c in lines]
    rec = empty.model_copy(update={
        "met": met, "dose": point, "lo": low, "hi": high, "at_dose": at, "binding": [_label(k) for k in binding],
        "beyond_range": point is None, "constraints": constraints, "expected": expected, "capability": capability,
    })  # fmt: skip
    text = _sentence(rec, [by_key[k] for k in needs], [by_key[k] for k in binding], beyond)
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


def _masks(curve: Curve, limit: float, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over the grid: the fitted value, the optimistic band edge and the pessimistic edge under the limit."""
    fitted, lo, hi = curve_at(curve, grid)
    with np.errstate(invalid="ignore"):
        return fitted <= limit, lo <= limit, hi <= limit


def _first(mask: np.ndarray, grid: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(grid[hits[0]]) if len(hits) else None


def _constraint(curve: Curve, limit: float, mask: np.ndarray, grid: np.ndarray) -> Constraint:
    fitted, _, _ = curve_at(curve, grid[[0, -1]])
    kind: Literal["needs", "caps"] = "caps" if fitted[-1] > fitted[0] else "needs"
    hits = np.flatnonzero(mask)
    dose = None if not len(hits) else int(grid[hits[0]] if kind == "needs" else grid[hits[-1]])
    crossing = None
    if curve.model == "logistic" and curve.coef is not None and curve.coef[1] != 0:
        x = (math.log(limit / (1 - limit)) - curve.coef[0]) / curve.coef[1]
        crossing = math.expm1(x) if x < 700 else math.inf
    return Constraint(metric=curve.metric, eval_set=curve.eval_set, max=limit, kind=kind, model=curve.model,
                      dose=dose, crossing=crossing)  # fmt: skip


def _expected(curves: Sequence[Curve], dose: int, limits: dict[Key, float]) -> list[Expected]:
    out = []
    for c in curves:
        fitted, lo, hi = (float(v[0]) for v in curve_at(c, [dose]))
        out.append(Expected(metric=c.metric, eval_set=c.eval_set, dose=dose, value=_num(fitted), lo=_num(lo),
                            hi=_num(hi), limit=limits.get((c.metric, c.eval_set))))  # fmt: skip
    return out


def _capability(curve: Curve, start: int, dose: int) -> Expected:
    value, lo, hi = change_between(curve, start, dose)
    return Expected(metric=curve.metric, eval_set="capability", dose=dose, value=_num(value), lo=lo, hi=hi,
                    change_from=start)  # fmt: skip


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
    tested_max = rec.tested[-1]
    if rec.lo is None:
        return "95% interval: not within the tested range"
    if rec.hi is None:
        return f"95% interval from {rec.lo} to beyond the largest tested dose, {tested_max}; from inverting the bands"
    return f"95% interval {rec.lo}{DASH}{rec.hi}, from inverting the curves' 95% bands"


def _limit(e: Expected) -> str:
    if e.limit is None:
        return ""
    above = e.value is not None and e.value > e.limit
    return f" (above its {e.limit:.0%} limit)" if above else f" (limit {e.limit:.0%})"


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
    changes = []
    for e in rec.capability:
        if e.value is not None:
            band = f" [{e.lo:+.3f}, {e.hi:+.3f}]" if e.lo is not None and e.hi is not None else " (no interval)"
            changes.append(f"{NAMES.get(e.metric, e.metric)} changes by {e.value:+.3f}{band}")
    if changes:
        start = rec.capability[0].change_from
        phrases.append(f"capability: {_join(changes)} from dose {start} (NLL per token; lower is better)")
    return "; ".join(phrases)


def _names(constraints: Sequence[Constraint]) -> str:
    return _join([f"{NAMES.get(c.metric, c.metric)} on {c.eval_set}" for c in constraints])


def _sentence(rec: Recommendation, needs: Sequence[Constraint], binding: Sequence[Constraint], beyond: bool) -> str:
    if rec.met:
        lines = _met(rec, needs)
    elif rec.dose is not None:
        lines = _capped(rec, needs, binding)
    else:
        lines = _out_of_range(rec, binding, beyond)
    return " ".join(lines)


def _met(rec: Recommendation, needs: Sequence[Constraint]) -> list[str]:
    tested = f"{rec.tested[0]}{DASH}{rec.tested[-1]}"
    if needs:
        first = f"The smallest dose expected to bring {_needs_phrase(needs)} is {rec.dose} ({_interval(rec)})."
        if rec.dose == rec.tested[0] and rec.tested[0] > 0:
            first += " It is the smallest tested dose: smaller doses were not tested."
    else:
        first = f"Every limit of the target is expected to hold at the smallest tested dose, {rec.dose}."
    lines = [first]
    rest = _at_dose(rec)
    if rest:
        lines.append(f"At that dose {rest}.")
    if needs and rec.hi is None:
        lines.append(f"The interval's upper end lies beyond the tested doses ({tested}): the data cannot rule out "
                     "that more is needed.")  # fmt: skip
    return lines


def _capped(rec: Recommendation, needs: Sequence[Constraint], binding: Sequence[Constraint]) -> list[str]:
    tested = f"{rec.tested[0]}{DASH}{rec.tested[-1]}"
    which = NAMES.get(binding[0].metric, binding[0].metric)
    allowed = [c.dose for c in binding if c.dose is not None]
    limit = (f"it stays under its limit only up to dose {min(allowed)}" if allowed
             else "it is over its limit at every tested dose")  # fmt: skip
    if needs:
        first = (f"No tested dose ({tested}) meets the target: the smallest dose expected to bring "
                 f"{_needs_phrase(needs)} is {rec.dose} ({_interval(rec)}), but there {_names(binding)} is over its "
                 f"limit, so {which} binds ({limit}).")  # fmt: skip
    else:
        first = f"No tested dose ({tested}) meets the target: {_names(binding)} binds ({limit})."
    return [first, f"At dose {rec.dose} {_at_dose(rec)}."]


def _out_of_range(rec: Recommendation, binding: Sequence[Constraint], beyond: bool) -> list[str]:
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
    if crossings and len(crossings) == len(binding):
        worst = max(crossings, key=lambda c: c.crossing or 0.0)
        lines.append(f"The fitted logistic curve would reach {worst.max:.0%} on {worst.eval_set} at about dose "
                     f"{_round(worst.crossing or 0.0)}, beyond the tested range: that is extrapolation, not a "
                     "measurement; test larger doses before relying on it.")  # fmt: skip
    elif beyond:
        lines.append("The target lies beyond the tested range, and the fitted curves do not say where it would be "
                     "met (a monotone fit does not extrapolate, and a curve that does not fall never reaches the "
                     "limit); test larger doses.")  # fmt: skip
    rest = _at_dose(rec, skip=[_label(k) for k in keys])
    if rest:
        lines.append(f"At dose {at} {rest}.")
    return lines


def _round(x: float) -> str:
    """A dose estimated by extrapolation, to two significant figures."""
    if x < 100:
        return f"{x:.0f}"
    digits = math.floor(math.log10(x)) - 1
    return f"{round(x, -digits):.0f}"
