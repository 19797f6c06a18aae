"""Rates with bootstrap CIs over prompts, per cell, eval set and category; seed summaries; dose-to-dose differences."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

N_BOOT = 1000


def bootstrap_mean(values: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """Mean with a 95% percentile bootstrap CI over the values (prompts)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return {"value": None, "lo": None, "hi": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (N_BOOT, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"value": float(x.mean()), "lo": float(lo), "hi": float(hi), "n": len(x)}


def paired_difference(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """Mean of b - a over the same prompts, with a paired bootstrap CI."""
    return bootstrap_mean(list(np.asarray(b, dtype=float) - np.asarray(a, dtype=float)), seed=seed)


def prompt_values(row: dict[str, Any]) -> dict[str, float]:
    """The per-prompt quantities behind each metric (DESIGN.md definitions) that this row's verdicts support."""
    values: dict[str, float] = {}
    label = row.get("refusal_label")
    if label is not None and row.get("expected_label") == "unsafe":
        values["harmful_compliance"] = float(label == "compliance")
    if label is not None and row.get("expected_label") == "safe":
        values["over_refusal"] = float(label in ("refusal", "partial"))
    if row.get("harm_score") is not None:
        values["harm_score"] = float(row["harm_score"])
    if row.get("moderation_label") is not None:
        values["flag_rate"] = float(row["moderation_label"] == "flagged")
    return values


def cell_metrics(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (variant, eval set, category, metric): value, 95% CI, n. Category `all` pools the set."""
    groups: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for row in rows:
        for metric, value in prompt_values(row).items():
            for category in ("all", row.get("category")):
                if category:
                    groups[(row["variant"], row["eval_set"], str(category), metric)].append(value)
    return [{"variant": v, "eval_set": s, "category": c, "metric": m, **bootstrap_mean(vals)}
            for (v, s, c, m), vals in sorted(groups.items())]  # fmt: skip


def per_prompt(rows: Iterable[dict[str, Any]], metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """{(variant, eval_set): {prompt id: value}} for one metric."""
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for row in rows:
        value = prompt_values(row).get(metric)
        if value is not None:
            out[(row["variant"], row["eval_set"])][row["id"]] = value
    return out


def seed_summary(records: Sequence[dict[str, Any]], key: Sequence[str]) -> list[dict[str, Any]]:
    """Mean ± sd over seeds of `value`, grouped by the `key` fields."""
    groups: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for r in records:
        if r.get("value") is not None:
            groups[tuple(r[k] for k in key)].append(float(r["value"]))
    return [{**dict(zip(key, k, strict=True)), "mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1
             else 0.0, "n_seeds": len(v)} for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))]  # fmt: skip
