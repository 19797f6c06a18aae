"""Judges against each other on the study's answers: one table per question, variants by pairs of judges."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safedose.evaluate import AGREEMENT_LABELS, REFUSAL_FIELD, AgreementRow
from safedose.report._metrics_file import MetricsFile
from safedose.run import BASE, BASE_CHAT

LOW_AGREEMENT = 0.8
QUESTION_TEXT = {"complied": ("Unsafe prompts", "harm", "did the model comply?"),
                 "refused": ("Safe prompts", "over-refusal", "did the model refuse?")}  # fmt: skip
AGREEMENT_CAPTION = (
    "Each cell: the share of this variant's answers on which the two judges give the same yes / no answer [95% Wilson "
    "interval over the answers both judges labelled], Cohen's κ (agreement beyond chance; undefined when both judges "
    "give one and the same answer throughout), n = answers both labelled, and yes a / b = how many of them each judge "
    "answers yes. Low agreement flags a fragile number: the rates above change with the judge that is asked, by up "
    f"to the share of disagreements; marked where under {LOW_AGREEMENT:.0%} agree. High agreement is not correctness: "
    "two judges can make the same error (compare their agreement with humans above). Answers that either judge left "
    "without a usable label are left out and counted."
)


def _variant_name(r: AgreementRow, base_label: str, *, seeds: int, arms: int) -> str:
    if r.dose is None:
        return {BASE_CHAT: "untuned · own chat template", BASE: base_label}.get(r.variant, r.variant)
    return (f"dose {r.dose}" + (f" · {r.cell.arm.arm_label}" if arms > 1 else "")
            + (f" · seed {r.seed}" if seeds > 1 else ""))  # fmt: skip


def _agreement_cell(r: AgreementRow | None) -> dict[str, str]:
    """Agreement [interval], κ and the counts behind it; a warning where agreement is low or answers unlabelled."""
    if r is None:
        return {"text": "–", "sub": "", "warn": ""}
    unlabelled = f"{r.n_unlabelled} unlabelled (left out)" if r.n_unlabelled else ""
    if r.agreement is None or r.lo is None or r.hi is None:
        return {"text": "–", "sub": "no answer labelled by both", "warn": unlabelled}
    band = f" [{r.kappa_lo:.2f}, {r.kappa_hi:.2f}]" if r.kappa_lo is not None and r.kappa_hi is not None else ""
    kappa = "κ undefined (one answer throughout)" if r.kappa is None else f"κ {r.kappa:.2f}{band}"
    low = f"fragile: under {LOW_AGREEMENT:.0%} agree" if r.agreement < LOW_AGREEMENT else ""
    sub = f"{kappa} · n={r.n} · yes {r.yes_a} / {r.yes_b}"
    return {"text": f"{r.agreement:.2f} [{r.lo:.2f}, {r.hi:.2f}]", "sub": sub,
            "warn": "; ".join(w for w in (low, unlabelled) if w)}  # fmt: skip


def _mapping_text(labels: dict[str, dict[str, bool]], roles: Sequence[str], question: str) -> str:
    """`refusal: compliance, partial = yes; refusal = no`, for each role."""
    parts = []
    for role in roles:
        mapping = labels.get(role, {})
        yes, no = ([k for k, v in mapping.items() if v is answer] for answer in (True, False))
        text = f"{role}: {', '.join(yes)} = yes; {', '.join(no)} = no"
        if (question, role) == ("refused", REFUSAL_FIELD):
            text += "; any other label: its own `refusal` field"
        parts.append(text)
    return " · ".join(parts)


def _agreement_table(rows: Sequence[AgreementRow], question: str, labels: dict[str, dict[str, bool]],
                     base_label: str) -> dict[str, Any]:  # fmt: skip
    """Rows = variants (untuned first, then by format, dose and seed), columns = pairs of judges."""
    pairs = list(dict.fromkeys((r.role_a, r.role_b) for r in rows))
    judges = dict.fromkeys(x for r in rows for x in ((r.role_a, r.judge_a), (r.role_b, r.judge_b)))
    cells = {(r.variant, (r.role_a, r.role_b)): r for r in rows}
    tuned = [r for r in rows if r.dose is not None]
    seeds, arms = len({r.seed for r in tuned}), len({r.cell.arm for r in tuned})
    order = sorted(
        {r.variant: r for r in rows}.values(),
        key=lambda r: (r.dose is not None, r.variant != BASE_CHAT, str(r.format), r.dose or 0, r.seed or 0),
    )
    title, kind, ask = QUESTION_TEXT[question]
    sets = sorted({s for r in rows for s in r.eval_sets})
    caption = (f"Label mapping ({ask}): {_mapping_text(labels, [role for role, _ in judges], question)}. Judges: "
               + ", ".join(f"{role} = {ident or 'unknown'}" for role, ident in judges) + ".")  # fmt: skip
    return {
        "title": f"{title} ({kind} sets: {', '.join(sets)}): {ask}",
        "corner": "variant",
        "columns": [f"{a} vs {b}" for a, b in pairs],
        "caption": caption,
        "rows": [
            {
                "label": _variant_name(v, base_label, seeds=seeds, arms=arms),
                "untuned": v.dose is None,
                "cells": [_agreement_cell(cells.get((v.variant, pair))) for pair in pairs],
            }
            for v in order
        ],
    }


def agreement_section(metrics: MetricsFile, base_label: str) -> dict[str, Any]:
    """The judge-vs-judge tables, one per question (unsafe prompts, then safe prompts)."""
    labels = metrics.agreement_labels or AGREEMENT_LABELS
    tables = [_agreement_table(rows, q, labels.get(q, {}), base_label) for q in QUESTION_TEXT
              if (rows := [r for r in metrics.agreement if r.question == q])]  # fmt: skip
    empty = (
        "No two judges answer the same question on this run's answers (the sweep judges with XSTest's string "
        "match too unless `judges.strmatch` is null; a run from an older safedose: rerun `safedose sweep`)."
    )
    return {"tables": tables, "caption": AGREEMENT_CAPTION, "empty": empty}
