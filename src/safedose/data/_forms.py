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
from typing import Any, Literal

from safedose.errors import SafedoseError

Form = Literal["instruction", "question"]
FORMS: tuple[Form, ...] = ("instruction", "question")
REWRITE_VERSION = 1  # bump whenever the rewriting prompts or the checks change
ATTEMPTS = 3
MIN_CONTENT_SHARE = 0.6
MAX_LENGTH_RATIO = 2.0
LENGTH_SLACK = 8


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


__all__ = [
    "ATTEMPTS",
    "FORMS",
    "REWRITE_PROMPTS",
    "REWRITE_VERSION",
    "Form",
    "check_form",
    "check_rewrite",
    "checks_settings",
    "clean_rewrite",
    "content_share",
    "content_words",
    "detect_form",
    "form_problem",
    "rewrite_prompt",
]
