"""`safedose sweep`: the whole dose-response study, or its plan with `--dry-run`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from safedose.cli import _output
from safedose.errors import SafedoseError

if TYPE_CHECKING:
    from safedose.sweep import Step, SweepConfig


def sweep_command(
    config: Path = typer.Argument(..., help="YAML sweep config."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. doses=[0,100] train.lr=1e-4"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every step, cached or to run, with time estimates."),
    adaptive: bool = typer.Option(False, "--search", help="Choose the doses adaptively to answer the config's target."),
    device_memory: str | None = typer.Option(
        None, "--device-memory", help="--dry-run: memory per device, e.g. 80GiB (default: GPU 0's, else the RAM)."
    ),
    strict: bool = typer.Option(False, "--strict", help="--dry-run: exit with code 2 when a step may not fit."),
    executor: str | None = typer.Option(None, "--executor", help="local (this process) or ray (Ray tasks)."),
    address: str | None = typer.Option(
        None, "--address", help="--executor ray: the cluster (auto, ray://HOST:10001); default: Ray on this machine."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON object (the plan, or the run's headline and files); progress to stderr."
    ),
) -> None:
    """Run the whole dose-response study; rerun the same command to finish an interrupted one."""
    from safedose.sweep import load_sweep_config, search, start_config, sweep  # torch: loaded only for a sweep

    extra = [f"executor={executor}"] if executor else []
    extra += [f"ray.address={address}"] if address else []
    settings = load_sweep_config(config, [*(overrides or []), *extra])
    progress = _output.progress_console(as_json)
    if adaptive and not dry_run:
        found = search(settings, console=progress)
        if as_json:
            _output.print_json(_jsonable(found))
        return
    if adaptive:
        settings = start_config(settings)
        if not as_json:
            _output.say("search: the plan of its first round (smallest and largest dose); the results choose the rest")
    if not dry_run:
        result = sweep(settings, console=progress)
        if as_json:
            _output.print_json({"run_dir": str(result.run_dir), "report": str(result.report),
                                "headline": result.metrics.get("headline"), "metrics": result.metrics})  # fmt: skip
        return
    _dry_run(settings, device_memory=device_memory, strict=strict, as_json=as_json)


def _jsonable(value: Any) -> Any:
    """A result object as JSON data: pydantic models, dataclasses, paths, containers."""
    import dataclasses

    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def _dry_run(settings: SweepConfig, *, device_memory: str | None, strict: bool, as_json: bool) -> None:
    """The plan: every step with its status and estimate, the headline estimate, Ray's resources and the memory."""
    from safedose.sweep import (  # torch: loaded only when a sweep is planned
        detect_device_memory,
        parse_size,
        plan,
        print_memory,
        sweep_memory,
    )

    steps = plan(settings)
    headline, total = _estimate(steps)
    resources = _ray_check(settings)
    if not as_json:
        table = Table(title=f"plan for {escape(str(settings.run_dir))}")
        for column in ("step", "status", "estimate", "detail"):
            table.add_column(column, overflow="fold")
        for step in steps:
            estimate = _output.duration(step.seconds) if step.needs_work else "-"
            table.add_row(escape(step.name), step.status, estimate, escape(step.detail))
        _output.console.print(table)
        _output.say(headline)
        if settings.executor == "ray":
            ray, where = settings.ray, settings.ray.address or "Ray started on this machine"
            _output.say(f"executor: ray ({where}); a training task asks {ray.train.num_cpus:g} CPUs and "
                        f"{ray.train.num_gpus:g} GPUs, generation, judging and capability {ray.adapters_per_task} "
                        "cells per task; the estimate above is for one cell after another")  # fmt: skip
            for line in resources:
                _output.console.print(f"[bold yellow]warning:[/] {escape(line)}", soft_wrap=True)
        print_memory(settings, _output.console, device_memory=device_memory, strict=strict)
        return
    size, device = (parse_size(device_memory), f"--device-memory {device_memory}") if device_memory else \
        detect_device_memory()  # fmt: skip
    try:
        estimates, source = sweep_memory(settings, device_memory=size)
        memory: dict[str, Any] = {"device": device, "device_bytes": size, "model": source, "steps": [
            {"step": e.step, "parts": e.parts, "total": e.total, "fits": e.total <= size, "notes": e.notes}
            for e in estimates]}  # fmt: skip
    except SafedoseError as e:
        memory, estimates = {"device": device, "device_bytes": size, "error": str(e)}, []
    _output.print_json({
        "run_dir": str(settings.run_dir),
        "steps": [{"name": s.name, "status": s.status, "seconds": s.seconds if s.needs_work else None,
                   "detail": s.detail} for s in steps],
        "estimate": {"seconds": total, "headline": headline},
        "ray_resource_problems": resources if settings.executor == "ray" else [],
        "memory": memory,
    })  # fmt: skip
    over = [e.step for e in estimates if e.total > size]
    if strict and over:
        raise SafedoseError(f"--strict: {len(over)} step(s) may not fit in {size} bytes ({', '.join(over)})")


def _estimate(steps: list[Step]) -> tuple[str, float | None]:
    """The headline: the time of the steps to run when every one was measured here, else `unknown` and why."""
    todo = [s for s in steps if s.needs_work]
    if not todo:
        return "estimated time: 0 s: every step is finished (a rerun reads the results back)", 0.0
    known = [s.seconds for s in todo if s.seconds is not None]
    unmeasured = len(todo) - len(known)
    if not unmeasured:
        return f"estimated time: {_output.duration(sum(known))} (from timings measured on this machine)", sum(known)
    flop = " (training FLOP bounds in the train steps' detail)" if any("FLOP" in s.detail for s in todo) else ""
    return (f"estimated time: unknown: {unmeasured} of the {len(todo)} steps to run were never measured on this "
            f"machine{flop}; the others take about {_output.duration(sum(known))}"), None  # fmt: skip


def _ray_check(settings: SweepConfig) -> list[str]:
    """Stages whose Ray task no node could hold: checked against this machine for a Ray started here; a cluster at
    an address is not contacted by a dry run."""
    if settings.executor != "ray":
        return []
    from safedose.sweep import local_resources, resource_problems  # torch: loaded only when a sweep is planned

    if settings.ray.address:
        return [f"the resources of {settings.ray.address} are checked when the sweep connects, not in a dry run"]
    return resource_problems(settings.ray, [local_resources()], where="this machine")
