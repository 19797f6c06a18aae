"""`sweep --search` against a fixed 7-dose grid on a simulated model: how often the search's interval is no wider than
the grid's, and with how many cells.

    .venv/bin/python benchmarks/search_vs_grid.py [--reps 200]

logit P(comply) = 2 - 0.9 log(1 + dose) + prompt effect (sd 1) + cell effect (sd 0.4), 30 prompts, 3 seeds a dose,
target: harmful compliance at most 10%. The grid is 0 / 10 / 30 / 100 / 300 / 600 / 1000 (21 cells); the search starts
from 0 and 1000 and spends its budget (max_width 0).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.recommend.simulate import marginal_dose, simulate

from safedose.recommend import Recommendation, Target, recommend
from safedose.sweep import search_doses

GRID_7 = [0, 10, 30, 100, 300, 600, 1000]
CURVE = (2.0, -0.9)
GOAL = Target.model_validate({"harmful_compliance": {"max": 0.1}})


def measure(rep: int, doses: list[int]) -> Recommendation:
    answers = simulate(doses, prompts=30, seed=rep, harm=CURVE, seeds=(0, 1, 2), prompt_sd=1.0, cell_sd=0.4)
    return recommend(answers, target=GOAL)


def width(lo: int | None, hi: int | None) -> float:
    return math.inf if lo is None or hi is None else float(hi - lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    truth = marginal_dose(CURVE, 0.1, sd=math.hypot(1.0, 0.4))
    start = time.perf_counter()
    grid = [measure(rep, GRID_7) for rep in range(args.reps)]
    grid_cover = sum((g.lo or 0) <= (truth or 0) <= (g.hi if g.hi is not None else math.inf) for g in grid)
    print(f"grid of 7 doses (21 cells): median width {statistics.median(g.width for g in grid):.0f}, coverage "
          f"{grid_cover / args.reps:.3f}")  # fmt: skip
    for budget in (12, 15, 18, 21):
        narrower, cells, widths, cover = 0, [], [], 0
        for rep, g in enumerate(grid):
            log = search_doses(lambda d, r=rep: measure(r, d), start=[0, 1000], budget=budget, max_width=0,
                               cells_per_dose=3)  # fmt: skip
            lo, hi = (log.interval or [None, None])[0], (log.interval or [None, None])[1]
            w = width(lo, hi)
            narrower += w <= g.width
            cells.append(log.cells)
            widths.append(w)
            cover += lo is not None and lo <= (truth or 0) <= (hi if hi is not None else math.inf)
        print(f"search, budget {budget}: no wider than the grid in {narrower / args.reps:.3f} of {args.reps}, "
              f"{statistics.mean(cells):.1f} cells on average, median width {statistics.median(widths):.0f}, coverage "
              f"{cover / args.reps:.3f}")  # fmt: skip
    print(f"true dose {truth} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
