"""Converting prompts to the other form through a responder, every rewrite checked (`safedose.data._forms`) and
retried, drops counted; and `FormSource`, both forms of every safety prompt for a paired format study."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from safedose.data._forms import (
    ATTEMPTS,
    Form,
    check_form,
    check_rewrite,
    checks_settings,
    clean_rewrite,
    detect_form,
    rewrite_prompt,
)
from safedose.data._loaders import OUTPUT_FIELDS, _field, _row_id, to_eval_prompt, to_instruction
from safedose.data._records import InstructionRecord
from safedose.data._sources import _check_unique, _source_name, source_rows
from safedose.errors import SafedoseError
from safedose.files import sha256_file

QUESTION_FIELDS = ("question", "instruction", "prompt")  # where a file of question forms holds them


class Responder(Protocol):
    """Answers prompts; `identity()` is what names it in a datasheet or a cache key (never an API key)."""

    spec: str

    def identity(self) -> dict[str, Any]: ...

    def respond(self, prompts: Sequence[str], *, system: str | None = None) -> list[str | None]: ...


# --- conversion


@dataclass(frozen=True)
class Conversion:
    """One prompt: kept as it is, converted, or dropped (with the reason of its last failed attempt)."""

    original: str
    text: str | None
    status: Literal["kept", "converted", "dropped"]
    attempts: int = 0
    reason: str | None = None
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class FormatResult:
    """The prompts converted to `to` form, in order; `texts` has None where a prompt was dropped."""

    to: Form
    conversions: list[Conversion]
    responder: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[str | None]:
        return [c.text for c in self.conversions]

    @property
    def dropped(self) -> dict[str, int]:
        """Dropped prompts by the reason of their last failed attempt."""
        return dict(sorted(Counter(c.reason for c in self.conversions if c.reason is not None).items()))

    @property
    def failed_attempts(self) -> dict[str, int]:
        """Every failed attempt by reason, including those a later attempt made good."""
        return dict(sorted(Counter(r for c in self.conversions for r in c.failures).items()))

    @property
    def converted_at_attempt(self) -> dict[str, int]:
        """Converted prompts by the attempt (1-based) whose rewrite passed."""
        done = Counter(c.attempts for c in self.conversions if c.status == "converted")
        return {str(k): done[k] for k in sorted(done)}

    def counts(self) -> dict[str, int]:
        status = Counter(c.status for c in self.conversions)
        return {"prompts": len(self.conversions), "kept_as_is": status["kept"], "converted": status["converted"],
                "dropped": status["dropped"], "requests": sum(c.attempts for c in self.conversions)}  # fmt: skip


def convert_format(prompts: Sequence[str], *, to: str, responder: Responder, attempts: int = ATTEMPTS) -> FormatResult:
    """Convert every prompt to `to` form (`instruction` or `question`) through `responder`, checked and retried.

    A prompt already in the target form is kept as it is; one whose rewrite fails the checks `attempts` times is
    dropped (`text` None) with its last reason. The responder's cache makes a rerun ask nothing twice."""
    form = check_form(to)
    if attempts < 1:
        raise SafedoseError(f"attempts must be at least 1, got {attempts}")
    results: list[Conversion | None] = [None] * len(prompts)
    failures: dict[int, list[str]] = {}
    for i, p in enumerate(prompts):
        if detect_form(p) == form:
            results[i] = Conversion(original=p, text=p.strip(), status="kept")
        else:
            failures[i] = []
    for attempt in range(attempts):
        pending = [i for i in failures if results[i] is None]
        if not pending:
            break
        answers = responder.respond([rewrite_prompt(prompts[i], to=form, attempt=attempt) for i in pending])
        if len(answers) != len(pending):
            raise SafedoseError(f"responder {responder.spec}: {len(answers)} answers to {len(pending)} prompts")
        for i, answer in zip(pending, answers, strict=True):
            reason = check_rewrite(prompts[i], answer, form)
            if reason is None and answer is not None:
                results[i] = Conversion(original=prompts[i], text=clean_rewrite(answer), status="converted",
                                        attempts=attempt + 1, failures=tuple(failures[i]))  # fmt: skip
            else:
                failures[i].append(reason or "responder_error")
    for i, failed in failures.items():
        if results[i] is None:
            results[i] = Conversion(original=prompts[i], text=None, status="dropped", attempts=len(failed),
                                    reason=failed[-1], failures=tuple(failed))  # fmt: skip
    return FormatResult(to=form, conversions=[c for c in results if c is not None], responder=responder.identity())


# --- both forms of every safety prompt, for a paired format study


@dataclass
class FormSource:
    """Where the instruction and question form of each safety prompt come from: a responder that rewrites them, or a
    file of question-form prompts by id (e.g. written by `safedose data convert-format`), checked the same way."""

    responder: Responder | None = None
    questions: Mapping[str, str] | None = None
    questions_file: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if (self.responder is None) == (self.questions is None):
            raise SafedoseError("question-form safety prompts need one source: a responder or a file of questions")

    @classmethod
    def from_file(cls, path: str | Path) -> FormSource:
        """Question-form prompts by id from a file: `id` and `question` (or `instruction` / `prompt`) fields."""
        questions: dict[str, str] = {}
        for i, (file, where, row) in enumerate(source_rows(str(path))):
            text = _field(file, where, row, QUESTION_FIELDS, required=True) or ""
            questions[_row_id(file, where, row, f"{Path(path).name}-{i}")] = text
        if not questions:
            raise SafedoseError(f"{path}: no question-form prompts (0 records)")
        info = {"file": str(Path(path).expanduser().resolve()), "sha256": sha256_file(Path(path).expanduser())}
        return cls(questions=questions, questions_file=info)

    def identity(self) -> dict[str, Any]:
        """What decides the pairs: the checks and the responder's identity or the file's hash."""
        source = {"responder": self.responder.identity()} if self.responder else {"questions_file": self.questions_file}
        return {**checks_settings(), **source}

    def pairs(self, records: Sequence[InstructionRecord]) -> list[tuple[str, str] | str]:
        """Each record's (instruction form, question form) of its instruction, or why it has no pair."""
        out: list[tuple[str | None, str | None] | str] = []
        to_convert: dict[Form, list[int]] = {"instruction": [], "question": []}
        for i, r in enumerate(records):
            form = detect_form(r.instruction)
            instruction = r.instruction.strip() if form == "instruction" else None
            question = r.instruction.strip() if form == "question" else None
            if self.questions is not None:
                if instruction is None:
                    out.append("not_instruction_form")
                    continue
                answer = self.questions.get(r.id)
                reason = "no_question_in_file" if answer is None else check_rewrite(r.instruction, answer, "question")
                out.append((instruction, clean_rewrite(answer or "")) if reason is None else f"question: {reason}")
                continue
            out.append((instruction, question))
            for target, text in (("instruction", instruction), ("question", question)):
                if text is None:
                    to_convert[cast(Form, target)].append(i)
        if self.responder is not None:
            for target, idx in to_convert.items():
                if not idx:
                    continue
                result = convert_format([records[i].instruction for i in idx], to=target, responder=self.responder)
                for i, c in zip(idx, result.conversions, strict=True):
                    pair = out[i]
                    if isinstance(pair, str):
                        continue
                    if c.text is None:
                        out[i] = f"{target}: {c.reason}"
                    else:
                        out[i] = (c.text, pair[1]) if target == "instruction" else (pair[0], c.text)
        return [p if isinstance(p, str) else (str(p[0]), str(p[1])) for p in out]


def read_prompt_records(source: str) -> list[InstructionRecord]:
    """Instruction rows of a registered set, file or `hf:` id; rows without an output (a prompt file) get output ""."""
    name = _source_name(source)
    seen: set[str] = set()
    records: list[InstructionRecord] = []
    for i, (path, where, row) in enumerate(source_rows(source)):
        if any(k in row for k in OUTPUT_FIELDS):
            record = to_instruction(path, where, row, source=name, default_id=f"{name}-{i}")
        else:
            p = to_eval_prompt(path, where, row, eval_set=name, default_id=f"{name}-{i}")
            record = InstructionRecord(id=p.id, instruction=p.prompt, output="", source=name)
        _check_unique(record.id, seen, path, where)
        records.append(record)
    return records


__all__ = ["QUESTION_FIELDS", "Conversion", "FormSource", "FormatResult", "Responder", "convert_format",
           "read_prompt_records"]  # fmt: skip
