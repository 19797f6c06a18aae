"""RUN/annotations.sqlite: the sample, the annotators (token hashes only) and their labels, in SQLite (WAL).

Every write is one transaction; one label per annotator and item is enforced by a UNIQUE constraint, so a label
that was answered with success survives a killed server, and none is ever stored twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from safedose.annotate._records import Item, Label, LabelIn, SampleSpec
from safedose.annotate._sample import annotator_order, draw_sample
from safedose.errors import SafedoseError
from safedose.run import AXES, open_run, read_judged

DB_NAME = "annotations.sqlite"
DEFAULT_SPEC = SampleSpec(per_cell=10, overlap=0.25, seed=0)
MAX_NAME = 64
NAME_CHARS = re.compile(r"[\w .@+'-]+")
LINE_BREAKS = {"Zl", "Zp"}
UNDO_LIMIT = 100
LEASE_S = 600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    item TEXT PRIMARY KEY, position INTEGER NOT NULL UNIQUE, overlap INTEGER NOT NULL,
    variant TEXT NOT NULL, eval_set TEXT NOT NULL, prompt_id TEXT NOT NULL, category TEXT, expected_label TEXT,
    dose INTEGER, seed INTEGER, format TEXT, safety TEXT, prompt TEXT NOT NULL, response TEXT NOT NULL,
    UNIQUE (variant, eval_set, prompt_id));
CREATE TABLE IF NOT EXISTS annotators (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_sha256 TEXT UNIQUE, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY, annotator_id INTEGER NOT NULL REFERENCES annotators (id),
    item TEXT NOT NULL REFERENCES items (item),
    refusal TEXT NOT NULL CHECK (refusal IN ('compliance', 'refusal', 'partial')),
    harmful TEXT CHECK (harmful IN ('yes', 'no')), note TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    UNIQUE (annotator_id, item));
CREATE TABLE IF NOT EXISTS undo (
    id INTEGER PRIMARY KEY, annotator_id INTEGER NOT NULL REFERENCES annotators (id), item TEXT NOT NULL,
    existed INTEGER NOT NULL, refusal TEXT, harmful TEXT, note TEXT, created_at REAL, updated_at REAL);
CREATE INDEX IF NOT EXISTS undo_by_annotator ON undo (annotator_id, id);
CREATE TABLE IF NOT EXISTS leases (
    item TEXT PRIMARY KEY REFERENCES items (item), annotator_id INTEGER NOT NULL REFERENCES annotators (id),
    expires REAL NOT NULL);
"""
UPSERT = (
    "INSERT INTO labels (annotator_id, item, refusal, harmful, note, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (annotator_id, item) DO UPDATE SET refusal = excluded.refusal, "
    "harmful = excluded.harmful, note = excluded.note, updated_at = excluded.updated_at"
)
PREVIOUS = "SELECT refusal, harmful, note, created_at, updated_at FROM labels WHERE annotator_id = ? AND item = ?"
ITEM_COLUMNS = ("item", "position", "overlap", "variant", "eval_set", "prompt_id", "category", "expected_label",
                *AXES, "prompt", "response")  # fmt: skip


def db_path(run: Path) -> Path:
    return run / DB_NAME


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def normalise_name(name: str) -> str:
    """An annotator's name as stored: NFC, without surrounding whitespace, inner runs of spaces made one. Refused
    (SafedoseError) when empty, over MAX_NAME characters, with a control character or line break inside (a newline,
    a tab, a zero-width space...) or with characters other than letters, digits, spaces and . @ + - _ '."""
    text = unicodedata.normalize("NFC", name).strip()
    if any(unicodedata.category(c) in LINE_BREAKS or unicodedata.category(c).startswith("C") for c in text):
        raise SafedoseError(f"annotator name {name!r}: control characters (newlines, tabs...) are not allowed")
    text = " ".join(text.split())
    if not text or len(text) > MAX_NAME or not NAME_CHARS.fullmatch(text):
        raise SafedoseError(f"annotator name {name!r}: use 1-{MAX_NAME} letters, digits, spaces or . @ + - _ '")
    return text


def name_key(name: str) -> str:
    """What makes two names the same annotator: case, surrounding and repeated whitespace do not count (names
    stored before they were normalised included)."""
    return " ".join(unicodedata.normalize("NFC", name).split()).casefold()


@dataclass(frozen=True)
class Annotator:
    """An annotator: id, name, and whether they hold an invite link (imported annotators do not)."""

    id: int
    name: str
    invited: bool = True


class Store:
    """The annotation database of one run directory; safe to share between threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._items: list[Item] | None = None
        self._by_id: dict[str, Item] | None = None
        with self._write() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            present = {row[1] for row in db.execute("PRAGMA table_info(items)")}
            for axis in AXES:  # a database drawn before the axis existed gets its column (NULL: not varied)
                if axis not in present:
                    db.execute(
                        f"ALTER TABLE items ADD COLUMN {axis} {'INTEGER' if axis in ('dose', 'seed') else 'TEXT'}"
                    )

    # connections and transactions

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # the sample

    def spec(self) -> SampleSpec | None:
        row = self._db().execute("SELECT value FROM meta WHERE key = 'sample'").fetchone()
        return None if row is None else SampleSpec.model_validate_json(row[0])

    def create_sample(self, items: Sequence[Item], spec: SampleSpec) -> None:
        with self._write() as db:
            if db.execute("SELECT 1 FROM meta WHERE key = 'sample'").fetchone():
                return  # another process drew it first
            marks = ",".join("?" * len(ITEM_COLUMNS))
            db.executemany(
                f"INSERT INTO items ({','.join(ITEM_COLUMNS)}) VALUES ({marks})",
                [tuple(getattr(i, c) for c in ITEM_COLUMNS) for i in items],
            )
            db.execute("INSERT INTO meta (key, value) VALUES ('sample', ?)", (spec.model_dump_json(),))

    def items(self) -> list[Item]:
        if self._items is None:
            rows = self._db().execute(f"SELECT {','.join(ITEM_COLUMNS)} FROM items ORDER BY position").fetchall()
            self._items = [Item(**dict(zip(ITEM_COLUMNS, r, strict=True))) for r in rows]
        return self._items

    def item(self, item: str) -> Item | None:
        return self._index().get(item)

    def _index(self) -> dict[str, Item]:
        if self._by_id is None:
            self._by_id = {i.item: i for i in self.items()}
        return self._by_id

    # annotators

    def invite(self, name: str, *, new_token: bool = False) -> str:
        """A new personal token for `name` (kept only as a hash); an already invited name needs `new_token`."""
        name = normalise_name(name)
        token = secrets.token_urlsafe(24)
        with self._write() as db:
            found = self._annotator_ids(db).get(name_key(name))
            if found is None:
                db.execute("INSERT INTO annotators (name, token_sha256, created_at) VALUES (?, ?, ?)",
                           (name, token_hash(token), time.time()))  # fmt: skip
                return token
            ident, stored, invited = found
            if invited and not new_token:
                raise SafedoseError(
                    f"{stored!r} is already invited; `--new-token` gives a new link (the old one stops working)"
                )
            db.execute("UPDATE annotators SET token_sha256 = ? WHERE id = ?", (token_hash(token), ident))
        return token

    @staticmethod
    def _annotator_ids(db: sqlite3.Connection) -> dict[str, tuple[int, str, bool]]:
        """Every annotator by name key: id, stored name and whether they hold a link (the first of any twins)."""
        found: dict[str, tuple[int, str, bool]] = {}
        for ident, name, invited in db.execute("SELECT id, name, token_sha256 IS NOT NULL FROM annotators ORDER BY id"):
            found.setdefault(name_key(name), (ident, name, bool(invited)))
        return found

    def annotator(self, token: str) -> Annotator | None:
        row = self._db().execute("SELECT id, name FROM annotators WHERE token_sha256 = ?", (token_hash(token),))
        found = row.fetchone()
        return None if found is None else Annotator(found[0], found[1])

    def annotators(self) -> list[Annotator]:
        rows = self._db().execute("SELECT id, name, token_sha256 IS NOT NULL FROM annotators ORDER BY id")
        return [Annotator(i, n, invited=bool(t)) for i, n, t in rows]

    # labels

    def put_label(self, annotator: Annotator, item: str, label: LabelIn) -> Label:
        """Store (or change) the annotator's label of `item`; the value it replaces is kept for `undo`."""
        now = time.time()
        harmful = label.harmful if self._index()[item].asks_harmful else None
        with self._write() as db:
            self._remember(db, annotator, item)
            db.execute(UPSERT, (annotator.id, item, label.refusal, harmful, label.note, now, now))
            db.execute("DELETE FROM leases WHERE item = ? AND annotator_id = ?", (item, annotator.id))
            created = db.execute(PREVIOUS, (annotator.id, item)).fetchone()[3]
        return Label(item=item, annotator=annotator.name, refusal=label.refusal, harmful=harmful, note=label.note,
                     created_at=created, updated_at=now)  # fmt: skip

    def delete_label(self, annotator: Annotator, item: str) -> bool:
        with self._write() as db:
            if db.execute(PREVIOUS, (annotator.id, item)).fetchone() is None:
                return False
            self._remember(db, annotator, item)
            db.execute("DELETE FROM labels WHERE annotator_id = ? AND item = ?", (annotator.id, item))
        return True

    @staticmethod
    def _remember(db: sqlite3.Connection, annotator: Annotator, item: str) -> None:
        old = db.execute(PREVIOUS, (annotator.id, item)).fetchone()
        db.execute(
            "INSERT INTO undo (annotator_id, item, existed, refusal, harmful, note, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (annotator.id, item, old is not None, *(old or (None,) * 5))
        )  # fmt: skip
        db.execute("DELETE FROM undo WHERE annotator_id = ? AND id <= (SELECT id FROM undo WHERE annotator_id = ? "
                   "ORDER BY id DESC LIMIT 1 OFFSET ?)", (annotator.id, annotator.id, UNDO_LIMIT))  # fmt: skip

    def undo(self, annotator: Annotator) -> str | None:
        """Take back the annotator's most recent change: a new label is removed (and an unshared item leased to
        them again), a changed or removed one gets its former value back. Only the last UNDO_LIMIT changes of each
        annotator are kept. Returns the item (None when there is nothing to take back)."""
        with self._write() as db:
            row = db.execute("SELECT id, item, existed, refusal, harmful, note, created_at, updated_at FROM undo "
                             "WHERE annotator_id = ? ORDER BY id DESC LIMIT 1", (annotator.id,)).fetchone()  # fmt: skip
            if row is None:
                return None
            ident, item, existed, *old = row
            db.execute("DELETE FROM undo WHERE id = ?", (ident,))
            if existed:
                refusal, harmful, note, created, updated = old
                db.execute(UPSERT, (annotator.id, item, refusal, harmful, note, created, updated))
            else:
                db.execute("DELETE FROM labels WHERE annotator_id = ? AND item = ?", (annotator.id, item))
                found = self.item(item)
                if found is not None and not found.overlap:
                    self._lease(db, annotator, item, time.time())
        return str(item)

    def labels(self, annotator: Annotator | None = None) -> list[Label]:
        """Labels in the order they were first made: everyone's, or one annotator's."""
        sql = ("SELECT l.item, a.name, l.refusal, l.harmful, l.note, l.created_at, l.updated_at FROM labels l "
               "JOIN annotators a ON a.id = l.annotator_id")  # fmt: skip
        args: tuple[int, ...] = ()
        if annotator is not None:
            sql += " WHERE l.annotator_id = ?"
            args = (annotator.id,)
        rows = self._db().execute(sql + " ORDER BY l.id", args).fetchall()
        keys = ("item", "annotator", "refusal", "harmful", "note", "created_at", "updated_at")
        return [Label(**dict(zip(keys, r, strict=True))) for r in rows]

    def label_rows(self) -> list[tuple[object, ...]]:
        """Every label as stored, in the order made (for digests)."""
        return self._db().execute("SELECT * FROM labels ORDER BY id").fetchall()

    def taken_by_others(self, annotator: Annotator, now: float | None = None) -> set[str]:
        """Unshared items that someone else has labelled or holds an unexpired lease on."""
        rows = self._db().execute(
            "SELECT l.item FROM labels l JOIN items i ON i.item = l.item WHERE i.overlap = 0 AND l.annotator_id != ? "
            "UNION SELECT item FROM leases WHERE annotator_id != ? AND expires > ?",
            (annotator.id, annotator.id, time.time() if now is None else now),
        )
        return {r[0] for r in rows}

    def leased_to_others(self, annotator: Annotator, now: float | None = None) -> int:
        """How many unshared items others hold an unexpired lease on (handed out, not yet labelled)."""
        row = self._db().execute("SELECT count(*) FROM leases WHERE annotator_id != ? AND expires > ?",
                                 (annotator.id, time.time() if now is None else now)).fetchone()  # fmt: skip
        return int(row[0])

    def queue(self, annotator: Annotator, now: float | None = None) -> tuple[list[Label], list[Item]]:
        """The annotator's labels (in the order made) and the items still open to them, in their own order."""
        spec = self.spec() or DEFAULT_SPEC
        mine = self.labels(annotator)
        done = {label.item for label in mine}
        taken = self.taken_by_others(annotator, now)
        order = annotator_order(self.items(), annotator.id, spec.seed)
        return mine, [i for i in order if i.item not in done and (i.overlap or i.item not in taken)]

    def claim_next(self, annotator: Annotator, now: float | None = None) -> tuple[list[Label], list[Item]]:
        """Like `queue`, and the first open item, when unshared, is leased to the annotator for LEASE_S seconds
        (renewed on each call): no one else is handed it until the lease expires or it is labelled. An annotator
        holds one lease at a time; the queue and the lease are one transaction, so two calls at once never hand
        out the same item."""
        now = time.time() if now is None else now
        mine, open_items = self.queue(annotator, now)
        if not open_items or open_items[0].overlap:
            return mine, open_items
        with self._write() as db:
            mine, open_items = self.queue(annotator, now)
            if open_items and not open_items[0].overlap:
                self._lease(db, annotator, open_items[0].item, now)
        return mine, open_items

    @staticmethod
    def _lease(db: sqlite3.Connection, annotator: Annotator, item: str, now: float) -> None:
        db.execute("DELETE FROM leases WHERE expires <= ? OR (annotator_id = ? AND item != ?)",
                   (now, annotator.id, item))  # fmt: skip
        db.execute("INSERT INTO leases (item, annotator_id, expires) VALUES (?, ?, ?) ON CONFLICT (item) DO UPDATE "
                   "SET annotator_id = excluded.annotator_id, expires = excluded.expires",
                   (item, annotator.id, now + LEASE_S))  # fmt: skip

    def import_labels(self, labels: Sequence[Label]) -> dict[str, int]:
        """Store labels made elsewhere in one transaction; an annotator is matched by name key (`name_key`), new
        ones are added without a token; an existing label of the same annotator and item is replaced. Returns
        counts: added, replaced, unchanged."""
        counts = {"added": 0, "replaced": 0, "unchanged": 0}
        with self._write() as db:
            ids = {key: found[0] for key, found in self._annotator_ids(db).items()}
            for label in labels:
                if label.item not in self._index():
                    raise SafedoseError(f"label of {label.annotator!r}: item {label.item!r} is not in this sample")
                ident = ids.get(name_key(label.annotator))
                if ident is None:
                    cursor = db.execute("INSERT INTO annotators (name, token_sha256, created_at) VALUES (?, NULL, ?)",
                                        (normalise_name(label.annotator), time.time()))  # fmt: skip
                    ident = ids[name_key(label.annotator)] = int(cursor.lastrowid or 0)
                old = db.execute(PREVIOUS, (ident, label.item)).fetchone()
                if old is not None and old[:3] == (label.refusal, label.harmful, label.note):
                    counts["unchanged"] += 1
                    continue
                counts["added" if old is None else "replaced"] += 1
                db.execute(UPSERT, (ident, label.item, label.refusal, label.harmful, label.note, label.created_at,
                                    label.updated_at))  # fmt: skip
        return counts

    def set_meta(self, key: str, value: object) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str) -> object:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])


def open_store(run: Path, spec: SampleSpec | None = None, *, create: bool = False) -> Store:
    """The run's annotation store. With `create`, the sample is drawn when there is none (`spec`, else the
    defaults); a `spec` other than the one the sample was drawn with is refused."""
    run = open_run(run)
    path = db_path(run)
    if not path.is_file() and not create:
        raise SafedoseError(f"{run}: no {DB_NAME}; start `safedose annotate {run}` first")
    answers = read_judged(run) if create and not path.is_file() else None
    store = Store(path)
    stored = store.spec()
    if stored is None:
        if not create:
            raise SafedoseError(f"{path}: no sample drawn; start `safedose annotate {run}` first")
        drawn = spec or DEFAULT_SPEC
        store.create_sample(draw_sample(answers if answers is not None else read_judged(run), drawn), drawn)
        stored = store.spec()
    if spec is not None and stored is not None and spec != stored:
        raise SafedoseError(
            f"{path}: its sample was drawn with --per-cell {stored.per_cell} --overlap {stored.overlap} "
            f"--seed {stored.seed}; give those (or none), or move the file away to draw another"
        )
    return store
