"""Seeded samples of eval prompts, stratified by category."""

from __future__ import annotations

import random
from collections.abc import Sequence

from safedose.data._records import EvalPrompt


def sample_prompts(prompts: Sequence[EvalPrompt], n: int | None, *, seed: int) -> list[EvalPrompt]:
    """A seeded sample of `n` prompts stratified by `category`, in the input order (all of them if `n` is None).

    Each category gets its proportional share (largest remainder), and at least one prompt when `n` is at least
    the number of categories; prompts without a category form one stratum.
    """
    if n is not None and n < 0:
        raise ValueError(f"sample size must be non-negative, got {n}")
    if n is None or n >= len(prompts):
        return list(prompts)
    strata: dict[str | None, list[int]] = {}
    for i, p in enumerate(prompts):
        strata.setdefault(p.category, []).append(i)
    sizes = {c: len(members) for c, members in strata.items()}
    rng = random.Random(f"{seed}:sample")
    chosen: list[int] = []
    for category, k in allocate(sizes, n, rng).items():
        chosen += rng.sample(strata[category], k)
    return [prompts[i] for i in sorted(chosen)]


def allocate(sizes: dict[str | None, int], n: int, rng: random.Random) -> dict[str | None, int]:
    """Split `n` over strata of `sizes` in proportion (largest remainder; ties broken by `rng`).

    When `n` is at least the number of strata, every stratum gets at least one.
    """
    total = sum(sizes.values())
    order = list(sizes)
    rng.shuffle(order)  # the tie-break among equal remainders
    floor = 1 if n >= len(sizes) else 0
    quotas = {c: n * sizes[c] / total for c in order}
    counts = {c: min(sizes[c], max(floor, int(quotas[c]))) for c in order}
    while sum(counts.values()) > n:  # the floor of one overshot: take back from the most over-served strata
        over = max((c for c in order if counts[c] > 1), key=lambda c: counts[c] - quotas[c])
        counts[over] -= 1
    while sum(counts.values()) < n:
        under = max((c for c in order if counts[c] < sizes[c]), key=lambda c: quotas[c] - counts[c])
        counts[under] += 1
    return counts
