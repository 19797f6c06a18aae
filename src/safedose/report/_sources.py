"""The safety-sources section: each source's harmful compliance, over-refusal and capability at each dose, the paired
change from the reference source, a figure, and how many rows each source needs to meet the target."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safedose.evaluate import SOURCE_METRICS, MetricRow
from safedose.files import write_figure
from safedose.recommend import BY_SOURCE, Recommendation
from safedose.report._metrics_file import MetricsFile
from safedose.report._recommendation import benchmark_rows
from safedose.report._rows import METHOD_NAMES, metric_cell, metric_title
from safedose.run import report_dir

CAPABILITY = ("benchmark_accuracy", "test_loss")


def safety_names(safety: Any) -> str:
    """The config's safety source(s) for the report's header: names, and a built source's label."""
    entries = safety if isinstance(safety, list) else [safety]
    return ", ".join(e["build"]["label"] + " (built)" if isinstance(e, dict) else str(e) for e in entries)


def _by_source(metrics: MetricsFile) -> dict[tuple[str, str, int, str], MetricRow]:
    """(metric, eval set, dose, source) -> the row of the first seed's cell of the first format, replaced by the mean
    over seeds where several seeds were run (category `all`)."""
    cells = [*metrics.cells, *metrics.capability, *benchmark_rows(metrics)]
    formats = sorted({r.format for r in cells if r.dose is not None and r.format is not None})
    first_seed = min(metrics.seeds, default=None)

    def shown(r: MetricRow) -> bool:
        return r.dose is not None and r.safety is not None and r.category == "all" and r.format == formats[0]

    out: dict[tuple[str, str, int, str], MetricRow] = {}
    for r in [*(c for c in cells if c.seed == first_seed), *metrics.pooled, *metrics.capability_pooled]:
        if formats and shown(r):
            out[(r.metric, r.eval_set, int(r.dose or 0), str(r.safety))] = r
    return out


def sources_section(run: Path, metrics: MetricsFile, rec: Recommendation) -> dict[str, Any] | None:
    """The section, or None when the sweep used one safety source."""
    if metrics.sources is None:
        return None
    sources = metrics.sources.sources
    table = _by_source(metrics)
    doses = sorted({d for (_, _, d, _) in table})
    wanted = [(m, s) for m in (*SOURCE_METRICS, *CAPABILITY) for s in sorted({s for (mm, s, _, _) in table if mm == m})]
    tables = []
    for metric, eval_set in wanted:
        rows = [{"label": f"dose {dose}", "untuned": False,
                 "cells": [metric_cell(table.get((metric, eval_set, dose, source))) for source in sources]}
                for dose in doses]  # fmt: skip
        title = f"{metric_title(metric)}" + ("" if eval_set == "capability" else f" · {eval_set}")
        tables.append({"title": title, "corner": "dose", "columns": sources, "rows": rows, "caption": ""})
    differences = []
    for d in sorted(metrics.sources.differences, key=lambda d: (d.metric, d.eval_set, d.to_safety, d.dose, d.pooled)):
        text = "–" if d.value is None else f"{d.value:+.2f}"
        if d.value is not None and d.lo is not None and d.hi is not None:
            text += f" [{d.lo:+.2f}, {d.hi:+.2f}]"
        differences.append({
            "metric": metric_title(d.metric), "eval_set": d.eval_set, "dose": d.dose,
            "step": f"{d.from_safety} → {d.to_safety}", "text": text,
            "seeds": ("pooled over seeds " if d.pooled else "seed ") + ", ".join(map(str, d.seeds)),
            "interval": METHOD_NAMES.get(d.interval, d.interval),
            "n": f"{d.n}" + (f" ({d.n_unlabelled} left out: a side unlabelled)" if d.n_unlabelled else ""),
        })  # fmt: skip
    answers = [rec, *rec.other_sources]
    return {
        "sources": sources, "tables": tables, "differences": differences,
        "needs": [{"source": r.safety, "text": r.text.split(BY_SOURCE)[0]} for r in answers if r.safety is not None],
        "figure": _figure(run, table, sources, doses),
        "caption": (
            "Each safety source trained at the same doses on the same base rows and seeds, so the source is the only "
            "thing that differs between columns. Values are shares of answers [95% interval] for one cell (Wilson "
            "over prompts) or, with several seeds, the mean over seeds (hierarchical bootstrap over seeds and "
            "prompts); capability: lm-eval accuracy (mean over the tasks' items) and held-out NLL per token (one "
            "value per cell, no interval; lower is better)."
        ),
        "difference_caption": (
            f"Change from {metrics.sources.reference} (the first source listed) to each other source at the same dose "
            "and seed, on the same prompts (later minus earlier): 95% Newcombe paired score interval per seed; pooled "
            "rows: mean over seeds of the per-seed changes, 95% hierarchical bootstrap over seeds, then prompts."
        ),
    }  # fmt: skip


def _figure(run: Path, table: dict[tuple[str, str, int, str], MetricRow], sources: Sequence[str],
            doses: Sequence[int]) -> dict[str, str]:  # fmt: skip
    """report/sources.png: one panel per metric; a line per source and eval set over the doses, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in (*SOURCE_METRICS, *CAPABILITY) if any(k[0] == m for k in table)][:3]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(5.2 * max(len(metrics), 1), 4), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        sets = sorted({k[1] for k in table if k[0] == metric})
        for i, source in enumerate(sources):
            for j, eval_set in enumerate(sets):
                rows = [
                    (d, table[(metric, eval_set, d, source)]) for d in doses if (metric, eval_set, d, source) in table
                ]
                rows = [(d, r) for d, r in rows if r.value is not None]
                if not rows:
                    continue
                xs = [math.log1p(d) for d, _ in rows]
                ys = [r.value or 0.0 for _, r in rows]
                err = [
                    [max(y - (r.lo if r.lo is not None else y), 0.0) for y, (_, r) in zip(ys, rows, strict=True)],
                    [max((r.hi if r.hi is not None else y) - y, 0.0) for y, (_, r) in zip(ys, rows, strict=True)],
                ]
                label = source + ("" if metric in CAPABILITY else f" · {eval_set}")
                ax.errorbar(xs, ys, yerr=err, capsize=3, linestyle=styles[i % len(styles)], marker="o",
                            color=f"C{j}", label=label)  # fmt: skip
        ax.set_xticks([math.log1p(d) for d in doses], [str(d) for d in doses], fontsize=8)
        ax.set_xlabel("safety examples in the mix (dose, log scale)")
        ax.set_title(metric_title(metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    path = report_dir(run) / "sources.png"
    return {"file": path.name, "data": write_figure(fig, path)}
