"""`safedose models ...`: the embedded models and their preparation."""

from __future__ import annotations

import typer
from rich.markup import escape

from safedose.cli import _output
from safedose.models import EMBEDDED, is_prepared, model_hash, prepare, prepared_dir

models_app = typer.Typer(help="Models: the embedded default and its preparation.", no_args_is_help=True)


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of a table.")) -> None:
    """The embedded models and whether they are prepared."""

    entries, shown = [], []
    for name in EMBEDDED:
        description, path = EMBEDDED.get(name).description, str(prepared_dir(name)) if is_prepared(name) else None
        entries.append({"name": name, "description": description, "prepared": path})
        shown.append([name, description, path or "no (run `safedose models prepare`)"])
    if as_json:
        _output.print_json({"models": entries})
        return
    _output.print_table(["name", "description", "prepared"], shown)


@models_app.command("prepare")
def models_prepare(name: str, force: bool = typer.Option(False, help="Convert again.")) -> None:
    """Convert an embedded model into a local HF model directory in the cache."""

    with _output.console.status(f"preparing {name}"):
        path = prepare(name, force=force)
    _output.console.print(f"{escape(name)}: {escape(str(path))} (content hash {model_hash(path)[:16]})")
