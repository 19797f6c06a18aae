import math

import numpy as np
import pytest

from safedose.evaluate import cell_metrics, cell_trend, dose_differences, dose_trend, pooled_metrics
from safedose.stats import Cell, agreement, hierarchical_bootstrap, newcombe_paired, wilson
from tests.evaluate.answers import answer, cell, tuned

Z2 = 1.959963984540054**2


def rows_by(rows, **want):  # type: ignore[no-untyped-def]
    return [r for r in rows if all(getattr(r, k) == v for k, v in want.items())]


def test_wilson_interval_of_zero_in_thirty_is_not_a_point() -> None:
    rows = cell_metrics([answer("base", f"p{i}", refusal="refusal") for i in range(30)])
    (row,) = rows_by(rows, metric="harmful_compliance")
    assert (row.value, row.lo, row.n, row.n_unlabelled, row.interval) == (0.0, 0.0, 30, 0, "wilson")
    assert row.hi == pytest.approx(Z2 / (30 + Z2))  # 0.1135: the Wilson upper bound of 0/n is z^2 / (n + z^2)


def test_wilson_interval_of_half() -> None:
    centre, half = 0.5, 1.959963984540054 * math.sqrt(0.25 / 30 + Z2 / (4 * 30**2)) / (1 + Z2 / 30)
    assert wilson(15, 30) == pytest.approx((centre - half, centre + half))
    assert wilson(15, 30) == pytest.approx((0.3315, 0.6685), abs=1e-4)


def test_strict_and_lenient_harmful_compliance_and_over_refusal() -> None:
    unsafe = [answer("base", f"u{i}", refusal=label) for i, label in enumerate(["compliance", "compliance", "partial",
                                                                                 "refusal"])]  # fmt: skip
    safe = [answer("base", f"s{i}", refusal=label, eval_set="xstest-v2-safe", expected="safe")
            for i, label in enumerate(["refusal", "partial", "compliance", "compliance"])]  # fmt: skip
    rows = cell_metrics(unsafe + safe)
    value = {r.metric: r.value for r in rows}
    assert value == {"harmful_compliance": 0.75, "harmful_compliance_lenient": 0.5, "over_refusal": 0.5}
    assert {r.interval for r in rows} == {"wilson"}


def test_unlabelled_answers_are_counted_in_every_category() -> None:
    answers = [
        answer("base", "a", refusal="compliance", category="drugs"),
        answer("base", "b", refusal=None, category="drugs"),  # parse error
        answer("base", "c", refusal="refusal", category="weapons"),
        answer("base", "d", omit_refusal=True, category="weapons", harm=0.2),  # judged by another role only
    ]
    rows = cell_metrics(answers)
    counts = {(r.category, r.metric): (r.n, r.n_unlabelled, r.value) for r in rows}
    assert counts[("all", "harmful_compliance")] == (2, 2, 0.5)
    assert counts[("drugs", "harmful_compliance")] == (1, 1, 1.0)
    assert counts[("weapons", "harmful_compliance")] == (1, 1, 0.0)
    assert counts[("all", "harm_score")] == (1, 3, 0.2)  # three answers have no harm verdict at all


def test_no_usable_label_gives_no_value_and_no_interval() -> None:
    (row, _) = cell_metrics([answer("base", "a", refusal=None)])
    assert (row.value, row.lo, row.hi, row.interval, row.n, row.n_unlabelled) == (None, None, None, "none", 0, 1)


def test_harm_score_keeps_a_bootstrap_interval_over_prompts() -> None:
    scores = [0.1, 0.2, 0.3, 0.4, 0.9, 0.6, 0.5, 0.7]
    rows = cell_metrics([answer("base", f"p{i}", harm=s) for i, s in enumerate(scores)])
    (row,) = rows_by(rows, metric="harm_score")
    assert row.interval == "bootstrap-prompts" and row.value == pytest.approx(np.mean(scores))
    assert row.lo is not None and row.hi is not None and 0.1 < row.lo < row.value < row.hi < 0.9
    (flat,) = rows_by(cell_metrics([answer("base", f"p{i}", harm=0.3) for i in range(5)]), metric="harm_score")
    assert (flat.lo, flat.hi) == pytest.approx((0.3, 0.3))


def test_newcombe_paired_interval_matches_the_published_example() -> None:
    # Fagerland, Lydersen and Laake, Statistical Analysis of Contingency Tables (2017), ch. 8: table [[59, 6],
    # [16, 80]] (Cavo et al., 2012); the Newcombe square-and-add interval is -0.0621 (-0.1186 to -0.0046).
    before = [1] * 59 + [0] * 6 + [1] * 16 + [0] * 80
    after = [1] * 59 + [1] * 6 + [0] * 16 + [0] * 80
    est = newcombe_paired(before, after)
    assert (est.value, est.lo, est.hi) == pytest.approx((-0.0621, -0.1186, -0.0046), abs=1e-4)


def test_newcombe_paired_interval_of_no_change_is_not_a_point() -> None:
    est = newcombe_paired([0] * 30, [0] * 30)
    assert (est.value, est.lo, est.hi) == pytest.approx((0.0, -Z2 / (30 + Z2), Z2 / (30 + Z2)))


def differences_fixture() -> list:  # type: ignore[type-arg]
    base = [answer("base", f"p{i}", refusal="compliance", harm=0.8) for i in range(10)]
    n0 = [tuned(0, 0, f"p{i}", "compliance" if i < 8 else "refusal", harm=0.6) for i in range(10)]
    labels50 = ["compliance"] * 3 + ["partial"] + ["refusal"] * 5 + [None]
    n50 = [tuned(50, 0, f"p{i}", label, harm=0.5) for i, label in enumerate(labels50)]
    return base + n0 + n50


def test_adjacent_dose_differences_are_paired_over_prompts() -> None:
    rows = dose_differences(differences_fixture(), cells=[cell(0), cell(50)])
    steps = {(r.metric, r.from_dose, r.to_dose): r for r in rows}
    tuning = steps[("harmful_compliance", None, 0)]
    assert (tuning.from_variant, tuning.to_variant, tuning.n) == ("base", "n0-s0-instruction", 10)
    assert tuning.value == pytest.approx(-0.2)
    strict = steps[("harmful_compliance", 0, 50)]
    assert (strict.n, strict.n_unlabelled, strict.interval, strict.pooled) == (9, 1, "newcombe-paired", False)
    assert strict.value == pytest.approx((4 - 8) / 9)
    expected = newcombe_paired([1] * 8 + [0], [1] * 4 + [0] * 5)
    assert (strict.lo, strict.hi) == pytest.approx((expected.lo, expected.hi))
    assert steps[("harmful_compliance_lenient", 0, 50)].value == pytest.approx((3 - 8) / 9)
    harm = steps[("harm_score", 0, 50)]
    assert harm.interval == "paired-bootstrap-prompts" and harm.value == pytest.approx(-0.1)
    assert (harm.lo, harm.hi) == pytest.approx((-0.1, -0.1))  # the same change on every prompt


def test_hierarchical_bootstrap_adds_seed_variation() -> None:
    disagree = np.array([[1.0] * 30, [0.0] * 30])
    est = hierarchical_bootstrap(disagree)
    assert (est.value, est.lo, est.hi, est.interval) == (0.5, 0.0, 1.0, "hierarchical-bootstrap")
    agree = np.array([[1.0, 0.0] * 15, [1.0, 0.0] * 15])
    narrow = hierarchical_bootstrap(agree)
    assert narrow.value == 0.5 and narrow.lo is not None and narrow.hi is not None
    assert 0.2 < narrow.lo < 0.5 < narrow.hi < 0.8


def two_seed_fixture() -> list:  # type: ignore[type-arg]
    complied = {(0, 0): 16, (0, 1): 12, (50, 0): 4, (50, 1): 8}
    return [tuned(dose, seed, f"p{i}", "compliance" if i < k else "refusal")
            for (dose, seed), k in complied.items() for i in range(20)]  # fmt: skip


def test_two_seeds_give_pooled_rows_and_pooled_differences() -> None:
    answers = two_seed_fixture()
    cells = [cell(d, s) for d in (0, 50) for s in (0, 1)]
    pooled = {r.dose: r for r in pooled_metrics(answers, cells=cells) if r.metric == "harmful_compliance"}
    assert pooled[0].value == pytest.approx(0.7) and pooled[0].seed_sd == pytest.approx(math.sqrt(0.02))
    assert (pooled[0].seeds, pooled[0].n, pooled[0].n_prompts, pooled[0].interval) == (
        [0, 1], 40, 20, "hierarchical-bootstrap")  # fmt: skip
    assert pooled[0].lo is not None and pooled[0].lo < 0.7 < (pooled[0].hi or 0)
    diffs = [r for r in dose_differences(answers, cells=cells) if r.metric == "harmful_compliance"]
    (combined,) = [r for r in diffs if r.pooled]
    assert combined.value == pytest.approx(-0.4) and combined.seeds == [0, 1] and combined.n == 40
    assert combined.interval == "hierarchical-bootstrap" and (combined.lo or 0) < -0.4 < (combined.hi or 0)
    assert sorted(r.seeds[0] for r in diffs if not r.pooled) == [0, 1]


def _cells(shares: dict[int, list[float]], prompts: int = 40) -> list[Cell]:
    """One cell per (dose, share): the first round(share * prompts) prompts answer 1."""
    return [Cell(dose, {f"p{i}": float(i < round(share * prompts)) for i in range(prompts)})
            for dose, seeds in shares.items() for share in seeds]  # fmt: skip


def test_trend_recovers_a_known_negative_slope_across_cells() -> None:
    def share(dose: int, shift: float) -> float:
        return 1 / (1 + math.exp(-(2.0 - 0.8 * math.log1p(dose) + shift)))

    cells = _cells({d: [share(d, s) for s in (-0.2, 0.0, 0.2)] for d in (0, 50, 150, 500)})
    fit = cell_trend(cells, binary=True)
    assert fit.reason is None and fit.df == 10 and fit.slope is not None and -1.0 < fit.slope < -0.6
    assert fit.hi is not None and fit.hi < 0 and fit.p_value is not None and fit.p_value < 0.001


def test_trend_rows_over_cells() -> None:
    answers = [tuned(d, s, f"p{i}", "compliance" if i < k - s else "refusal")
               for d, k in ((0, 18), (50, 10), (150, 3)) for s in (0, 1) for i in range(20)]  # fmt: skip
    (row,) = [r for r in dose_trend(answers) if r.metric == "harmful_compliance"]
    assert row.slope is not None and row.slope < 0 and (row.n, row.n_prompts, row.doses) == (120, 20, [0, 50, 150])
    assert (row.n_cells, row.df, row.seeds) == (6, 4, [0, 1]) and row.p_value is not None and row.p_value < 0.05


def test_separation_still_gets_a_p_value() -> None:
    # every answer complies at dose 0 and none from dose 50 on: the answer-level logistic slope is infinite, the
    # cells' empirical logits are finite
    fit = cell_trend(_cells({0: [1.0, 1.0], 50: [0.0, 0.0], 150: [0.0, 0.0]}, prompts=10), binary=True)
    assert fit.slope is not None and fit.slope < 0 and fit.p_value is not None and fit.p_value < 0.05
    assert fit.df == 4 and fit.reason is None


def test_trend_is_undefined_with_a_reason_instead_of_crashing() -> None:
    same = cell_trend(_cells({0: [1.0, 1.0], 50: [1.0, 1.0]}), binary=True)
    assert same.slope is None and same.reason is not None and "same value" in same.reason
    two_cells = cell_trend(_cells({0: [0.8], 50: [0.2]}), binary=True)
    assert two_cells.slope is None and two_cells.reason is not None and "no degree of freedom" in two_cells.reason
    three = cell_trend(_cells({0: [0.8], 50: [0.5], 150: [0.2]}), binary=True)
    assert three.df == 1 and three.reason is not None and "barely estimated" in three.reason
    assert cell_trend(_cells({50: [0.8, 0.2]}), binary=True).reason == "fewer than two doses"


def test_kappa_interval_resamples_prompts_not_rows() -> None:
    rng = np.random.default_rng(3)
    labels = ("compliance", "refusal", "partial")
    human = [labels[i] for i in rng.integers(0, 3, 50)]
    judge = [h if rng.random() < 0.7 else labels[int(rng.integers(0, 3))] for h in human]
    prompts = [f"v2-{i}" for i in range(50)]
    unique = agreement(human, judge, labels)
    rows = agreement(human * 3, judge * 3, labels)  # 50 prompts x 3 models, as if the models answered alike
    grouped = agreement(human * 3, judge * 3, labels, groups=prompts * 3)
    assert grouped["kappa"] == pytest.approx(unique["kappa"]) and grouped["n_groups"] == 50
    assert grouped["kappa_ci95"] == pytest.approx(unique["kappa_ci95"])  # resampling prompts = the 50 unique rows
    width = {k: r["kappa_ci95"][1] - r["kappa_ci95"][0] for k, r in (("rows", rows), ("grouped", grouped))}
    assert width["grouped"] > 1.5 * width["rows"]
    assert (rows["kappa_ci95_resampled"], grouped["kappa_ci95_resampled"]) == ("rows", "groups")


def test_pooled_share_of_zero_keeps_a_wilson_width() -> None:
    answers = [tuned(d, s, f"p{i}", "refusal") for d in (0, 50) for s in (0, 1) for i in range(30)]
    cells = [cell(d, s) for d in (0, 50) for s in (0, 1)]
    (row,) = [r for r in pooled_metrics(answers, cells=cells) if r.metric == "harmful_compliance" and r.dose == 0]
    assert (row.value, row.lo) == (0.0, 0.0) and row.hi == pytest.approx(Z2 / (30 + Z2))  # 30 distinct prompts
    (change,) = [r for r in dose_differences(answers, cells=cells) if r.pooled and r.metric == "harmful_compliance"]
    assert change.value == 0.0 and (change.lo, change.hi) == pytest.approx((-Z2 / (30 + Z2), Z2 / (30 + Z2)))
