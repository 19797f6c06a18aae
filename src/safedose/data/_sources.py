"""Turn a source (registered name, local file, or `hf:<id>`) into typed records."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safedose.data._catalog import DATASETS, DatasetSpec
from safedose.data._loaders import Row, read_rows, to_eval_prompt, to_instruction
from safedose.data._records import EvalPrompt, InstructionRecord
from safedose.errors import InputError, SafedoseError
from safedose.paths import data_root

HF_PREFIX = "hf:"
DATA_SUFFIXES = (".json", ".jsonl", ".gz", ".csv", ".tsv", ".txt", ".parquet", ".yaml", ".yml")


def is_registered(source: str) -> bool:
    return source in DATASETS


def source_rows(source: str) -> Iterator[tuple[Path, str, Row]]:
    """Yield `(file, where, row)` for every record of `source`, before any mapping onto record types."""
    if source.startswith(HF_PREFIX):
        yield from _hf_rows(source)
        return
    if source in DATASETS:
        spec = DATASETS.get(source)
        root = data_root()
        for path in spec.paths(root):
            for where, row in read_rows(path):
                if all(str(row.get(k)) == v for k, v in spec.where.items()):
                    yield path, where, row
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise SafedoseError(missing_source(source))
    if path.is_dir():
        raise InputError(path, None, "is a directory; pass a data file")
    for where, row in read_rows(path):
        yield path, where, row


def looks_like_path(name: str) -> bool:
    """Whether `name` was meant as a file: it has a directory part or a data file's extension."""
    return "/" in name or os.sep in name or name.startswith(("~", ".")) or Path(name).suffix.lower() in DATA_SUFFIXES


def missing_source(name: str) -> str:
    """Why `name` (neither registered nor an existing file) is no source: `no such file` for what looks like a path,
    else the registry's did-you-mean."""
    if looks_like_path(name):
        return f"{name}: no such file"
    return DATASETS.unknown_message(name) + "; nor is it an existing file"


def _hf_rows(source: str) -> Iterator[tuple[Path, str, Row]]:
    """`hf:<id>[:<split>]` through `datasets.load_dataset`, for users with a network or a local copy."""
    ident, _, split = source[len(HF_PREFIX) :].partition(":")
    try:
        import datasets

        dataset = datasets.load_dataset(ident, split=split or "train")
    except Exception as e:  # the hub raises many types; all mean "not available"
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SafedoseError(f"{source}: could not load the dataset{offline}: {first}") from None
    for i, row in enumerate(dataset, 1):
        yield Path(source), f"record {i}", dict(row)


def _source_name(source: str) -> str:
    if source in DATASETS or source.startswith(HF_PREFIX):
        return source
    return Path(source).name


def load_instructions(source: str) -> list[InstructionRecord]:
    """Instruction-tuning rows from a registered name, a file (Alpaca/Dolly JSON, JSONL, CSV) or `hf:<id>`."""
    name = _source_name(source)
    seen: set[str] = set()
    records = []
    for i, (path, where, row) in enumerate(source_rows(source)):
        record = to_instruction(path, where, row, source=name, default_id=f"{name}-{i}")
        _check_unique(record.id, seen, path, where)
        records.append(record)
    return records


def load_eval_prompts(source: str) -> list[EvalPrompt]:
    """Eval prompts from a registered name, a file (paper JSON, XSTest/AdvBench CSV, TXT, JSONL) or `hf:<id>`."""
    name = _source_name(source)
    spec = DATASETS.get(source) if source in DATASETS else None
    expected = spec.expected_label if spec else None
    if spec and expected is None and spec.kind in ("eval-unsafe", "eval-safe"):
        expected = "unsafe" if spec.kind == "eval-unsafe" else "safe"
    seen: set[str] = set()
    records = []
    for i, (path, where, row) in enumerate(source_rows(source)):
        record = to_eval_prompt(path, where, row, eval_set=name, default_id=f"{name}-{i}", expected_label=expected)
        _check_unique(record.id, seen, path, where)
        records.append(record)
    return records


def load_raw(source: str) -> list[dict[str, Any]]:
    """The rows of any source as plain dicts (for labelled sets whose schema belongs to their consumer)."""
    return [row for _, _, row in source_rows(source)]


def load_any(spec: DatasetSpec) -> list[Any]:
    """Load a registered dataset with the loader its kind calls for."""
    if spec.kind in ("base", "safety"):
        return load_instructions(spec.name)
    if spec.kind in ("labelled", "attack"):
        return load_raw(spec.name)
    return load_eval_prompts(spec.name)


def _check_unique(record_id: str, seen: set[str], path: Path, where: str) -> None:
    if record_id in seen:
        raise InputError(path, where, f"duplicate id {record_id!r}")
    seen.add(record_id)
