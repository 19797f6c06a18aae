"""Readers for the upstream file formats. All format-specific code lives here.

Each reader yields `(where, row)` pairs: `where` names the record for error messages ("line 3", "row 7",
"record 12") and `row` is a dict of the file's own fields. `to_instruction` and `to_eval_prompt` map those
fields onto the record types, accepting the field names the known formats use.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from safedose.data._records import EvalPrompt, InstructionRecord
from safedose.errors import InputError

Row = dict[str, Any]

INSTRUCTION_FIELDS = ("instruction", "prompt")
INPUT_FIELDS = ("input", "context")
OUTPUT_FIELDS = ("output", "response")
PROMPT_FIELDS = ("prompt", "instruction", "goal", "Goal", "Behavior", "forbidden_prompt", "question", "Question",
                 "query", "continuation")  # fmt: skip
CATEGORY_FIELDS = ("category", "type", "tags", "SemanticCategory", "Category")
SUPPORTED = (".json", ".jsonl", ".jsonl.gz", ".json.gz", ".csv", ".txt")


def read_rows(path: str | Path) -> Iterator[tuple[str, Row]]:
    """Yield the records of a JSON, JSON Lines (optionally gzipped), CSV or text file."""
    path = Path(path)
    name = path.name.lower()
    text = _read_text(path)
    if name.endswith((".jsonl", ".jsonl.gz")):
        yield from _jsonl(path, text)
    elif name.endswith((".json", ".json.gz")):
        yield from _json(path, text)
    elif name.endswith(".csv"):
        yield from _csv(path, text)
    elif name.endswith(".txt"):
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"line {i}", {"prompt": line.strip()}
    else:
        raise InputError(path, None, f"unsupported file type; expected one of {', '.join(SUPPORTED)}")


def jsonl_rows(path: Path) -> Iterator[tuple[str, Row]]:
    """The objects of a JSON Lines file (whatever its name), each with where it stands (`line N`)."""
    return _jsonl(path, _read_text(path))


def _read_text(path: Path) -> str:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path) as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except (OSError, EOFError) as e:
        raise InputError(path, None, f"cannot read: {e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(path, f"line {line}", f"invalid UTF-8 (byte offset {e.start})") from None
    return text.removeprefix("\ufeff")


def _jsonl(path: Path, text: str) -> Iterator[tuple[str, Row]]:
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(path, f"line {i}", f"malformed JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(row, dict):
            raise InputError(path, f"line {i}", f"expected a JSON object, got {type(row).__name__}")
        yield f"line {i}", row


def _json(path: Path, text: str) -> Iterator[tuple[str, Row]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, f"line {e.lineno}", f"malformed JSON: {e.msg} (column {e.colno})") from None
    if isinstance(data, dict) and "instructions" in data:
        yield from _instructions_dict(path, data)
        return
    if not isinstance(data, list):
        raise InputError(path, None, 'expected a JSON list of records or {"instructions": [...]}')
    for i, item in enumerate(data, 1):
        if isinstance(item, str):
            yield f"record {i}", {"prompt": item}
        elif isinstance(item, dict):
            yield f"record {i}", item
        else:
            raise InputError(path, i, f"expected an object or a string, got {type(item).__name__}")


def _instructions_dict(path: Path, data: Mapping[str, Any]) -> Iterator[tuple[str, Row]]:
    """The Safety-Tuned LLaMAs evaluation format: parallel lists `instructions`, `inputs`, `tags`."""
    instructions = data["instructions"]
    if not isinstance(instructions, list):
        raise InputError(path, None, '"instructions" must be a list')
    columns = {"input": data.get("inputs") or [], "category": data.get("tags") or []}
    for key, values in columns.items():
        if values and len(values) != len(instructions):
            raise InputError(path, None, f"{len(values)} {key}s for {len(instructions)} instructions")
    for i, instruction in enumerate(instructions):
        row: Row = {"instruction": instruction}
        for key, values in columns.items():
            if values:
                row[key] = values[i]
        yield f"record {i + 1}", row


def _csv(path: Path, text: str) -> Iterator[tuple[str, Row]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        for i, row in enumerate(reader, 1):
            if None in row or any(v is None for v in row.values()):
                raise InputError(path, f"row {i}", f"expected {len(reader.fieldnames or [])} columns")
            yield f"row {i}", _harmbench_context(dict(row))
    except csv.Error as e:
        raise InputError(path, f"line {reader.line_num}", f"malformed CSV: {e}") from None


def _harmbench_context(row: Row) -> Row:
    """HarmBench contextual behaviours are asked with their context before the behaviour."""
    context = row.get("ContextString")
    if context and "Behavior" in row:
        row["Behavior"] = f"{context}\n\n---\n\n{row['Behavior']}"
    return row


def _field(path: Path, where: str, row: Row, names: Sequence[str], *, required: bool) -> str | None:
    for name in names:
        if name in row and row[name] is not None:
            value = row[name]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = ",".join(value)
            if not isinstance(value, str):
                raise InputError(path, where, f"field {name!r} must be a string, got {type(value).__name__}")
            return value
    if required:
        raise InputError(path, where, f"missing field {' / '.join(repr(n) for n in names)}")
    return None


def _row_id(path: Path, where: str, row: Row, default: str) -> str:
    value = row.get("id")
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(path, where, f"field 'id' must be a string or an integer, got {type(value).__name__}")
    return str(value)


def to_instruction(path: Path, where: str, row: Row, *, source: str, default_id: str) -> InstructionRecord:
    instruction = _field(path, where, row, INSTRUCTION_FIELDS, required=True) or ""
    if not instruction.strip():
        raise InputError(path, where, "empty instruction")
    output = _field(path, where, row, OUTPUT_FIELDS, required=True) or ""
    return InstructionRecord(
        id=_row_id(path, where, row, default_id),
        instruction=instruction,
        input=_field(path, where, row, INPUT_FIELDS, required=False) or "",
        output=output,
        source=source,
    )


def to_eval_prompt(
    path: Path, where: str, row: Row, *, eval_set: str, default_id: str, expected_label: str | None = None
) -> EvalPrompt:
    if "context_options" in row:  # WinoGrande's partial-scoring schema: options are contexts
        row = {**row, "choices": row["context_options"]}
    prompt = _field(path, where, row, PROMPT_FIELDS, required=True) or ""
    extra = _field(path, where, row, INPUT_FIELDS, required=False)
    if extra:
        prompt = f"{prompt}\n\n{extra}"
    if not prompt.strip():
        raise InputError(path, where, "empty prompt")
    label = row.get("label", expected_label)
    if label not in (None, "safe", "unsafe"):
        raise InputError(path, where, f"field 'label' must be 'safe' or 'unsafe', got {label!r}")
    choices, gold = _choices(path, where, row)
    return EvalPrompt(
        id=_row_id(path, where, row, default_id),
        prompt=prompt,
        eval_set=eval_set,
        category=_field(path, where, row, CATEGORY_FIELDS, required=False),
        expected_label=label,
        reference=_field(path, where, row, ("output", "Best Answer"), required=False),
        choices=choices,
        gold=gold,
    )


def _choices(path: Path, where: str, row: Row) -> tuple[list[str] | None, int | None]:
    if "choice0" in row:  # MMLU re-export: choice0..3 and an integer answer
        choices = [str(row[f"choice{i}"]) for i in range(4) if f"choice{i}" in row]
        return choices, _int(path, where, row.get("answer"))
    if isinstance(row.get("choices"), list):
        return [str(c) for c in row["choices"]], _int(path, where, row.get("gold"))
    return None, None


def _int(path: Path, where: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(path, where, f"expected an integer answer index, got {value!r}") from None
