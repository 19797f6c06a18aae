"""results/recommendation.json and the report's answer: the recommended dose, the fitted curves drawn with their
bands over the measured points, the check of each fit and the adaptive search's log."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from safedose.config import validate_config
from safedose.errors import SafedoseError
from safedose.files import atomic_open, write_json
from safedose.recommend import RULE, Curve, Recommendation, Target, curve_at, recommend
from safedose.report._metrics_file import MetricsFile
from safedose.run import JudgedAnswer, recommendation_path, report_dir

DASH = "\u2013"
PANELS = {
    "harmful_compliance": "harmful compliance (strict)",
    "harmful_compliance_lenient": "harmful compliance (lenient)",
    "over_refusal": "over-refusal",
    "capability": "capability: NLL per token (lower is better)",
}


def config_target(manifest: dict[str, Any]) -> Target | None:
    """The target the sweep config set (recorded in the manifest), if any."""
    data = manifest.get("config", {}).get("target")
    return None if data is None else validate_config(Target, data, source="manifest.json: config.target")


def write_recommendation(run: Path, judged: Sequence[JudgedAnswer], metrics: MetricsFile, *,
                         target: Target | None) -> Recommendation:  # fmt: skip
    """Fit the curves, answer the target and write results/recommendation.json."""
    rec = recommend(judged, metrics.capability, target=target)
    write_json(recommendation_path(run), rec.model_dump(mode="json"))
    return rec


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
    fig.tight_layout()
    path = report_dir(run) / "curves.png"
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return {"file": path.name, "data": base64.b64encode(path.read_bytes()).decode(), "caption": _caption(rec)}


def _panel(curve: Curve) -> str:
    return "capability" if curve.eval_set == "capability" else curve.metric


def _draw(ax: Any, curve: Curve, color: str) -> None:
    doses = curve.doses
    if not doses:
        return
    grid = np.unique(np.round(np.expm1(np.linspace(math.log1p(doses[0]), math.log1p(doses[-1]), 200)), 3))
    fitted, lo, hi = curve_at(curve, grid)
    style = "-" if curve.model in ("logistic", "linear") else "--"
    label = curve.eval_set if curve.eval_set != "capability" else curve.metric
    ax.plot(grid, fitted, style, color=color, label=f"{label} ({curve.model})")
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
    if metric != "capability":
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("share of answers")
    else:
        ax.set_ylabel("NLL per token")
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
            "measured shares (points, 95% Wilson bars pooled over seeds); solid lines are logistic or linear fits, "
            "dashed lines monotone fits, interpolated between tested doses. Dotted: the target's limit. Dashed "
            "vertical line and grey span: the dose the target needs and its 95% interval.")  # fmt: skip
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


def search_rows(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The adaptive search's log from the manifest, if the run was a `sweep --search`."""
    log = manifest.get("search")
    if not isinstance(log, dict):
        return None
    rows = []
    for choice in log.get("choices", []):
        before = choice.get("interval_before")
        interval = DASH if not before else f"{before[0]}{DASH}{'beyond' if before[1] is None else before[1]}"
        rows.append({"dose": choice.get("dose"), "reason": choice.get("reason"), "interval": interval})
    return {"start": log.get("start"), "rows": rows, "stop": log.get("stop"), "cells": log.get("cells")}


def notes(rec: Recommendation) -> list[str]:
    """How the curves, bands and interval were made."""
    return [f"Model choice: {RULE}.", f"Interval of the dose: {rec.interval_method}."]
