"""`sweep --search`: answer the target with few cells. Start from the config's smallest and largest dose, then add
one dose at a time until the 95% interval of the recommended dose is at most `search.max_width` wide or
`search.budget` cells are spent. The next dose is, among up to `CANDIDATES` whole doses spread evenly in log(1 + dose)
over the interval, the one whose cells would leave the narrowest expected interval if the fitted lines stayed as they
are (their covariance recomputed for the larger design, `safedose.recommend.expected_after`). Where that cannot be
computed (a monotone fit, or too few cells for any band) the search bisects, in log(1 + dose), the widest untested gap
of the interval (or of the tested range). `benchmarks/search_vs_grid.py` compares it with a fixed grid.

Each round is an ordinary `sweep()` over the doses chosen so far: mixes are nested (a new dose leaves the other
doses' files byte-identical) and cells are named by their fingerprint, so a round trains only the new cell. The
choice depends only on the results, so a killed search rerun with the same command replays the finished rounds from
the cache and makes the same choices.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape

from safedose.errors import SafedoseError
from safedose.recommend import Recommendation, expected_after, recommend_from_curves
from safedose.report import load_recommendation, write_report
from safedose.run import Choice, SearchLog, read_manifest, write_manifest
from safedose.sweep._config import SweepConfig
from safedose.sweep._recipe import sweep

DASH = "\u2013"
CANDIDATES = 24


def next_dose(rec: Recommendation, tested: Sequence[int], *, max_width: float, cells_left: int,
              cells_per_dose: int) -> Choice | str:  # fmt: skip
    """The next dose to test and why, or why the search stops."""
    if cells_left < cells_per_dose:
        return f"search.budget is spent ({cells_left} cells left, a dose takes {cells_per_dose})"
    if not rec.run_variation:
        gap = _bisect([min(tested), max(tested)], tested)
        if gap is None:
            return "too few cells to estimate run-to-run variation and no untested whole dose is left to add"
        return Choice(dose=gap[0], reason=f"too few cells to estimate run-to-run variation: bisects the widest "
                      f"untested gap {gap[1]}", interval_before=None, estimate_before=rec.dose)  # fmt: skip
    if rec.dose is None or rec.lo is None:
        return ("no dose meets the target on the fitted curves (the target lies beyond the tested range or is never "
                "met), so there is no interval to narrow; test larger doses")  # fmt: skip
    before = [rec.lo, rec.hi]
    if rec.width <= max_width:
        return f"the interval {_interval(before)} is at most search.max_width ({max_width:g}) wide"
    lo, hi = rec.lo, rec.hi if rec.hi is not None else max(tested)
    best = _narrowest(rec, tested, lo, hi, cells_per_dose)
    if best is not None:
        dose, width = best
        expected = "open-ended" if math.isinf(width) else f"{width:.0f} wide"
        return Choice(dose=dose, reason=f"leaves the narrowest expected interval ({expected}) of {CANDIDATES} "
                      f"candidates in {_interval(before)} under the current fit", interval_before=before,
                      estimate_before=rec.dose)  # fmt: skip
    gap = _bisect([lo, hi], tested)
    if gap is None:
        return f"no untested whole dose is left inside the interval {_interval(before)}"
    return Choice(dose=gap[0], reason=f"bisects (in log(1 + dose)) the widest untested gap {gap[1]} of the interval "
                  f"{_interval(before)} (a monotone fit: no expected interval to compare)", interval_before=before,
                  estimate_before=rec.dose)  # fmt: skip


def _narrowest(rec: Recommendation, tested: Sequence[int], lo: int, hi: int, cells: int) -> tuple[int, float] | None:
    """The candidate dose whose cells leave the narrowest expected interval, and that width; None when a limit's
    curve cannot be projected (not a line with a residual variance)."""
    if rec.target is None:
        return None
    grid = np.expm1(np.linspace(math.log1p(lo), math.log1p(hi), CANDIDATES))
    candidates = sorted({int(np.rint(d)) for d in grid} - set(tested))
    if not candidates:
        return None
    limited = {(c.metric, c.eval_set) for c in rec.constraints}
    best: tuple[float, int] | None = None
    for dose in candidates:
        curves = []
        for curve in rec.curves:
            if (curve.metric, curve.eval_set) not in limited:
                continue
            after = expected_after(curve, dose, cells)
            if after is None:
                return None
            curves.append(after)
        width = recommend_from_curves(curves, target=rec.target).width
        if best is None or width < best[0]:
            best = (width, dose)
    return None if best is None else (best[1], best[0])


def _bisect(bounds: Sequence[int], tested: Sequence[int]) -> tuple[int, str] | None:
    """The log-midpoint of the widest gap between tested doses (and the bounds) inside the bounds, and the gap."""
    lo, hi = bounds
    points = sorted({lo, hi, *(d for d in tested if lo < d < hi)})
    gaps = sorted(itertools.pairwise(points), key=lambda g: (-(math.log1p(g[1]) - math.log1p(g[0])), g[0]))
    for a, b in gaps:
        mid = round(math.expm1((math.log1p(a) + math.log1p(b)) / 2))
        if a < mid < b and mid not in tested:
            return mid, f"{a}{DASH}{b}"
    return None


def _interval(bounds: Sequence[int | None]) -> str:
    lo, hi = bounds
    return f"{lo}{DASH}{'beyond the tested range' if hi is None else hi}"


def search_doses(measure: Callable[[list[int]], Recommendation], *, start: Sequence[int], budget: int,
                 max_width: float, cells_per_dose: int = 1,
                 on_round: Callable[[SearchLog], None] | None = None) -> SearchLog:  # fmt: skip
    """Measure the start doses, then one chosen dose at a time (`measure(doses)` runs or reuses every cell of
    `doses` and returns the recommendation), until the interval is narrow enough or the budget is spent."""
    doses = sorted(set(start))
    choices: list[Choice] = []
    while True:
        rec = measure(doses)
        cells = len(doses) * cells_per_dose
        step = next_dose(rec, doses, max_width=max_width, cells_left=budget - cells, cells_per_dose=cells_per_dose)
        if isinstance(step, Choice):
            choices.append(step)
            doses = sorted([*doses, step.dose])
        log = SearchLog(start=sorted(set(start)), budget=budget, max_width=max_width, cells_per_dose=cells_per_dose,
                        choices=choices, doses=doses, cells=len(doses) * cells_per_dose,
                        stop=None if isinstance(step, Choice) else step, estimate=rec.dose,
                        interval=None if rec.lo is None else [rec.lo, rec.hi])  # fmt: skip
        if on_round is not None:
            on_round(log)
        if not isinstance(step, Choice):
            return log


@dataclass(frozen=True)
class SearchResult:
    run_dir: Path
    log: SearchLog
    recommendation: Recommendation
    report: Path


def start_config(config: SweepConfig) -> SweepConfig:
    """The config of the search's first round (its smallest and largest dose), after checking the search settings."""
    if config.target is None:
        raise SafedoseError("sweep --search needs a target in the config, e.g. "
                            "target: {harmful_compliance: {max: 0.05}, over_refusal: {max: 0.10}}")  # fmt: skip
    if config.search is None:
        raise SafedoseError("sweep --search needs search settings in the config, e.g. search: {budget: 5, "
                            "max_width: 50}")  # fmt: skip
    if len(config.doses) < 2:
        raise SafedoseError("sweep --search searches between the config's smallest and largest dose: give two doses")
    per_dose = len(config.seeds) * len(config.formats)
    if config.search.budget < 2 * per_dose:
        raise SafedoseError(f"search.budget: {config.search.budget} cells, but the two start doses alone take "
                            f"{2 * per_dose} (dose x seed x format)")  # fmt: skip
    return config.model_copy(update={"doses": [config.doses[0], config.doses[-1]]})


def search(config: SweepConfig, *, console: Console | None = None) -> SearchResult:
    """Run (or finish) an adaptive search for the recommended dose; every choice is logged in the manifest."""
    console = console or Console()
    first = start_config(config)
    settings = first.search or config.search
    if settings is None:  # start_config checked it
        raise SafedoseError("sweep --search needs search settings in the config")
    run = config.run_dir

    def measure(doses: list[int]) -> Recommendation:
        console.print(f"[bold]search:[/] doses {', '.join(map(str, doses))}")
        result = sweep(first.model_copy(update={"doses": doses}), console=console)
        return load_recommendation(result.run_dir)

    def record(log: SearchLog) -> None:
        write_manifest(run, read_manifest(run).model_copy(update={"search": log}))
        if log.stop is None:
            console.print(f"[bold]search:[/] next dose {log.choices[-1].dose}: {escape(log.choices[-1].reason)}")

    log = search_doses(measure, start=first.doses, budget=settings.budget, max_width=settings.max_width,
                       cells_per_dose=len(config.seeds) * len(config.formats), on_round=record)  # fmt: skip
    report = write_report(run)
    rec = load_recommendation(run)
    console.print(f"[bold]search stopped:[/] {escape(log.stop or '')} ({log.cells} cells)")
    console.print(f"[bold]{escape(rec.text)}[/]")
    return SearchResult(run, log, rec, report)
