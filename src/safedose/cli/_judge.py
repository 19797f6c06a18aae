"""`safedose judge`: judge answers, list, build and validate judges."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from safedose.cache import Cache
from safedose.cli import _output
from safedose.errors import SafedoseError
from safedose.files import write_json, write_jsonl


def judge_command(
    name: str = typer.Argument(..., help="Judge name, `list`, or `build` / `validate` followed by a judge name."),
    target: str | None = typer.Argument(None, help="The judge name after `build` or `validate`."),
    input: Path | None = typer.Option(None, "--input", help="JSONL rows with prompt and response."),
    output: Path | None = typer.Option(None, "--output", help="JSONL rows with the verdict fields added."),
    cache: Path | None = typer.Option(None, help="SQLite verdict cache (default: cache.sqlite beside --output)."),
    human: Path | None = typer.Option(None, "--human", help="validate: against the labels of this run's annotators."),
    limit: int | None = typer.Option(None, min=1, help="validate a pairwise judge: a seeded sample of N pairs."),
    extra_labels: Path | None = typer.Option(
        None, "--extra-labels", help="build refusal: also train on this run's human labels (`safedose annotate`)."
    ),
    as_json: bool = typer.Option(False, "--json", help="list: print a JSON object instead of a table."),
) -> None:
    """Judge rows (`judge NAME --input F --output G`), list the judges, build one, or validate it against humans."""
    from safedose.annotate import judge_labels, training_labels  # fastapi: loaded only when a judge command runs
    from safedose.judges import (  # numpy, pydantic: --help stays light
        build,
        get_judge,
        judge_id,
        judge_rows,
        list_judges,
        read_rows,
        validate,
    )

    if name == "list":
        judges = list_judges()
        if as_json:
            _output.print_json({"judges": judges})
            return
        yes_no = {True: "yes", False: "no (built on first use)", None: "-"}
        shown = [[j["name"], j["kind"], j["revision"] or "-", yes_no[j["built"]],
                  j["validation"] or ("not validated" if j["built"] is not None else "-")] for j in judges]  # fmt: skip
        _output.print_table(["name", "kind", "revision", "built", "last validation"], shown)
        return
    if name in ("build", "validate"):
        if not target:
            raise SafedoseError(f"judge {name}: give a judge name, e.g. `safedose judge {name} refusal`")
        if name == "build":
            labels = None if extra_labels is None else training_labels(extra_labels)
            built = build(target, human_labels=labels)
            count = getattr(built, "human_labels", 0)
            trained = f" (trained with {count} human labels from {extra_labels})" if extra_labels else ""
            _output.console.print(f"{escape(judge_id(built))} is ready{escape(trained)}", soft_wrap=True)
            return
        if human is not None:
            from safedose.annotate import judge_against_humans  # fastapi: loaded only when a judge command runs

            metrics = judge_against_humans(human, target)
        else:
            metrics = validate(target, limit=limit, human_labels=judge_labels(target))
        _output.console.print_json(json.dumps(metrics))
        if output:
            write_json(output, metrics)
        return
    if input is None or output is None:
        raise SafedoseError("judge NAME: give --input and --output")
    rows = read_rows(input)
    judge = get_judge(name, human_labels=judge_labels(name))
    with Cache(cache or output.parent / "cache.sqlite") as store:
        judged = judge_rows(judge, rows, cache=store)
    write_jsonl(output, judged)
    errors = sum(1 for r in judged if r["parse_error"])
    _output.console.print(
        f"{escape(judge_id(judge))}: wrote {len(judged)} rows to {escape(str(output))} ({errors} parse errors)",
        soft_wrap=True,
    )
