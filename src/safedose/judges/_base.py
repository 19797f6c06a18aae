"""The judge layer: a protocol, a registry of factories, and cached batched judging of rows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from safedose.cache import Cache, cache_key
from safedose.data import jsonl_rows
from safedose.errors import InputError, SafedoseError
from safedose.files import sha256_text
from safedose.registry import Registry

Row = dict[str, Any]
HumanLabel = tuple[str, str, str]  # (prompt, response, refusal class) labelled by people


def labels_digest(rows: Sequence[HumanLabel]) -> str:
    """A short hash of training labels, part of the judge's revision (so its verdicts are cached apart)."""
    digest = hashlib.sha256()
    for prompt, text, label in rows:
        digest.update(f"{len(prompt)}:{prompt}{len(text)}:{text}{label}\n".encode())
    return digest.hexdigest()[:12]


class Verdict(BaseModel):
    """A judge's verdict on one row. `label` is None when the judge's answer did not parse (`parse_error`); the
    fields after `parse_error` are set only by the judges that give them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str | None
    score: float | None = None
    parse_error: bool = False
    categories: dict[str, float] | None = None
    scored_by: str | None = None  # which of a cross-fitted judge's models scored it
    refusal: bool | None = None  # a guard's or the StrongREJECT rubric's own "did it refuse?"
    harmful_request: bool | None = None
    convincingness: int | None = None
    specificity: int | None = None
    raw: str | None = None  # the start of a generative judge's answer

    def fields(self) -> dict[str, Any]:
        """The fields the judge set, as they are added to a judged row (and cached)."""
        return self.model_dump(exclude_unset=True)


class Judge(Protocol):
    """Scores (prompt, response) rows in batches; deterministic for a given revision."""

    name: str
    revision: str

    def judge(self, rows: Sequence[Row]) -> list[Verdict]: ...


class TrainedJudge(Protocol):
    """The class of a judge trained here, before it is built: the data it learns from and how it is validated."""

    @property
    def name(self) -> str: ...
    @property
    def revision(self) -> str: ...
    @property
    def sources(self) -> tuple[str, ...]: ...
    def validate(self) -> dict[str, Any]: ...


JudgeFactory = Callable[[str | None], Judge]
Kind = Literal["rule", "trained", "local model", "endpoint"]


@dataclass(frozen=True)
class JudgeEntry:
    """A registered judge: how to make it, what kind it is, for a trained judge its class and, for one that learns
    from people's labels too, how to make it with labels the caller read (`safedose.annotate`)."""

    factory: JudgeFactory
    kind: Kind
    trained: TrainedJudge | None = None
    with_labels: Callable[[Sequence[HumanLabel]], Judge] | None = None

    @property
    def description(self) -> str:
        return (self.factory.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


JUDGES: Registry[JudgeEntry] = Registry("judge")
for _name, _entry in (
    ("refusal", "safedose.judges._refusal:REFUSAL_ENTRY"),
    ("strmatch", "safedose.judges._strmatch:STRMATCH_ENTRY"),
    ("harm", "safedose.judges._harm:HARM_ENTRY"),
    ("moderation", "safedose.judges._moderation:MODERATION_ENTRY"),
    ("prompt-harm", "safedose.judges._prompt_harm:PROMPT_HARM_ENTRY"),
    ("hf-reward", "safedose.judges._hf_reward:HF_REWARD_ENTRY"),
    ("guard", "safedose.judges._guard:GUARD_ENTRY"),
    ("strongreject", "safedose.judges._guard:STRONGREJECT_ENTRY"),
    ("openai-moderation", "safedose.judges._remote:OPENAI_MODERATION_ENTRY"),
    ("llm", "safedose.judges._remote:LLM_ENTRY"),
):
    JUDGES.add_lazy(_name, _entry)  # each module is imported when its judge is first asked for
TABLE = "verdicts"


def register_judge(
    name: str, *, kind: Kind, trained: TrainedJudge | None = None
) -> Callable[[JudgeFactory], JudgeFactory]:
    """Decorator: register a judge factory (it gets the text after `name:` in a judge spec, or None)."""

    def decorator(factory: JudgeFactory) -> JudgeFactory:
        JUDGES.add(name, JudgeEntry(factory, kind, trained))
        return factory

    return decorator


def get_judge(name: str, *, human_labels: Sequence[HumanLabel] | None = None) -> Judge:
    """A judge by name; `hf-reward:<id or path>` and `llm:<model>` carry an argument after the colon. `human_labels`
    (read by the caller, e.g. `safedose.annotate.judge_labels`) train a judge that learns from people's labels."""
    base, sep, arg = name.partition(":")
    entry = JUDGES.get(base)
    if sep and not arg:
        raise SafedoseError(f"judge {name!r}: give an argument after the colon")
    if human_labels is not None:
        if entry.with_labels is None:
            raise SafedoseError(f"judge {name!r} does not learn from human labels")
        return entry.with_labels(human_labels)
    return entry.factory(arg or None)


def judge_id(judge: Judge) -> str:
    return f"{judge.name}@{judge.revision}"


def is_blank(text: object) -> bool:
    return not str(text or "").strip()


def judge_rows(judge: Judge, rows: Sequence[Row], *, cache: Cache | None = None, batch_size: int = 256) -> list[Row]:
    """The rows with the verdict fields added; verdicts come from `cache` when the same judge saw the same text."""
    ident = judge_id(judge)
    keys = [
        cache_key(judge=ident, prompt=sha256_text(str(r["prompt"])), response=sha256_text(str(r["response"])))
        for r in rows
    ]
    found = cache.get_many(TABLE, keys) if cache else {}
    todo = [i for i, k in enumerate(keys) if k not in found]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        verdicts = judge.judge([rows[i] for i in chunk])
        new = {keys[i]: {**v.fields(), "judge": ident} for i, v in zip(chunk, verdicts, strict=True)}
        found.update(new)
        if cache:
            cache.put_many(TABLE, new)
    return [{**row, **found[key]} for row, key in zip(rows, keys, strict=True)]


def read_rows(path: str | Path) -> list[Row]:
    """JSONL rows that each have a string `prompt` and `response`; a clear error names the line otherwise."""
    rows = []
    for where, row in jsonl_rows(Path(path)):
        for field in ("prompt", "response"):
            if field not in row:
                raise InputError(path, where, f"missing field {field!r}")
            if not isinstance(row[field], str):
                raise InputError(path, where, f"field {field!r} must be a string")
        rows.append(row)
    return rows
