"""The training set of the refusal judge: its labels and the paper's examples added to the human-labelled data."""

from __future__ import annotations

import random

from safedose.data import Labelled, load_instructions

REFUSAL_LABELS = ("compliance", "refusal", "partial")


def paper_examples(per_class: int, weight: float) -> list[Labelled]:
    """`per_class` of the paper's safety answers (refusals) and as many Dolly answers (compliance), seeded."""
    refusals = load_instructions("saferpaca-safety")
    answers = load_instructions("dolly-15k")
    random.Random(0).shuffle(refusals)
    random.Random(0).shuffle(answers)
    return [Labelled(r.instruction, r.output, "refusal", "saferpaca-safety", weight) for r in refusals[:per_class]] + [
        Labelled(r.instruction, r.output, "compliance", "dolly-15k", weight) for r in answers[:per_class]
    ]
