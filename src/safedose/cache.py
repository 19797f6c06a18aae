"""A SQLite (WAL) store of finished work: generations and verdicts, keyed by a hash of what decides them.

Every batch is committed as soon as it is done, so a killed process loses at most the batch in hand, and a rerun
reads back everything that was finished. A store is never shared between machines: a task elsewhere works on a
private copy (`snapshot` / `Cache.restore`) that records what it writes (`written`), and the owner merges that.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def cache_key(**parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Cache:
    """Rows stored by (table, key); tables are created on first use."""

    def __init__(self, path: str | Path, *, record: bool = False) -> None:
        self.path = Path(path)
        # with `record`, every row stored through this handle, by table (what a task sends back to be merged)
        self.written: dict[str, dict[str, dict[str, Any]]] | None = {} if record else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._tables: set[str] = set()

    def _table(self, name: str) -> str:
        if not name.isidentifier():
            raise ValueError(f"bad cache table name {name!r}")
        if name not in self._tables:
            with self._db:
                self._db.execute(f"CREATE TABLE IF NOT EXISTS {name} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._tables.add(name)
        return name

    def get_many(self, table: str, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        table, keys = self._table(table), list(keys)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._db.execute(f"SELECT key, value FROM {table} WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def put_many(self, table: str, items: Mapping[str, dict[str, Any]]) -> None:
        """Store all items in one transaction (all or none)."""
        table = self._table(table)
        rows = [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()]
        with self._db:
            self._db.executemany(f"INSERT OR REPLACE INTO {table} (key, value) VALUES (?, ?)", rows)
        if self.written is not None:
            self.written.setdefault(table, {}).update(items)

    def merge(self, written: Mapping[str, Mapping[str, dict[str, Any]]]) -> None:
        """Store the rows another handle recorded (`written`), table by table."""
        for table, items in written.items():
            if items:
                self.put_many(table, items)

    def snapshot(self) -> bytes:
        """The whole store as one consistent SQLite image (committed rows only)."""
        return self._db.serialize()

    @classmethod
    def restore(cls, image: bytes, path: str | Path, *, record: bool = True) -> Cache:
        """A new store at `path` holding a `snapshot`'s rows; by default it records what is written to it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        memory, target = sqlite3.connect(":memory:"), sqlite3.connect(path)
        try:
            legacy = bytearray(image)
            legacy[18:20] = b"\x01\x01"  # the header's WAL flag: an in-memory copy reads it as a rollback journal
            memory.deserialize(bytes(legacy))
            memory.backup(target)
        finally:
            memory.close()
            target.close()
        return cls(path, record=record)

    def count(self, table: str) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {self._table(table)}").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
