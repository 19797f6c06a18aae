"""The cross-format section: harmful compliance by training format and prompt form, and the changes between
formats."""

from __future__ import annotations

from typing import Any

from safedose.evaluate import CrossFormat, CrossFormatRow
from safedose.report._rows import METHOD_NAMES, metric_title
from safedose.run import BASE, BASE_CHAT


def _cross_cell(row: CrossFormatRow | None) -> dict[str, str]:
    if row is None:
        return {"text": "–", "sub": "", "warn": ""}
    warn = f"{row.n_unlabelled} unlabelled (left out)" if row.n_unlabelled else ""
    if row.value is None:
        return {"text": "–", "sub": "no usable label", "warn": warn}
    text = f"{row.value:.2f}" + (f" [{row.lo:.2f}, {row.hi:.2f}]" if row.lo is not None and row.hi is not None else "")
    sub = f"n={row.n}" + (f" over {len(row.seeds)} seeds" if row.seed is None and len(row.seeds) > 1 else "")
    return {"text": text, "sub": sub, "warn": warn}


def cross_format_section(table: CrossFormat | None, base_label: str) -> dict[str, Any] | None:
    """Rows: the untuned model, then each dose and training format (pooled over seeds where two or more were run);
    columns: each harm set with its form, and every set of a form together."""
    if table is None or not table.rows:
        return None
    ordered = sorted({(r.form, r.eval_set) for r in table.rows},
                     key=lambda fs: (fs[0], fs[1].startswith("all "), fs[1]))  # fmt: skip
    columns = [f"{s} ({f})" if not s.startswith("all ") else s for f, s in ordered]
    cells = {(r.variant, r.form, r.eval_set): r for r in table.rows}
    pooled = {(r.dose, r.format) for r in table.rows if r.dose is not None and r.seed is None}
    names = {BASE_CHAT: "untuned · own chat template", BASE: base_label}
    entries = [(v, names[v], True) for v in (BASE_CHAT, BASE) if any(r.variant == v for r in table.rows)]
    tuned = sorted(
        {(r.dose, r.format, r.seed, r.variant) for r in table.rows if r.dose is not None},
        key=lambda t: (t[0], t[1] != table.reference_format, str(t[1]), t[2] is not None, t[2] or 0),
    )
    seeds = {r.seed for r in table.rows if r.seed is not None}
    for dose, fmt, seed, variant in tuned:
        if seed is None:
            n_seeds = max(len(r.seeds) for r in table.rows if r.variant == variant)
            entries.append((variant, f"dose {dose} · {fmt} (mean of {n_seeds} seeds)", False))
        elif (dose, fmt) not in pooled:
            entries.append((variant, f"dose {dose} · {fmt}" + (f" · seed {seed}" if len(seeds) > 1 else ""), False))
    rows = [{"label": label, "untuned": untuned, "cells": [_cross_cell(cells.get((v, f, s))) for f, s in ordered]}
            for v, label, untuned in entries]  # fmt: skip
    sources = "; ".join(f"{s}: {f} ({table.form_source.get(s, 'catalog')})" for s, f in sorted(table.forms.items()))
    caption = (
        f"{metric_title(table.metric)}: share of answers to unsafe prompts [95% interval], per eval set and, where a "
        "form has several sets, over the prompts of all its sets together. Rows are the untuned model and each dose "
        "and training format (the form of the safety prompts in the mix); at a dose and seed every format holds the "
        "same safety items, so format is the only thing that differs. Single-seed rows: 95% Wilson interval over the "
        "prompts; rows marked 'mean of S seeds': 95% hierarchical bootstrap (seeds, then prompts). Forms of the eval "
        f"sets: {sources} (catalog: declared in the catalogue; inferred: at least 90% of the set's prompts pass that "
        "form's checks)."
    )
    differences = []
    for d in sorted(table.differences, key=lambda d: (d.to_format, d.dose, d.form, d.eval_set, d.pooled, d.seeds)):
        text = "–" if d.value is None else f"{d.value:+.2f}"
        if d.value is not None and d.lo is not None and d.hi is not None:
            text += f" [{d.lo:+.2f}, {d.hi:+.2f}]"
        differences.append({
            "dose": d.dose, "eval_set": d.eval_set if d.eval_set.startswith("all ") else f"{d.eval_set} ({d.form})",
            "step": f"{d.from_format} → {d.to_format}", "text": text,
            "seeds": ("pooled over seeds " if d.pooled else "seed ") + ", ".join(map(str, d.seeds)),
            "interval": METHOD_NAMES.get(d.interval, d.interval),
            "n": f"{d.n}" + (f" ({d.n_unlabelled} left out: a side unlabelled)" if d.n_unlabelled else ""),
        })  # fmt: skip
    difference_caption = (
        "Change in the share from one training format to another at the same dose and seed, on the same prompts "
        "(later minus earlier): 95% Newcombe paired score interval per seed; pooled rows: mean over seeds of the "
        "per-seed changes, 95% hierarchical bootstrap over seeds, then prompts."
    )
    return {"table": {"title": "", "corner": "variant", "columns": columns, "rows": rows, "caption": caption},
            "differences": differences, "difference_caption": difference_caption}  # fmt: skip
