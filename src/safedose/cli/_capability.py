"""`safedose capability MODEL --adapter NAME=DIR --tasks a,b`: benchmark scores of a model and its adapters."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from safedose.cli import _output
from safedose.files import write_json


def capability_command(
    model: str = typer.Argument(..., help="Embedded name, local dir or HF id of the base model."),
    tasks: str = typer.Option(..., "--tasks", help="Comma-separated: safedose tasks, lm-eval task names or YAMLs."),
    adapter: list[str] | None = typer.Option(None, "--adapter", help="Adapter dir or NAME=DIR; repeatable."),
    base: bool = typer.Option(True, "--base/--no-base", help="Also score the base model without adapters."),
    limit: int | None = typer.Option(None, min=1, help="A seeded sample of N items per task (by subject)."),
    seed: int = typer.Option(0, help="Seed of the --limit sample."),
    num_fewshot: int = typer.Option(0, min=0, help="Few-shot examples per prompt."),
    batch_size: int = typer.Option(16, min=1),
    dtype: str = typer.Option("auto", help="auto, fp32, bf16 or fp16."),
    allow_base_mismatch: bool = typer.Option(False, help="Allow adapters trained on another base model."),
    out: Path | None = typer.Option(None, "--out", help="Write the scores (with per-item values) as JSON."),
    cache: Path | None = typer.Option(None, help="SQLite cache of finished scores (default: none)."),
) -> None:
    """Score a model and its adapters on lm-evaluation-harness tasks, loading the base weights once."""
    from safedose.capability import BenchmarkSettings, evaluate_benchmarks  # `safedose --help` stays light

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    settings = BenchmarkSettings(tasks=names, limit=limit, sample_seed=seed, num_fewshot=num_fewshot,
                                 batch_size=batch_size)  # fmt: skip
    rows = evaluate_benchmarks(model, adapter or [], names, settings=settings, include_base=base, dtype=dtype,
                               cache=cache, allow_base_mismatch=allow_base_mismatch)  # fmt: skip
    variants = list(dict.fromkeys(r.variant for r in rows))
    keys = list(dict.fromkeys((r.task, r.metric) for r in rows))
    by = {(r.variant, r.task, r.metric): r for r in rows}
    table = []
    for task, metric in keys:
        cells = []
        for v in variants:
            r = by[(v, task, metric)]
            interval = f" [{r.lo:.2f}, {r.hi:.2f}]" if r.lo is not None and r.hi is not None else ""
            cells.append("-" if r.value is None else f"{r.value:.3f}{interval}")
        table.append([task, metric, str(by[(variants[0], task, metric)].n), *cells])
    _output.print_table(["task", "metric", "items", *variants], table, title="accuracy [95% interval]")
    if out is not None:
        write_json(out, {"settings": settings.model_dump(), "model": model,
                         "scores": [json.loads(r.model_dump_json()) for r in rows]})  # fmt: skip
