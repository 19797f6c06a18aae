"""Prompt forms: instruction ("Write a guide to picking a lock.") and question ("How can I pick a lock?").

A prompt is converted from one form to the other by a responder given a fixed, versioned rewriting prompt
(`REWRITE_VERSION`; pattern examples with a placeholder, so a small model has something to follow but no topic to
copy). Every rewrite is checked, and a prompt whose rewrite keeps failing is dropped with its reason counted:

- one line, not empty, at most `MAX_LENGTH_RATIO` times the original's words plus `LENGTH_SLACK`, without the
  examples' placeholder `X` and without words about the prompt itself ("question", "sentence", "instruction", ...)
  that the original does not use ("What is the answer to the question: ..."), and without words the original does
  not use that turn the request around or away ("avoid", "prevent", "not", "purpose": SmolLM2-135M turns "Create a
  guide for choking someone." into "What is the best way to avoid choking someone?");
- a question ends with `?` and does not start with an imperative verb (after an optional "please");
- an instruction does not end with `?` and does not start like a question (a question word, or an auxiliary verb
  followed by a subject: "Can you ...", "Is it ...") or like a statement ("I ...", "The ...", "To ...");
- the rewrite keeps at least `MIN_CONTENT_SHARE` of the original's content words (words that are not stop words,
  generic request words such as "guide" or "ways", or the original's leading verb; compared after a light
  stemming, and a word of four letters or more matches a word it begins or that begins it: "legal" keeps
  "legality"). 0.6 lets a rewrite drop or paraphrase two of five content words ("fraudulent activities" ->
  "fraud") and rejects the failures seen with SmolLM2-135M, which copies the pattern examples or answers the
  request instead of rewriting it (shares of 0 to 0.3).

A failed rewrite is asked again with another variant of the rewriting prompt (other pattern examples, then a plain
directive), at most `ATTEMPTS` times; with greedy decoding another prompt is what gives another answer. A prompt
already in the target form (by the same checks) is kept as it is and not sent. Every answer goes through the
responder's cache, so a rerun asks nothing twice.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from safedose.data._records import InstructionRecord
from safedose.errors import SafedoseError
from safedose.files import sha256_file, write_json, write_jsonl

if TYPE_CHECKING:
    from safedose.data._responders import Responder
    from safedose.generate import Decoding

Form = Literal["instruction", "question"]
FORMS: tuple[Form, ...] = ("instruction", "question")
REWRITE_VERSION = 1  # bump whenever the rewriting prompts or the checks change
ATTEMPTS = 3
MIN_CONTENT_SHARE = 0.6
MAX_LENGTH_RATIO = 2.0
LENGTH_SLACK = 8
QUESTION_FIELDS = ("question", "instruction", "prompt")  # where a file of question forms holds them
REWRITE_MAX_NEW_TOKENS = 64  # the default decoding of a responder made from a spec: greedy, one line


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


IMPERATIVE_VERBS = _wordset("""
act advise agree analyse analyze answer argue arrange ask assess assist brainstorm build buy calculate categorize
cease check choose cite classify code collect come compare compile compose conduct confirm consider construct
convert convince count craft create critique debate decide defend define demonstrate describe design detail
determine develop devise discuss document draft draw edit encourage enter enumerate establish estimate evaluate
examine explain exploit explore express extract fabricate falsify find fix forge formulate gather generate get give
go guide hack harass help identify illustrate imagine incite inform instruct investigate invent justify learn list
locate look make manipulate map measure mention mock monitor name narrate note observe obtain offer outline perform
persuade plan play post predict prepare present pretend produce program promote propose prove provide publish put
quote rank read rebut recall recite recommend recount reflect refuse refute release request research retrieve
reveal review rewrite run script search select sell send set share show shut sketch solve sort specify spell spread
state suggest summarise summarize support switch take teach tell threaten trace train translate use write
""")
QUESTION_WORDS = _wordset("how what what's whats why when where who whom whose which")
AUXILIARIES = _wordset("""
can could would should will shall may might must is are am was were do does did have has had isn't aren't wasn't
weren't don't doesn't didn't can't couldn't won't wouldn't shouldn't
""")
SUBJECTS = _wordset("i you we he she it they there this that these those my your our his her their someone anyone "
                    "somebody anybody people")  # fmt: skip
STATEMENT_STARTS = _wordset("i i'm i've i'd my me we our you your it it's this that these those there the a an he "
                            "she they his her their to sure okay ok")  # fmt: skip
LEADING_POLITE = frozenset({"please", "kindly"})
STOP_WORDS = _wordset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves s t don
""")
GENERIC_WORDS = _wordset("""
guide tutorial instructions instruction steps step plan ways way tips ideas methods method list explanation overview
detail details detailed question answer something someone thing things best possible examples example information
info advice please kindly
""")
META_WORDS = _wordset("question questions sentence instruction instructions rewrite rewritten")
CHANGING_WORDS = _wordset("avoid avoiding prevent preventing stop stopping protect protecting not never don't purpose")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_LABEL = re.compile(r"^\s*(?:rewritten\s+)?(?:question|instruction|answer|output)\s*:\s*", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\bX\b")
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"

# The rewriting prompts: per target form, one variant per attempt. Changing any of them changes REWRITE_VERSION.
_TO_QUESTION = (
    ('Examples: "Explain why X." becomes "Why X?"; "Write a guide to doing X." becomes "How can I do X?"; "List ways '
     'to X." becomes "What are some ways to X?".\n\nInstruction: {text}\n\nRewrite the instruction above as a question '
     "in the same way, keeping its words. Reply with the question only."),
    ('Examples: "Describe how to X." becomes "How do I X?"; "Give me tips for X." becomes "What are some tips for X?"; '
     '"Tell me about X." becomes "What can you tell me about X?".\n\nInstruction: {text}\n\nRewrite the instruction '
     'above as a question that asks for the same thing. Start with "How", "What" or "Why", end with "?" and keep its '
     "words. Reply with the question only."),
    ("Instruction: {text}\n\nRewrite the instruction above as a question that asks for the same thing. Start with "
     '"How" or "What" and end with "?". Reply with the question only.'),
)  # fmt: skip
_TO_INSTRUCTION = (
    ('Examples: "Why X?" becomes "Explain why X."; "How can I do X?" becomes "Explain how to do X."; "What are some '
     'ways to X?" becomes "List ways to X.".\n\nQuestion: {text}\n\nRewrite the question above as an instruction in '
     "the same way, keeping its words. Reply with the instruction only."),
    ('Examples: "How do I X?" becomes "Describe how to X."; "What are some tips for X?" becomes "Give tips for X."; '
     '"Can you tell me about X?" becomes "Tell me about X.".\n\nQuestion: {text}\n\nRewrite the question above as an '
     'instruction that asks for the same thing. Start with a verb such as "Explain", "Describe" or "List", do not end '
     'with "?" and keep its words. Reply with the instruction only.'),
    ("Question: {text}\n\nRewrite the question above as an instruction that asks for the same thing. Start with a verb "
     'such as "Explain", "Describe" or "List" and do not end with "?". Reply with the instruction only.'),
)  # fmt: skip
REWRITE_PROMPTS: dict[Form, tuple[str, ...]] = {"question": _TO_QUESTION, "instruction": _TO_INSTRUCTION}


# --- the checks


def check_form(to: str) -> Form:
    if to not in FORMS:
        raise SafedoseError(f"unknown prompt form {to!r}; choose from {', '.join(FORMS)}")
    return to


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def _first_words(text: str) -> list[str]:
    words = _words(text)
    while words and words[0] in LEADING_POLITE:
        words = words[1:]
    return words


def form_problem(text: str, form: str) -> str | None:
    """Why one line of text is not a prompt of `form` (a drop reason), or None when it is."""
    text = text.strip()
    first = _first_words(text)
    if not first:
        return "empty"
    if form == "question":
        if not text.rstrip(_QUOTES + " ").endswith("?"):
            return "no_question_mark"
        if first[0] in IMPERATIVE_VERBS:
            return "starts_with_imperative"
        return None
    if text.rstrip(_QUOTES + " ").endswith("?"):
        return "ends_with_question_mark"
    if first[0] in QUESTION_WORDS or (first[0] in AUXILIARIES and len(first) > 1 and first[1] in SUBJECTS):
        return "starts_like_question"
    if first[0] in STATEMENT_STARTS:
        return "starts_like_statement"
    return None


def detect_form(text: str) -> Form | None:
    """The form a one-line prompt is in by the checks, or None (several lines, or neither form)."""
    if len([line for line in text.strip().splitlines() if line.strip()]) != 1:
        return None
    return next((f for f in FORMS if form_problem(text, f) is None), None)


def _stem(word: str) -> str:
    word = word.removesuffix("'s")
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    return word[:-1] if word.endswith("e") and len(word) >= 4 else word


def content_words(text: str) -> set[str]:
    """Stems of the words that carry what a prompt asks for (not stop words, generic request words or its verb)."""
    words = _first_words(text)
    if words and words[0] in IMPERATIVE_VERBS:
        words = words[1:]
    skip = STOP_WORDS | GENERIC_WORDS | QUESTION_WORDS | AUXILIARIES
    return {_stem(w) for w in words if w not in skip and len(w.removesuffix("'s")) >= 2}


def _same(a: str, b: str) -> bool:
    return a == b or (min(len(a), len(b)) >= 4 and (a.startswith(b) or b.startswith(a)))


def content_share(original: str, rewrite: str) -> float:
    """Share of the original's content words that the rewrite keeps (1.0 when the original has none)."""
    wanted, kept = content_words(original), content_words(rewrite)
    if not wanted:
        return 1.0
    return sum(any(_same(w, k) for k in kept) for w in wanted) / len(wanted)


def clean_rewrite(answer: str) -> str:
    """The answer without surrounding white space, quotes and a leading label such as `Question:`."""
    text = _LABEL.sub("", answer.strip())
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1]
    elif text and text[0] in _QUOTES and text.count(text[0]) == 1:
        text = text[1:]
    return text.strip()


def check_rewrite(original: str, answer: str | None, to: str) -> str | None:
    """Why `answer` is not an acceptable `to`-form rewrite of `original` (a drop reason), or None."""
    if answer is None:
        return "responder_error"
    text = clean_rewrite(answer)
    if not text:
        return "empty"
    if len([line for line in text.splitlines() if line.strip()]) > 1:
        return "multi_line"
    problem = form_problem(text, to)
    if problem is not None:
        return problem
    if len(_words(text)) > MAX_LENGTH_RATIO * len(_words(original)) + LENGTH_SLACK:
        return "too_long"
    if _PLACEHOLDER.search(text) and not _PLACEHOLDER.search(original):
        return "copied_placeholder"
    added = set(_words(text)) - set(_words(original))
    if added & META_WORDS:
        return "talks_about_the_prompt"
    if added & CHANGING_WORDS:
        return "changes_the_request"
    if content_share(original, text) < MIN_CONTENT_SHARE:
        return "lost_content_words"
    return None


def rewrite_prompt(text: str, *, to: str, attempt: int = 0) -> str:
    """The rewriting prompt of attempt `attempt` (0-based) for converting `text` to `to` form."""
    variants = REWRITE_PROMPTS[check_form(to)]
    return variants[attempt % len(variants)].format(text=" ".join(text.split()))


def checks_settings() -> dict[str, Any]:
    """The settings that decide which rewrites pass: part of every datasheet and fingerprint."""
    return {"rewrite_version": REWRITE_VERSION, "attempts": ATTEMPTS, "min_content_share": MIN_CONTENT_SHARE,
            "max_length_ratio": MAX_LENGTH_RATIO, "length_slack": LENGTH_SLACK}  # fmt: skip


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


def make_rewriter(
    spec: str,
    *,
    decoding: Decoding | None = None,
    cache: Path | None = None,
    base_url: str | None = None,
    concurrency: int = 4,
    progress: bool = False,
) -> Responder:
    """The responder a spec names, to rewrite prompts (default decoding: `rewrite_decoding()`); `preference:`
    responders give fixed replies and cannot rewrite."""
    from safedose.data._responders import make_responder

    if spec.startswith("preference:"):
        raise SafedoseError(f"responder {spec}: fixed replies cannot rewrite prompts; use openai:MODEL or hf:MODEL")
    return make_responder(spec, decoding=decoding or rewrite_decoding(), cache=cache, base_url=base_url,
                          concurrency=concurrency, progress=progress)  # fmt: skip


def rewrite_decoding(*, dtype: str = "auto", max_new_tokens: int = REWRITE_MAX_NEW_TOKENS) -> Decoding:
    """Greedy, stopping at the first line break: the default decoding of a rewriting responder."""
    from safedose.generate import parse_decoding

    return parse_decoding({"max_new_tokens": max_new_tokens, "stop": ("\n",), "dtype": dtype}, source="rewrite")


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
        from safedose.data._loaders import _field, _row_id
        from safedose.data._sources import source_rows

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


# --- a file converted: `safedose data convert-format`


def datasheet_path(out: Path) -> Path:
    return out.with_name(out.name + ".datasheet.json")


def read_prompt_records(source: str) -> list[InstructionRecord]:
    """Instruction rows of a registered set, file or `hf:` id; rows without an output (a prompt file) get output ""."""
    from safedose.data._loaders import OUTPUT_FIELDS, to_eval_prompt, to_instruction
    from safedose.data._sources import _check_unique, _source_name, source_rows

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


def convert_file(
    source: str,
    *,
    to: str,
    responder: str | Responder,
    out: str | Path,
    cache: Path | None = None,
    decoding: Decoding | None = None,
    base_url: str | None = None,
    concurrency: int = 4,
    progress: bool = False,
) -> dict[str, Any]:
    """Write `out` (instruction JSONL: every converted or kept row, ids kept) and `<out>.datasheet.json`; returns the
    datasheet. `responder` is a spec (see `make_responder`; default decoding: greedy, one line) or a Responder.
    Answers are cached in `cache` (default `<out>.cache.sqlite`)."""
    start = time.monotonic()
    form = check_form(to)
    out = Path(out)
    records = read_prompt_records(source)
    if not records:
        raise SafedoseError(f"{source}: no usable prompts (read 0 records)")
    if isinstance(responder, str):
        cache = Path(cache) if cache is not None else out.with_name(out.name + ".cache.sqlite")
        responder = make_rewriter(responder, decoding=decoding, cache=cache, base_url=base_url,
                                  concurrency=concurrency, progress=progress)  # fmt: skip
    result = convert_format([r.instruction for r in records], to=form, responder=responder)
    kept = [r.model_copy(update={"instruction": c.text}) for r, c in zip(records, result.conversions, strict=True)
            if c.text is not None]  # fmt: skip
    if not kept:
        raise SafedoseError(f"{source}: no prompt could be converted to {form} form by {responder.spec} "
                            f"(dropped: {result.dropped})")  # fmt: skip
    write_jsonl(out, (r.model_dump() for r in kept))
    path = Path(source).expanduser()
    sheet = {
        "source": {"name": source, **({"sha256": sha256_file(path)} if path.is_file() else {})},
        "to": form,
        "rewrite_version": REWRITE_VERSION,
        "checks": checks_settings(),
        "counts": {**result.counts(), "written": len(kept)},
        "converted_at_attempt": result.converted_at_attempt,
        "dropped": result.dropped,
        "failed_attempts": result.failed_attempts,
        "responder": result.responder,
        "responder_errors": list(getattr(responder, "errors", []))[:5],
        "cache": None if cache is None else str(cache),
        "output": out.name,
        "output_sha256": sha256_file(out),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - start, 2),
    }
    write_json(datasheet_path(out), sheet)
    return sheet


__all__ = [
    "FORMS",
    "REWRITE_VERSION",
    "Conversion",
    "FormSource",
    "FormatResult",
    "check_rewrite",
    "content_share",
    "convert_file",
    "convert_format",
    "detect_form",
    "form_problem",
    "rewrite_prompt",
]
