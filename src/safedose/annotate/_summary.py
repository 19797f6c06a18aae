"""The study's summary: progress per annotator, agreement between them, and the run's judges against them."""

from __future__ import annotations

from typing import Any

from safedose.annotate._agreement import agreement_summary
from safedose.annotate._audit import judges_against_humans, load_audit
from safedose.annotate._store import Store


def app_summary(store: Store) -> dict[str, Any]:
    """Blinded: counts, agreement and judge agreement, nothing per cell."""
    run = store.path.parent
    items = store.items()
    shared = {i.item for i in items if i.overlap}
    labels = store.labels()
    audit = load_audit(run, store)
    people = []
    for who in store.annotators():
        mine = [label for label in labels if label.annotator == who.name]
        on_shared = sum(1 for m in mine if m.item in shared)
        people.append({"name": who.name, "labelled": len(mine), "shared_labelled": on_shared, "invited": who.invited})
    labelled_items = {label.item for label in labels}
    return {
        "items": len(items), "shared_items": len(shared), "labelled_items": len(labelled_items),
        "labels": len(labels), "annotators": people, "agreement": agreement_summary(labels),
        "judges": judges_against_humans(run, audit=audit) if audit.refusal or audit.harmful else [],
    }  # fmt: skip
