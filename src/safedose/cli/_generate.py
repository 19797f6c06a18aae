"""`safedose generate`: answer eval prompts with a model and its adapters."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from safedose.cli import _output
from safedose.errors import SafedoseError
from safedose.files import write_jsonl


def generate_command(
    out: Path = typer.Option(..., "--out", help="Output JSONL (written atomically at the end)."),
    eval_set: list[str] = typer.Option(..., "--eval-set", help="Registered eval set, file or hf:<id>; repeatable."),
    model: str = typer.Option("smollm2-135m-instruct", help="Embedded name, local dir, HF id (or served name)."),
    adapter: list[str] | None = typer.Option(None, "--adapter", help="Adapter dir or NAME=DIR; repeatable."),
    base: bool = typer.Option(True, "--base/--no-base", help="Also generate with the untouched base model."),
    limit: int | None = typer.Option(None, min=1, help="A seeded sample of N prompts per eval set, by category."),
    limit_seed: int = typer.Option(0, help="Seed of the --limit sample."),
    backend: str = typer.Option("hf", help="hf, vllm or openai."),
    template: str | None = typer.Option(None, help="Prompt template (default: the adapters' own)."),
    allow_template_mismatch: bool = typer.Option(False, help="Allow a template other than the adapters'."),
    allow_base_mismatch: bool = typer.Option(False, help="Allow adapters trained on another base model."),
    max_new_tokens: int = typer.Option(128),
    num_beams: int = typer.Option(1),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy / beam search."),
    temperature: float = typer.Option(1.0),
    top_p: float = typer.Option(1.0),
    seed: int = typer.Option(0),
    stop: list[str] | None = typer.Option(None, "--stop", help="Stop string; repeatable."),
    dtype: str = typer.Option("auto", help="auto, fp32, bf16 or fp16."),
    batch_size: int = typer.Option(64, help="First batch size tried (halved when memory runs out)."),
    merge_adapters: str = typer.Option("auto", help="hf: merge adapters in the weights: auto (fp32), always, never."),
    cache: Path | None = typer.Option(None, help="SQLite cache (default: cache.sqlite beside --out)."),
    base_url: str | None = typer.Option(None, help="openai backend: endpoint (default $OPENAI_BASE_URL)."),
    mode: str = typer.Option("chat", help="openai backend: chat or completions."),
    concurrency: int = typer.Option(8, help="openai backend: requests in flight."),
) -> None:
    """Complete eval prompts with a model and its adapters; a rerun reuses every finished row."""
    from safedose.data import load_eval_prompts, sample_prompts  # pydantic: --help stays light
    from safedose.generate import BACKENDS, OpenAISettings, generate, parse_decoding  # torch: loaded only to generate

    decoding = parse_decoding(
        {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": sample, "temperature": temperature,
         "top_p": top_p, "seed": seed, "stop": tuple(stop or ()), "dtype": dtype, "batch_size": batch_size,
         "merge_adapters": merge_adapters},
    )  # fmt: skip
    prompts = [p for name in eval_set for p in sample_prompts(load_eval_prompts(name), limit, seed=limit_seed)]
    if mode not in ("chat", "completions"):
        raise SafedoseError(f"--mode {mode!r}: choose chat or completions")
    settings = OpenAISettings(base_url=base_url, mode=mode, concurrency=concurrency)
    if backend not in BACKENDS:
        raise SafedoseError(f"--backend {backend!r}: choose hf, vllm or openai")
    rows = generate(
        model, adapter or [], prompts, template=template, decoding=decoding, backend=backend,
        include_base=base, cache=cache or out.parent / "cache.sqlite", allow_template_mismatch=allow_template_mismatch,
        allow_base_mismatch=allow_base_mismatch, openai=settings,
    )  # fmt: skip
    write_jsonl(out, (r.model_dump() for r in rows))
    _output.console.print(f"wrote {len(rows)} rows to {escape(str(out))}", soft_wrap=True)
