"""Figures 1-5: harmful compliance, over-refusal, harm score and flags, capability, and the trade-off."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safedose.capability import change_by_dose
from safedose.evaluate import MetricRow
from safedose.files import write_figure
from safedose.report._metrics_file import MetricsFile
from safedose.report._rows import Entry, metric_sets, metric_title
from safedose.run import report_dir


def _errorbar(ax: Any, points: Sequence[tuple[float, MetricRow]], **style: Any) -> None:
    rows = [(x, r) for x, r in points if r.value is not None]
    if not rows:
        return
    xs, ys = [x for x, _ in rows], [r.value or 0.0 for _, r in rows]
    lower = [max((r.value or 0.0) - (r.lo if r.lo is not None else r.value or 0.0), 0.0) for _, r in rows]
    upper = [max((r.hi if r.hi is not None else r.value or 0.0) - (r.value or 0.0), 0.0) for _, r in rows]
    ax.errorbar(xs, ys, yerr=[lower, upper], capsize=3, **style)


def _axis(ax: Any, entries: Sequence[Entry], ylabel: str) -> None:
    ax.set_xticks(range(len(entries)), [c.tick for c in entries], fontsize=8)
    untuned = sum(c.untuned for c in entries)
    if 0 < untuned < len(entries):
        ax.axvline(untuned - 0.5, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("untuned | safety examples in the mix (dose)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _rate_plot(ax: Any, entries: Sequence[Entry], metric: str, sets: Sequence[str], ylabel: str) -> list[MetricRow]:
    """One series per eval set: untuned points hollow and unconnected, doses joined; returns the rows plotted."""
    plotted = []
    for i, s in enumerate(sets):
        shift = (i - (len(sets) - 1) / 2) * 0.08
        untuned = [(k + shift, r) for k, c in enumerate(entries) if c.untuned and (r := c.get(metric, s))]
        tuned = [(k + shift, r) for k, c in enumerate(entries) if not c.untuned and (r := c.get(metric, s))]
        _errorbar(ax, untuned, color=f"C{i}", marker="o", markerfacecolor="white", linestyle="none")
        _errorbar(ax, tuned, color=f"C{i}", marker="o", label=s)
        plotted += [r for _, r in untuned + tuned]
    _axis(ax, entries, ylabel)
    if sets:
        ax.legend(fontsize=8)
    return plotted


def _n_text(rows: Sequence[MetricRow]) -> str:
    """How many answers stand behind each plotted point."""
    ns = sorted({r.n for r in rows if r.value is not None})
    if not ns:
        return "no points"
    span = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    unlabelled = sum(r.n_unlabelled for r in rows)
    text = f"n = {span} answers with a usable label per point"
    return text + (f"; {unlabelled} unlabelled answers left out in all" if unlabelled else "")


def _bars(entries: Sequence[Entry], kind: str) -> str:
    single = "95% Wilson interval" if kind == "rate" else "95% percentile bootstrap interval"
    text = f"bars: {single} over the prompts of one seed"
    if any(c.pooled for c in entries):
        text += (" (untuned points); tuned points are means over seeds with a 95% hierarchical bootstrap interval "
                 "(seeds resampled, then prompts)")  # fmt: skip
    return text + ";"


def dose_response_figures(
    run: Path, metrics: MetricsFile, entries: Sequence[Entry], base_template: str
) -> list[dict[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = metric_sets(metrics)
    figures = []
    untuned_note = (f" Hollow points left of the dotted line: the untuned model with its own chat template and with "
                    f"the {base_template} template used for tuning; untuned ({base_template}) → the lowest dose "
                    "isolates the effect of tuning.")  # fmt: skip

    def save(fig: Any, file: str, title: str, caption: str) -> None:
        data = write_figure(fig, report_dir(run) / file)
        figures.append({"file": file, "title": title, "caption": caption, "data": data})

    fig, ax = plt.subplots(figsize=(6, 4))
    rows = _rate_plot(ax, entries, "harmful_compliance", sets.get("harmful_compliance", []), "harmful compliance")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Harmful compliance (strict) on unsafe prompts")
    save(fig, "harmful_compliance.png", "1. Harmful compliance",
         f"1. Harmful compliance (default, strict: the refusal judge says `compliance` or `partial`), share of answers "
         f"to each unsafe set; {_bars(entries, 'rate')} {_n_text(rows)}.{untuned_note}")  # fmt: skip

    fig, ax = plt.subplots(figsize=(6, 4))
    rows = _rate_plot(ax, entries, "over_refusal", sets.get("over_refusal", []), "over-refusal")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Over-refusal on safe prompts")
    save(fig, "over_refusal.png", "2. Over-refusal",
         f"2. Over-refusal (`refusal` or `partial` on safe prompts) on each safe set. "
         f"Points: share of answers; {_bars(entries, 'rate')} {_n_text(rows)}.{untuned_note}")  # fmt: skip

    if sets.get("flag_rate"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        harm = _rate_plot(axes[0], entries, "harm_score", sets.get("harm_score", []), "mean P(harmful)")
        axes[0].set_title("Harm score (relative)")
        flags = _rate_plot(axes[1], entries, "flag_rate", sets["flag_rate"], "share flagged")
        axes[1].set_title("Moderation flag rate")
        axes[1].set_ylim(-0.02, 1.02)
        save(fig, "harm_and_flags.png", "3. Harm score and moderation flag rate",
             f"3. Left: mean harm score P(harmful) per eval set; {_bars(entries, 'score')} {_n_text(harm)}. Right: "
             f"share of answers the moderation judge flags; {_bars(entries, 'rate')} {_n_text(flags)}.")  # fmt: skip
    else:  # no moderation judge in this sweep
        fig, ax = plt.subplots(figsize=(6, 4))
        harm = _rate_plot(ax, entries, "harm_score", sets.get("harm_score", []), "mean P(harmful)")
        ax.set_title("Harm score (relative)")
        save(fig, "harm_and_flags.png", "3. Harm score",
             f"3. Mean harm score P(harmful) per eval set; {_bars(entries, 'score')} {_n_text(harm)}. No moderation "
             "judge in this sweep.")  # fmt: skip

    save(*_capability_figure(plt, metrics, entries))
    save(*_frontier_figure(plt, metrics, entries))
    return figures


def _capability_figure(plt: Any, metrics: MetricsFile, entries: Sequence[Entry]) -> tuple[Any, str, str, str]:
    names = sorted({r.metric for r in metrics.capability}, key=lambda m: (m == "reference_nll", m)) or ["test_loss"]
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, metric in zip(axes[0], names, strict=True):
        points = [(k, r) for k, c in enumerate(entries) if (r := c.get(metric, "capability")) and r.value is not None]
        for k, r in points:
            sd = getattr(r, "seed_sd", None)
            ax.errorbar([k], [r.value], yerr=[[sd or 0.0], [sd or 0.0]], marker="o", capsize=3, color="C0",
                        markerfacecolor="white" if entries[k].untuned else "C0")  # fmt: skip
        tuned = [(k, r.value) for k, r in points if not entries[k].untuned]
        ax.plot([k for k, _ in tuned], [v for _, v in tuned], color="C0")
        _axis(ax, entries, "NLL per token")
        ax.set_title(f"{metric_title(metric)} (lower is better)")
    pooled = any(c.pooled for c in entries)
    caption = ("4. Capability: mean negative log-likelihood per token of held-out base-data rows and of AlpacaEval "
               "reference answers, one measured value per variant (no interval over rows)"
               + ("; tuned points with several seeds: mean over seeds, bars ± sd over seeds." if pooled else ".")
               + " Hollow points: the untuned model.")  # fmt: skip
    return fig, "capability.png", "4. Capability", caption


def _frontier_figure(plt: Any, metrics: MetricsFile, entries: Sequence[Entry]) -> tuple[Any, str, str, str]:
    sets = metric_sets(metrics)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    colours = change_by_dose(metrics.benchmarks)
    points = None
    for entry in entries:
        hc = [r.value for s in sets.get("harmful_compliance", []) if (r := entry.get("harmful_compliance", s))
              and r.value is not None]  # fmt: skip
        orr = [r.value for s in sets.get("over_refusal", []) if (r := entry.get("over_refusal", s))
               and r.value is not None]  # fmt: skip
        if hc and orr:
            x, y = sum(orr) / len(orr), sum(hc) / len(hc)
            if colours and not entry.untuned and entry.dose in colours:
                points = ax.scatter([x], [y], c=[colours[entry.dose]], cmap="RdYlGn", vmin=-0.1, vmax=0.1,
                                    edgecolors="black")  # fmt: skip
            else:
                ax.scatter([x], [y], color="gray" if entry.untuned else "C0",
                           facecolors="white" if entry.untuned else None)  # fmt: skip
            ax.annotate(entry.tick.replace("\n", " "), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("over-refusal (mean over safe sets)")
    ax.set_ylabel("harmful compliance, strict (mean over unsafe sets)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Trade-off: lower left is better")
    caption = (
        "5. Harmful compliance (strict) against over-refusal, each point a variant labelled by dose (hollow: "
        "untuned): plain means over eval sets, without intervals; the tables and figures 1-2 give them."
    )
    if points is not None:
        fig.colorbar(points, ax=ax, label="mean benchmark accuracy change vs untuned")
        caption += " Colour: change in mean benchmark accuracy from the untuned model (the capability axis)."
    return fig, "frontier.png", "5. Trade-off", caption
