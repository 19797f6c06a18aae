"""Seeded simulations that could fail: the dose interval and the trend test when training runs differ as well as
prompts (3 seeds x 4 doses, prompt effects sd 1, a per-cell effect sd 0.4 on the log-odds, 200 replications).
`benchmarks/interval_coverage.py` prints the same numbers with more replications."""

from __future__ import annotations

import math

import pytest

from safedose.evaluate import dose_trend
from safedose.recommend import Target, recommend
from tests.recommend.simulate import marginal_dose, simulate

DOSES = [0, 30, 100, 300]
SEEDS = (0, 1, 2)
REPS = 200
PROMPTS = 30
PROMPT_SD, CELL_SD = 1.0, 0.4
LIMIT = 0.25


def test_the_dose_interval_covers_the_true_dose() -> None:
    curve = (1.5, -0.6)
    truth = marginal_dose(curve, LIMIT, sd=math.hypot(PROMPT_SD, CELL_SD))
    assert truth is not None and 30 < truth < 300  # the truth lies inside the tested range
    goal = Target.model_validate({"harmful_compliance": {"max": LIMIT}})
    covered = 0
    for rep in range(REPS):
        answers = simulate(DOSES, prompts=PROMPTS, seed=rep, harm=curve, seeds=SEEDS, prompt_sd=PROMPT_SD,
                           cell_sd=CELL_SD)  # fmt: skip
        rec = recommend(answers, target=goal)
        assert rec.run_variation and rec.cells == 12
        lo = rec.lo if rec.lo is not None else math.inf
        hi = rec.hi if rec.hi is not None else math.inf
        covered += lo <= truth <= hi
    assert covered / REPS >= 0.92, covered / REPS


@pytest.mark.parametrize(("slope", "bound"), [(0.0, 0.07), (-0.5, None)])
def test_the_trend_test_keeps_its_level_and_has_power(slope: float, bound: float | None) -> None:
    rejected = 0
    for rep in range(REPS):
        answers = simulate(DOSES, prompts=PROMPTS, seed=10_000 + rep, harm=(0.0, slope), seeds=SEEDS,
                           prompt_sd=PROMPT_SD, cell_sd=CELL_SD)  # fmt: skip
        (row,) = [r for r in dose_trend(answers) if r.metric == "harmful_compliance"]
        assert row.df == 10 and row.p_value is not None
        rejected += row.p_value < 0.05
    if bound is not None:  # no effect: the false-positive rate at nominal 5%
        assert rejected / REPS <= bound, rejected / REPS
    else:  # odds x0.61 per unit of log(1 + dose), about x0.04 from dose 0 to 300: the test finds it nearly always
        assert rejected / REPS >= 0.9, rejected / REPS
