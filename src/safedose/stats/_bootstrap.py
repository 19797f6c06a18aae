"""Percentile bootstraps over prompts, over seeds and prompts, and over groups for any statistic."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from safedose.stats._rates import NO_ESTIMATE, Estimate

N_BOOT = 2000


def bootstrap_mean(values: Sequence[float], *, seed: int = 0, n_boot: int = N_BOOT) -> Estimate:
    """Mean with a 95% percentile bootstrap interval over the values (prompts)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return NO_ESTIMATE
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Estimate(float(x.mean()), float(lo), float(hi), "bootstrap-prompts")


def paired_bootstrap(before: Sequence[float], after: Sequence[float], *, seed: int = 0) -> Estimate:
    """Mean of after - before over the same prompts, with a percentile bootstrap over prompts of the differences."""
    diffs = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    est = bootstrap_mean(list(diffs), seed=seed)
    return Estimate(est.value, est.lo, est.hi, "paired-bootstrap-prompts" if est.value is not None else "none")


def row_means(block: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN where a row has no value (without a warning)."""
    ok = ~np.isnan(block)
    count = ok.sum(axis=-1)
    total = np.where(ok, block, 0.0).sum(axis=-1)
    means: np.ndarray = np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)
    return means


def hierarchical_bootstrap(matrix: np.ndarray, *, seed: int = 0, n_boot: int = N_BOOT) -> Estimate:
    """Mean over seeds (rows) of each seed's mean over prompts (columns, NaN = no usable label), with a 95%
    percentile interval from resampling seeds and then prompts (one prompt draw shared by the drawn seeds)."""
    seed_means = row_means(matrix[None])[0]
    if np.isnan(seed_means).all():
        return NO_ESTIMATE
    value = float(np.nanmean(seed_means))
    rng = np.random.default_rng(seed)
    n_seeds, n_prompts = matrix.shape
    stats: list[np.ndarray] = []
    for start in range(0, n_boot, 250):
        size = min(250, n_boot - start)
        s = rng.integers(0, n_seeds, (size, n_seeds))
        p = rng.integers(0, n_prompts, (size, n_prompts))
        means = row_means(matrix[s[:, :, None], p[:, None, :]])
        valid = ~np.isnan(means)
        count = valid.sum(axis=1)
        total = np.where(valid, means, 0.0).sum(axis=1)
        stats.append(np.divide(total, count, out=np.full(size, np.nan), where=count > 0))
    draws = np.concatenate(stats)
    lo, hi = np.percentile(draws[~np.isnan(draws)], [2.5, 97.5])
    return Estimate(value, float(lo), float(hi), "hierarchical-bootstrap")


def group_bootstrap(
    statistic: Callable[[np.ndarray], float | None],
    groups: Sequence[object],
    *,
    seed: int = 0,
    n_boot: int = N_BOOT,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile interval of `statistic(indices)` over resamples of whole groups (e.g. every answer to one prompt),
    with replacement; resamples where the statistic is undefined (None or NaN) are dropped. None with one group or
    no defined resample."""
    codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1]
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    if n_groups < 2:
        return None
    members = [np.flatnonzero(codes == g) for g in range(n_groups)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        drawn = rng.integers(0, n_groups, n_groups)
        value = statistic(np.concatenate([members[g] for g in drawn]))
        if value is not None and np.isfinite(value):
            values.append(value)
    if not values:
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)
