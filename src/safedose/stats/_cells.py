"""Dose-response across training cells: a two-stage fit in which the training cell (dose x seed x format), not the
answer, is the unit of replication.

Stage 1 turns each cell's answers into one number: the empirical logit of its share (0/1 values) or its mean
(scores). Stage 2 fits a straight line in x = log(1 + dose) through the cells by least squares. The line's covariance
has two parts: the residual scatter of the cells about the line (run-to-run variation plus each cell's own answer
noise, estimated on the cells' residual degrees of freedom), and the part all cells share because they answer the
same prompts, estimated from the covariance over prompts between distinct cells. Intervals use Student's t on the
residual degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from safedose.stats._rates import t_quantile

MIN_DF = 2  # residual degrees of freedom below which run-to-run variation counts as not estimated


@dataclass(frozen=True)
class Cell:
    """One training cell's usable answers: its dose and prompt id -> value (0/1, or a score)."""

    dose: int
    values: Mapping[str, float]


@dataclass(frozen=True)
class CellLine:
    """A straight line through per-cell values on x = log(1 + dose), with its covariance (NaN where the residual
    part cannot be estimated) and residual degrees of freedom."""

    coef: tuple[float, float]
    cov: tuple[tuple[float, float], tuple[float, float]]
    df: int
    n_cells: int
    residual_var: float
    lack_of_fit_p: float | None


@dataclass(frozen=True)
class DoseMean:
    """The cells of one dose: their mean stage-1 value and its standard error (NaN when not estimable)."""

    dose: int
    n_cells: int
    mean: float
    se: float


@dataclass(frozen=True)
class SlopeTest:
    """The slope of a cell line with its 95% t interval and two-sided p-value on the residual degrees of freedom."""

    slope: float
    se: float
    lo: float
    hi: float
    p_value: float
    df: int


def empirical_logit(k: float, n: float) -> float:
    """log((k + 1/2) / (n - k + 1/2)): the logit of a share, finite at 0 and n (Haldane-Anscombe)."""
    return math.log((k + 0.5) / (n - k + 0.5))


def cell_value(cell: Cell, *, logit: bool) -> float:
    """Stage 1: the cell's empirical logit (0/1 values) or its mean (scores)."""
    v = np.fromiter(cell.values.values(), dtype=float, count=len(cell.values))
    return empirical_logit(float(v.sum()), float(len(v))) if logit else float(v.mean())


def shared_prompt_cov(cells: Sequence[Cell], *, logit: bool) -> np.ndarray:
    """Cells x cells covariance of the stage-1 values that comes from answering the same prompts: for two distinct
    cells, the covariance over their common prompts of the two cells' values divided by the number of common prompts
    (on the logit scale by the delta method); a cell's own entry is the mean of its row's other entries; the matrix is
    then made positive semi-definite by dropping negative eigenvalues."""
    m = len(cells)
    out = np.zeros((m, m))
    scale = np.ones(m)
    if logit:
        for i, c in enumerate(cells):
            v = np.fromiter(c.values.values(), dtype=float, count=len(c.values))
            p = (v.sum() + 0.5) / (len(v) + 1.0)
            scale[i] = 1.0 / (p * (1.0 - p))
    for i in range(m):
        for j in range(i + 1, m):
            common = sorted(set(cells[i].values) & set(cells[j].values))
            if len(common) < 2:
                continue
            a = np.asarray([cells[i].values[k] for k in common], dtype=float)
            b = np.asarray([cells[j].values[k] for k in common], dtype=float)
            cov = float(np.cov(a, b, ddof=1)[0, 1]) / len(common)
            out[i, j] = out[j, i] = cov * scale[i] * scale[j]
    if m > 1:
        np.fill_diagonal(out, out.sum(axis=1) / (m - 1))
    values, vectors = np.linalg.eigh(out)
    psd: np.ndarray = (vectors * np.clip(values, 0.0, None)) @ vectors.T
    return psd


def _pure_error(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Residual sum of squares about each dose's mean, and its degrees of freedom (cells - doses)."""
    levels = np.unique(x)
    rss = sum(float(((y[x == v] - y[x == v].mean()) ** 2).sum()) for v in levels)
    return rss, len(x) - len(levels)


def fit_line(cells: Sequence[Cell], *, logit: bool = True) -> CellLine | None:
    """Stage 2: the least-squares line through the cells' values, or None with fewer than two distinct doses.
    `lack_of_fit_p` is the F test of the line against one mean per dose, where replicate cells allow it."""
    x = np.log1p(np.asarray([c.dose for c in cells], dtype=float))
    levels = np.unique(x)
    if len(levels) < 2:
        return None
    y = np.asarray([cell_value(c, logit=logit) for c in cells], dtype=float)
    design = np.column_stack([np.ones_like(x), x])
    inv = np.linalg.inv(design.T @ design)
    coef = inv @ design.T @ y
    df = len(cells) - 2
    rss = float(((y - design @ coef) ** 2).sum())
    residual_var = rss / df if df > 0 else math.nan
    hat = inv @ design.T
    cov = hat @ shared_prompt_cov(cells, logit=logit) @ hat.T + (residual_var * inv if df > 0 else math.nan)
    pure, pure_df = _pure_error(x, y)
    lack_p = None
    if pure_df > 0 and len(levels) > 2 and pure > 0:
        from scipy.stats import f

        stat = ((rss - pure) / (len(levels) - 2)) / (pure / pure_df)
        lack_p = float(f.sf(stat, len(levels) - 2, pure_df))
    return CellLine(
        coef=(float(coef[0]), float(coef[1])),
        cov=((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
        df=df,
        n_cells=len(cells),
        residual_var=residual_var,
        lack_of_fit_p=lack_p,
    )


def line_band(line: CellLine, x: np.ndarray, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The line at x (log(1 + dose)) with its two-sided t band at `level` (NaN without residual df)."""
    a, b = line.coef
    c = line.cov
    eta = a + b * x
    se = np.sqrt(np.maximum(c[0][0] + 2 * x * c[0][1] + x * x * c[1][1], 0.0))
    q = t_quantile(1 - (1 - level) / 2, line.df)
    return eta, eta - q * se, eta + q * se


def slope_test(line: CellLine) -> SlopeTest | None:
    """t test of the slope on the cells' residual degrees of freedom; None without them."""
    from scipy.stats import t

    se = math.sqrt(max(line.cov[1][1], 0.0)) if math.isfinite(line.cov[1][1]) else math.nan
    if line.df < 1 or not math.isfinite(se) or se == 0:
        return None
    slope = line.coef[1]
    q = t_quantile(0.975, line.df)
    p = float(2 * t.sf(abs(slope / se), line.df))
    return SlopeTest(slope=slope, se=se, lo=slope - q * se, hi=slope + q * se, p_value=p, df=line.df)


def dose_means(cells: Sequence[Cell], *, logit: bool = True) -> tuple[list[DoseMean], int]:
    """Per dose, the mean stage-1 value of its cells with a standard error from the pooled within-dose variance
    (replicate cells: run-to-run variation) plus the shared-prompt part; and that variance's degrees of freedom
    (cells - doses; 0 means one cell per dose and NaN standard errors)."""
    x = np.asarray([c.dose for c in cells])
    y = np.asarray([cell_value(c, logit=logit) for c in cells], dtype=float)
    pure, df = _pure_error(x.astype(float), y)
    within = pure / df if df > 0 else math.nan
    shared = shared_prompt_cov(cells, logit=logit)
    out = []
    for d in np.unique(x):
        idx = np.flatnonzero(x == d)
        var = within / len(idx) + float(shared[np.ix_(idx, idx)].mean())
        out.append(DoseMean(dose=int(d), n_cells=len(idx), mean=float(y[idx].mean()), se=math.sqrt(var)))
    return out, df
