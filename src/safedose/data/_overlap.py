"""Duplicate removal and eval-set contamination checks for training pools.

Two texts are *normalised duplicates* when they are equal after NFKC, lower-casing and reducing every run of
non-alphanumeric characters to one space. A training row is *contaminated* by an eval prompt when its
instruction + input (normalised) equals the prompt, or when at least `CONTAMINATION_THRESHOLD` of the prompt's
word `NGRAM`-grams occur in it. Prompts shorter than `NGRAM` words are checked by exact match only, because a
short prompt's few n-grams match too much unrelated text.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from safedose.data._records import EvalPrompt, InstructionRecord

NGRAM = 5
CONTAMINATION_THRESHOLD = 0.6
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def prompt_text(record: InstructionRecord) -> str:
    return f"{record.instruction}\n{record.input}" if record.input else record.instruction


def ngrams(words: Sequence[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def dedup(
    records: Iterable[InstructionRecord], *, seen_exact: set[tuple[str, str, str]], seen_prompt: set[str]
) -> tuple[list[InstructionRecord], Counter[str]]:
    """Drop rows already seen (exactly, or by normalised prompt); updates the `seen_*` sets in place."""
    kept: list[InstructionRecord] = []
    dropped: Counter[str] = Counter()
    for r in records:
        exact = (r.instruction, r.input, r.output)
        key = normalize(prompt_text(r))
        if exact in seen_exact:
            dropped["exact_duplicate"] += 1
        elif key in seen_prompt:
            dropped["normalised_duplicate"] += 1
        else:
            kept.append(r)
        seen_exact.add(exact)
        seen_prompt.add(key)
    return kept, dropped


class ContaminationIndex:
    """Finds eval prompts that a training row overlaps."""

    def __init__(self, prompts: Iterable[EvalPrompt]) -> None:
        self.exact: dict[str, str] = {}
        self.by_ngram: dict[tuple[str, ...], set[int]] = defaultdict(set)
        self.sizes: list[int] = []
        self.sets: list[str] = []
        for p in prompts:
            words = normalize(p.prompt).split()
            self.exact.setdefault(" ".join(words), p.eval_set)
            grams = ngrams(words)
            if grams:
                idx = len(self.sizes)
                self.sizes.append(len(grams))
                self.sets.append(p.eval_set)
                for g in grams:
                    self.by_ngram[g].add(idx)

    def match(self, text: str) -> str | None:
        """The eval set of a prompt that `text` is contaminated by, or None."""
        words = normalize(text).split()
        hit = self.exact.get(" ".join(words))
        if hit is not None:
            return hit
        counts: Counter[int] = Counter()
        for g in ngrams(words):
            counts.update(self.by_ngram.get(g, ()))
        hits = [idx for idx, shared in counts.items() if shared / self.sizes[idx] >= CONTAMINATION_THRESHOLD]
        return self.sets[min(hits)] if hits else None

    def filter(self, records: Iterable[InstructionRecord]) -> tuple[list[InstructionRecord], Counter[str]]:
        kept: list[InstructionRecord] = []
        by_set: Counter[str] = Counter()
        for r in records:
            hit = self.match(prompt_text(r))
            if hit is None:
                kept.append(r)
            else:
                by_set[hit] += 1
        return kept, by_set
