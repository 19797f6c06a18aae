"""Rates and their changes: Wilson score intervals for one share, Newcombe's interval for a paired difference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Z95 = 1.959963984540054

Interval = Literal[
    "wilson",
    "bootstrap-prompts",
    "newcombe-paired",
    "paired-bootstrap-prompts",
    "hierarchical-bootstrap",
    "cells-t",
    "none",
]


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval and the method that gave it."""

    value: float | None
    lo: float | None
    hi: float | None
    interval: Interval


NO_ESTIMATE = Estimate(None, None, None, "none")


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of k successes in n trials."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def wilson_share(share: float, n: float, *, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a share over n trials at normal quantile z; n may be an effective (fractional) count."""
    z2 = z * z
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(max(share * (1 - share), 0.0) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def newcombe_paired(before: Sequence[float], after: Sequence[float]) -> Estimate:
    """Mean of after - before for paired 0/1 values, with Newcombe's hybrid score (square-and-add) interval for
    paired proportions (method 10 of Newcombe 1998)."""
    x, y = np.asarray(before, dtype=int), np.asarray(after, dtype=int)
    a, b = int(np.sum((y == 1) & (x == 1))), int(np.sum((y == 1) & (x == 0)))
    c, d = int(np.sum((y == 0) & (x == 1))), int(np.sum((y == 0) & (x == 0)))
    return newcombe_table(a, b, c, d)


def newcombe_table(a: float, b: float, c: float, d: float) -> Estimate:
    """Newcombe's interval for p(after) - p(before) from the paired table: a = both 1, b = only after 1, c = only
    before 1, d = both 0 (counts; effective counts may be fractional)."""
    n = a + b + c + d
    if n <= 0:
        return NO_ESTIMATE
    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson_share(p1, n), wilson_share(p2, n)
    phi = _newcombe_phi(a, b, c, d)
    below = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    above = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    diff = p1 - p2
    return Estimate(diff, max(diff - below, -1.0), min(diff + above, 1.0), "newcombe-paired")


def _newcombe_phi(a: float, b: float, c: float, d: float) -> float:
    """Newcombe's continuity-adjusted correlation of the two paired proportions (0 when a margin is empty)."""
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins == 0:
        return 0.0
    cross, half = a * d - b * c, (a + b + c + d) / 2
    if cross > half:
        return (cross - half) / math.sqrt(margins)
    return cross / math.sqrt(margins) if cross < 0 else 0.0


def t_quantile(level: float, df: int | None) -> float:
    """Student's t quantile (NaN without degrees of freedom)."""
    from scipy.stats import t

    return float(t.ppf(level, df)) if df and df > 0 else math.nan
