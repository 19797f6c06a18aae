"""`safedose annotate`: the blinded labelling app, invitations, export, import and summary."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from safedose.cli import _output
from safedose.errors import SafedoseError

ANNOTATE_ACTIONS = {"invite": ("RUN_DIR", "NAME"), "export": ("RUN_DIR",), "import": ("RUN_DIR", "FILE"),
                    "summary": ("RUN_DIR",)}  # fmt: skip


def annotate_command(
    first: str = typer.Argument(..., metavar="RUN_DIR | invite | export | import | summary"),
    rest: list[str] | None = typer.Argument(
        None, metavar="[ARGS]", help="invite RUN_DIR NAME; export RUN_DIR; import RUN_DIR FILE; summary RUN_DIR."
    ),
    per_cell: int | None = typer.Option(None, "--per-cell", help="Answers drawn per cell and eval set (default 10)."),
    overlap: float | None = typer.Option(None, help="Share of the items every annotator labels (default 0.25)."),
    seed: int | None = typer.Option(None, help="Seed of the sample and of each annotator's order (default 0)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; another one exposes the app to the network."),
    port: int = typer.Option(8765),
    open_admin: bool = typer.Option(False, "--open-admin", help="Summary page without a token (loopback only)."),
    url: str | None = typer.Option(
        None,
        help="The app's address in the links, e.g. an HTTPS proxy in front of it "
        "(default: the bound host, or this machine's name for 0.0.0.0); invite: where it "
        "last ran.",
    ),
    new_token: bool = typer.Option(False, "--new-token", help="invite: a new link for someone already invited."),
    format: str = typer.Option("jsonl", "--format", help="export: jsonl, label-studio or label-studio-config."),
    out: Path | None = typer.Option(None, "--out", help="export: the file to write."),
) -> None:
    """Serve a blinded labelling app over a run's answers (`annotate RUN_DIR`), invite annotators, export or
    import labels, or print the agreement summary."""
    from safedose import annotate as ann  # fastapi: loaded only when a run is annotated

    if first not in ANNOTATE_ACTIONS:
        if rest:
            raise SafedoseError(f"annotate: unexpected {' '.join(rest)!r}; actions: {', '.join(ANNOTATE_ACTIONS)}")
        ann.annotate(Path(first), ann.sample_spec(per_cell, overlap, seed), host=host, port=port,
                     open_admin=open_admin, url=url)  # fmt: skip
        return
    wanted = ANNOTATE_ACTIONS[first]
    if len(rest or []) != len(wanted):
        raise SafedoseError(f"annotate {first}: give {' '.join(wanted)}")
    args = list(rest or [])
    run = Path(args[0])
    if first == "invite":
        print(ann.invite(run, args[1], url=url, new_token=new_token))
    elif first == "export":
        if out is None:
            raise SafedoseError("annotate export: give --out FILE")
        n = ann.export(run, format, out)
        _output.console.print(f"wrote {escape(str(out))} ({format}; {n} labels)", soft_wrap=True)
    elif first == "import":
        counts = ann.import_file(run, Path(args[1]))
        _output.console.print(", ".join(f"{v} {k}" for k, v in counts.items()), soft_wrap=True)
    else:
        _output.print_json(ann.app_summary(ann.open_store(run)))
