"""The `safedose` command: a thin typer layer over the Python API.

One module per command group; every command prints through `_output` (tables on a terminal, tab-separated lines
when piped, JSON with `--json`). `main` turns every usage or input error into one line and exit code 2.
"""

from __future__ import annotations

import sys

import click
import typer
from typer._click import exceptions as typer_click

from safedose.cli import _output
from safedose.cli._annotate import annotate_command
from safedose.cli._capability import capability_command
from safedose.cli._data import data_app
from safedose.cli._export import export_command
from safedose.cli._generate import generate_command
from safedose.cli._judge import judge_command
from safedose.cli._models import models_app
from safedose.cli._results import recommend_command, report_command
from safedose.cli._serve import serve_command
from safedose.cli._sweep import sweep_command
from safedose.cli._train import train_command
from safedose.errors import SafedoseError

__all__ = ["app", "main", "run", "versions"]

app = typer.Typer(help="Safety-tune instruction-following LLMs and measure the price.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.command("train")(train_command)
app.command("generate")(generate_command)
app.command("judge")(judge_command)
app.command("sweep")(sweep_command)
app.command("report")(report_command)
app.command("recommend")(recommend_command)
app.command("annotate")(annotate_command)
app.command("serve")(serve_command)
app.command("export")(export_command)
app.command("capability")(capability_command)

# typer 0.29 raises its own copy of click's exception classes; plain click's are caught too.
_USAGE_ERRORS = (typer_click.UsageError, click.UsageError)
_CLICK_ERRORS = (typer_click.ClickException, click.ClickException)
_ABORTS = (typer.Abort, click.exceptions.Abort, KeyboardInterrupt)
SIGINT_EXIT = 130


def versions() -> dict[str, str | int]:
    """The package version and the versions of what decides results: run layout, mixing, training, catalogue."""
    from importlib.metadata import version

    from safedose.data import CATALOG_VERSION  # pydantic: `safedose --help` starts without the dataset catalogue
    from safedose.run import SCHEMA_VERSION  # pydantic: `safedose --help` starts without the run records
    from safedose.sweep import MIX_RECIPE_VERSION  # torch: loaded only for the versions
    from safedose.train import RECIPE_VERSION  # torch: loaded only for the versions

    return {"safedose": version("safedose"), "run_schema": SCHEMA_VERSION, "train_recipe": RECIPE_VERSION,
            "mix_recipe": MIX_RECIPE_VERSION, "catalog": CATALOG_VERSION}  # fmt: skip


def _print_version(value: bool) -> None:
    if value:
        v = versions()
        print(f"safedose {v['safedose']} (run schema {v['run_schema']}, training recipe {v['train_recipe']}, "
              f"mix recipe {v['mix_recipe']}, data catalogue {v['catalog']})")  # fmt: skip
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version and the run schema / recipe versions, and exit."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="-v: the libraries' warnings and progress bars too; -vv: their info logs."),
) -> None:  # fmt: skip
    """Safety-tune instruction-following LLMs and measure the price."""
    _output.set_verbosity(verbose)


def _usage_line(error: typer_click.UsageError | click.UsageError) -> str:
    ctx = error.ctx
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"error: {error.format_message().rstrip('.')}{hint}"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0 on success, 2 on a usage or input error (one line on stderr), 130
    when interrupted (Ctrl-C)."""
    try:
        code = app(args=argv, prog_name="safedose", standalone_mode=False)
    except SafedoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (typer_click.NoArgsIsHelpError, click.exceptions.NoArgsIsHelpError) as e:
        print(e.ctx.get_help() if e.ctx is not None else str(e))
        return 2
    except _USAGE_ERRORS as e:
        print(_usage_line(e), file=sys.stderr)
        return 2
    except _CLICK_ERRORS as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    except click.exceptions.Exit as e:
        code = e.exit_code
    except _ABORTS:
        code = SIGINT_EXIT
    if code == SIGINT_EXIT:  # typer turns Ctrl-C into Exit(130) and returns its code
        print("aborted; rerun to resume", file=sys.stderr)
    return code if isinstance(code, int) else 0


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
