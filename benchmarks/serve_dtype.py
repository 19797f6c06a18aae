"""Which precision answers a served request faster on this CPU: fp32 or bf16 (what `serve --dtype auto` picks).

    .venv/bin/python benchmarks/serve_dtype.py                      # 8 single requests, then batches of 16
    .venv/bin/python benchmarks/serve_dtype.py --adapter runs/demo/adapters/n90-*/ --requests 16

The model is loaded as `safedose serve` loads it (`load_model`: the base in the dtype, every adapter unmerged
through PEFT) once per dtype, both kept in memory; each request is run in every dtype before the next one
(interleaved, so a change of load hits both alike). Single requests are batches of one prompt (how the server runs
a request that arrives alone); `--batch` prompts at once is how it runs requests that arrive together. Prompts:
advbench and xstest-v2-safe with the Alpaca template, greedy, `--max-new-tokens` new tokens. Greedy answers differ
between dtypes, so speed is compared per decoding step (a forward pass of the batch), besides seconds per request.
The adapter is `--adapter DIR`, else one random r=8 LoRA on q/k/v/o (the demo's shape).

`--reproduce RUN` instead counts how many of a finished sweep's answers (its largest dose's cell, in
`results/judged.jsonl`) each way of running the adapter gives again, greedy with the run's decoding settings, one
request at a time: served (`load_model`, the adapter unmerged) in fp32 and bf16, and the merged export (`safedose
export --merged`) in fp32 and bf16; and, as a check, the sweep's own batched generation in the run's dtype.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _cpu import cpu_kind
from generate_throughput import random_adapter

from safedose.data import load_eval_prompts
from safedose.generate import Decoding, generate_batch, load_adapter_info, load_model, load_tokenizer, use_variant
from safedose.models import resolve_model
from safedose.templates import render_prompt


def timed(model: Any, tokenizer: Any, texts: list[str], decoding: Decoding, variant: str) -> tuple[int, int, float]:
    """Generated tokens, decoding steps and seconds for `texts` as one batch."""
    steps = [0]
    hook = model.get_output_embeddings().register_forward_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    started = time.perf_counter()
    try:
        with use_variant(model, variant):
            results = generate_batch(model, tokenizer, texts, decoding, add_special_tokens=True)
    finally:
        hook.remove()
    return sum(int(r["n_tokens"]) for r in results), steps[0], time.perf_counter() - started


def reproduce(run: Path) -> None:
    """How many of the run's answers of its largest dose each way of running its adapter gives again."""
    from safedose.data import EvalPrompt
    from safedose.export import export_merged
    from safedose.generate import generate
    from safedose.run import read_judged, read_manifest

    manifest = read_manifest(run)
    cell = max(manifest.cells, key=lambda name: manifest.cells[name].dose)
    adapter = load_adapter_info(f"{cell}={run / manifest.cells[cell].adapter}")
    rows = [r for r in read_judged(run) if r.variant == cell]
    config, studied = manifest.config, manifest.generation_dtype
    decoding = Decoding.model_validate({**config["decoding"], "batch_size": 1})
    model_dir = resolve_model(config["model"])
    tokenizer = load_tokenizer(model_dir)
    texts = [render_prompt(adapter.template or "alpaca", r.prompt, "", tokenizer) for r in rows]
    print(f"CPU: {cpu_kind()}")
    print(f"{run}: cell {cell}, {len(rows)} answers generated in {studied}; {decoding.max_new_tokens} new tokens")

    def single(model: Any, variant: str | None) -> list[str]:
        with use_variant(model, variant):
            return [str(generate_batch(model, tokenizer, [t], decoding, add_special_tokens=True)[0]["response"])
                    for t in texts]  # fmt: skip

    results: list[tuple[str, list[str], float]] = []
    prompts = [EvalPrompt(id=r.id, prompt=r.prompt, eval_set=r.eval_set) for r in rows]
    started = time.perf_counter()
    again = generate(config["model"], [adapter], prompts, decoding=decoding.model_copy(update={"batch_size": 64}),
                     include_base=False, progress=False)  # fmt: skip
    results.append((f"the sweep's generation ({studied}, batched, no cache)", [g.response for g in again],
                    time.perf_counter() - started))  # fmt: skip
    for dtype in ("fp32", "bf16"):
        started = time.perf_counter()
        answers = single(load_model(model_dir, [adapter], dtype), adapter.name)
        results.append((f"served: adapter unmerged, {dtype}", answers, time.perf_counter() - started))
    with tempfile.TemporaryDirectory() as tmp:
        merged = export_merged(adapter.path, Path(tmp) / "merged", dtype="fp32")
        for dtype in ("fp32", "bf16"):
            started = time.perf_counter()
            answers = single(load_model(merged, [], dtype), None)
            results.append((f"merged export, {dtype}", answers, time.perf_counter() - started))
    print("| how | answers equal to the sweep's | seconds |\n|---|---|---|")
    for label, answers, seconds in results:
        same = sum(a == r.response for a, r in zip(answers, rows, strict=True))
        print(f"| {label} | {same} / {len(rows)} | {seconds:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", default=None, help="an adapter directory (default: a random r=8 LoRA)")
    parser.add_argument("--requests", type=int, default=8, help="single requests per dtype")
    parser.add_argument("--batch", type=int, default=16, help="prompts per batch in the batched runs (0: none)")
    parser.add_argument("--batches", type=int, default=2, help="batched runs per dtype")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--reproduce", type=Path, default=None, help="a finished run directory (see above)")
    args = parser.parse_args()
    if args.reproduce is not None:
        reproduce(args.reproduce)
        return

    model_dir = resolve_model(args.model)
    tokenizer = load_tokenizer(model_dir)
    tmp = tempfile.TemporaryDirectory()
    adapter = load_adapter_info(args.adapter or random_adapter(model_dir, Path(tmp.name)))
    prompts = [p.prompt for name in ("advbench", "xstest-v2-safe") for p in load_eval_prompts(name)[:64]]
    texts = [render_prompt("alpaca", p, "", tokenizer) for p in prompts[::2] + prompts[1::2]]
    print(f"CPU: {cpu_kind()}")
    print(f"adapter {adapter.name} (PEFT, unmerged, as served); greedy, {args.max_new_tokens} new tokens", flush=True)
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    models = {d: load_model(model_dir, [adapter], d) for d in args.dtypes}
    for model in models.values():  # warm-up: first calls allocate and pick kernels
        timed(model, tokenizer, texts[:2], decoding.model_copy(update={"max_new_tokens": 4}), adapter.name)

    sizes = [1] * args.requests + [args.batch] * (args.batches if args.batch else 0)
    totals: dict[tuple[str, int], list[float]] = {}
    at = 0
    for size in sizes:
        batch, at = texts[at : at + size], at + size
        for dtype, model in models.items():
            tokens, steps, seconds = timed(model, tokenizer, batch, decoding, adapter.name)
            total = totals.setdefault((dtype, size), [0, 0, 0, 0.0])
            for i, value in enumerate((1, tokens, steps, seconds)):
                total[i] += value
    print(f"CPU after: {cpu_kind()}; load {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| dtype | prompts per batch | batches | s per batch | ms per decoding step | generated tokens/s |")
    print("|---|---|---|---|---|---|")
    for (dtype, size), (runs, tokens, steps, seconds) in sorted(totals.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        per_step = 1000 * seconds / steps
        print(f"| {dtype} | {size} | {runs:.0f} | {seconds / runs:.2f} | {per_step:.1f} | {tokens / seconds:.0f} |")
    for size in sorted({s for _, s in totals}):
        rates = {d: totals[(d, size)][3] / totals[(d, size)][2] for d in args.dtypes}
        fastest = min(rates, key=lambda d: rates[d])
        ratios = ", ".join(f"{d} {rates[d] / rates[fastest]:.2f}x" for d in args.dtypes if d != fastest)
        print(f"batch {size}: {fastest} is fastest per decoding step ({ratios} slower)")


if __name__ == "__main__":
    main()
