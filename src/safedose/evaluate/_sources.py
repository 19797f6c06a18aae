"""Safety sources compared: at each dose above 0, the change from the reference source (the first listed) to each
other source on the same prompts and seeds, per eval set; per seed paired over prompts, and pooled over seeds."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from safedose.evaluate._differences import Pairs, paired_change, paired_values
from safedose.evaluate._metrics import observations, variants
from safedose.run import CellKey, JudgedAnswer
from safedose.stats import Interval

# What the comparison reports: the harm and over-refusal shares that decide a dose.
SOURCE_METRICS = ("harmful_compliance", "over_refusal")


class SourceDifferenceRow(BaseModel):
    """The change of a metric from the reference safety source to another at the same dose, seed and format, on the
    same prompts (`to` minus `from`); pooled rows average the per-seed changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    eval_set: str
    dose: int
    format: str | None
    from_safety: str
    to_safety: str
    seeds: list[int]
    pooled: bool
    value: float | None
    lo: float | None
    hi: float | None
    interval: Interval
    n: int = Field(description="paired answers (prompt x seed) with a usable label on both sides")
    n_unlabelled: int


class CrossSource(BaseModel):
    """metrics.json `sources`: the safety sources compared and their paired differences from the reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sources: list[str] = Field(description="the safety sources' labels; the first is the reference")
    reference: str
    differences: list[SourceDifferenceRow]


def cross_source(answers: Sequence[JudgedAnswer], *, cells: Sequence[Mapping[str, Any]] = ()) -> CrossSource | None:
    """The paired differences between safety sources, or None when the answers come from one source. The sources
    are in the order of the sweep's cells (its config), the first being the reference."""
    info = variants(answers, cells)
    seen = [c.get("safety") for c in cells] + [v.key.safety for v in info.values()]
    labels = [s for s in dict.fromkeys(seen) if s is not None]
    if len(labels) < 2:
        return None
    reference = labels[0]
    values: dict[tuple[CellKey, str, str], dict[str, float | None]] = defaultdict(dict)
    for o in observations(answers):
        key = info[o.variant].key
        if key.tuned and o.metric in SOURCE_METRICS:
            values[(key, o.eval_set, o.metric)][o.prompt_id] = o.value
    rows: list[SourceDifferenceRow] = []
    arms = sorted(
        {(k.arm, s, m) for k, s, m in values if k.safety == reference}, key=lambda a: (a[0].sort_key(), a[1:])
    )
    doses = sorted({k.dose for k, _, _ in values if k.dose})  # dose 0 holds no safety rows: no source differs
    for other in labels[1:]:
        for arm, eval_set, metric in arms:
            for dose in doses:
                per_seed: dict[int, Pairs] = {}
                for (key, s, m), before in sorted(values.items(), key=lambda kv: kv[0][0].sort_key()):
                    if (key.arm, key.dose, s, m) != (arm, dose, eval_set, metric) or key.seed is None:
                        continue
                    after = values.get((replace(key, safety=other), eval_set, metric))
                    if after is not None:
                        per_seed[key.seed] = pairs = paired_values(before, after)
                        rows.append(_row(metric, eval_set, key, reference, other, {key.seed: pairs}))
                if len(per_seed) >= 2:
                    rows.append(_row(metric, eval_set, replace(arm, dose=dose), reference, other, per_seed))
    return CrossSource(sources=labels, reference=reference, differences=rows)


def _row(metric: str, eval_set: str, key: CellKey, reference: str, other: str,
         per_seed: Mapping[int, Pairs]) -> SourceDifferenceRow:  # fmt: skip
    change = paired_change(metric, per_seed)
    est = change.est
    return SourceDifferenceRow(
        metric=metric, eval_set=eval_set, dose=int(key.dose or 0), format=key.format, from_safety=reference,
        to_safety=other, seeds=change.seeds, pooled=len(per_seed) > 1, value=est.value, lo=est.lo, hi=est.hi,
        interval=est.interval, n=change.n, n_unlabelled=change.n_unlabelled,
    )  # fmt: skip
