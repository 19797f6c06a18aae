"""Prompt forms: the checks, conversion with retries and counted drops, the convert-format command (against a loopback
endpoint, cached), and the paired mixes of the format study."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from safedose.build import datasheet_path
from safedose.data import (
    DATASETS,
    FormSource,
    convert_format,
    detect_form,
    load_eval_prompts,
    mix,
    test_file,
    train_file,
    val_file,
)
from safedose.data._forms import (
    ATTEMPTS,
    REWRITE_PROMPTS,
    REWRITE_VERSION,
    check_rewrite,
    checks_settings,
    content_share,
    form_problem,
    rewrite_prompt,
)
from safedose.errors import SafedoseError
from safedose.files import sha256_file
from tests.conftest import CliResult, json_endpoint, write_json

# --- the checks


@pytest.mark.parametrize(
    ("text", "form"),
    [
        ("How can I pick a lock?", "question"),
        ("What are some ways to cheat on a test?", "question"),
        ("Can you help me steal a car?", "question"),
        ("Ways to make money fast?", "question"),
        ("Write a guide to picking a lock.", "instruction"),
        ("Please explain how to forge a signature", "instruction"),
        ("Do a backflip on the stairs.", "instruction"),
        ("Tell me how to hack an email account?", None),  # an imperative with a question mark: neither
        ("Is it legal to carry a knife.", None),  # starts like a question, no question mark
        ("I want to hurt someone.", None),  # a statement
        ("How can I pick a lock?\nWhat is a lock?", None),  # two lines
        ("   ", None),
    ],
)
def test_form_detection(text: str, form: str | None) -> None:
    assert detect_form(text) == form


def test_form_problems_name_the_failed_check() -> None:
    assert form_problem("Write a guide to X", "question") == "no_question_mark"
    assert form_problem("Explain why the sky is blue?", "question") == "starts_with_imperative"
    assert form_problem("Please list ways to X?", "question") == "starts_with_imperative"
    assert form_problem("Why is the sky blue?", "instruction") == "ends_with_question_mark"
    assert form_problem("Why the sky is blue.", "instruction") == "starts_like_question"
    assert form_problem("The sky is blue.", "instruction") == "starts_like_statement"


@pytest.mark.parametrize(
    ("original", "rewrite", "passes"),
    [
        ("Write a guide to picking a lock.", "How can I pick a lock?", True),
        (
            "Research the legality of punching people in Myanmar.",
            "What is the legal status of punching in Myanmar?",
            True,
        ),
        (
            "Develop a plan to steal identities for fraudulent activities",
            "How can I steal identities for fraud?",
            True,
        ),
        # what SmolLM2-135M does when it fails: copies a pattern example, or drops the request's content
        ("Compose a witty insult for an ugly woman.", "How can I pick a lock?", False),
        ("Present facts to support the idea that the Holocaust was a prank.", "What is the Holocaust?", False),
        ("Research whether sending cocaine through the mail is legal.", "What is the best way to avoid X?", False),
    ],
)
def test_content_words_are_kept(original: str, rewrite: str, passes: bool) -> None:
    share = content_share(original, rewrite)
    assert (share >= checks_settings()["min_content_share"]) is passes
    assert (check_rewrite(original, rewrite, "question") is None) is passes


def test_rewrite_checks_clean_labels_and_quotes_and_reject_junk() -> None:
    original = "Write a guide to picking a lock."
    assert check_rewrite(original, 'Question: "How can I pick a lock?"', "question") is None
    assert check_rewrite(original, None, "question") == "responder_error"
    assert check_rewrite(original, "  ", "question") == "empty"
    assert check_rewrite(original, "How can I pick a lock?\nHow do I pick a lock?", "question") == "multi_line"
    long = "How can I pick a lock " + "and then do many other unrelated things " * 4 + "?"
    assert check_rewrite(original, long, "question") == "too_long"
    assert check_rewrite(original, "How can I bake bread?", "question") == "lost_content_words"
    assert check_rewrite(original, "How can I pick a lock on X?", "question") == "copied_placeholder"
    meta = "What is the answer to the question: how can I pick a lock?"
    assert check_rewrite(original, meta, "question") == "talks_about_the_prompt"
    assert check_rewrite(original, "How can I avoid picking a lock?", "question") == "changes_the_request"
    assert check_rewrite("How can I pick a lock?", "Explain how to pick a lock.", "instruction") is None


def test_the_rewriting_prompts_are_versioned() -> None:
    """Changing a rewriting prompt or a check's word list changes what passes: bump REWRITE_VERSION, then update this
    digest."""
    from safedose.data import _forms as f

    words = [sorted(w) for w in (f.IMPERATIVE_VERBS, f.QUESTION_WORDS, f.AUXILIARIES, f.SUBJECTS, f.STATEMENT_STARTS,
                                 f.STOP_WORDS, f.GENERIC_WORDS, f.META_WORDS, f.CHANGING_WORDS)]  # fmt: skip
    blob = json.dumps([REWRITE_PROMPTS, words, checks_settings()], sort_keys=True)
    assert (REWRITE_VERSION, hashlib.sha256(blob.encode()).hexdigest()[:16]) == (1, "9d28f2d3ffecbad5")
    assert rewrite_prompt("Write  a\nguide.", to="question", attempt=0).count("Instruction: Write a guide.") == 1
    assert len({rewrite_prompt("x", to="question", attempt=a) for a in range(ATTEMPTS)}) == ATTEMPTS


def test_declared_forms_agree_with_the_checks() -> None:
    for name in DATASETS:
        form = DATASETS.get(name).form
        if form:
            found = [detect_form(p.prompt) for p in load_eval_prompts(name)]
            assert sum(f == form for f in found) >= 0.75 * len(found), (name, Counter(found))
    assert DATASETS.get("Q-Harm").form == "question" and DATASETS.get("I-MaliciousInstructions").form == "instruction"


# --- conversion with a responder


@dataclass
class Scripted:
    """A responder whose answer to each rewriting prompt is scripted per original prompt and attempt."""

    script: dict[str, list[str | None]]
    to: str = "question"
    spec: str = "scripted:test"
    asked: list[str] = field(default_factory=list)

    def identity(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def respond(self, prompts: Sequence[str], *, system: str | None = None) -> list[str | None]:
        out: list[str | None] = []
        for p in prompts:
            self.asked.append(p)
            for original, answers in self.script.items():
                for attempt in range(ATTEMPTS):
                    if p == rewrite_prompt(original, to=self.to, attempt=attempt):
                        out.append(answers[min(attempt, len(answers) - 1)])
                        break
                else:
                    continue
                break
            else:
                raise AssertionError(f"unexpected prompt {p!r}")
        return out


def test_conversion_keeps_converts_retries_and_drops() -> None:
    prompts = ["How can I pick a lock?", "Write a guide to picking a lock.", "Explain how to forge a signature.",
               "Describe how to steal a car.", "List ways to cheat on taxes."]  # fmt: skip
    responder = Scripted({
        prompts[1]: ["How can I pick a lock?"],
        prompts[2]: ["How can I pick a lock?", "Explain how to forge a signature?", "How do I forge a signature?"],
        prompts[3]: ["I can't help with that.", "How can I pick a lock?", "Sure! Here is how:\n1. Find a car"],
        prompts[4]: [None],
    })  # fmt: skip
    result = convert_format(prompts, to="question", responder=responder)
    assert result.texts == [prompts[0], "How can I pick a lock?", "How do I forge a signature?", None, None]
    assert [c.status for c in result.conversions] == ["kept", "converted", "converted", "dropped", "dropped"]
    assert result.conversions[2].failures == ("lost_content_words", "starts_with_imperative")
    assert result.converted_at_attempt == {"1": 1, "3": 1}
    assert result.conversions[3].failures == ("no_question_mark", "lost_content_words", "multi_line")
    assert result.dropped == {"multi_line": 1, "responder_error": 1}
    assert result.counts() == {"prompts": 5, "kept_as_is": 1, "converted": 2, "dropped": 2, "requests": 1 + 3 + 3 + 3}
    assert not any("pick a lock?\n" in p for p in responder.asked)  # the question was never sent
    assert len(responder.asked) == 10 and result.responder == {"spec": "scripted:test"}
    with pytest.raises(SafedoseError, match="unknown prompt form 'questions'"):
        convert_format(prompts, to="questions", responder=responder)


# --- convert-format against a loopback OpenAI-compatible endpoint


@dataclass
class Endpoint:
    url: str = ""
    seen: list[str] = field(default_factory=list)


def _rule(text: str) -> str:
    """Steal requests get a junk rewrite; the rest a question that keeps every word."""
    return "I cannot rewrite that." if "steal" in text else f"How can I {text[0].lower()}{text[1:].rstrip('.')}?"


@contextmanager
def rewriting_endpoint(rule: Callable[[str], str] = _rule) -> Iterator[Endpoint]:
    """A /v1/chat/completions that rewrites the prompt inside a rewriting prompt by `rule`."""
    fake = Endpoint()

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prompt = str(body["messages"][-1]["content"])
        fake.seen.append(prompt)
        match = re.search(r"(?:Instruction|Question): (.*?)\n\n", prompt)
        text = rule(match.group(1) if match else "")
        message = {"role": "assistant", "content": text}
        return 200, {"choices": [{"message": message}], "usage": {"completion_tokens": 5}}

    with json_endpoint(respond) as url:
        fake.url = url
        yield fake


def test_convert_format_command_writes_rows_and_a_datasheet_and_asks_nothing_twice(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    texts = {
        "a": "Research ways to pick a lock.",
        "b": "Is it easy to pick a lock?",
        "c": "Explain how to steal a car.",
        "d": "Outline the laws on forging signatures.",
    }
    rows = [{"id": i, "instruction": t, "input": "ctx" if i == "d" else "", "output": "No."} for i, t in texts.items()]
    source = tmp_path / "safety.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "questions.jsonl"
    with rewriting_endpoint() as fake:
        args = ("data", "convert-format", source, "--to", "question", "--responder", "openai:rewriter", "--out", out,
                "--base-url", fake.url)  # fmt: skip
        first = cli(*args)
        assert first.code == 0, first.err
        asked = len(fake.seen)
        assert asked == 2 + ATTEMPTS  # a and d once; c every attempt; b is a question already
        again = cli(*args)
        assert again.code == 0, again.err
        assert len(fake.seen) == asked  # every rewrite came from the cache
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["instruction"], r["input"]) for r in written] == [
        ("a", "How can I research ways to pick a lock?", ""), ("b", "Is it easy to pick a lock?", ""),
        ("d", "How can I outline the laws on forging signatures?", "ctx")]  # fmt: skip
    sheet = json.loads(datasheet_path(out).read_text())
    assert sheet["counts"] == {"prompts": 4, "kept_as_is": 1, "converted": 2, "dropped": 1, "requests": 2 + ATTEMPTS,
                               "written": 3}  # fmt: skip
    assert sheet["dropped"] == {"no_question_mark": 1} and sheet["failed_attempts"] == {"no_question_mark": ATTEMPTS}
    assert sheet["rewrite_version"] == REWRITE_VERSION and sheet["checks"] == checks_settings()
    assert sheet["responder"]["spec"] == "openai:rewriter" and sheet["output_sha256"] == sha256_file(out)
    assert sheet["source"] == {"name": str(source), "sha256": sha256_file(source)} and sheet["to"] == "question"
    assert sheet["converted_at_attempt"] == {"1": 2}
    questions = FormSource.from_file(out).questions  # the output is a sweep's `safety_questions` file as it is
    assert questions == {"a": written[0]["instruction"], "b": written[1]["instruction"], "d": written[2]["instruction"]}


def test_convert_format_bad_input_is_one_line_and_leaves_no_file(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    out = tmp_path / "out.jsonl"
    result = cli("data", "convert-format", empty, "--to", "question", "--responder", "openai:m", "--out", out)
    assert result.code == 2 and result.err == f"error: {empty}: no usable prompts (read 0 records)\n"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Explain how to steal a car.\nDescribe how to steal a bike.\n")
    with rewriting_endpoint() as fake:
        result = cli("data", "convert-format", prompts, "--to", "question", "--responder", "openai:m", "--out", out,
                     "--base-url", fake.url)  # fmt: skip
    assert result.code == 2 and result.err.count("\n") == 1
    assert "no prompt could be converted to question form by openai:m (dropped: {'no_question_mark': 2})" in result.err
    assert not out.exists() and not datasheet_path(out).exists()
    result = cli("data", "convert-format", prompts, "--to", "quest", "--responder", "openai:m", "--out", out)
    assert result.code == 2 and "unknown prompt form 'quest'" in result.err
    result = cli("data", "convert-format", prompts, "--to", "question", "--responder", "preference:hh-rlhf-harmless",
                 "--out", out)  # fmt: skip
    assert result.code == 2 and "fixed replies cannot rewrite prompts" in result.err


# --- the paired mixes of the format study

SAFETY = [f"Explain how to do harmful thing number {i} with tool {i * 3}." for i in range(40)]


def _rewriter(fail: set[int], contaminate: dict[int, str] | None = None) -> Scripted:
    """Question form of each SAFETY row by rule; rows in `fail` never pass; `contaminate` maps a row to an answer."""
    script: dict[str, list[str | None]] = {}
    for i, text in enumerate(SAFETY):
        rest = text.removeprefix("Explain how to ").rstrip(".")
        script[text] = ["Sure, I can help."] if i in fail else [(contaminate or {}).get(i, f"How do I {rest}?")]
    return Scripted(script)


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("pools")
    base = write_json(tmp / "base.json", [{"instruction": f"Base task {i} on subject {i * 11}", "input": "",
                                          "output": f"Answer {i}"} for i in range(60)])  # fmt: skip
    safety = write_json(tmp / "safety.json", [{"instruction": t, "input": "", "output": "I cannot help with that."}
                                              for t in SAFETY])  # fmt: skip
    return base, safety


def _mix(pools: tuple[Path, Path], out: Path, fmt: str, forms: FormSource | None, doses: Sequence[int] = (0, 4, 10),
         seed: int = 0, eval_sets: Sequence[str] = ("advbench",)) -> Path:  # fmt: skip
    mix(base=str(pools[0]), base_size=20, safety=str(pools[1]), doses=doses, out=out, seed=seed, val_size=5,
        test_size=5, format=fmt, eval_sets=eval_sets, forms=forms)  # fmt: skip
    return out


def _safety(out: Path, dose: int) -> dict[str, str]:
    rows = [json.loads(line) for line in train_file(out, dose).read_text().splitlines()]
    return {r["id"]: r["instruction"] for r in rows if r["source"] == "safety.json"}


def test_paired_formats_hold_the_same_items_nested_across_doses(pools: tuple[Path, Path], tmp_path: Path) -> None:
    fail = set(range(0, 40, 3))
    responder = _rewriter(fail)
    outs = {f: _mix(pools, tmp_path / f, f, FormSource(responder=responder)) for f in ("instruction", "question",
                                                                                       "mixed")}  # fmt: skip
    failed_ids = {f"safety.json-{i}" for i in fail}
    for dose in (4, 10):
        by_format = {f: _safety(out, dose) for f, out in outs.items()}
        ids = set(by_format["instruction"])
        assert len(ids) == dose and all(set(rows) == ids for rows in by_format.values())  # the same items
        assert not ids & failed_ids  # a failed rewrite leaves every format
        assert {detect_form(t) for t in by_format["instruction"].values()} == {"instruction"}
        assert {detect_form(t) for t in by_format["question"].values()} == {"question"}
        forms = Counter(detect_form(t) for t in by_format["mixed"].values())
        assert forms == {"instruction": dose // 2, "question": dose // 2}
        for i, text in by_format["mixed"].items():
            assert text in (by_format["instruction"][i], by_format["question"][i])
    assert set(_safety(outs["question"], 4)) < set(_safety(outs["question"], 10))
    mixed4, mixed10 = _safety(outs["mixed"], 4), _safety(outs["mixed"], 10)
    assert all(mixed10[i] == t for i, t in mixed4.items())  # an item keeps its form as the dose grows
    for name in ("mix-n4.val.jsonl", "base-test.jsonl"):  # base rows: identical across formats
        assert len({(out / name).read_bytes() for out in outs.values()}) == 1
    base_rows = [{line for line in train_file(out, 0).read_text().splitlines()} for out in outs.values()]
    assert base_rows[0] == base_rows[1] == base_rows[2]
    sheet = json.loads((outs["mixed"] / "datasheet.json").read_text())
    formats = sheet["formats"]
    assert formats["source"]["responder"] == {"spec": "scripted:test"} and formats["source"]["rewrite_version"] == 1
    assert set(formats["dropped"]) == {"question: no_question_mark"}
    assert formats["examined"] == formats["paired"] + formats["dropped"]["question: no_question_mark"]
    assert formats["paired"] == 10 and sheet["per_dose"]["10"]["safety_by_form"] == {"instruction": 5, "question": 5}
    assert sheet["dropped"]["safety"]["no_form_pair"] == sum(formats["dropped"].values())
    assert formats["examined"] <= formats["asked"] < len(SAFETY)  # only about what the doses need is rewritten
    assert formats["kept_as_is"] == {"instruction": 10, "question": 0}
    # the same rows in a fresh mix with a fresh responder: each row's rewrite is its own
    _mix(pools, tmp_path / "again", "question", FormSource(responder=_rewriter(fail)), doses=(10, 4))
    assert _safety(tmp_path / "again", 10) == _safety(outs["question"], 10)


def test_paired_mixes_with_another_seed_differ_and_mixed_is_seeded(pools: tuple[Path, Path], tmp_path: Path) -> None:
    forms = FormSource(responder=_rewriter(set()))
    a = _safety(_mix(pools, tmp_path / "a", "mixed", forms, seed=0), 10)
    b = _safety(_mix(pools, tmp_path / "b", "mixed", forms, seed=0), 10)
    c = _safety(_mix(pools, tmp_path / "c", "mixed", forms, seed=1), 10)
    assert a == b and set(a) != set(c)
    assert train_file(tmp_path / "a", 10).read_bytes() == train_file(tmp_path / "b", 10).read_bytes()


def test_a_rewrite_that_matches_an_eval_prompt_is_dropped_from_every_format(
    pools: tuple[Path, Path], tmp_path: Path
) -> None:
    q_harm = next(p.prompt for p in load_eval_prompts("Q-Harm") if len(p.prompt.split()) >= 7)

    def overlapping(i: int) -> str:  # keeps the row's words, then asks the Q-Harm question
        return f"How do I {SAFETY[i].removeprefix('Explain how to ').rstrip('.')} and {q_harm[0].lower()}{q_harm[1:]}"

    forms = FormSource(responder=_rewriter(set(), {i: overlapping(i) for i in range(40)}))
    with pytest.raises(SafedoseError, match=r"dose 4 is larger than the safety pool \(0 rows with an instruction and "):
        _mix(pools, tmp_path / "q", "question", forms, doses=[4], eval_sets=["Q-Harm"])
    forms = FormSource(responder=_rewriter(set(), {i: overlapping(i) for i in range(0, 40, 2)}))
    outs = [_mix(pools, tmp_path / f, f, forms, doses=[4], eval_sets=["Q-Harm"]) for f in ("instruction", "question")]
    sheet = json.loads((outs[1] / "datasheet.json").read_text())["formats"]
    dropped = sheet["dropped"]["contamination_after_rewrite"]
    assert dropped > 0 and sheet["contamination_after_rewrite"] == {"Q-Harm": dropped}
    assert set(_safety(outs[0], 4)) == set(_safety(outs[1], 4))
    assert all(int(i.rsplit("-", 1)[1]) % 2 == 1 for i in _safety(outs[0], 4))


def test_question_file_as_the_source_and_format_errors(pools: tuple[Path, Path], tmp_path: Path) -> None:
    questions = tmp_path / "questions.jsonl"
    rows = [{"id": f"safety.json-{i}", "question": f"How do I {t.removeprefix('Explain how to ').rstrip('.')}?"}
            for i, t in enumerate(SAFETY) if i != 5]  # fmt: skip
    rows[0]["question"] = "Write a question?"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    forms = FormSource.from_file(questions)
    out = _mix(pools, tmp_path / "q", "question", forms, doses=[30])
    sheet = json.loads((out / "datasheet.json").read_text())["formats"]
    assert sheet["source"]["questions_file"]["sha256"] == sha256_file(questions)
    assert sheet["dropped"] == {"question: no_question_in_file": 1, "question: starts_with_imperative": 1}
    assert not {"safety.json-0", "safety.json-5"} & set(_safety(out, 30))
    with pytest.raises(SafedoseError, match="format question: question-form safety prompts need a source"):
        _mix(pools, tmp_path / "x", "question", None)
    with pytest.raises(SafedoseError, match="unknown format 'questions'"):
        _mix(pools, tmp_path / "x", "questions", forms)
    assert not (tmp_path / "x").exists()


def test_instruction_mix_without_a_source_is_unchanged(pools: tuple[Path, Path], tmp_path: Path) -> None:
    out = _mix(pools, tmp_path / "plain", "instruction", None)
    sheet = json.loads((out / "datasheet.json").read_text())
    assert "formats" not in sheet and "safety_by_form" not in sheet["per_dose"]["4"]
    assert "no_form_pair" not in sheet["dropped"]["safety"]
    for name in ("mix-n4.train.jsonl", "mix-n10.val.jsonl"):
        assert (out / name).is_file()
    assert test_file(out).is_file() and val_file(out, 0).is_file()
