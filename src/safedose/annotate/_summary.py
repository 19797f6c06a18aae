"""The study's summary: progress per annotator, agreement between them, and the run's judges against them."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from safedose.annotate._agreement import agreement_summary
from safedose.annotate._audit import judges_against_humans, load_audit
from safedose.annotate._store import Store
from safedose.run import judged_path


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


def summary_digest(store: Store) -> str:
    """A hash of everything the summary is computed from: every label, every annotator, and the run's verdicts
    (judged.jsonl's size and time)."""
    digest = hashlib.sha256()
    for row in store.label_rows():
        digest.update(repr(row).encode())
    for who in store.annotators():
        digest.update(repr((who.id, who.name, who.invited)).encode())
    path = judged_path(store.path.parent)
    stat = path.stat() if path.is_file() else None
    digest.update(repr(None if stat is None else (stat.st_size, stat.st_mtime_ns)).encode())
    return digest.hexdigest()


class SummaryCache:
    """The latest summary, computed again only when `summary_digest` changes; loads at once wait for one
    computation instead of each running the bootstraps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._digest: str | None = None
        self._summary: dict[str, Any] = {}

    def get(self, store: Store) -> dict[str, Any]:
        with self._lock:
            digest = summary_digest(store)
            if digest != self._digest:
                self._summary = app_summary(store)
                self._digest = digest
            return self._summary
