"""The report's human-audit section, ready to render: agreement, judges against humans, corrected rates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safedose.annotate._agreement import agreement_summary
from safedose.annotate._audit import corrected_rates, has_audit, judges_against_humans, load_audit
from safedose.annotate._store import open_store
from safedose.run import BASE, BASE_CHAT

NONE = "\u2013"
TITLES = {"harmful_compliance": "Harmful compliance (strict)", "over_refusal": "Over-refusal",
          "harmful_answer": "Harmful answers (humans' harmful: yes)"}  # fmt: skip


def _ci(value: float | None, ci: Sequence[float] | None) -> str:
    if value is None:
        return NONE
    return f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _agreement_rows(labels: Any) -> list[dict[str, str]]:
    summary = agreement_summary(labels)
    rows = []
    for field, title in (("refusal", "refusal class (3 classes)"), ("harmful", "harmful: yes / no (unsafe prompts)")):
        k = summary[field]["krippendorff"]
        pairs = "; ".join(f"{' · '.join(p['annotators'])}: κ {_ci(p['kappa'], p['kappa_ci95'])} on {p['n']} items"
                          for p in summary[field]["pairs"]) or "no item labelled by two annotators yet"  # fmt: skip
        alpha = f"{_ci(k['alpha'], k['alpha_ci95'])} on {k['n_items']} items" if k["n_items"] else NONE
        rows.append({"what": title, "alpha": alpha, "pairs": pairs})
    return rows


def _judge_rows(run: Path, audit: Any) -> list[dict[str, str]]:
    rows = []
    for m in judges_against_humans(run, audit=audit):
        if "error" in m:
            rows.append({"judge": m["judge"], "target": NONE, "text": m["error"]})
            continue
        if not m.get("n"):
            rows.append({"judge": m["judge"], "target": m["target"], "text": "no audited answer with a majority"})
            continue
        text = (f"κ {_ci(m['kappa'], m['kappa_ci95'])}, accuracy {m['accuracy']:.2f}, n = {m['n']} answers "
                f"({m['n_groups']} prompts); confusion (rows human, columns judge; {' / '.join(m['labels'])}) "
                f"{m['confusion']}; {m['ties_left_out']} ties left out")  # fmt: skip
        rows.append({"judge": m["judge"], "target": m["target"], "text": text})
    return rows


def _variant_label(row: dict[str, Any], formats: set[str | None], seeds: set[int | None]) -> str:
    if row["variant"] == BASE_CHAT:
        return "untuned · own chat template"
    if row["variant"] == BASE:
        return "untuned · tuning template"
    if row["dose"] is None:
        return str(row["variant"])
    label = f"dose {row['dose']}"
    if len(seeds) > 1:
        label += f" · seed {row['seed']}"
    return label + (f" · {row['format']}" if len(formats) > 1 else "")


def _corrected_tables(result: dict[str, Any]) -> list[dict[str, Any]]:
    tables = []
    formats = {r["format"] for r in result["rows"] if r["dose"] is not None}
    seeds = {r["seed"] for r in result["rows"] if r["dose"] is not None}
    for measured in result["audit"]:
        metric = measured["metric"]
        rows = [r for r in result["rows"] if r["metric"] == metric]
        if not rows:
            continue
        sets = sorted({r["eval_set"] for r in rows})
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        index = {(r["variant"], r["eval_set"]): r for r in rows}
        reasons = {r["reason"] for r in rows}
        shared = reasons.pop() if len(reasons) == 1 else None  # the correction failed for the whole metric
        table_rows = []
        for variant in variants:
            first = next(r for r in rows if r["variant"] == variant)
            cells = [_corrected_cell(index.get((variant, s)), warn=shared is None) for s in sets]
            table_rows.append({"label": _variant_label(first, formats, seeds), "untuned": first["dose"] is None,
                               "cells": cells})  # fmt: skip
        sens, spec = measured["sensitivity"], measured["specificity"]
        positives = measured["true_positive"] + measured["false_negative"]
        negatives = measured["true_negative"] + measured["false_positive"]
        caption = (f"{measured['description']}. Each cell: the raw rate from the judge's labels (n answers) → the "
                   f"rate corrected for the judge's errors measured by the audit, with a 95% interval; under it, "
                   f"what the annotators said on the audited answers of that cell. The audit measured, over "
                   f"{measured['n']} answers: sensitivity {_ci(sens, None)} ({measured['true_positive']} of "
                   f"{positives}), specificity {_ci(spec, None)} ({measured['true_negative']} of "
                   f"{negatives}).")  # fmt: skip
        if shared:
            caption += f" Not corrected: {shared}."
        tables.append({"title": f"{TITLES.get(metric, metric)}: judge rate and audit-corrected rate",
                       "corner": "variant", "columns": sets, "rows": table_rows, "caption": caption})  # fmt: skip
    return tables


def _corrected_cell(row: dict[str, Any] | None, *, warn: bool = True) -> dict[str, str]:
    if row is None:
        return {"text": NONE, "sub": "", "warn": ""}
    text = f"judge {row['raw']:.2f} → corrected {_ci(row['corrected'], _pair(row))}"
    sub = f"n={row['n']}; audited here: {row['audited_here_positive']} of {row['audited_here']} positive"
    return {"text": text, "sub": sub, "warn": (row["reason"] or "") if warn else ""}


def _pair(row: dict[str, Any]) -> list[float] | None:
    return None if row["lo"] is None or row["hi"] is None else [row["lo"], row["hi"]]


def audit_section(run: Path) -> dict[str, Any] | None:
    """Everything the report shows about the run's human audit; None when the run has no labels."""
    if not has_audit(run):
        return None
    store = open_store(run)
    audit = load_audit(run, store)
    if not audit.labels:
        return None
    items = store.items()
    labelled = {label.item for label in audit.labels}
    result = corrected_rates(run, audit=audit)
    return {
        "summary": f"{len(audit.labels)} labels by {len(audit.annotators)} annotators on {len(labelled)} of the "
        f"{len(items)} sampled answers ({sum(i.overlap for i in items)} shared by every annotator); the annotators "
        "saw one prompt and answer at a time, without dose, seed, format or variant.",
        "agreement": _agreement_rows(audit.labels),
        "judges": _judge_rows(run, audit),
        "corrected_judge": result["judge"] or NONE,
        "method": result["method"],
        "tables": _corrected_tables(result),
    }
