"""Agreement between raters: Cohen's kappa (scikit-learn), Krippendorff's alpha (the `krippendorff` package), and
kappa with an interval from a bootstrap over prompts."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from safedose.stats._bootstrap import group_bootstrap


def cohen_kappa(a: Sequence[object], b: Sequence[object], *, labels: Sequence[object] | None = None) -> float | None:
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


def kappa_interval(
    a: Sequence[object], b: Sequence[object], groups: Sequence[object], *, seed: int = 0, n_boot: int = 1000
) -> tuple[float, float] | None:
    """95% percentile interval of Cohen's kappa from a bootstrap over `groups` (e.g. prompts); None when it cannot
    be formed (one group, or kappa undefined in every resample)."""
    left, right = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    labels = sorted({*a, *b}, key=str)

    def statistic(idx: np.ndarray) -> float | None:
        return cohen_kappa(list(left[idx]), list(right[idx]), labels=labels)

    return group_bootstrap(statistic, groups, seed=seed, n_boot=n_boot)


def krippendorff_alpha(
    reliability: np.ndarray, *, level: Literal["nominal", "ordinal", "interval", "ratio"] = "nominal"
) -> float | None:
    """Krippendorff's alpha of a raters x items matrix of numeric codes (NaN = not rated); None when undefined."""
    import krippendorff

    rated = ~np.isnan(reliability)
    if (rated.sum(axis=0) >= 2).sum() < 1 or len(np.unique(reliability[rated])) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(krippendorff.alpha(reliability_data=reliability, level_of_measurement=level))
    return value if math.isfinite(value) else None
