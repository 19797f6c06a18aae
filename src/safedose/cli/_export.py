"""`safedose export`: merged HF weights and GGUF files from an adapter."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from safedose.cli import _output


def export_command(
    adapter: Path = typer.Argument(..., help="Adapter directory (or, with --gguf alone, a merged model directory)."),
    merged: Path | None = typer.Option(None, "--merged", help="Write merged HF weights (no PEFT needed) here."),
    gguf: Path | None = typer.Option(None, "--gguf", help="Write a GGUF file for llama.cpp / Ollama (LLaMA models)."),
    dtype: str = typer.Option("auto", help="auto, fp32, bf16 or fp16 (auto: the base's dtype; GGUF f16 or bf16)."),
    base: str | None = typer.Option(None, help="Base model (default: the one the adapter records)."),
    allow_base_mismatch: bool = typer.Option(False, help="Allow a base other than the one the adapter was trained on."),
    force: bool = typer.Option(False, help="Replace existing outputs."),
) -> None:
    """Merge an adapter into its base model and write HF weights (--merged DIR) and / or a GGUF file (--gguf FILE)."""
    from safedose.export import export  # torch: loaded only when an adapter is exported

    result = export(adapter, merged=merged, gguf=gguf, dtype=dtype, base=base, allow_base_mismatch=allow_base_mismatch,
                    force=force)  # fmt: skip
    if result.merged is not None:
        _output.console.print(f"merged ({result.merged_dtype}): {escape(str(result.merged))}", soft_wrap=True)
    if result.gguf is not None:
        _output.console.print(f"gguf ({result.gguf_type}): {escape(str(result.gguf))}", soft_wrap=True)
    if result.note is not None:
        _output.console.print(escape(result.note), soft_wrap=True)
