"""The one error type users see: a clear, one-line message and exit code 2."""

from __future__ import annotations

from pathlib import Path


class SafedoseError(Exception):
    """Bad input or an unavailable resource, reported as one line (the CLI exits with code 2)."""


class InputError(SafedoseError):
    """A problem with one record of one file: the message names both."""

    def __init__(self, path: str | Path, record: str | int | None, message: str) -> None:
        self.path = str(path)
        self.record = record
        self.message = message
        where = self.path if record is None else f"{self.path}: {_record_label(record)}"
        super().__init__(f"{where}: {message}")


def _record_label(record: str | int) -> str:
    return f"record {record}" if isinstance(record, int) else str(record)
