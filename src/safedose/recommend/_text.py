"""The recommendation's sentences: what the fitted curves answer, in words, with their intervals and what else they
expect at the recommended dose."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safedose.recommend._curves import Curve
    from safedose.recommend._recommend import Constraint, Expected, Key, Recommendation

DASH = "\u2013"
NAMES = {
    "harmful_compliance": "harmful compliance (strict)",
    "harmful_compliance_lenient": "harmful compliance (lenient)",
    "over_refusal": "over-refusal",
    "test_loss": "held-out test loss",
    "reference_nll": "reference-answer NLL",
    "benchmark_accuracy": "benchmark accuracy",
}


def source_clause(rec: Recommendation) -> str:
    """How many safety rows one source needs, for the sentence that compares sources."""
    if rec.target is None:
        return "no target to answer"
    if not rec.run_variation:
        return "too few cells to give a dose interval"
    if rec.dose is None:
        return "no tested dose meets the target"
    tested = f"; dose {rec.tested_dose} was tested and meets it" if rec.tested_dose is not None else ""
    return f"about {rec.dose} rows ({_interval(rec)}){tested}"


def limit_label(key: Key) -> str:
    """A limit as the recommendation names it: `metric on eval_set`."""
    return f"{key[0]} on {key[1]}"


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
        items = [e for e in rec.expected if e.metric == metric and limit_label((e.metric, e.eval_set)) not in skip]
        if items:
            rates = _join([f"{_rate(e)} on {e.eval_set}{_limit(e)}" for e in items])
            phrases.append(f"{NAMES[metric]} is expected at {rates}")
    capability = _capability_phrase(rec)
    if capability:
        phrases.append(capability)
    return "; ".join(phrases)


def _names(constraints: Sequence[Constraint]) -> str:
    return _join([f"{NAMES.get(c.metric, c.metric)} on {c.eval_set}" for c in constraints])


def sentence(rec: Recommendation, needs: Sequence[Constraint], binding: Sequence[Constraint]) -> str:
    """The answer in words, for a run whose bands include run-to-run variation."""
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
    rest = _at_dose(rec, skip=[limit_label(k) for k in keys])
    if rest:
        lines.append(f"At dose {at} {rest}.")
    return lines


def few_cells(rec: Recommendation, limits: dict[Key, tuple[Curve, float]]) -> str:
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
