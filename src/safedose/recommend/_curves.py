"""Fitted dose-response curves with 95% bands: logistic in log(1 + dose) with prompt-clustered standard errors, a
monotone (isotonic) fit where the logistic form does not hold, and a straight line in log(1 + dose) for
capability."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from safedose.evaluate import MetricRow, answer_values
from safedose.run import JudgedAnswer

N_BOOT = 1000
Z95 = 1.959963984540054
CURVE_METRICS = ("harmful_compliance", "harmful_compliance_lenient", "over_refusal")
CAPABILITY_METRICS = ("test_loss", "reference_nll")
RULE = (
    "logistic regression of each answer's 0/1 label on log(1 + dose) over every tuned answer (statsmodels GLM "
    "Binomial, standard errors clustered by prompt: every answer to one prompt, over doses and seeds, is one "
    "cluster), unless it cannot be fitted (fewer than two doses, one value throughout, perfect or quasi-perfect "
    "separation, a failed fit) or at some tested dose the Wilson interval of the observed share excludes the fitted "
    "share (level 1 - 0.05 / k over k tested doses, Bonferroni); then a monotone (isotonic, scikit-learn) fit of the "
    "per-dose shares weighted by their answers, interpolated linearly in log(1 + dose) between tested doses and "
    "undefined beyond them"
)
BANDS = {
    "logistic": "pointwise 95% band by the delta method on the logit scale, from the prompt-clustered covariance",
    "isotonic": f"pointwise 95% percentile band from a cluster bootstrap over prompts ({N_BOOT} resamples, seed 0, "
    "the isotonic fit redone on each), widened at each tested dose to at least the Wilson interval of the fitted "
    "share over that dose's answers, interpolated in log(1 + dose) between tested doses",
    "linear": "pointwise 95% t band from ordinary least squares over cells (none when there are no more cells than "
    "the line's two parameters)",
    "none": "no band",
}
Model = Literal["logistic", "isotonic", "linear", "none"]


class Knot(BaseModel):
    """The fit at one tested dose beside what was observed there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dose: int
    n: int = Field(description="answers (capability: cells) at this dose")
    observed: float
    observed_lo: float | None = Field(description="95% Wilson interval of the observed share (None: capability)")
    observed_hi: float | None
    fitted: float
    lo: float | None
    hi: float | None
    residual: float | None = Field(description="Pearson residual (observed - fitted) / sqrt(fitted (1 - fitted) / n)")


class Curve(BaseModel):
    """One metric on one eval set as a function of the dose, with its 95% band and the check of its fit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    eval_set: str = Field(description="`capability` for capability metrics")
    format: str | None
    model: Model
    why: str = Field(description="why this model was used")
    band: str
    direction: Literal["falls", "rises", "flat"]
    coef: list[float] | None = Field(None, description="logistic / linear: intercept and slope on log(1 + dose)")
    cov: list[list[float]] | None = None
    df: int | None = Field(None, description="linear: residual degrees of freedom of the t band")
    knots: list[Knot]
    n: int
    n_prompts: int
    n_unlabelled: int
    seeds: list[int]

    @property
    def doses(self) -> list[int]:
        return [k.dose for k in self.knots]


def curve_at(curve: Curve, doses: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fitted value and 95% band at `doses` (NaN where the curve says nothing: outside the tested range of a
    monotone fit, or no band)."""
    d = np.asarray(doses, dtype=float)
    x = np.log1p(d)
    nan = np.full(d.shape, np.nan)
    if curve.model in ("logistic", "linear") and curve.coef is not None:
        a, b = curve.coef
        eta = a + b * x
        if curve.cov is None:
            lo = hi = nan
        else:
            c = np.asarray(curve.cov)
            se = np.sqrt(np.maximum(c[0, 0] + 2 * x * c[0, 1] + x * x * c[1, 1], 0.0))
            q = Z95 if curve.model == "logistic" else _t95(curve.df)
            lo, hi = eta - q * se, eta + q * se
        if curve.model == "logistic":
            return _expit(eta), _expit(lo), _expit(hi)
        return eta, lo, hi
    if not curve.knots:
        return nan, nan, nan
    kx = np.log1p([k.dose for k in curve.knots])
    inside = (x >= kx[0] - 1e-12) & (x <= kx[-1] + 1e-12)

    def interp(values: Sequence[float | None]) -> np.ndarray:
        v = np.asarray([np.nan if y is None else y for y in values], dtype=float)
        return np.where(inside, np.interp(x, kx, v), np.nan)

    return (interp([k.fitted for k in curve.knots]), interp([k.lo for k in curve.knots]),
            interp([k.hi for k in curve.knots]))  # fmt: skip


def _t95(df: int | None) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df)) if df and df > 0 else math.nan


def _expit(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return out


# --- binary metrics


def fit_curves(answers: Sequence[JudgedAnswer], *, metrics: Sequence[str] = CURVE_METRICS) -> list[Curve]:
    """One curve per metric and eval set over every tuned answer (all doses and seeds; the untuned rows are not in
    it). With several formats, the first format's cells."""
    tuned = [a for a in answers if a.dose is not None]
    formats = sorted({a.format for a in tuned}, key=str)
    if not formats:
        return []
    roles = {role for a in answers for role in a.verdicts}
    data: dict[tuple[str, str], list[tuple[int, int | None, str, float | None]]] = defaultdict(list)
    for a in tuned:
        if a.format != formats[0]:
            continue
        for metric, value in answer_values(a, roles).items():
            if metric in metrics:
                data[(metric, a.eval_set)].append((a.dose or 0, a.seed, a.id, value))
    return [fit_binary(metric, eval_set, rows, fmt=formats[0]) for (metric, eval_set), rows in sorted(data.items())]


def fit_binary(metric: str, eval_set: str, rows: Sequence[tuple[int, int | None, str, float | None]], *,
               fmt: str | None = None) -> Curve:  # fmt: skip
    """The curve of one 0/1 metric from (dose, seed, prompt id, value or None) rows, by the stated rule."""
    from scipy.stats import norm

    usable = [(d, s, p, y) for d, s, p, y in rows if y is not None]
    common: dict[str, Any] = {"metric": metric, "eval_set": eval_set, "format": fmt, "n": len(usable),
              "n_prompts": len({p for _, _, p, _ in usable}), "n_unlabelled": len(rows) - len(usable),
              "seeds": sorted({s for _, s, _, _ in usable if s is not None})}  # fmt: skip
    if not usable:
        return Curve(model="none", why="no answer has a usable label", band=BANDS["none"], direction="flat", knots=[],
                     **common)  # fmt: skip
    doses = np.asarray([d for d, _, _, _ in usable], dtype=float)
    y = np.asarray([y for _, _, _, y in usable], dtype=float)
    prompts = [p for _, _, p, _ in usable]
    if len(set(doses.tolist())) < 2:
        return _isotonic(doses, y, prompts, common, why="fewer than two doses: no curve can be fitted")
    fit = _logistic(np.log1p(doses), y, prompts)
    if isinstance(fit, str):
        return _isotonic(doses, y, prompts, common, why=f"logistic fit undefined: {fit}; monotone fit instead")
    coef, cov = fit
    curve = Curve(model="logistic", why="", band=BANDS["logistic"], direction=_direction(coef[1]),
                  coef=list(coef), cov=cov.tolist(), knots=[], **common)  # fmt: skip
    knots = _knots(curve, doses, y)
    z = float(norm.ppf(1 - 0.05 / (2 * len(knots))))
    for k in knots:
        lo, hi = _wilson(k.observed, k.n, z)
        if not lo - 1e-9 <= k.fitted <= hi + 1e-9:
            why = (
                f"the logistic fit misses the observed share at dose {k.dose} (fitted {k.fitted:.2f}, observed "
                f"{k.observed:.2f}, Bonferroni Wilson interval [{lo:.2f}, {hi:.2f}]); monotone fit instead"
            )
            return _isotonic(doses, y, prompts, common, why=why)
    why = (f"logistic fits: at each of the {len(knots)} tested doses the Wilson interval of the observed share (level "
           f"1 - 0.05/{len(knots)}) contains the fitted share")  # fmt: skip
    return curve.model_copy(update={"knots": knots, "why": why})


def _wilson(share: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a share over n answers at normal quantile z."""
    z2 = z * z
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(max(share * (1 - share), 0.0) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def _direction(slope: float) -> Literal["falls", "rises", "flat"]:
    return "falls" if slope < 0 else "rises" if slope > 0 else "flat"


def _logistic(x: np.ndarray, y: np.ndarray, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | str:
    """Intercept and slope with their prompt-clustered covariance, or why the fit is undefined."""
    import statsmodels.api as sm

    if np.all(y == y[0]):
        return f"every answer is {y[0]:g}"
    ones, zeros = x[y == 1], x[y == 0]
    if ones.max() <= zeros.min() or zeros.max() <= ones.min():
        return "the doses separate the labels (perfectly or quasi-perfectly): the slope would be infinite"
    codes = np.unique(np.asarray(prompts), return_inverse=True)[1]
    if codes.max() < 1:
        return "one prompt: no prompt-clustered standard error"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            fit = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit(
                cov_type="cluster", cov_kwds={"groups": codes}
            )
            coef, cov = np.asarray(fit.params, dtype=float), np.asarray(fit.cov_params(), dtype=float)
        except (Warning, ValueError, np.linalg.LinAlgError) as e:
            return f"the fit failed: {type(e).__name__}"
    if not (np.isfinite(coef).all() and np.isfinite(cov).all()):
        return "the fit gave no finite coefficients or covariance"
    return coef, cov


def _per_dose(doses: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tested doses, their answer counts and observed shares."""
    levels = np.unique(doses)
    n = np.asarray([(doses == d).sum() for d in levels], dtype=float)
    k = np.asarray([y[doses == d].sum() for d in levels], dtype=float)
    return levels, n, k / n


def _knots(curve: Curve, doses: np.ndarray, y: np.ndarray) -> list[Knot]:
    levels, n, observed = _per_dose(doses, y)
    fitted, lo, hi = curve_at(curve, levels)
    return [_knot(int(d), int(m), float(o), float(f), float(a), float(b))
            for d, m, o, f, a, b in zip(levels, n, observed, fitted, lo, hi, strict=True)]  # fmt: skip


def _knot(dose: int, n: int, observed: float, fitted: float, lo: float, hi: float) -> Knot:
    olo, ohi = _wilson(observed, n, Z95)
    var = fitted * (1 - fitted) / n
    residual = (observed - fitted) / math.sqrt(var) if var > 0 else None
    return Knot(dose=dose, n=n, observed=observed, observed_lo=olo, observed_hi=ohi, fitted=fitted,
                lo=None if math.isnan(lo) else lo, hi=None if math.isnan(hi) else hi, residual=residual)  # fmt: skip


def _isotonic(doses: np.ndarray, y: np.ndarray, prompts: Sequence[str], common: dict[str, Any], *,
              why: str) -> Curve:  # fmt: skip
    """Monotone fit of the per-dose shares with a prompt-cluster bootstrap band, widened to at least Wilson."""
    levels, n, observed = _per_dose(doses, y)
    x = np.log1p(levels)
    slope = float(np.polyfit(x, observed, 1, w=np.sqrt(n))[0]) if len(levels) > 1 else 0.0
    increasing = slope > 0
    fitted = _pava(observed, n, increasing=increasing)
    ids, codes = np.unique(np.asarray(prompts), return_inverse=True)
    column = np.searchsorted(levels, doses)
    successes, counts = np.zeros((len(ids), len(levels))), np.zeros((len(ids), len(levels)))
    np.add.at(successes, (codes, column), y)
    np.add.at(counts, (codes, column), 1.0)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(ids), (N_BOOT, len(ids)))
    weights = np.zeros((N_BOOT, len(ids)))
    np.add.at(weights, (np.repeat(np.arange(N_BOOT), len(ids)), draws.ravel()), 1.0)
    k_boot, n_boot = weights @ successes, weights @ counts
    shares = np.where(n_boot > 0, k_boot / np.maximum(n_boot, 1e-12), observed)
    boot = np.asarray([_pava(s, w, increasing=increasing) for s, w in zip(shares, n_boot, strict=True)])
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    knots = []
    for i, d in enumerate(levels):
        wlo, whi = _wilson(float(fitted[i]), float(n[i]), Z95)
        knots.append(_knot(int(d), int(n[i]), float(observed[i]), float(fitted[i]), min(float(lo[i]), wlo),
                           max(float(hi[i]), whi)))  # fmt: skip
    flat = len(levels) < 2 or math.isclose(fitted[0], fitted[-1])
    direction: Literal["falls", "rises", "flat"] = "flat" if flat else ("rises" if increasing else "falls")
    model: Model = "isotonic"
    return Curve(model=model, why=why, band=BANDS[model], direction=direction, knots=knots, **common)


def _pava(values: np.ndarray, weights: np.ndarray, *, increasing: bool) -> np.ndarray:
    from sklearn.isotonic import isotonic_regression

    w = np.maximum(np.asarray(weights, dtype=float), 1e-12)
    out: np.ndarray = isotonic_regression(np.asarray(values, dtype=float), sample_weight=w, increasing=increasing)
    return out


# --- capability


def fit_capability(rows: Sequence[MetricRow]) -> list[Curve]:
    """A straight line in log(1 + dose) per capability metric over the tuned cells (each cell one point)."""
    by_metric: dict[str, list[MetricRow]] = defaultdict(list)
    for r in rows:
        if r.dose is not None and r.value is not None and r.metric in CAPABILITY_METRICS:
            by_metric[r.metric].append(r)
    curves = []
    for metric, group in sorted(by_metric.items()):
        formats = sorted({r.format for r in group}, key=str)
        group = [r for r in group if r.format == formats[0]]
        curves.append(_linear(metric, group, formats[0]))
    return curves


def _linear(metric: str, rows: Sequence[MetricRow], fmt: str | None) -> Curve:
    doses = np.asarray([r.dose or 0 for r in rows], dtype=float)
    values = np.asarray([r.value or 0.0 for r in rows], dtype=float)
    common: dict[str, Any] = {"metric": metric, "eval_set": "capability", "format": fmt, "n": len(rows),
              "n_prompts": max((r.n for r in rows), default=0), "n_unlabelled": 0,
              "seeds": sorted({r.seed for r in rows if r.seed is not None})}  # fmt: skip
    levels = np.unique(doses)
    if len(levels) < 2:
        knots = [Knot(dose=int(d), n=int((doses == d).sum()), observed=float(values[doses == d].mean()),
                      observed_lo=None, observed_hi=None, fitted=float(values[doses == d].mean()), lo=None, hi=None,
                      residual=None) for d in levels]  # fmt: skip
        return Curve(model="none", why="fewer than two doses: no line", band=BANDS["none"], direction="flat",
                     knots=knots, **common)  # fmt: skip
    design = np.column_stack([np.ones_like(doses), np.log1p(doses)])
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    df = len(values) - 2
    cov = None
    if df > 0:
        s2 = float(np.sum((values - design @ coef) ** 2)) / df
        cov = (s2 * np.linalg.inv(design.T @ design)).tolist()
    curve = Curve(model="linear", why="capability: one value per cell, a straight line in log(1 + dose)",
                  band=BANDS["linear"], direction=_direction(float(coef[1])), coef=[float(c) for c in coef], cov=cov,
                  df=df, knots=[], **common)  # fmt: skip
    fitted, lo, hi = curve_at(curve, levels)
    knots = [Knot(dose=int(d), n=int((doses == d).sum()), observed=float(values[doses == d].mean()), observed_lo=None,
                  observed_hi=None, fitted=float(f), lo=None if math.isnan(a) else float(a),
                  hi=None if math.isnan(b) else float(b), residual=None)
             for d, f, a, b in zip(levels, fitted, lo, hi, strict=True)]  # fmt: skip
    return curve.model_copy(update={"knots": knots})


def change_between(curve: Curve, start: int, end: int) -> tuple[float, float | None, float | None]:
    """The fitted change of a line from dose `start` to dose `end`, with its 95% t interval where there is one."""
    if curve.coef is None:
        first = next((k.fitted for k in curve.knots if k.dose == start), math.nan)
        last = next((k.fitted for k in curve.knots if k.dose == end), math.nan)
        return last - first, None, None
    dx = math.log1p(end) - math.log1p(start)
    value = curve.coef[1] * dx
    if curve.cov is None:
        return value, None, None
    half = _t95(curve.df) * math.sqrt(max(curve.cov[1][1], 0.0)) * abs(dx)
    if math.isnan(half):
        return value, None, None
    return value, value - half, value + half
