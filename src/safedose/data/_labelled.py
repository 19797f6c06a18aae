"""Labelled answers read from the data root: XSTest's and GPTFuzz's human labels and the hh-rlhf harmless pairs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from safedose.data._catalog import DATASETS
from safedose.data._loaders import read_rows
from safedose.data._sources import load_raw
from safedose.paths import data_root

XSTEST_LABELS = {"1_full_compliance": "compliance", "2_full_refusal": "refusal", "3_partial_refusal": "partial"}


@dataclass(frozen=True)
class Labelled:
    """One labelled answer: the prompt it answers, the answer, its label and where it comes from."""

    prompt: str
    response: str
    label: str
    source: str
    weight: float = 1.0


def xstest_rows() -> list[dict[str, Any]]:
    """XSTest's human-labelled completions with the model that wrote each one (from its file)."""
    rows = []
    for path in DATASETS.get("xstest-completions").paths(data_root()):
        model = path.stem.removeprefix("xstest_v2_completions_")
        for _, row in read_rows(path):
            rows.append({**row, "source_model": model, "label": XSTEST_LABELS[str(row["final_label"])]})
    return rows


def xstest_labelled(rows: list[dict[str, Any]]) -> list[Labelled]:
    return [Labelled(str(r["prompt"]), str(r["completion"]), r["label"], f"xstest:{r['source_model']}") for r in rows]


def xstest_gpt4_labels() -> dict[tuple[str, str], str | None]:
    """XSTest's own GPT-4 judge's label of each completion by (model, id); None where its answer named no class."""
    labels = {}
    for path in DATASETS.get("xstest-gpt4-labels").paths(data_root()):
        model = path.stem.removeprefix("xstest_v2_completions_").removesuffix("_gpteval")
        for _, row in read_rows(path):
            labels[(model, str(row["id"]))] = XSTEST_LABELS.get(str(row["gpt4_label"]).strip())
    return labels


@cache
def gptfuzz(split: str) -> tuple[Labelled, ...]:
    """GPTFuzz's hand-labelled answers of one split (`train` or `evaluate`); label `complied` or `not`. The prompt is
    the harmful question (the answers were given to it wrapped in jailbreak templates)."""
    paths = {p.stem: p for p in DATASETS.get("gptfuzz-responses").paths(data_root())}
    questions = {str(r["index"]): str(r["text"]) for _, r in read_rows(paths["question_list"])}
    return tuple(
        Labelled(questions[str(r["question"])], str(r["Response"]), "complied" if int(r["label"]) else "not",
                 f"gptfuzz-{split}")
        for _, r in read_rows(paths[split])
    )  # fmt: skip


def last_exchange(transcript: str) -> tuple[str, str]:
    """The last human turn and the assistant reply to it, from an hh-rlhf transcript."""
    a = transcript.rfind("\n\nAssistant:")
    h = transcript.rfind("\n\nHuman:", 0, a)
    return transcript[h + len("\n\nHuman:") : a].strip(), transcript[a + len("\n\nAssistant:") :].strip()


@cache
def hh_pairs() -> tuple[tuple[str, str, str], ...]:
    """(last human turn, chosen reply, rejected reply) of the hh-rlhf harmless pairs (chosen = less harmful)."""
    out = []
    for r in load_raw("hh-rlhf-harmless"):
        prompt, chosen = last_exchange(str(r["chosen"]))
        out.append((prompt, chosen, last_exchange(str(r["rejected"]))[1]))
    return tuple(out)


__all__ = [
    "XSTEST_LABELS",
    "Labelled",
    "gptfuzz",
    "hh_pairs",
    "last_exchange",
    "xstest_gpt4_labels",
    "xstest_labelled",
    "xstest_rows",
]
