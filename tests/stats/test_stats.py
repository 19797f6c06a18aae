"""safedose.stats against reference libraries and published examples (Newcombe's paired interval:
tests/evaluate/test_metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safedose.stats import (
    Cell,
    bootstrap_ci,
    cohen_kappa,
    dose_means,
    fit_line,
    kappa_codes,
    kappa_interval,
    krippendorff_alpha,
    line_band,
    slope_test,
    wilson,
    wilson_share,
)


def test_wilson_matches_statsmodels() -> None:
    from statsmodels.stats.proportion import proportion_confint

    for k, n in ((0, 30), (3, 20), (15, 30), (20, 20)):
        assert wilson(k, n) == pytest.approx(proportion_confint(k, n, method="wilson"), abs=1e-12)
        assert wilson_share(k / n, n) == pytest.approx(proportion_confint(k, n, method="wilson"), abs=1e-12)


def test_cohen_kappa_matches_sklearn_and_is_none_when_undefined() -> None:
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    a = list(rng.integers(0, 3, 60))
    b = [x if rng.random() < 0.7 else int(rng.integers(0, 3)) for x in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    codes = kappa_codes(np.asarray(a), np.asarray(b), 3)
    assert float(codes) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa([True] * 5, [True] * 5) is None and cohen_kappa([], []) is None


def test_krippendorff_alpha_matches_the_published_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", example C: 4 coders, 12 units, nominal
    # alpha = 0.743
    nan = np.nan
    data = np.array([
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ])  # fmt: skip
    assert krippendorff_alpha(data) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(np.ones((2, 5))) is None


def test_group_bootstrap_resamples_whole_groups() -> None:
    values = np.arange(40, dtype=float)
    groups = [i // 10 for i in range(40)]  # four groups of ten equal-sized blocks

    def mean(idx: np.ndarray) -> float:
        return float(values[idx].mean())

    rows = bootstrap_ci(values, mean, seed=1)
    grouped = bootstrap_ci(values, mean, seed=1, groups=groups)
    assert (grouped[1] - grouped[0]) > 1.5 * (rows[1] - rows[0])
    a = [i % 2 for i in range(40)]
    assert kappa_interval(a, a, groups) == (1.0, 1.0) and kappa_interval(a, a, [0] * 40) is None


def _cells(values: dict[int, list[float]], *, shared: bool, prompts: int = 40) -> list[Cell]:
    """One cell per value: the first round(value * prompts) prompts answer 1; disjoint prompt ids when not shared."""
    out = []
    for c, (dose, share) in enumerate((d, v) for d, vs in values.items() for v in vs):
        prefix = "p" if shared else f"c{c}-p"
        out.append(Cell(dose, {f"{prefix}{i}": float(i < round(share * prompts)) for i in range(prompts)}))
    return out


def test_fit_line_without_shared_prompts_is_ordinary_least_squares() -> None:
    import statsmodels.api as sm

    cells = _cells({0: [0.8, 0.7], 30: [0.5, 0.45], 100: [0.3, 0.2], 300: [0.1, 0.15]}, shared=False)
    line = fit_line(cells)
    assert line is not None and line.df == 6
    x = np.log1p([c.dose for c in cells])
    y = [math.log((sum(c.values.values()) + 0.5) / (40 - sum(c.values.values()) + 0.5)) for c in cells]
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    assert line.coef == pytest.approx(tuple(ols.params))
    assert np.asarray(line.cov) == pytest.approx(np.asarray(ols.cov_params()), rel=1e-9)
    test = slope_test(line)
    assert test is not None and test.p_value == pytest.approx(ols.pvalues[1]) and test.df == 6
    eta, _, hi = line_band(line, np.asarray([0.0]))
    assert (hi[0] - eta[0]) == pytest.approx(ols.get_prediction([[1.0, 0.0]]).se_mean[0] * 2.4469, rel=1e-3)


def test_shared_prompts_widen_the_band() -> None:
    values = {0: [0.8, 0.7], 30: [0.5, 0.45], 100: [0.3, 0.2], 300: [0.1, 0.15]}
    alone, shared = fit_line(_cells(values, shared=False)), fit_line(_cells(values, shared=True))
    assert alone is not None and shared is not None and alone.coef == pytest.approx(shared.coef)
    # the common prompts move every cell together (the level) and, on the logit scale, cells at different shares by
    # different amounts (the slope)
    assert shared.cov[0][0] > alone.cov[0][0] and shared.cov[1][1] > alone.cov[1][1]


def test_lack_of_fit_and_per_dose_means_need_replicate_cells() -> None:
    one_seed = fit_line(_cells({0: [0.9], 10: [0.9], 100: [0.1], 1000: [0.1]}, shared=True))
    assert one_seed is not None and one_seed.lack_of_fit_p is None
    step = fit_line(_cells({0: [0.9, 0.88], 10: [0.9, 0.92], 100: [0.1, 0.12], 1000: [0.1, 0.08]}, shared=True))
    assert step is not None and step.lack_of_fit_p is not None and step.lack_of_fit_p < 0.05
    means, df = dose_means(_cells({0: [0.9, 0.8], 100: [0.1, 0.2]}, shared=True))
    assert df == 2 and [m.n_cells for m in means] == [2, 2] and all(math.isfinite(m.se) for m in means)
    _, none = dose_means(_cells({0: [0.9], 100: [0.1]}, shared=True))
    assert none == 0
