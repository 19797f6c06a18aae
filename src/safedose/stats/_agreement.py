"""Agreement between raters: Cohen's kappa (scikit-learn, and vectorised over bootstrap draws), Krippendorff's alpha
(the `krippendorff` package), accuracy and confusion matrices, AUC, each with a bootstrap interval where it is used."""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import numpy as np

from safedose.stats._bootstrap import bootstrap_ci


def cohen_kappa(
    a: Sequence[Hashable], b: Sequence[Hashable], *, labels: Sequence[Hashable] | None = None
) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None when undefined (no items, or both raters give
    one and the same label throughout)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) == 0 or len(set(a) | set(b)) < 2:
        return None
    codes = {v: i for i, v in enumerate(labels if labels is not None else sorted({*a, *b}, key=str))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(cohen_kappa_score([codes[x] for x in a], [codes[x] for x in b], labels=list(codes.values())))
    return value if math.isfinite(value) else None


def kappa_codes(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Cohen's kappa of code arrays of shape (..., n) with values in 0..k-1 (every leading index one pair of
    raters, e.g. one bootstrap draw); NaN where chance agreement is 1."""
    n = a.shape[-1]
    flat = (a * k + b).reshape(-1, n)
    offsets = np.arange(flat.shape[0])[:, None] * k * k
    counts = np.bincount((flat + offsets).ravel(), minlength=flat.shape[0] * k * k).reshape(-1, k, k) / n
    observed = np.trace(counts, axis1=1, axis2=2)
    chance = np.einsum("bi,bi->b", counts.sum(axis=2), counts.sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(chance < 1, (observed - chance) / (1 - chance), np.nan)
    out: np.ndarray = kappa.reshape(a.shape[:-1])
    return out


def kappa_interval(
    a: Sequence[Hashable], b: Sequence[Hashable], groups: Sequence[Hashable], *, seed: int = 0, n_boot: int = 1000
) -> tuple[float, float] | None:
    """95% percentile interval of Cohen's kappa from a bootstrap over `groups` (e.g. prompts); None with fewer than
    two groups or when kappa is undefined in every resample."""
    if len(set(groups)) < 2:
        return None
    labels = sorted({*a, *b}, key=str)
    codes = {v: i for i, v in enumerate(labels)}
    left = np.asarray([codes[x] for x in a])
    right = np.asarray([codes[x] for x in b])

    def statistic(idx: np.ndarray) -> float:
        return float(kappa_codes(left[idx], right[idx], len(labels)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = bootstrap_ci(left, statistic, n=n_boot, seed=seed, groups=groups)
    return None if math.isnan(lo) or math.isnan(hi) else (lo, hi)


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
    """Area under the ROC curve (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(truth), np.asarray(scores)))


def krippendorff_alpha(
    reliability: np.ndarray,
    *,
    level: Literal["nominal", "ordinal", "interval", "ratio"] = "nominal",
    value_domain: Sequence[int] | None = None,
) -> float | None:
    """Krippendorff's alpha of a raters x items matrix of numeric codes (NaN = not rated); None when undefined (one
    value throughout, or no item rated twice)."""
    import krippendorff

    rated = ~np.isnan(reliability)
    if (rated.sum(axis=0) >= 2).sum() < 1 or len(np.unique(reliability[rated])) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(
            krippendorff.alpha(
                reliability_data=reliability,
                level_of_measurement=level,
                value_domain=None if value_domain is None else list(value_domain),
            )
        )
    return value if math.isfinite(value) else None
