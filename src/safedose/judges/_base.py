"""The judge layer: a protocol, a registry of factories, and cached batched judging of rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from safedose.cache import Cache, cache_key
from safedose.errors import InputError, SafedoseError
from safedose.files import sha256_text
from safedose.registry import Registry

Row = dict[str, Any]
Verdict = dict[str, Any]  # label, score (float | None), parse_error (bool), and judge-specific fields


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
    """A registered judge: how to make it, what kind it is and, for a trained judge, its class."""

    factory: JudgeFactory
    kind: Kind
    trained: TrainedJudge | None = None

    @property
    def description(self) -> str:
        return (self.factory.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


JUDGES: Registry[JudgeEntry] = Registry("judge")
TABLE = "verdicts"


def register_judge(
    name: str, *, kind: Kind, trained: TrainedJudge | None = None
) -> Callable[[JudgeFactory], JudgeFactory]:
    """Decorator: register a judge factory (it gets the text after `name:` in a judge spec, or None)."""

    def decorator(factory: JudgeFactory) -> JudgeFactory:
        JUDGES.add(name, JudgeEntry(factory, kind, trained))
        return factory

    return decorator


def get_judge(name: str) -> Judge:
    """A judge by name; `hf-reward:<id or path>` and `llm:<model>` carry an argument after the colon."""
    base, sep, arg = name.partition(":")
    entry = JUDGES.get(base)
    if sep and not arg:
        raise SafedoseError(f"judge {name!r}: give an argument after the colon")
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
        new = {keys[i]: {**v, "judge": ident} for i, v in zip(chunk, verdicts, strict=True)}
        found.update(new)
        if cache:
            cache.put_many(TABLE, new)
    return [{**row, **found[key]} for row, key in zip(rows, keys, strict=True)]


def read_rows(path: str | Path) -> list[Row]:
    """JSONL rows that each have a string `prompt` and `response`; a clear error names the line otherwise."""
    from safedose.data._loaders import jsonl_rows

    rows = []
    for where, row in jsonl_rows(Path(path)):
        for field in ("prompt", "response"):
            if field not in row:
                raise InputError(path, where, f"missing field {field!r}")
            if not isinstance(row[field], str):
                raise InputError(path, where, f"field {field!r} must be a string")
        rows.append(row)
    return rows
