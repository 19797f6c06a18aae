from collections import Counter

import pytest

from safedose.data import EvalPrompt, load_eval_prompts, sample_prompts


def prompts(sizes: dict[str | None, int]) -> list[EvalPrompt]:
    return [EvalPrompt(id=f"{c}-{i}", prompt=f"{c} {i}", eval_set="s", category=c)
            for c, n in sizes.items() for i in range(n)]  # fmt: skip


def test_xstest_sample_covers_every_category_in_equal_shares() -> None:
    safe = load_eval_prompts("xstest-v2-safe")
    assert [p.category for p in safe[:30]].count("homonyms") == 25  # why the first N is no sample
    sample = sample_prompts(safe, 30, seed=0)
    assert len(sample) == 30 and len({p.id for p in sample}) == 30
    assert Counter(p.category for p in sample) == {c: 3 for c in {p.category for p in safe}}
    position = {p.id: i for i, p in enumerate(safe)}
    assert [position[p.id] for p in sample] == sorted(position[p.id] for p in sample)  # input order


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    safe = load_eval_prompts("xstest-v2-safe")
    ids = {seed: [p.id for p in sample_prompts(safe, 30, seed=seed)] for seed in (0, 1)}
    assert ids[0] == [p.id for p in sample_prompts(safe, 30, seed=0)]
    assert ids[0] != ids[1]


def test_proportional_allocation_by_largest_remainder() -> None:
    pool = prompts({"a": 60, "b": 30, "c": 10})
    assert Counter(p.category for p in sample_prompts(pool, 10, seed=3)) == {"a": 6, "b": 3, "c": 1}
    # quotas 4.2 / 2.1 / 0.7: floors 4 + 2 + 0, and the one left goes to the largest remainder (c)
    assert Counter(p.category for p in sample_prompts(pool, 7, seed=3)) == {"a": 4, "b": 2, "c": 1}
    # quotas 1.8 / 0.9 / 0.3: at least one per category
    assert Counter(p.category for p in sample_prompts(pool, 3, seed=3)) == {"a": 1, "b": 1, "c": 1}
    # quotas 1.2 / 0.6 / 0.2 with fewer than one per category: the largest remainders
    assert Counter(p.category for p in sample_prompts(pool, 2, seed=3)) == {"a": 1, "b": 1}
    skewed = prompts({"big": 95, "x": 2, "y": 2, None: 1})
    counts = Counter(p.category for p in sample_prompts(skewed, 5, seed=0))
    assert counts == {"big": 2, "x": 1, "y": 1, None: 1}  # the floor of one is paid by the largest stratum


def test_small_n_uncategorised_and_all() -> None:
    pool = prompts({"a": 5, "b": 5, "c": 5})
    for seed in range(20):
        counts = Counter(p.category for p in sample_prompts(pool, 2, seed=seed))
        assert sum(counts.values()) == 2 and max(counts.values()) == 1  # fewer than the strata: no repeats
    plain = prompts({None: 40})
    assert len(sample_prompts(plain, 7, seed=0)) == 7
    assert sample_prompts(pool, None, seed=0) == pool == sample_prompts(pool, 15, seed=5)
    assert sample_prompts(pool, 99, seed=1) == pool
    assert sample_prompts(pool, 0, seed=0) == []
    with pytest.raises(ValueError, match="non-negative"):
        sample_prompts(pool, -1, seed=0)
