"""Answers side by side: the first prompts of each eval set as every shown variant answered them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safedose.run import BASE, BASE_CHAT, CellKey, JudgedAnswer


def side_by_side_rows(judged: Sequence[JudgedAnswer], columns: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """The first three prompts of each eval set, answered by every variant in `columns` (variant, heading)."""
    by_key = {(a.variant, a.eval_set, a.id): a for a in judged}
    out = []
    for eval_set in dict.fromkeys(a.eval_set for a in judged):
        first = list(dict.fromkeys((a.id, a.prompt) for a in judged if a.eval_set == eval_set))[:3]
        for prompt_id, prompt in first:
            cells = []
            for variant, _ in columns:
                answer = by_key.get((variant, eval_set, prompt_id))
                label = "" if answer is None else answer.label("refusal") or "no usable label"
                cells.append({"text": answer.response if answer else "–", "label": label})
            out.append({"eval_set": eval_set, "prompt": prompt, "answers": cells})
    return out


def side_by_side_columns(judged: Sequence[JudgedAnswer], base_label: str) -> tuple[list[tuple[str, str]], str]:
    """Untuned variants and the cells of the first seed and format (of each safety source), in dose order."""
    present = {a.variant: a for a in judged}
    columns = [(v, label) for v, label in ((BASE_CHAT, "untuned · own chat template"), (BASE, base_label))
               if v in present]  # fmt: skip
    tuned = [a for a in present.values() if a.dose is not None]
    if not tuned:
        return columns, ""
    seed = min((a.seed for a in tuned if a.seed is not None), default=None)
    arms = sorted({a.cell.arm for a in tuned}, key=CellKey.sort_key)
    arms = [arm for arm in arms if arm.format == arms[0].format]  # the first format, every safety source
    chosen = sorted((a for a in tuned if a.seed == seed and a.cell.arm in arms),
                    key=lambda a: (arms.index(a.cell.arm), a.dose or 0))  # fmt: skip
    label = [f"dose {a.dose}" + (f" · {a.cell.arm.arm_label}" if len(arms) > 1 else "") for a in chosen]
    return columns + [(a.variant, x) for a, x in zip(chosen, label, strict=True)], f" (tuned cells of seed {seed})"
