"""`build`, `validate` and `list_judges`: build a trained judge, measure a judge against human labels, list them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safedose.data import xstest_rows
from safedose.errors import SafedoseError
from safedose.judges._base import JUDGES, HumanLabel, Judge, get_judge
from safedose.judges._pairwise import is_pairwise, validate_pairwise
from safedose.judges._roles import REFUSAL_LABELS
from safedose.judges._store import built_path, load_metrics, save_metrics
from safedose.stats import agreement


def build(name: str, *, human_labels: Sequence[HumanLabel] | None = None) -> Judge:
    """Build (or load from the cache) a judge; trained judges train here on first use. `human_labels`, read by the
    caller from an annotation study (`safedose.annotate.training_labels`), add to the refusal judge's training data."""
    return get_judge(name, human_labels=human_labels)


def validate(
    name: str, *, limit: int | None = None, human_labels: Sequence[HumanLabel] | None = None
) -> dict[str, Any]:
    """Agreement of a judge with the human labels available locally, on data that neither trained nor tuned it; a
    pairwise judge (`llm:<model>#alpaca-eval`) against GPT-4's AlpacaEval annotations (`limit`: a seeded sample).
    `human_labels`: the labels a `refusal:RUN_DIR` judge trains on (`safedose.annotate.judge_labels`)."""
    if is_pairwise(name):
        return validate_pairwise(name, limit=limit)
    base, _, arg = name.partition(":")
    trained = JUDGES.get(base).trained
    if trained is not None and not arg:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # the same numbers on any number of cores
            metrics = trained.validate()
        save_metrics(trained.name, trained.revision, trained.sources, metrics)
        return metrics
    return _validate_on_xstest(get_judge(name, human_labels=human_labels))


def stored_validation(name: str) -> dict[str, Any] | None:
    """The validation metrics kept beside the current build of a trained judge, if it was validated."""
    trained = JUDGES.get(name).trained
    if trained is None:
        raise KeyError(f"{name} is not a judge trained here")
    return load_metrics(trained.name, trained.revision, trained.sources)


def list_judges() -> list[dict[str, Any]]:
    """Every registered judge: name, kind, revision, whether it is built and its last validation's headline."""
    out = []
    for name in JUDGES:
        entry = JUDGES.get(name)
        row: dict[str, Any] = {"name": name, "kind": entry.kind, "revision": None, "built": None,
                               "validation": None, "description": entry.description}  # fmt: skip
        if entry.trained is not None:
            t = entry.trained
            row["revision"] = t.revision
            row["built"] = built_path(t.name, t.revision, t.sources).is_file()
            metrics = load_metrics(t.name, t.revision, t.sources)
            row["validation"] = headline(metrics) if metrics else None
        elif name == "strmatch":
            row["revision"] = "1"
        out.append(row)
    return out


def headline(metrics: dict[str, Any]) -> str:
    """One line of a stored validation: the number each trained judge is judged by."""
    if "per_held_out_model" in metrics:
        kappas = ", ".join(f"{m} {v['refusal']['kappa']:.2f}" for m, v in metrics["per_held_out_model"].items())
        return f"κ on unseen XSTest models: {kappas}"
    if "auc" in metrics and "brier" in metrics:
        return f"GPTFuzz evaluate AUC {metrics['auc']:.3f}, Brier {metrics['brier']:.3f}"
    if "macro_auc" in metrics:
        return f"moderation macro-AUC {metrics['macro_auc']:.3f}"
    return "validated"


def _validate_on_xstest(judge: Judge) -> dict[str, Any]:
    """Any refusal-labelling judge against XSTest's 1,350 human labels (none of them trained it)."""
    rows = xstest_rows()
    verdicts = judge.judge([{"prompt": r["prompt"], "response": r["completion"]} for r in rows])
    labels = [v.label for v in verdicts]
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
