"""`safedose train`: LoRA-tune a model from a YAML config."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from safedose.cli import _output


def train_command(
    config: Path = typer.Argument(..., help="YAML training config."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. lr=1e-4 lora.r=16"),
    force: bool = typer.Option(False, help="Train again when output_dir holds an adapter of other settings."),
) -> None:
    """LoRA-tune a model on an instruction file; rerun the same command to resume."""
    from safedose.train import load_config, train  # torch: loaded only when a model is trained

    result = train(load_config(config, overrides), force=force)
    best = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.4f} at step {result.best_step}"
    _output.console.print(
        f"adapter: {escape(str(result.output_dir))} ({result.steps} steps, final train loss "
        f"{result.final_train_loss:.4f}, best val loss {best})"
    )
