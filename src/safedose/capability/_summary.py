"""Capability across the sweep's variants: paired changes between doses (per task and for the mean over tasks) and
the sentence the headline adds."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from safedose.capability._records import ScoreChange, TaskScore, WinRate
from safedose.run import BASE
from safedose.stats import NO_ESTIMATE, Estimate, newcombe_paired, paired_bootstrap

PRIMARY = "acc"  # the metric every shipped task reports (TruthfulQA MC2: its MC2 score)
N_BOOT = 2000


class CapabilityResults(BaseModel):
    """The sweep's third axis: benchmark scores, paired changes and win-rates, and why a part is missing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: list[str] = Field(default_factory=list)
    scores: list[TaskScore] = Field(default_factory=list, description="per item values left out (see the cache)")
    changes: list[ScoreChange] = Field(default_factory=list)
    headline_changes: list[ScoreChange] = Field(default_factory=list, description="between the headline's doses")
    win_rates: list[WinRate] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def capability_results(scores: Sequence[TaskScore], win_rates: Sequence[WinRate], notes: Sequence[str], *,
                       headline_dose: int) -> CapabilityResults:  # fmt: skip
    """The sweep's capability from its variants' scores (placed at their cells) and win-rates: the paired changes
    from the untuned base and between doses, those between the headline's doses; per item values left out."""
    return CapabilityResults(tasks=list(dict.fromkeys(s.task for s in scores)),
                             scores=[s.model_copy(update={"items": {}}) for s in scores],
                             changes=changes(scores, BASE), headline_changes=headline_changes(scores, headline_dose),
                             win_rates=list(win_rates), notes=list(notes))  # fmt: skip


def _pair(before: dict[str, float], after: dict[str, float]) -> tuple[list[float], list[float]]:
    ids = sorted(set(before) & set(after))
    return [before[i] for i in ids], [after[i] for i in ids]


def task_change(a: TaskScore, b: TaskScore) -> Estimate:
    """b minus a on the items both scored: Newcombe's paired interval for 0/1 items, else a paired bootstrap."""
    x, y = _pair(a.items, b.items)
    if not x:
        return NO_ESTIMATE
    if all(v in (0.0, 1.0) for v in x + y):
        return newcombe_paired(x, y)
    return paired_bootstrap(x, y)


def mean_change(before: Sequence[TaskScore], after: Sequence[TaskScore], *, seed: int = 0) -> Estimate:
    """Change of the mean over tasks (primary metric), with a 95% bootstrap that resamples items within each task."""
    pairs = []
    for a in before:
        b = next((s for s in after if s.task == a.task and s.metric == a.metric), None)
        if b is not None and a.metric == PRIMARY:
            x, y = _pair(a.items, b.items)
            if x:
                pairs.append(np.asarray(y) - np.asarray(x))
    if not pairs:
        return NO_ESTIMATE
    value = float(np.mean([d.mean() for d in pairs]))
    rng = np.random.default_rng(seed)
    draws = np.mean([d[rng.integers(0, len(d), (N_BOOT, len(d)))].mean(axis=1) for d in pairs], axis=0)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return Estimate(value, float(lo), float(hi), "paired-bootstrap-prompts")


def changes(scores: Sequence[TaskScore], base: str) -> list[ScoreChange]:
    """Per seed and arm: untuned → lowest dose and each dose → the next, per task and metric and for the mean."""
    by_variant: dict[str, list[TaskScore]] = defaultdict(list)
    for s in scores:
        by_variant[s.variant].append(s)
    cells = {s.cell: s.variant for s in scores if s.dose is not None}
    out: list[ScoreChange] = []
    for line in sorted({replace(k, dose=None) for k in cells}, key=str):  # one seed of one arm
        doses = sorted(k.dose for k in cells if replace(k, dose=None) == line and k.dose is not None)
        steps: list[tuple[str, int | None, int]] = [(base, None, doses[0])] * (base in by_variant and bool(doses))
        steps += [(cells[replace(line, dose=a)], a, b) for a, b in itertools.pairwise(doses)]
        for from_variant, from_dose, to_dose in steps:
            to_variant = cells[replace(line, dose=to_dose)]
            before, after = by_variant[from_variant], by_variant[to_variant]
            for a in before:
                b = next((s for s in after if (s.task, s.metric) == (a.task, a.metric)), None)
                if b is not None:
                    out.append(_change(a.task, a.metric, from_variant, to_variant, from_dose, to_dose,
                                       task_change(a, b), len(_pair(a.items, b.items)[0])))  # fmt: skip
            est = mean_change(before, after)
            n = sum(len(s.items) for s in before if s.metric == PRIMARY)
            out.append(_change("mean", PRIMARY, from_variant, to_variant, from_dose, to_dose, est, n))
    return out


def _change(task: str, metric: str, from_variant: str, to_variant: str, from_dose: int | None, to_dose: int | None,
            est: Estimate, n: int) -> ScoreChange:  # fmt: skip
    return ScoreChange(task=task, metric=metric, from_variant=from_variant, to_variant=to_variant, from_dose=from_dose,
                       to_dose=to_dose, value=est.value, lo=est.lo, hi=est.hi, interval=est.interval, n=n)  # fmt: skip


def mean_accuracy(scores: Sequence[TaskScore], variants: Sequence[str]) -> float | None:
    """Mean over `variants` (seeds) of each variant's mean over tasks of the primary metric."""
    means = []
    for v in variants:
        values = [s.value for s in scores if s.variant == v and s.metric == PRIMARY and s.value is not None]
        if values:
            means.append(float(np.mean(values)))
    return float(np.mean(means)) if means else None


def headline_doses(doses: Sequence[int], headline_dose: int) -> tuple[int, int] | None:
    """The two doses the headline compares: the lowest, and the other dose closest to `headline_dose`."""
    doses = sorted(set(doses))
    if len(doses) < 2:
        return None
    return doses[0], min(doses[1:], key=lambda d: abs(d - headline_dose))


def headline_changes(scores: Sequence[TaskScore], headline_dose: int) -> list[ScoreChange]:
    """Per seed and arm: the change of the mean over tasks between the headline's two doses (needs item values)."""
    pair = headline_doses([s.dose for s in scores if s.dose is not None], headline_dose)
    if pair is None:
        return []
    low, high = pair
    out = []
    for line in sorted({replace(s.cell, dose=None) for s in scores if s.dose is not None}, key=str):
        before = [s for s in scores if s.cell == replace(line, dose=low)]
        after = [s for s in scores if s.cell == replace(line, dose=high)]
        if before and after:
            n = sum(len(s.items) for s in before if s.metric == PRIMARY)
            out.append(_change("mean", PRIMARY, before[0].variant, after[0].variant, low, high,
                               mean_change(before, after), n))  # fmt: skip
    return out


def clause(results: CapabilityResults, low: int, high: int) -> str:
    """`mean benchmark accuracy (K tasks) moved from A at dose L to B at dose H (change [lo, hi])`, or ''."""
    scores = results.scores
    at = {d: sorted({s.variant for s in scores if s.dose == d}) for d in (low, high)}
    a, b = mean_accuracy(scores, at[low]), mean_accuracy(scores, at[high])
    if a is None or b is None:
        return ""
    found = [c for c in results.headline_changes if (c.from_dose, c.to_dose) == (low, high) and c.value is not None]
    interval = ""
    if len(found) == 1 and None not in (found[0].value, found[0].lo, found[0].hi):
        value, lo, hi = (100 * float(x or 0.0) for x in (found[0].value, found[0].lo, found[0].hi))
        interval = f" (change {value:+.1f} points [{lo:+.1f}, {hi:+.1f}], paired over items)"
    tasks = len({s.task for s in scores if s.metric == PRIMARY})
    return f"mean benchmark accuracy ({tasks} tasks) moved from {a:.1%} at dose {low} to {b:.1%} at dose {high}" + (
        interval
    )


def with_clause(headline: str, results: CapabilityResults, doses: Sequence[int], headline_dose: int) -> str:
    """The headline sentence with the capability change appended (same two doses as the sentence compares)."""
    pair = headline_doses(doses, headline_dose)
    text = clause(results, *pair) if pair else ""
    if not text:
        return headline
    joint = ", and " if ", while " in headline else ", while "
    return f"{headline.rstrip('.')}{joint}{text}."


def csv_rows(results: CapabilityResults) -> list[dict[str, object]]:
    """Benchmark scores and win-rates as rows of metrics.csv (its long format: eval set = task)."""
    rows: list[dict[str, object]] = []
    for s in results.scores:
        rows.append({"variant": s.variant, **s.cell.as_dict(), "eval_set": s.task,
                     "category": "all", "metric": s.metric, "value": s.value, "lo": s.lo, "hi": s.hi,
                     "interval": s.interval, "n": s.n, "n_unlabelled": 0})  # fmt: skip
    for w in results.win_rates:
        both = (("win_rate", w.win_rate, w.lo, w.hi, "wilson"),
                ("lc_win_rate", w.lc_win_rate, w.lc_lo, w.lc_hi, "delta-method"))  # fmt: skip
        for metric, value, lo, hi, interval in both:
            rows.append({"variant": w.variant, **w.cell.as_dict(), "eval_set": "alpaca-eval", "category": "all",
                         "metric": metric, "value": value, "lo": lo, "hi": hi,
                         "interval": interval if value is not None else "none", "n": w.n,
                         "n_unlabelled": w.parse_errors})  # fmt: skip
    return rows
