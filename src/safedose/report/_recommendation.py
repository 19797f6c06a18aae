"""results/recommendation.json and the report's answer: the recommended dose, the fitted curves drawn with their
bands over the measured points, the check of each fit and the adaptive search's log."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from safedose.config import validate_config
from safedose.errors import SafedoseError
from safedose.evaluate import MetricRow
from safedose.files import write_figure, write_json
from safedose.recommend import RULE, Curve, Recommendation, Target, curve_at, recommend
from safedose.report._metrics_file import MetricsFile
from safedose.run import CellKey, JudgedAnswer, Manifest, recommendation_path, report_dir

DASH = "\u2013"
PANELS = {
    "harmful_compliance": "harmful compliance (strict)",
    "harmful_compliance_lenient": "harmful compliance (lenient)",
    "over_refusal": "over-refusal",
    "capability": "capability: NLL per token (lower is better)",
    "benchmark": "capability: benchmark accuracy (mean over tasks)",
}


def config_target(manifest: Manifest) -> Target | None:
    """The target the sweep config set (recorded in the manifest), if any."""
    data = manifest.config.get("target")
    return None if data is None else validate_config(Target, data, source="manifest.json: config.target")


def write_recommendation(run: Path, judged: Sequence[JudgedAnswer], metrics: MetricsFile, *,
                         target: Target | None) -> Recommendation:  # fmt: skip
    """Fit the curves, answer the target and write results/recommendation.json."""
    order = metrics.sources.sources if metrics.sources else ()
    rec = recommend(judged, [*metrics.capability, *benchmark_rows(metrics)], target=target, sources=order)
    write_json(recommendation_path(run), rec.model_dump(mode="json"))
    return rec


def benchmark_rows(metrics: MetricsFile) -> list[MetricRow]:
    """Per tuned cell, the mean over lm-eval tasks of each task's first metric (accuracy), as a capability row."""
    if metrics.benchmarks is None:
        return []
    first: dict[tuple[str, str], float] = {}
    cells: dict[str, tuple[CellKey, list[float], int]] = {}
    for score in metrics.benchmarks.scores:
        if score.dose is None or score.value is None or (score.variant, score.task) in first:
            continue
        first[(score.variant, score.task)] = score.value
        key, values, n = cells.get(score.variant, (score.cell, [], 0))
        cells[score.variant] = (key, [*values, score.value], n + score.n)
    tasks = {task for _, task in first}
    return [MetricRow(variant=variant, **key.as_dict(), eval_set="capability", category="all",
                      metric="benchmark_accuracy", value=sum(values) / len(values), lo=None, hi=None,
                      interval="none", n=n, n_unlabelled=0)
            for variant, (key, values, n) in sorted(cells.items())
            if len(values) == len(tasks)]  # fmt: skip


def load_recommendation(run: Path) -> Recommendation:
    path = recommendation_path(run)
    if not path.is_file():
        raise SafedoseError(f"{run}: no results/recommendation.json; run `safedose recommend {run}`")
    try:
        return Recommendation.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as e:
        raise SafedoseError(f"{path}: not written by this safedose ({str(e).splitlines()[0]})") from None


# --- the figure


def _limit(target: Target | None, metric: str) -> float | None:
    limit = target.limits().get(metric) if target else None
    return limit.max if limit else None


def curves_figure(run: Path, rec: Recommendation) -> dict[str, str]:
    """report/curves.png: one panel per metric, every eval set's fitted curve and band over its measured points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PANELS if any(_panel(c) == p for c in rec.curves)] or ["harmful_compliance"]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4 * rows), squeeze=False)
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        for i, curve in enumerate(c for c in rec.curves if _panel(c) == panel):
            _draw(ax, curve, f"C{i}")
        _decorate(ax, rec, panel)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    path = report_dir(run) / "curves.png"
    return {"file": path.name, "data": write_figure(fig, path), "caption": _caption(rec)}


def _panel(curve: Curve) -> str:
    if curve.eval_set == "capability":
        return "benchmark" if curve.metric == "benchmark_accuracy" else "capability"
    return curve.metric


def _draw(ax: Any, curve: Curve, color: str) -> None:
    doses = curve.doses
    if not doses:
        return
    grid = np.unique(np.round(np.expm1(np.linspace(math.log1p(doses[0]), math.log1p(doses[-1]), 200)), 3))
    fitted, lo, hi = curve_at(curve, grid)
    label = curve.eval_set if curve.eval_set != "capability" else curve.metric
    if curve.model in ("logistic", "linear"):
        ax.plot(grid, fitted, "-", color=color, label=f"{label} ({curve.model})")
    else:  # a monotone fit is known at the tested doses only: its values joined by a dashed line, bracket band
        ax.plot(doses, [k.fitted for k in curve.knots], "--", color=color, label=f"{label} ({curve.model})")
    if not np.isnan(lo).all():
        ax.fill_between(grid, lo, hi, color=color, alpha=0.15, linewidth=0)
    xs = [k.dose for k in curve.knots]
    ys = [k.observed for k in curve.knots]
    if all(k.observed_lo is not None and k.observed_hi is not None for k in curve.knots):
        err = [[max(k.observed - (k.observed_lo or 0.0), 0.0) for k in curve.knots],
               [max((k.observed_hi or 0.0) - k.observed, 0.0) for k in curve.knots]]  # fmt: skip
        ax.errorbar(xs, ys, yerr=err, fmt="o", color=color, capsize=3)
    else:
        ax.plot(xs, ys, "o", color=color)


def _decorate(ax: Any, rec: Recommendation, metric: str) -> None:
    ax.set_xscale("function", functions=(_forward, _inverse))
    if rec.tested:
        ax.set_xticks(rec.tested, [str(d) for d in rec.tested], fontsize=8)
    ax.set_xlabel("safety examples in the mix (dose; axis in log(1 + dose))")
    ax.set_title(PANELS[metric], fontsize=10)
    ax.grid(alpha=0.3)
    if metric == "capability":
        ax.set_ylabel("NLL per token")
    elif metric == "benchmark":
        ax.set_ylabel("accuracy")
    else:
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("share of answers")
    limit = _limit(rec.target, metric)
    if limit is not None:
        ax.axhline(limit, color="black", linestyle=":", linewidth=1, label=f"limit {limit:.0%}")
    if rec.dose is not None:
        top = rec.hi if rec.hi is not None else (rec.tested[-1] if rec.tested else rec.dose)
        if rec.lo is not None:
            ax.axvspan(rec.lo, top, color="gray", alpha=0.12, linewidth=0)
        ax.axvline(rec.dose, color="gray" if not rec.met else "black", linestyle="--", linewidth=1,
                   label=f"{'recommended' if rec.met else 'needed'} dose {rec.dose}")  # fmt: skip
    ax.legend(fontsize=7)


def _forward(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.sign(x) * np.log1p(np.abs(x))
    return out


def _inverse(y: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.sign(y) * np.expm1(np.abs(y))
    return out


def _caption(rec: Recommendation) -> str:
    models = sorted({c.model for c in rec.curves if c.eval_set != "capability"})
    text = (f"0. Fitted dose-response curves ({', '.join(models) or 'none'}) with their 95% bands (shaded) over the "
            "measured shares (points, 95% Wilson bars over the answers pooled over seeds: prompt variation only); "
            "solid lines go through the training cells (logistic for shares, linear for capability), whose bands "
            "include run-to-run variation; dashed lines join a monotone fit's values at the tested doses, and between "
            "them its band is the bracket of its neighbours. No band: too few cells to estimate run-to-run variation. "
            "Dotted: the target's limit. Dashed vertical line and grey span: the dose the target needs and its 95% "
            "interval.")  # fmt: skip
    if any(c.eval_set == "capability" for c in rec.curves):
        text += " Capability: one value per cell, a line in log(1 + dose) with a t band when there are enough cells."
    return text


# --- tables


def _num(x: float | None, digits: int) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def _with_band(x: float, lo: float | None, hi: float | None, digits: int) -> str:
    band = f" [{_num(lo, digits)}, {_num(hi, digits)}]" if lo is not None and hi is not None else ""
    return _num(x, digits) + band


def fit_checks(rec: Recommendation) -> list[dict[str, Any]]:
    """Observed against fitted at every tested dose, with the Pearson residual, one table per curve."""
    tables = []
    for c in rec.curves:
        digits = 3 if c.eval_set == "capability" else 2
        rows = [{"dose": k.dose, "n": k.n, "observed": _with_band(k.observed, k.observed_lo, k.observed_hi, digits),
                 "fitted": _with_band(k.fitted, k.lo, k.hi, digits),
                 "residual": DASH if k.residual is None else f"{k.residual:+.2f}"} for k in c.knots]  # fmt: skip
        unit = "cells" if c.eval_set == "capability" else "answers"
        tables.append({"title": f"{PANELS.get(c.metric, c.metric)} · {c.eval_set}: {c.model}", "why": c.why,
                       "band": c.band, "unit": unit, "rows": rows})  # fmt: skip
    return tables


def search_rows(manifest: Manifest) -> dict[str, Any] | None:
    """The adaptive search's log from the manifest, if the run was a `sweep --search`."""
    log = manifest.search
    if log is None:
        return None
    rows = []
    for choice in log.choices:
        before = choice.interval_before
        interval = DASH if not before else f"{before[0]}{DASH}{'beyond' if before[1] is None else before[1]}"
        rows.append({"dose": choice.dose, "reason": choice.reason, "interval": interval})
    return {"start": log.start, "rows": rows, "stop": log.stop, "cells": log.cells}


def notes(rec: Recommendation) -> list[str]:
    """How the curves, bands and interval were made."""
    cells = (f"Unit of inference: the training cell (dose x seed); {rec.cells} cells behind the curves, "
             + ("enough to estimate run-to-run variation." if rec.run_variation else "too few to estimate run-to-run "
                "variation, so no dose interval is given."))  # fmt: skip
    return [cells, f"Model choice: {RULE}.", f"Interval of the dose: {rec.interval_method}."]


def _lead(text: str) -> tuple[str, str]:
    """The first sentence of a recommendation's text, and the rest."""
    cut = text.find(". ")
    while cut != -1 and text[max(0, cut - 3) : cut].endswith(("e.g", "i.e", " vs")):
        cut = text.find(". ", cut + 2)
    return (text, "") if cut == -1 else (text[: cut + 1], text[cut + 2 :])


def _worst(curves: Sequence[Curve], metric: str, dose: int) -> dict[str, str]:
    """The highest observed share of `metric` at `dose` over eval sets, with its Wilson interval and set."""
    knots = [(c.eval_set, k) for c in curves if c.metric == metric for k in c.knots if k.dose == dose]
    if not knots:
        return {"text": DASH, "sub": ""}
    eval_set, k = max(knots, key=lambda sk: sk[1].observed)
    band = (
        f" [{k.observed_lo:.0%}, {k.observed_hi:.0%}]"
        if k.observed_lo is not None and k.observed_hi is not None
        else ""
    )
    others = f" (worst of {len(knots)} sets)" if len(knots) > 1 else ""
    return {"text": f"{k.observed:.0%}{band}", "sub": f"{eval_set}{others}"}


def _capability_cell(curves: Sequence[Curve], dose: int) -> dict[str, str]:
    for metric, unit in (("benchmark_accuracy", "accuracy"), ("test_loss", "test loss")):
        curve = next((c for c in curves if c.eval_set == "capability" and c.metric == metric), None)
        knot = next((k for k in curve.knots if k.dose == dose), None) if curve else None
        if knot is None:
            continue
        value = f"{knot.observed:.1%}" if metric == "benchmark_accuracy" else f"{knot.observed:.3f}"
        band = ""
        if curve is not None and curve.run_variation and knot.lo is not None and knot.hi is not None:
            band = (f" (fit [{knot.lo:.1%}, {knot.hi:.1%}])" if metric == "benchmark_accuracy"
                    else f" (fit [{knot.lo:.3f}, {knot.hi:.3f}])")  # fmt: skip
        return {"text": value, "sub": f"{unit}{band}"}
    return {"text": DASH, "sub": ""}


def answer_box(rec: Recommendation) -> dict[str, Any]:
    """The answer at the top of the report: its first sentence, a small table per tested dose (harmful compliance and
    over-refusal on their worst set, capability) and the rest of the text."""
    lead, rest = _lead(rec.text)
    binary = [c for c in rec.curves if c.eval_set != "capability"]
    columns = ["harmful compliance (strict)", "over-refusal", "capability"]
    rows = [{"dose": d, "cells": [_worst(binary, "harmful_compliance", d), _worst(binary, "over_refusal", d),
                                  _capability_cell(rec.curves, d)]} for d in rec.tested]  # fmt: skip
    caption = ("Observed at each tested dose, pooled over seeds: the share on the worst eval set [95% Wilson interval "
               "over its answers: prompt variation only]; capability: benchmark accuracy (mean over tasks) or held-out "
               "test loss, with the fitted line's band where there are enough cells. The curves below carry the "
               "intervals that include run-to-run variation.")  # fmt: skip
    return {"lead": lead, "rest": rest, "columns": columns, "rows": rows, "caption": caption}
