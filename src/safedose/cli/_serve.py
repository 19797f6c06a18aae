"""`safedose serve`: OpenAI-compatible endpoints for a model and its adapters."""

from __future__ import annotations

import typer


def serve_command(
    model: str = typer.Option("smollm2-135m-instruct", help="Embedded name, local dir or HF id."),
    adapter: list[str] | None = typer.Option(None, "--adapter", help="NAME=DIR (or DIR); repeatable."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the server to the network."),
    port: int = typer.Option(8000),
    template: str | None = typer.Option(None, help="Chat template of the base model (adapters keep their own)."),
    dtype: str | None = typer.Option(
        None,
        help="fp32, bf16, fp16 or auto (default: the precision the study "
        "answered in, else auto; auto: the fastest for single requests, fp32 on CPU).",
    ),
    max_batch_size: int = typer.Option(16, help="Requests generated together at most."),
    max_tokens: int = typer.Option(256, help="Default max_tokens when a request gives none."),
) -> None:
    """Serve the model and adapters through OpenAI-compatible endpoints (/v1/chat/completions, ...)."""
    from safedose.serve import serve  # torch: loaded only when a model is served

    serve(model, adapter or [], host=host, port=port, template=template, dtype=dtype, max_batch_size=max_batch_size,
          max_tokens=max_tokens)  # fmt: skip
