"""`build` and `validate`: build a trained judge, and measure any local judge against the human labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safedose.errors import SafedoseError
from safedose.judges._agreement import agreement
from safedose.judges._base import JUDGES, Judge, get_judge
from safedose.judges._trained import REFUSAL_LABELS, TRAINED, VALIDATORS, store_validation, xstest_rows


def build(name: str, *, extra_labels: Path | None = None) -> Judge:
    """Build (or load from the cache) a judge; trained judges train here on first use. `extra_labels`, a run
    directory with an annotation study, adds its human labels to the refusal judge's training data."""
    if extra_labels is None:
        return get_judge(name)
    if name.partition("@")[0] != "refusal":
        raise SafedoseError(f"--extra-labels: only the trained `refusal` judge learns from labels, not {name!r}")
    return get_judge(f"refusal:{extra_labels}")


def validate(name: str, *, limit: int | None = None) -> dict[str, Any]:
    """Agreement of a judge with the human labels available locally, on rows it was not trained on; a pairwise judge
    (`llm:<model>#alpaca-eval`) against GPT-4's AlpacaEval annotations (`limit`: a seeded sample of pairs)."""
    from safedose.capability._winrate import is_pairwise

    if is_pairwise(name):
        from safedose.capability._validate import validate_pairwise

        return validate_pairwise(name, limit=limit)
    base = name.partition(":")[0]
    if base in VALIDATORS:
        metrics = VALIDATORS[base]()
    elif base in JUDGES:
        metrics = _validate_on_xstest(get_judge(name))
    else:
        JUDGES.get(base)  # raises with a did-you-mean
        raise AssertionError
    if base in TRAINED:
        store_validation(base, metrics)
    return metrics


def _validate_on_xstest(judge: Judge) -> dict[str, Any]:
    """Any refusal-labelling judge against XSTest's 1,350 human labels (none of them trained it)."""
    rows = xstest_rows()
    verdicts = judge.judge([{"prompt": r["prompt"], "response": r["completion"]} for r in rows])
    labels = [v["label"] for v in verdicts]
    if not set(labels) <= set(REFUSAL_LABELS) | {None}:
        raise SafedoseError(f"judge {judge.name!r} does not label refusals; it cannot be validated on XSTest")
    usable = [(r["label"], v, str(r["id"])) for r, v in zip(rows, labels, strict=True) if v is not None]
    human, judged, prompts = ([u[k] for u in usable] for k in range(3))
    return {
        "judge": f"{judge.name}@{judge.revision}",
        "split": "all 1,350 XSTest v2 human-labelled completions (450 prompts x 3 models; CIs resample prompts)",
        "parse_error_rate": 1 - len(usable) / len(rows),
        "all": agreement(human, judged, REFUSAL_LABELS, groups=prompts),
    }
