"""Everything the commands print: tables on a terminal, tab-separated lines when piped, JSON with `--json`."""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from safedose.paths import VERBOSITY

console = Console()


def print_table(columns: list[str], rows: list[list[str]], *, title: str | None = None) -> None:
    """A table on a terminal; when stdout is not a terminal, tab-separated lines (header first) with whole values."""
    if not console.is_terminal:
        for values in [columns, *rows]:
            print("\t".join(" ".join(v.split()) for v in values))
        return
    table = Table(title=escape(title) if title else None)
    for column in columns:
        table.add_column(column, overflow="fold")
    for values in rows:
        table.add_row(*(escape(v) for v in values))
    console.print(table)


def print_json(data: object) -> None:
    """Machine-readable output: plain JSON on stdout, never wrapped or coloured."""
    print(json.dumps(data, ensure_ascii=False, indent=2))


def say(text: str) -> None:
    """One line of plain text (no markup), wrapped only by the terminal."""
    console.print(escape(text), soft_wrap=True)


def progress_console(as_json: bool) -> Console:
    """Where a long command's progress goes: stdout, or stderr when stdout carries `--json`."""
    return Console(stderr=True) if as_json else console


def duration(seconds: float | None) -> str:
    """`42 s`, `3.5 min`, `2.1 h`; `not measured` for None."""
    if seconds is None:
        return "not measured"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def set_verbosity(level: int) -> None:
    """Quiet by default: no library warnings, info logs or progress bars on model loads (here, in Ray workers and in
    training processes, through the environment); `-v` shows them."""
    import os
    import warnings

    os.environ[VERBOSITY] = str(level)
    if level >= 1:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    warnings.filterwarnings("ignore", category=FutureWarning)
