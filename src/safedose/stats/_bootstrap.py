"""Percentile bootstraps over prompts, over seeds and prompts, and over groups for any statistic."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

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
    stat: Callable[[np.ndarray], float],
    *,
    n: int = 1000,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> list[float]:
    """95% percentile bootstrap CI of `stat(indices)` over resampled row indices (resamples where it is NaN are
    ignored); with `groups` (e.g. the prompt of each row), whole groups are resampled, so rows that share a group are
    not counted as independent."""
    rng = np.random.default_rng(seed)
    stats = [stat(idx) for idx in _draws(len(values), groups, n, rng)]
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]
