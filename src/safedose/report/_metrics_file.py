"""results/metrics.{json,csv}: metric rows with their intervals, pooled seeds, dose differences, dose trends,
capability, judges' agreement with each other and the headline sentence."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safedose.capability import CapabilityResults, csv_rows, with_clause
from safedose.errors import SafedoseError
from safedose.evaluate import (
    AGREEMENT_DEFINITION,
    AGREEMENT_LABELS,
    DEFAULT_HARMFUL_COMPLIANCE,
    DEFINITIONS,
    INTERVALS,
    TREND_MODEL,
    AgreementRow,
    CrossFormat,
    CrossSource,
    DifferenceRow,
    MetricRow,
    PooledRow,
    TrendRow,
    cell_metrics,
    cross_format,
    cross_source,
    dose_differences,
    dose_trend,
    judge_agreement,
    pooled_metrics,
    pooled_name,
)
from safedose.files import atomic_open, write_json
from safedose.run import AXES, BASE, CellKey, JudgedAnswer, metrics_path, read_metrics, results_dir

CSV_FIELDS = tuple(MetricRow.model_fields)
HEADLINE_DOSE = 300  # the paper's headline dose; the closest dose run stands in for it


class MetricsFile(BaseModel):
    """Everything in results/metrics.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    definitions: dict[str, str]
    default_harmful_compliance: str
    intervals: dict[str, str]
    trend_model: str
    seeds: list[int]
    seed_note: str
    cells: list[MetricRow]
    pooled: list[PooledRow]
    differences: list[DifferenceRow]
    trend: list[TrendRow]
    capability: list[MetricRow]
    capability_pooled: list[PooledRow]
    headline: str
    benchmarks: CapabilityResults | None = None
    agreement: list[AgreementRow] = Field(default_factory=list, description="judges against each other, per variant")
    agreement_labels: dict[str, dict[str, dict[str, bool]]] = Field(
        default_factory=dict, description="per question and judge role: label -> yes / no"
    )
    cross_format: CrossFormat | None = Field(
        None, description="harmful compliance on instruction- and question-form harm sets per training format and dose"
    )
    sources: CrossSource | None = Field(
        None, exclude_if=lambda v: v is None, description="safety sources compared: paired differences at each dose"
    )


def capability_rows(capability: Sequence[Mapping[str, Any]]) -> list[MetricRow]:
    """The sweep's capability values as metric rows (eval set `capability`; one measured value, no interval)."""
    return [MetricRow(variant=c["variant"], **{axis: c.get(axis) for axis in AXES}, eval_set="capability",
                      category="all", metric=c["metric"], value=c.get("value"), lo=None, hi=None, interval="none",
                      n=int(c.get("n") or 0), n_unlabelled=0)
            for c in capability]  # fmt: skip


def pooled_capability(rows: Sequence[MetricRow]) -> list[PooledRow]:
    """Mean and sd over seeds of each tuned capability value measured with two or more seeds."""
    groups: dict[tuple[int, CellKey, str], list[MetricRow]] = defaultdict(list)
    for r in rows:
        if r.dose is not None and r.seed is not None and r.value is not None:
            groups[(r.dose, r.cell.arm, r.metric)].append(r)
    out = []
    for (dose, arm, metric), group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if len(group) < 2:
            continue
        values = [r.value for r in group if r.value is not None]
        out.append(PooledRow(
            variant=pooled_name(dose, arm), dose=dose, seed=None, **arm.arm_dict(), eval_set="capability",
            category="all", metric=metric, value=float(np.mean(values)), lo=None, hi=None, interval="none",
            n=sum(r.n for r in group), n_unlabelled=0, seeds=sorted(r.seed for r in group if r.seed is not None),
            seed_sd=float(np.std(values, ddof=1)), n_prompts=max(r.n for r in group),
        ))  # fmt: skip
    return out


def seed_note(seeds: Sequence[int]) -> str:
    """What the intervals cover, given the seeds that were run."""
    across = ("The dose-trend test, the fitted curves and the recommended dose take the training cell (dose x seed) "
              "as the unit, so their intervals include run-to-run variation where there are enough cells.")  # fmt: skip
    if len(seeds) <= 1:
        which = f" (seed {seeds[0]})" if seeds else ""
        return (f"One seed{which} was run: each dose's rate and each dose-to-dose change has an interval over prompts "
                "only; seed variation (another mix, another LoRA initialisation and data order) is not in them. "
                f"{across}")  # fmt: skip
    return (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): pooled per-dose estimates and pooled dose "
            "differences resample seeds and prompts (hierarchical bootstrap); per-cell intervals cover the prompts "
            f"of one seed only. {across}")  # fmt: skip


def compute_metrics(
    judged: Sequence[JudgedAnswer],
    capability: Sequence[Mapping[str, Any]],
    *,
    cells: Sequence[Mapping[str, Any]],
    benchmarks: CapabilityResults | None = None,
) -> MetricsFile:
    """Every number of metrics.json, from the judged answers, the capability values and the sweep's cells."""
    rows = cell_metrics(judged, cells=cells)
    seeds = sorted(
        {r.seed for r in rows if r.seed is not None} | {c["seed"] for c in cells if c.get("seed") is not None}
    )
    capability_ = capability_rows(capability)
    return MetricsFile(
        definitions={**DEFINITIONS, "agreement": AGREEMENT_DEFINITION},
        default_harmful_compliance=DEFAULT_HARMFUL_COMPLIANCE, intervals=INTERVALS, trend_model=TREND_MODEL,
        seeds=seeds, seed_note=seed_note(seeds), cells=rows,
        pooled=pooled_metrics(judged, cells=cells), differences=dose_differences(judged, cells=cells),
        trend=dose_trend(judged, cells=cells), capability=capability_,
        capability_pooled=pooled_capability(capability_), headline=_headline(rows, benchmarks), benchmarks=benchmarks,
        agreement=judge_agreement(judged, cells=cells), agreement_labels=AGREEMENT_LABELS,
        cross_format=cross_format(judged, cells=cells), sources=cross_source(judged, cells=cells),
    )  # fmt: skip


def _headline(rows: Sequence[MetricRow], benchmarks: CapabilityResults | None) -> str:
    if benchmarks is None:
        return headline(rows)
    doses = sorted({r.dose for r in rows if r.dose is not None})
    return with_clause(headline(rows), benchmarks, doses, HEADLINE_DOSE)


def write_metrics(
    run: Path,
    judged: Sequence[JudgedAnswer],
    capability: Sequence[Mapping[str, Any]],
    *,
    cells: Sequence[Mapping[str, Any]],
    benchmarks: CapabilityResults | None = None,
) -> dict[str, Any]:
    """Write results/metrics.json and results/metrics.csv (every metric row) and return the JSON content."""
    metrics = compute_metrics(judged, capability, cells=cells, benchmarks=benchmarks)
    data = metrics.model_dump(mode="json")
    write_json(metrics_path(run), data)
    buffer = io.StringIO()
    rows = [*metrics.cells, *metrics.pooled, *metrics.capability, *metrics.capability_pooled]
    compared = any(r.safety is not None for r in rows)  # the safety column only when sources are compared
    fields = [f for f in CSV_FIELDS if f != "safety" or compared]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.model_dump(mode="json"))
    for extra in csv_rows(benchmarks) if benchmarks else []:
        writer.writerow(extra)
    with atomic_open(results_dir(run) / "metrics.csv") as f:
        f.write(buffer.getvalue())
    return data


def load_metrics(run: Path) -> MetricsFile:
    """results/metrics.json as typed records; one written by an older safedose is a one-line error."""
    try:
        return MetricsFile.model_validate(read_metrics(run))
    except ValidationError as e:
        raise SafedoseError(
            f"{metrics_path(run)}: not written by this safedose ({str(e).splitlines()[0]}); rerun `safedose sweep`"
        ) from None


def mean_over_sets(
    rows: Sequence[MetricRow], metric: str, dose: int | None, sets: Sequence[str] | None = None
) -> tuple[float | None, list[str]]:
    """Mean over eval sets (category `all`) of the mean over seeds of `metric` at `dose` (None: the untuned model
    with the tuning template), and the sets it averages."""
    by_set: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        wanted = r.variant == BASE if dose is None else r.dose == dose
        if (
            wanted
            and r.metric == metric
            and r.category == "all"
            and r.value is not None
            and (sets is None or r.eval_set in sets)
        ):
            by_set[r.eval_set].append(r.value)
    if not by_set:
        return None, []
    return float(np.mean([np.mean(v) for v in by_set.values()])), sorted(by_set)


def _change(before: float, after: float) -> str:
    if round(after, 2) == round(before, 2):
        return f"stayed at {before:.0%}"
    return f"{'fell' if after < before else 'rose'} from {before:.0%}"


def headline(rows: Sequence[MetricRow]) -> str:
    """One sentence from the data: harmful compliance (strict, mean over unsafe sets) and over-refusal on the safe set
    where it is highest at the larger dose, lowest dose against the dose closest to the paper's 300, with the untuned
    model (tuning template) for reference."""
    doses = sorted({r.dose for r in rows if r.dose is not None})
    if len(doses) < 2:
        return "Only one dose was run: no dose-response to report."
    low = doses[0]
    high = min(doses[1:], key=lambda d: abs(d - HEADLINE_DOSE))
    text = ""
    (hc_low, sets), (hc_high, _) = (mean_over_sets(rows, DEFAULT_HARMFUL_COMPLIANCE, d) for d in (low, high))
    if hc_low is not None and hc_high is not None:
        change = _change(hc_low, hc_high)
        to = "" if change.startswith("stayed") else f" at dose {low} to {hc_high:.0%}"
        where = f"mean over {len(sets)} unsafe sets" if len(sets) > 1 else f"on {sets[0]}"
        untuned, _ = mean_over_sets(rows, DEFAULT_HARMFUL_COMPLIANCE, None, sets)
        reference = f"; untuned model with the tuning template: {untuned:.0%}" if untuned is not None else ""
        text = (f"With {high} safety examples, harmful compliance {change}{to} (strict: a partial answer counts as "
                f"compliance; {where}{reference})")  # fmt: skip
    safe_sets = sorted({r.eval_set for r in rows if r.metric == "over_refusal"})
    changes = {}
    for eval_set in safe_sets:
        (a, _), (b, _) = (mean_over_sets(rows, "over_refusal", d, [eval_set]) for d in (low, high))
        if a is not None and b is not None:
            changes[eval_set] = (a, b)
    if changes:
        worst = max(changes, key=lambda k: (changes[k][1], changes[k][1] - changes[k][0], k))
        a, b = changes[worst]
        change = _change(a, b)
        to = "" if change.startswith("stayed") else f" to {b:.0%}"
        which = f"{worst}, the highest of {len(changes)} safe sets at dose {high}," if len(changes) > 1 else worst
        lead = ", while over-refusal" if text else f"With {high} safety examples, over-refusal"
        text += f"{lead} on {which} {change}{to}"
    return (text or "No refusal metrics were computed") + "."
