"""Agreement statistics: Cohen's kappa with a bootstrap CI, accuracy, confusion matrices, AUC."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def bootstrap_ci(values: Sequence[Any] | np.ndarray, stat: Any, *, n: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap CI of `stat(indices)` over resampled row indices."""
    rng = np.random.default_rng(seed)
    size = len(values)
    stats = [stat(rng.integers(0, size, size)) for _ in range(n)]
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def agreement(human: Sequence[str], judge: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Cohen's kappa (95% bootstrap CI), accuracy and the confusion matrix (rows: human, columns: judge)."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    h, j = np.asarray(human), np.asarray(judge)

    def kappa(idx: np.ndarray) -> float:
        return float(cohen_kappa_score(h[idx], j[idx], labels=list(labels)))

    everything = np.arange(len(h))
    return {
        "n": len(h),
        "kappa": kappa(everything),
        "kappa_ci95": bootstrap_ci(h, kappa),
        "accuracy": float(np.mean(h == j)),
        "labels": list(labels),
        "confusion": confusion_matrix(h, j, labels=list(labels)).tolist(),
    }


def auc(truth: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(truth), np.asarray(scores)))
