"""The report's rows: one entry per variant (untuned, dose, dose x seed), and a metric's cell in words:
value [interval] and the counts behind it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from safedose.evaluate import METRICS, MetricRow
from safedose.report._metrics_file import MetricsFile
from safedose.run import BASE, BASE_CHAT, CellKey

TITLES = {
    "harmful_compliance": "harmful compliance (strict, default)",
    "harmful_compliance_lenient": "harmful compliance (lenient)",
    "over_refusal": "over-refusal",
    "harm_score": "harm score",
    "flag_rate": "flag rate",
    "test_loss": "held-out base-data test loss",
    "val_loss": "held-out base-data loss",
    "reference_nll": "AlpacaEval reference NLL",
}
METHOD_NAMES = {
    "wilson": "95% Wilson interval",
    "bootstrap-prompts": "95% percentile bootstrap over prompts",
    "newcombe-paired": "95% Newcombe paired score interval",
    "paired-bootstrap-prompts": "95% paired bootstrap over prompts",
    "hierarchical-bootstrap": "95% hierarchical bootstrap over seeds, then prompts",
    "none": "no interval",
}


@dataclass
class Entry:
    """One row (untuned, dose or dose x seed) of the report's tables and one x position of its plots."""

    label: str
    tick: str
    dose: int | None
    untuned: bool
    pooled: bool
    rows: dict[tuple[str, str, str], MetricRow] = field(default_factory=dict)

    def get(self, metric: str, eval_set: str, category: str = "all") -> MetricRow | None:
        return self.rows.get((metric, eval_set, category))


def metric_title(metric: str) -> str:
    return TITLES.get(metric, metric.replace("_", " "))


def _index(rows: Sequence[MetricRow]) -> dict[tuple[str, str, str], MetricRow]:
    return {(r.metric, r.eval_set, r.category): r for r in rows}


def variant_entries(metrics: MetricsFile, base_template: str, *, per_seed: bool = False) -> list[Entry]:
    """Untuned rows first (own chat template, then tuning template), then each dose: pooled over seeds where two or
    more seeds were run (unless `per_seed`), else the single cell."""
    every = [*metrics.cells, *metrics.capability]
    entries = []
    labels = {BASE_CHAT: ("untuned · own chat template", "untuned\n(chat)"),
              BASE: (f"untuned · {base_template} template", f"untuned\n({base_template})")}  # fmt: skip
    for variant in (BASE_CHAT, BASE):
        rows = [r for r in every if r.variant == variant]
        if rows:
            entries.append(Entry(*labels[variant], dose=None, untuned=True, pooled=False, rows=_index(rows)))
    tuned = [r for r in every if r.dose is not None]
    arms = sorted({r.cell.arm for r in tuned}, key=CellKey.sort_key)  # training format x safety source
    pooled = [*metrics.pooled, *metrics.capability_pooled]
    for arm in arms:
        suffix = f" · {arm.arm_label}" if len(arms) > 1 else ""
        for dose in sorted({r.dose for r in tuned if r.cell.arm == arm and r.dose is not None}):
            here = [r for r in tuned if r.dose == dose and r.cell.arm == arm]
            seeds = sorted({r.seed for r in here if r.seed is not None})
            tick = f"{dose}" + (f"\n{arm.arm_label}" if suffix else "")
            if len(seeds) >= 2 and not per_seed:
                rows = [r for r in pooled if r.dose == dose and r.cell.arm == arm]
                label = f"dose {dose}{suffix} (mean of {len(seeds)} seeds)"
                entries.append(Entry(label, tick, dose, untuned=False, pooled=True, rows=_index(rows)))
                continue
            for seed in seeds:
                rows = [r for r in here if r.seed == seed]
                label = f"dose {dose}{suffix}" + (f" · seed {seed}" if per_seed and len(seeds) > 1 else "")
                entries.append(Entry(label, tick, dose, untuned=False, pooled=False, rows=_index(rows)))
    return entries


def _number(x: float, metric: str) -> str:
    return f"{x:.3f}" if metric in ("test_loss", "val_loss", "reference_nll") else f"{x:.2f}"


def metric_cell(row: MetricRow | None) -> dict[str, str]:
    """Value [interval], the counts behind it, and any unlabelled answers."""
    if row is None:
        return {"text": "–", "sub": "", "warn": ""}
    warn = f"{row.n_unlabelled} unlabelled (left out)" if row.n_unlabelled else ""
    if row.value is None:
        return {"text": "–", "sub": "no usable label", "warn": warn}
    text = _number(row.value, row.metric)
    if row.lo is not None and row.hi is not None:
        text += f" [{_number(row.lo, row.metric)}, {_number(row.hi, row.metric)}]"
    seeds, sd, prompts = getattr(row, "seeds", None), getattr(row, "seed_sd", None), getattr(row, "n_prompts", None)
    if row.eval_set == "capability":
        sub = f"{row.n} rows" if not seeds else f"sd over {len(seeds)} seeds {sd:.3f}"
    elif seeds:
        sub = f"n={row.n}: {prompts} prompts × {len(seeds)} seeds" + (f"; seed sd {sd:.2f}" if sd is not None else "")
    else:
        sub = f"n={row.n}"
    return {"text": text, "sub": sub, "warn": warn}


def metric_sets(metrics: MetricsFile) -> dict[str, list[str]]:
    sets: dict[str, set[str]] = defaultdict(set)
    for r in metrics.cells:
        sets[r.metric].add(r.eval_set)
    return {m: sorted(s) for m, s in sets.items()}


def metric_order(metric: str) -> int:
    return METRICS.index(metric) if metric in METRICS else len(METRICS)
