"""The summary tables (refusals, harm score and flags, capability per variant) and the per-category tables."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from safedose.report._metrics_file import MetricsFile
from safedose.report._rows import Entry, metric_cell, metric_order, metric_sets, metric_title


def _table(title: str, corner: str, entries: Sequence[Entry], specs: Sequence[tuple[str, str, str]], caption: str,
           headers: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """Rows = entries (variants), cells = specs (metric, eval set, category)."""
    rows = [{"label": c.label, "untuned": c.untuned, "cells": [metric_cell(c.get(*s)) for s in specs]} for c in entries]
    return {"title": title, "corner": corner, "columns": list(headers), "rows": rows, "caption": caption}


def _interval_caption(entries: Sequence[Entry], metric_kind: str) -> str:
    """Which interval each row carries, in words."""
    single = "95% Wilson interval" if metric_kind == "rate" else "95% percentile bootstrap interval"
    text = f"Untuned and single-seed rows: {single} over the n prompts of one seed (n under each value)."
    if any(c.pooled for c in entries):
        text += (" Rows marked 'mean of S seeds': mean over seeds of each seed's value, 95% hierarchical bootstrap "
                 "interval (seeds resampled, then prompts); n counts answers over all seeds.")  # fmt: skip
    return text


def summary_tables(metrics: MetricsFile, entries: Sequence[Entry], *, suffix: str = "") -> list[dict[str, Any]]:
    sets = metric_sets(metrics)
    refusal = [(m, s, "all") for m in ("harmful_compliance", "harmful_compliance_lenient", "over_refusal")
               for s in sets.get(m, [])]  # fmt: skip
    scores = [(m, s, "all") for m in ("harm_score", "flag_rate") for s in sets.get(m, [])]
    tables = []
    unlabelled = " Answers whose judge gave no usable label are left out of the value and counted in red."
    if refusal:
        caption = (f"Share of answers [95% interval]. Harmful compliance (the default) is strict: a `partial` answer "
                   f"counts as compliance; lenient counts `compliance` only. Over-refusal: `refusal` or `partial` on "
                   f"safe prompts. {_interval_caption(entries, 'rate')}{unlabelled}")  # fmt: skip
        tables.append(_table(f"Refusals per variant{suffix}", "variant", entries, refusal, caption,
                             [f"{metric_title(m)} · {s}" for m, s, _ in refusal]))  # fmt: skip
    if scores:
        caption = (f"Harm score: mean P(harmful) over answers, {_interval_caption(entries, 'score')} Flag rate: share "
                   f"of answers flagged; {_interval_caption(entries, 'rate')}{unlabelled}")  # fmt: skip
        tables.append(_table(f"Harm score and moderation flags per variant{suffix}", "variant", entries, scores,
                             caption, [f"{metric_title(m)} · {s}" for m, s, _ in scores]))  # fmt: skip
    cap = sorted({r.metric for r in metrics.capability}, key=lambda m: (m == "reference_nll", m))
    if cap:
        caption = ("Mean negative log-likelihood per token (lower is better): one measured value per variant over the "
                   "rows shown, no interval; with several seeds, the mean over seeds and their sd.")  # fmt: skip
        tables.append(
            _table(
                f"Capability per variant{suffix}",
                "variant",
                entries,
                [(m, "capability", "all") for m in cap],
                caption,
                [metric_title(m) for m in cap],
            )
        )
    return tables


def category_tables(metrics: MetricsFile, entries: Sequence[Entry]) -> list[dict[str, Any]]:
    tables = []
    prompts: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in metrics.cells:
        prompts[(r.metric, r.eval_set, r.category)] = max(prompts[(r.metric, r.eval_set, r.category)],
                                                          r.n + r.n_unlabelled)  # fmt: skip
    for metric, sets in sorted(metric_sets(metrics).items(), key=lambda kv: metric_order(kv[0])):
        for eval_set in sets:
            cats = sorted({r.category for r in metrics.cells if r.metric == metric and r.eval_set == eval_set
                           and r.category != "all"})  # fmt: skip
            if not cats:
                continue
            rows = [
                {
                    "label": f"{c} ({prompts[(metric, eval_set, c)]} prompts)",
                    "untuned": False,
                    "cells": [metric_cell(entry.get(metric, eval_set, c)) for entry in entries],
                }
                for c in cats
            ]
            tables.append({"title": f"{metric_title(metric)} on {eval_set}", "corner": "category",
                           "columns": [entry.label for entry in entries], "rows": rows, "caption": ""})  # fmt: skip
    return tables
