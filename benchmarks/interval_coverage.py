"""Coverage of the recommended dose's interval and the trend test's level and power, on a simulated model whose
training runs differ as well as its prompts.

    .venv/bin/python benchmarks/interval_coverage.py [--reps 1000]

logit P(comply) = a + b log(1 + dose) + prompt effect (sd 1) + cell effect (sd 0.4), 30 prompts, doses 0 / 30 / 100 /
300; the true dose is where the share averaged over prompts and runs crosses the 25% limit. No model, no judge: the
statistics alone (`tests/recommend/test_coverage.py` asserts the same with 200 replications).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.recommend.simulate import marginal_dose, simulate

from safedose.evaluate import dose_trend
from safedose.recommend import Target, recommend

DOSES = [0, 30, 100, 300]
PROMPT_SD, CELL_SD, LIMIT = 1.0, 0.4, 0.25


def coverage(reps: int, seeds: tuple[int, ...], doses: list[int]) -> tuple[float, float, int]:
    curve = (1.5, -0.6)
    truth = marginal_dose(curve, LIMIT, sd=math.hypot(PROMPT_SD, CELL_SD))
    assert truth is not None
    goal = Target.model_validate({"harmful_compliance": {"max": LIMIT}})
    covered, widths, undefined = 0, [], 0
    for rep in range(reps):
        rec = recommend(simulate(doses, prompts=30, seed=rep, harm=curve, seeds=seeds, prompt_sd=PROMPT_SD,
                                 cell_sd=CELL_SD), target=goal)  # fmt: skip
        if not rec.run_variation:
            undefined += 1
            continue
        lo = rec.lo if rec.lo is not None else math.inf
        hi = rec.hi if rec.hi is not None else math.inf
        covered += lo <= truth <= hi
        widths.append(min(hi, doses[-1]) - min(lo, doses[-1]))
    defined = reps - undefined
    median = sorted(widths)[len(widths) // 2] if widths else math.nan
    return (covered / defined if defined else math.nan), median, undefined


def rejections(reps: int, slope: float) -> float:
    hits = 0
    for rep in range(reps):
        answers = simulate(DOSES, prompts=30, seed=10_000 + rep, harm=(0.0, slope), seeds=(0, 1, 2),
                           prompt_sd=PROMPT_SD, cell_sd=CELL_SD)  # fmt: skip
        (row,) = [r for r in dose_trend(answers) if r.metric == "harmful_compliance"]
        hits += row.p_value is not None and row.p_value < 0.05
    return hits / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    args = parser.parse_args()
    start = time.perf_counter()
    for seeds, doses in (((0, 1, 2), DOSES), ((0, 1), DOSES), ((0,), [0, 10, 30, 100, 300, 600])):
        cov, width, undefined = coverage(args.reps, seeds, doses)
        print(f"dose interval, {len(seeds)} seed(s) x {len(doses)} doses: coverage {cov:.3f} (nominal 0.95), median "
              f"width {width:.0f} doses, no interval (too few cells) in {undefined} of {args.reps}")  # fmt: skip
    for slope in (0.0, -0.1, -0.2, -0.3, -0.5):
        print(f"trend test, 3 seeds x 4 doses, slope {slope:+.1f} per unit of log(1 + dose): rejects at 5% in "
              f"{rejections(args.reps, slope):.3f}")  # fmt: skip
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
