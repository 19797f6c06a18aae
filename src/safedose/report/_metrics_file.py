"""results/metrics.{json,csv}: cell metrics with CIs, capability, seed summaries, dose-to-dose differences."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safedose.evaluate import cell_metrics, paired_difference, per_prompt, seed_summary
from safedose.files import atomic_open, write_json

RATE_METRICS = ("harmful_compliance", "over_refusal", "harm_score", "flag_rate")
CSV_FIELDS = ("variant", "dose", "seed", "format", "eval_set", "category", "metric", "value", "lo", "hi", "n")


def write_metrics(
    run: Path,
    judged: Sequence[dict[str, Any]],
    capability: Sequence[dict[str, Any]],
    *,
    cells: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    info = {c["variant"]: c for c in cells}
    base = {"dose": None, "seed": None, "format": None}
    records = [{**r, **{k: info.get(r["variant"], base)[k] for k in ("dose", "seed", "format")}}
               for r in cell_metrics(judged)]  # fmt: skip
    tuned = [r for r in records if r["dose"] is not None]
    summary = seed_summary(tuned, ("dose", "format", "eval_set", "category", "metric"))
    metrics: dict[str, Any] = {
        "cells": records,
        "capability": list(capability),
        "seed_summary": summary,
        "capability_seed_summary": seed_summary(
            [c for c in capability if c["dose"] is not None], ("dose", "format", "metric")
        ),
        "differences": _differences(judged, cells),
    }
    metrics["headline"] = headline(metrics)
    write_json(run / "results" / "metrics.json", metrics)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        writer.writerow(r)
    for c in capability:
        writer.writerow({**c, "eval_set": "capability", "category": "all", "lo": "", "hi": ""})
    with atomic_open(run / "results" / "metrics.csv") as f:
        f.write(buffer.getvalue())
    return metrics


def _differences(judged: Sequence[dict[str, Any]], cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired (same prompts) change of each metric from one dose to the next, per seed and format."""
    out = []
    for metric in RATE_METRICS:
        values = per_prompt(judged, metric)
        for seed in sorted({c["seed"] for c in cells}):
            for fmt in sorted({c["format"] for c in cells}):
                chain = sorted((c for c in cells if c["seed"] == seed and c["format"] == fmt), key=lambda c: c["dose"])
                for a, b in itertools.pairwise(chain):
                    for eval_set in sorted({s for (v, s) in values if v == a["variant"]}):
                        va, vb = values.get((a["variant"], eval_set), {}), values.get((b["variant"], eval_set), {})
                        ids = sorted(set(va) & set(vb))
                        if ids:
                            diff = paired_difference([va[i] for i in ids], [vb[i] for i in ids])
                            out.append({"metric": metric, "eval_set": eval_set, "seed": seed, "format": fmt,
                                        "from_dose": a["dose"], "to_dose": b["dose"], **diff})  # fmt: skip
    return out


def mean_over_sets(
    metrics: dict[str, Any], metric: str, dose: int | None, sets: Sequence[str] | None = None
) -> float | None:
    """Mean over eval sets (category `all`) and seeds of `metric` at `dose` (None = the untuned base)."""
    vals = [r["value"] for r in metrics["cells"] if r["metric"] == metric and r["category"] == "all"
            and r["dose"] == dose and (sets is None or r["eval_set"] in sets) and r["value"] is not None]  # fmt: skip
    return sum(vals) / len(vals) if vals else None


def headline(metrics: dict[str, Any]) -> str:
    """One sentence computed from the data: harmful compliance and over-refusal, lowest dose against a middle one."""
    doses = sorted({r["dose"] for r in metrics["cells"] if r["dose"] is not None})
    if len(doses) < 2:
        return "Only one dose was run: no dose-response to report."
    low = doses[0]
    high = min(doses[1:], key=lambda d: abs(d - 300))  # the paper's headline dose, or the closest one run
    hc_low, hc_high = (
        mean_over_sets(metrics, "harmful_compliance", low),
        mean_over_sets(metrics, "harmful_compliance", high),
    )
    safe_sets = sorted({r["eval_set"] for r in metrics["cells"] if r["metric"] == "over_refusal"})
    target = "xstest-v2-safe" if "xstest-v2-safe" in safe_sets else (safe_sets[0] if safe_sets else None)
    text = ""
    if hc_low is not None and hc_high is not None:
        change = f"from {hc_low:.0%} (with {low}) to {hc_high:.0%}"
        verb = "fell" if hc_high < hc_low else "rose" if hc_high > hc_low else "stayed at"
        change = change if verb != "stayed at" else f"{hc_low:.0%}"
        text = f"With {high} safety examples harmful compliance {verb} {change}"
    if target:
        a, b = (
            mean_over_sets(metrics, "over_refusal", low, [target]),
            mean_over_sets(metrics, "over_refusal", high, [target]),
        )
        if a is not None and b is not None:
            text += f"{' while' if text else 'Over'} over-refusal on {target} went from {a:.0%} to {b:.0%}"
    return (text or "No refusal metrics were computed") + "."
