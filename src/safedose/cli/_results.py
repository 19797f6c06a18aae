"""`safedose report` and `safedose recommend`: a finished run's report and recommended dose."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from safedose.cli import _output


def report_command(run_dir: Path = typer.Argument(..., help="A sweep's run directory.")) -> None:
    """Re-render a sweep's report/index.html from its results."""
    from safedose.report import write_report  # numpy, pydantic: --help stays light
    from safedose.run import open_run, read_metrics  # pydantic: --help stays light

    read_metrics(open_run(run_dir))
    _output.console.print(f"report: {escape(str(write_report(run_dir)))}")


def recommend_command(
    run_dir: Path = typer.Argument(..., help="A sweep's run directory."),
    target: str | None = typer.Option(
        None,
        "--target",
        help="YAML or JSON target, inline or a file (default: the config's), e.g. '{harmful_compliance: {max: 0.05}}'",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the recommendation as a JSON object."),
) -> None:
    """The smallest dose that meets a target, from a finished run: writes results/recommendation.json and the report."""
    from safedose.recommend import parse_target  # numpy, pydantic: --help stays light
    from safedose.report import load_recommendation, write_report  # numpy, pydantic: --help stays light
    from safedose.run import open_run, read_metrics, recommendation_path  # pydantic: --help stays light

    goal = parse_target(target) if target is not None else None
    read_metrics(open_run(run_dir))
    report = write_report(run_dir, target=goal)
    recommendation = load_recommendation(run_dir)
    if as_json:
        _output.print_json({"recommendation": recommendation.model_dump(mode="json"),
                            "file": str(recommendation_path(run_dir)), "report": str(report)})  # fmt: skip
        return
    _output.say(recommendation.text)
    _output.say(f"wrote {recommendation_path(run_dir)} and {report}")
