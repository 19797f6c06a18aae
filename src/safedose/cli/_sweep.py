"""`safedose sweep`: the whole dose-response study, or its plan with `--dry-run`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from safedose.cli import _output


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
) -> None:
    """Run the whole dose-response study; rerun the same command to finish an interrupted one."""
    from safedose.sweep import load_sweep_config, plan, search, start_config, sweep
    from safedose.sweep._memory import print_memory

    extra = [f"executor={executor}"] if executor else []
    extra += [f"ray.address={address}"] if address else []
    settings = load_sweep_config(config, [*(overrides or []), *extra])
    if adaptive and not dry_run:
        search(settings, console=_output.console)
        return
    if adaptive:
        settings = start_config(settings)
        _output.console.print(
            "search: the plan of its first round (smallest and largest dose); the results choose the rest"
        )
    if not dry_run:
        sweep(settings, console=_output.console)
        return
    steps = plan(settings)
    table = Table(title=f"plan for {escape(str(settings.run_dir))}")
    for column in ("step", "status", "estimate", "detail"):
        table.add_column(column, overflow="fold")
    for step in steps:
        estimate = "-" if step.status == "cached" else _duration(step.seconds)
        table.add_row(escape(step.name), step.status, estimate, escape(step.detail))
    _output.console.print(table)
    known = [s.seconds for s in steps if s.status != "cached" and s.seconds is not None]
    unknown = sum(1 for s in steps if s.status != "cached" and s.seconds is None)
    rest = f" (+ {unknown} steps not yet measured on this machine)" if unknown else ""
    _output.console.print(f"estimated time: {_duration(sum(known))}{rest}")
    if settings.executor == "ray":
        ray, where = settings.ray, settings.ray.address or "Ray started on this machine"
        _output.console.print(f"executor: ray ({escape(where)}); a training task asks {ray.train.num_cpus:g} CPUs and "
                      f"{ray.train.num_gpus:g} GPUs, generation, judging and capability {ray.adapters_per_task} cells "
                      "per task; the estimate above is for one cell after another", soft_wrap=True)  # fmt: skip
    print_memory(settings, _output.console, device_memory=device_memory, strict=strict)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not measured"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
