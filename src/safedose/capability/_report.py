"""The report's capability section: benchmark accuracy and win-rate against dose, tables with intervals, the paired
changes, and why a part was not measured."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safedose.capability._records import ScoreChange, TaskScore, WinRate
from safedose.capability._summary import PRIMARY, CapabilityResults, mean_accuracy
from safedose.files import write_figure
from safedose.run import BASE, report_dir


def _order(results: CapabilityResults) -> list[tuple[str, int | None, int | None]]:
    """(variant, dose, seed): the untuned base first, then cells by dose and seed."""
    seen = {(s.variant, s.dose, s.seed) for s in results.scores} | {(w.variant, w.dose, w.seed)
                                                                     for w in results.win_rates}  # fmt: skip
    return sorted(seen, key=lambda v: (v[1] is not None, v[1] or 0, v[2] or 0, v[0]))


def change_by_dose(results: CapabilityResults | None) -> dict[int, float]:
    """Mean benchmark accuracy at each dose (mean over seeds) minus the untuned base's, for the frontier's colour."""
    if results is None or not results.scores:
        return {}
    base = mean_accuracy(results.scores, [BASE])
    if base is None:
        return {}
    out = {}
    for dose in sorted({s.dose for s in results.scores if s.dose is not None}):
        value = mean_accuracy(results.scores, sorted({s.variant for s in results.scores if s.dose == dose}))
        if value is not None:
            out[dose] = value - base
    return out


def _cell(value: float | None, lo: float | None, hi: float | None, *, pct: bool = True) -> str:
    if value is None:
        return "-"
    spec = ".1%" if pct else "+.1%"
    return f"{value:{spec}}" + (f" [{lo:{spec}}, {hi:{spec}}]" if lo is not None and hi is not None else "")


def _score_text(s: TaskScore | None) -> dict[str, str]:
    if s is None:
        return {"text": "-", "sub": ""}
    se = f" · lm-eval se {s.stderr:.3f}" if s.stderr is not None else ""
    return {"text": _cell(s.value, s.lo, s.hi), "sub": f"n={s.n}{se}"}


def _rate_text(w: WinRate | None) -> dict[str, str]:
    if w is None:
        return {"text": "-", "sub": ""}
    lc = f"LC {_cell(w.lc_win_rate, w.lc_lo, w.lc_hi)}" if w.lc_win_rate is not None else f"LC: {w.lc_note}"
    counts = f"{w.wins} won · {w.losses} lost · {w.ties} tied · {w.parse_errors} unparseable (left out)"
    return {"text": _cell(w.win_rate, w.lo, w.hi), "sub": f"{lc}; {counts}"}


def _label(variant: str, dose: int | None, seed: int | None, seeds: int) -> str:
    if dose is None:
        return f"untuned ({variant})"
    return f"dose {dose}" + (f" · seed {seed}" if seeds > 1 else "")


def report_section(run: Path, results: CapabilityResults | None) -> dict[str, Any] | None:
    """What the report's capability section shows, with its figures written to the report folder."""
    if results is None:
        return None
    order = _order(results)
    seeds = len({s for _, d, s in order if d is not None})
    keys = list(dict.fromkeys((s.task, s.metric) for s in results.scores))
    by_score = {(s.variant, s.task, s.metric): s for s in results.scores}
    by_rate = {w.variant: w for w in results.win_rates}
    columns = [f"{t} · {m}" for t, m in keys] + (["mean accuracy (acc)"] if keys else [])
    columns += [f"win-rate vs {results.win_rates[0].reference}"] if results.win_rates else []
    rows = []
    for variant, dose, seed in order:
        cells = [_score_text(by_score.get((variant, t, m))) for t, m in keys]
        if keys:
            mean = mean_accuracy(results.scores, [variant])
            cells.append({"text": _cell(mean, None, None), "sub": ""})
        if results.win_rates:
            cells.append(_rate_text(by_rate.get(variant)))
        rows.append({"label": _label(variant, dose, seed, seeds), "cells": cells})
    return {
        "notes": results.notes,
        "columns": columns,
        "rows": rows,
        "changes": [_change_row(c) for c in results.changes if c.metric == PRIMARY],
        "figures": _figures(run, results, order, seeds),
        "judge": results.win_rates[0].judge if results.win_rates else None,
    }


def _change_row(c: ScoreChange) -> dict[str, str]:
    step = f"untuned → dose {c.to_dose}" if c.from_dose is None else f"dose {c.from_dose} → {c.to_dose}"
    step += f" ({c.from_variant} → {c.to_variant})"
    return {"task": c.task, "step": step, "text": _cell(c.value, c.lo, c.hi, pct=False), "n": str(c.n),
            "interval": c.interval}  # fmt: skip


def _figures(run: Path, results: CapabilityResults, order: Sequence[tuple[str, int | None, int | None]],
             seeds: int) -> list[dict[str, str]]:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = {v: k for k, (v, _, _) in enumerate(order)}
    ticks = [("untuned" if d is None else f"{d}" + (f"\ns{s}" if seeds > 1 else "")) for _, d, s in order]
    figures = []

    def save(fig: Any, file: str, caption: str) -> None:
        figures.append({"file": file, "caption": caption, "data": write_figure(fig, report_dir(run) / file)})

    def axis(ax: Any, ylabel: str) -> None:
        ax.set_xticks(range(len(order)), ticks, fontsize=8)
        ax.axvline(0.5, color="gray", linestyle=":", linewidth=1)
        ax.set_xlabel("untuned | safety examples in the mix (dose)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)

    tasks = list(dict.fromkeys(s.task for s in results.scores if s.metric == PRIMARY))
    if tasks:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for i, task in enumerate(tasks):
            shift = (i - (len(tasks) - 1) / 2) * 0.06
            points = [(x[s.variant] + shift, s.value, s.lo, s.hi) for s in results.scores
                      if s.task == task and s.metric == PRIMARY]  # fmt: skip
            _bars(ax, points, label=task, color=f"C{i}", linestyle="none")
        means = [(x[v], m) for v, _, _ in order if (m := mean_accuracy(results.scores, [v])) is not None]
        ax.plot([p for p, _ in means], [m for _, m in means], color="black", marker="s", label="mean over tasks")
        axis(ax, "accuracy (lm-eval acc)")
        ax.legend(fontsize=7)
        ax.set_title("Benchmark accuracy against dose")
        n = sorted({s.n for s in results.scores})
        span = f"{n[0]}" if n[0] == n[-1] else f"{n[0]}-{n[-1]}"
        save(fig, "capability_benchmarks.png", "Benchmark accuracy (lm-evaluation-harness `acc`; TruthfulQA MC2: its "
             f"score) per task against dose; bars: 95% Wilson interval over the {span} "
             "items scored (a bootstrap interval for MC2); black: mean over tasks.")  # fmt: skip
    if results.win_rates:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        rates = results.win_rates
        _bars(ax, [(x[w.variant], w.win_rate, w.lo, w.hi) for w in rates], label="raw (ties half)", color="C0")
        _bars(ax, [(x[w.variant] + 0.08, w.lc_win_rate, w.lc_lo, w.lc_hi) for w in rates], label="length-controlled",
              color="C3")  # fmt: skip
        ax.axhline(0.5, color="gray", linewidth=1)
        ax.set_ylim(-0.02, 1.02)
        axis(ax, "win-rate")
        ax.legend(fontsize=8)
        ax.set_title(f"Win-rate against {rates[0].reference}")
        save(fig, "capability_win_rate.png", f"Win-rate of each variant's answers against {rates[0].reference}, "
             f"judged by {rates[0].judge} (answer order randomised per item); raw: 95% Wilson interval, ties count "
             "half, unparseable verdicts left out (counted in the table); length-controlled: AlpacaEval 2's GLM, 95% "
             "delta-method interval.")  # fmt: skip
    return figures


def _bars(ax: Any, points: Sequence[tuple[float, float | None, float | None, float | None]], **style: Any) -> None:
    """Points with asymmetric interval bars; points without a value are left out."""
    pts = [(p, v, lo if lo is not None else v, hi if hi is not None else v) for p, v, lo, hi in points if v is not None]
    if pts:
        below, above = [max(v - lo, 0) for _, v, lo, _ in pts], [max(hi - v, 0) for _, v, _, hi in pts]
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[below, above], capsize=3, marker="o",
                    markersize=4, **style)  # fmt: skip
