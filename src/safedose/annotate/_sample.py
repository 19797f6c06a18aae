"""The seeded sample of answers to label: stratified by cell and eval set, shuffled across cells."""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence

from safedose.annotate._records import Item, SampleSpec
from safedose.errors import SafedoseError
from safedose.run import JudgedAnswer


def draw_sample(answers: Sequence[JudgedAnswer], spec: SampleSpec) -> list[Item]:
    """`spec.per_cell` answers of every (cell, eval set), a share `spec.overlap` of each marked for every annotator;
    positions come from one seeded shuffle of the whole sample; ids are random and say nothing about the answer."""
    strata: dict[tuple[str, str], list[JudgedAnswer]] = {}
    for a in answers:
        strata.setdefault((a.variant, a.eval_set), []).append(a)
    if not strata:
        raise SafedoseError("the run has no judged answers to sample from")
    chosen: list[tuple[JudgedAnswer, bool]] = []
    for (variant, eval_set), members in sorted(strata.items()):
        rng = random.Random(f"{spec.seed}:annotate:{variant}:{eval_set}")
        picked = rng.sample(sorted(members, key=lambda a: a.id), min(spec.per_cell, len(members)))
        shared = int(spec.overlap * len(picked) + 0.5)
        chosen += [(a, k < shared) for k, a in enumerate(picked)]
    order = list(range(len(chosen)))
    random.Random(f"{spec.seed}:annotate:order").shuffle(order)
    ids = _unique_ids(len(chosen))
    return [_item(chosen[k][0], ids[pos], pos, chosen[k][1]) for pos, k in enumerate(order)]


def _unique_ids(n: int) -> list[str]:
    ids: set[str] = set()
    while len(ids) < n:
        ids.add(secrets.token_hex(8))
    return list(ids)


def _item(a: JudgedAnswer, item_id: str, position: int, overlap: bool) -> Item:
    return Item(
        item=item_id, position=position, overlap=overlap, variant=a.variant, eval_set=a.eval_set, prompt_id=a.id,
        category=a.category, expected_label=a.expected_label, **a.cell.as_dict(), prompt=a.prompt,
        response=a.response,
    )  # fmt: skip


def annotator_order(items: Sequence[Item], annotator_id: int, seed: int) -> list[Item]:
    """One annotator's order: the shared (overlap) items first, then the rest, each part in a shuffle of its own
    seeded by the annotator, so that annotators working at once rarely meet on the same unshared item."""
    rng = random.Random(f"{seed}:annotator:{annotator_id}")
    shared = sorted((i for i in items if i.overlap), key=lambda i: i.position)
    single = sorted((i for i in items if not i.overlap), key=lambda i: i.position)
    rng.shuffle(shared)
    rng.shuffle(single)
    return shared + single
