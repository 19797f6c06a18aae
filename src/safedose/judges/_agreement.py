"""Agreement statistics: Cohen's kappa with a bootstrap CI (over rows or whole groups), accuracy, confusion
matrices, AUC."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np


def _members(groups: Sequence[Hashable]) -> list[np.ndarray]:
    """Row indices of each group, in order of first appearance."""
    index: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    return [np.asarray(rows) for rows in index.values()]


def _draws(size: int, groups: Sequence[Hashable] | None, n: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Resampled row indices: rows with replacement, or whole groups with replacement (all rows of a drawn group)."""
    if groups is None:
        for _ in range(n):
            yield rng.integers(0, size, size)
        return
    if len(groups) != size:
        raise ValueError(f"{len(groups)} group ids for {size} rows")
    members = _members(groups)
    for _ in range(n):
        yield np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])


def bootstrap_ci(
    values: Sequence[Any] | np.ndarray,
    stat: Any,
    *,
    n: int = 1000,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> list[float]:
    """95% percentile bootstrap CI of `stat(indices)` over resampled row indices; with `groups` (e.g. the prompt of
    each row), whole groups are resampled, so rows that share a group are not counted as independent."""
    rng = np.random.default_rng(seed)
    stats = [stat(idx) for idx in _draws(len(values), groups, n, rng)]
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def agreement(
    human: Sequence[str], judge: Sequence[str], labels: Sequence[str], *, groups: Sequence[Hashable] | None = None
) -> dict[str, Any]:
    """Cohen's kappa (95% bootstrap CI, resampling `groups` when given, else rows), accuracy and the confusion
    matrix (rows: human, columns: judge)."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    h, j = np.asarray(human), np.asarray(judge)

    def kappa(idx: np.ndarray) -> float:
        return float(cohen_kappa_score(h[idx], j[idx], labels=list(labels)))

    everything = np.arange(len(h))
    return {
        "n": len(h),
        "n_groups": len(set(groups)) if groups is not None else len(h),
        "kappa": kappa(everything),
        "kappa_ci95": bootstrap_ci(h, kappa, groups=groups),
        "kappa_ci95_resampled": "groups" if groups is not None else "rows",
        "accuracy": float(np.mean(h == j)),
        "labels": list(labels),
        "confusion": confusion_matrix(h, j, labels=list(labels)).tolist(),
    }


def auc(truth: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(truth), np.asarray(scores)))
