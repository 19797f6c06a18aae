"""The prompts a safety build asks: read from their sources, standing alone, de-duplicated; its English check.

A later turn of a conversation (hh-rlhf) enters only if it does not lean on the turns before it (`context_reason`).
The English check is cheap: an answer counts as English when at least `MIN_ASCII_LETTER_SHARE` of its letters
are ASCII letters.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safedose.build._responders import HH_HARMLESS
from safedose.data import last_exchange, load_eval_prompts, load_raw, ngrams, normalize
from safedose.files import sha256_file

MIN_ASCII_LETTER_SHARE = 0.8
NEAR_DUPLICATE_THRESHOLD = 0.6  # the contamination rule's share of shared word 5-grams
MIN_LATER_TURN_WORDS = 4


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


FOLLOW_UP_OPENINGS = _word_set(
    "and but so or also then ok okay yes yeah yep yup no nope nah sure well oh right thanks thank lol haha hmm great "
    "good cool fine alright exactly really wow"
)
FOLLOW_UP_PHRASES = ("what about", "how about", "what if", "why not", "what else", "anything else", "i mean")
PERSONAL_PRONOUNS = _word_set("he she him her his hers himself herself it its itself they them their theirs themselves")
DEMONSTRATIVES = _word_set("this that these those")
# a demonstrative followed by one of these (or by nothing) stands for a thing, not before a noun
PRONOUN_FOLLOWERS = _word_set(
    "is was are were 's would will can could should does do did one ones means sounds work works"
)
DETERMINERS = _word_set("a an the my your our their his her some any every each another")
PEOPLE = _word_set(
    "someone somebody anyone anybody everyone everybody people person man woman men women guy guys girl girls boy "
    "boys kid kids child children"
)
BE = _word_set("is was 's would will be")


@dataclass(frozen=True)
class Prompt:
    """A prompt and how many human turns its conversation had (1: it was asked on its own)."""

    text: str
    turns: int = 1


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+|'[a-z]+|[.!?]", text.replace("\u2019", "'"))


def context_reason(text: str) -> str | None:
    """Why the last human turn of a longer conversation cannot stand alone, or None if it can.

    `follow_up_opening`: it opens like a reply ("Yes, ...", "What about ...", "And ..."); `too_short`: fewer than
    `MIN_LATER_TURN_WORDS` words; `unresolved_reference`: a third-person or demonstrative pronoun with no possible
    antecedent before it in the turn (a noun after a determiner, a word for people, a capitalised name). "it" before
    "to", "if" or "that" in "is it ... to ..." / "it is ... to ..." is the dummy subject, not a reference."""
    words = _words(text)
    tokens = [w for w in words if w not in ".!?"]
    lower = [w.lower() for w in tokens]
    if not lower:
        return "too_short"
    opening = " ".join(lower[:2])
    if lower[0] in FOLLOW_UP_OPENINGS or any(opening.startswith(p) for p in FOLLOW_UP_PHRASES):
        return "follow_up_opening"
    if len(lower) < MIN_LATER_TURN_WORDS:
        return "too_short"
    sentence_start = {0}
    k = 0
    for w in words:
        if w in ".!?":
            sentence_start.add(k)
        else:
            k += 1
    antecedent = False
    for i, w in enumerate(lower):
        nxt = lower[i + 1] if i + 1 < len(lower) else ""
        reference = w in PERSONAL_PRONOUNS or (w in DEMONSTRATIVES and (not nxt or nxt in PRONOUN_FOLLOWERS))
        if w == "it" and _dummy_it(lower, i):
            reference = False
        if reference and not antecedent:
            return "unresolved_reference"
        if w in PEOPLE or (w in DETERMINERS and nxt and nxt not in PERSONAL_PRONOUNS):
            antecedent = True
        if tokens[i][0].isupper() and i not in sentence_start and w != "i":
            antecedent = True
    return None


def _dummy_it(lower: list[str], i: int) -> bool:
    """`it` in "is it legal to ...", "it's easy to ...", "would it be ok if ...": the subject of what follows."""
    near = {lower[i - 1] if i else "", lower[i + 1] if i + 1 < len(lower) else ""}
    return bool(near & BE) and any(w in ("to", "if", "that") for w in lower[i + 1 :])


def prompt_id(prompt: str) -> str:
    """A row's id: from its original prompt after normalisation, so builds in different forms share ids."""
    return "prompt-" + hashlib.sha256(normalize(prompt).encode("utf-8")).hexdigest()[:16]


def is_english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) / len(letters) >= MIN_ASCII_LETTER_SHARE


def read_prompts(source: str) -> list[Prompt]:
    if source == HH_HARMLESS:
        rows = load_raw(HH_HARMLESS)
        return [Prompt(last_exchange(str(r["chosen"]))[0], str(r["chosen"]).count("\n\nHuman:")) for r in rows]
    return [Prompt(p.prompt) for p in load_eval_prompts(source)]


def source_info(source: str) -> dict[str, Any]:
    path = Path(source).expanduser()
    if path.is_file():
        return {"name": path.name, "sha256": sha256_file(path)}
    return {"name": source}


def dedup(prompts: list[Prompt]) -> tuple[list[Prompt], Counter[str]]:
    """Exact (normalised) and near-duplicate removal; near = the contamination check's 5-gram share rule."""
    kept: list[Prompt] = []
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    by_gram: dict[tuple[str, ...], set[int]] = {}
    sizes: list[int] = []
    for p in prompts:
        words = normalize(p.text).split()
        key = " ".join(words)
        if not key:
            dropped["empty_prompt"] += 1
            continue
        if key in seen:
            dropped["exact_duplicate"] += 1
            continue
        grams = ngrams(words)
        shared: Counter[int] = Counter()
        for g in grams:
            shared.update(by_gram.get(g, ()))
        if any(n / sizes[i] >= NEAR_DUPLICATE_THRESHOLD for i, n in shared.items()):
            dropped["near_duplicate"] += 1
            continue
        seen.add(key)
        if grams:
            idx = len(sizes)
            sizes.append(len(grams))
            for g in grams:
                by_gram.setdefault(g, set()).add(idx)
        kept.append(p)
    return kept, dropped


__all__ = [
    "MIN_ASCII_LETTER_SHARE",
    "MIN_LATER_TURN_WORDS",
    "Prompt",
    "context_reason",
    "dedup",
    "is_english",
    "prompt_id",
    "read_prompts",
    "source_info",
]
