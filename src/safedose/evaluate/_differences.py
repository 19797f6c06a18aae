"""Changes between adjacent doses on the same prompts: paired intervals per seed, hierarchical ones pooled over
seeds, and the untuned base to the lowest dose."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from safedose.evaluate._metrics import (
    BINARY_METRICS,
    CONTINUOUS_METRICS,
    Variant,
    observations,
    pooled_name,
    seeds_by_prompts,
    variants,
)
from safedose.run import BASE, CellKey, JudgedAnswer, safety_field
from safedose.stats import Estimate, Interval, hierarchical_bootstrap, newcombe_paired, newcombe_table, paired_bootstrap


class DifferenceRow(BaseModel):
    """Change of a metric from one variant to the next dose on the same prompts (`to` minus `from`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    eval_set: str
    category: str = "all"
    format: str | None
    safety: str | None = safety_field()
    from_variant: str
    to_variant: str
    from_dose: int | None
    to_dose: int
    seeds: list[int]
    pooled: bool = Field(description="mean over seeds of the per-seed changes")
    value: float | None
    lo: float | None
    hi: float | None
    interval: Interval
    n: int = Field(description="paired answers (prompt x seed) with a usable label on both sides")
    n_unlabelled: int = Field(description="prompt x seed pairs left out because a side had no usable label")


Pairs = dict[str, tuple[float, float] | None]  # prompt id -> (before, after), None where a side is unlabelled


def _prompt_values(answers: Sequence[JudgedAnswer]) -> dict[tuple[str, str, str], dict[str, float | None]]:
    """(variant, eval set, metric) -> {prompt id: value or None}."""
    out: dict[tuple[str, str, str], dict[str, float | None]] = defaultdict(dict)
    for o in observations(answers):
        out[(o.variant, o.eval_set, o.metric)][o.prompt_id] = o.value
    return out


def _steps(info: Mapping[str, Variant], has_base: bool) -> list[tuple[CellKey, int | None, int]]:
    """(arm, from dose or None for the untuned base, to dose): adjacent doses, and base -> lowest dose."""
    steps: list[tuple[CellKey, int | None, int]] = []
    for arm in sorted({v.key.arm for v in info.values() if v.dose is not None}, key=CellKey.sort_key):
        doses = sorted({v.dose for v in info.values() if v.dose is not None and v.key.arm == arm})
        if has_base and doses:
            steps.append((arm, None, doses[0]))
        steps += [(arm, a, b) for a, b in itertools.pairwise(doses)]
    return steps


def dose_differences(
    answers: Sequence[JudgedAnswer], *, cells: Sequence[Mapping[str, Any]] = ()
) -> list[DifferenceRow]:
    """Per seed (paired over prompts) and, with two or more seeds, pooled (hierarchical) changes between adjacent
    doses, plus untuned base (tuning template) -> lowest dose, for category `all` of every eval set."""
    info = variants(answers, cells)
    values = _prompt_values(answers)
    cell_of = {v.key: v.name for v in info.values() if v.dose is not None}
    seeds = sorted({v.seed for v in info.values() if v.seed is not None})
    rows: list[DifferenceRow] = []
    for arm, from_dose, to_dose in _steps(info, BASE in info):
        for metric, eval_set in sorted({(m, s) for (_, s, m) in values}):
            per_seed: dict[int, Pairs] = {}
            for seed in seeds:
                from_name = BASE if from_dose is None else cell_of.get(replace(arm, dose=from_dose, seed=seed), "")
                to_name = cell_of.get(replace(arm, dose=to_dose, seed=seed), "")
                before, after = values.get((from_name, eval_set, metric)), values.get((to_name, eval_set, metric))
                if before is None or after is None:
                    continue
                pairs = paired_values(before, after)
                change = paired_change(metric, {seed: pairs})
                est = change.est
                rows.append(DifferenceRow(
                    metric=metric, eval_set=eval_set, **arm.arm_dict(), from_variant=from_name, to_variant=to_name,
                    from_dose=from_dose, to_dose=to_dose, seeds=[seed], pooled=False, value=est.value, lo=est.lo,
                    hi=est.hi, interval=est.interval, n=change.n, n_unlabelled=change.n_unlabelled,
                ))  # fmt: skip
                per_seed[seed] = pairs
            if len(per_seed) >= 2:
                rows.append(_pooled_difference(metric, eval_set, arm, from_dose, to_dose, per_seed))
    return rows


def paired_values(
    before: Mapping[str, float | None], after: Mapping[str, float | None]
) -> dict[str, tuple[float, float] | None]:
    """Per prompt (either side's ids): (before, after), None where a side has no usable value."""
    out = {}
    for i in sorted(set(before) | set(after)):
        x, y = before.get(i), after.get(i)
        out[i] = None if x is None or y is None else (x, y)
    return out


def _table(pairs: Pairs) -> np.ndarray | None:
    """Shares of the paired table (both 1, only after 1, only before 1, both 0) over the usable pairs."""
    usable = [p for p in pairs.values() if p is not None]
    if not usable:
        return None
    rows = [[x == 1 and y == 1, x == 0 and y == 1, x == 1 and y == 0, x == 0 and y == 0] for x, y in usable]
    shares: np.ndarray = np.mean(np.asarray(rows, dtype=float), axis=0)
    return shares


def at_least_newcombe(est: Estimate, per_seed: Mapping[int, Pairs]) -> Estimate:
    """Widen a pooled change of a share to at least Newcombe's interval of the seed-averaged paired table, scaled to
    the distinct prompts."""
    prompts = {i for pairs in per_seed.values() for i, p in pairs.items() if p is not None}
    tables = [t for pairs in per_seed.values() if (t := _table(pairs)) is not None]
    if est.value is None or est.lo is None or est.hi is None or not tables:
        return est
    a, b, c, d = (float(v) for v in np.mean(tables, axis=0) * len(prompts))
    floor = newcombe_table(a, b, c, d)
    if floor.lo is None or floor.hi is None:
        return est
    return Estimate(est.value, min(est.lo, floor.lo), max(est.hi, floor.hi), est.interval)


@dataclass(frozen=True)
class PairedChange:
    """A change measured on the same prompts: one seed's, or the mean over seeds of the per-seed changes."""

    est: Estimate
    seeds: list[int]
    n: int  # usable pairs (prompt x seed)
    n_unlabelled: int  # pairs left out because a side had no usable value


def paired_change(metric: str, per_seed: Mapping[int, Pairs]) -> PairedChange:
    """One seed: Newcombe's paired interval (shares) or a paired bootstrap (scores) over prompts. Several seeds: the
    mean over seeds of the per-seed changes with a hierarchical bootstrap (seeds, then prompts), widened for shares to
    at least Newcombe's interval of the seed-averaged table."""
    total = sum(len(pairs) for pairs in per_seed.values())
    if len(per_seed) == 1:
        ((seed, pairs),) = per_seed.items()
        usable = [p for p in pairs.values() if p is not None]
        xs, ys = [x for x, _ in usable], [y for _, y in usable]
        est = paired_bootstrap(xs, ys) if metric in CONTINUOUS_METRICS else newcombe_paired(xs, ys)
        return PairedChange(est, [seed], len(usable), total - len(usable))
    diffs = {s: {i: None if p is None else p[1] - p[0] for i, p in pairs.items()} for s, pairs in per_seed.items()}
    seeds, matrix = seeds_by_prompts(diffs)
    est = hierarchical_bootstrap(matrix)
    if metric in BINARY_METRICS:
        est = at_least_newcombe(est, per_seed)
    n = int((~np.isnan(matrix)).sum())
    return PairedChange(est, seeds, n, total - n)


def _pooled_difference(metric: str, eval_set: str, arm: CellKey, from_dose: int | None, to_dose: int,
                       per_seed: Mapping[int, Pairs]) -> DifferenceRow:  # fmt: skip
    change = paired_change(metric, per_seed)
    est = change.est
    from_variant = BASE if from_dose is None else pooled_name(from_dose, arm)
    return DifferenceRow(
        metric=metric, eval_set=eval_set, **arm.arm_dict(), from_variant=from_variant,
        to_variant=pooled_name(to_dose, arm), from_dose=from_dose, to_dose=to_dose, seeds=change.seeds, pooled=True,
        value=est.value, lo=est.lo, hi=est.hi, interval=est.interval, n=change.n, n_unlabelled=change.n_unlabelled,
    )  # fmt: skip
