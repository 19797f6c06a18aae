"""Generation throughput: the paper's way (one prompt at a time, HF generate, 4 beams) against safedose `hf`.

    .venv/bin/python benchmarks/generate_throughput.py                 # 200 prompts, 128 new tokens
    .venv/bin/python benchmarks/generate_throughput.py --paper-prompts 200   # the paper's way on all of them (slow)
    .venv/bin/python benchmarks/generate_throughput.py --lora          # base vs unmerged vs merged LoRA adapters

`--lora`: greedy speed of the base model (no PEFT), of the base through PEFT (adapters disabled), of each adapter
through PEFT's unmerged layers (on CPU bf16 also as before `load_model` made the LM head's input contiguous) and of
each adapter merged into the weights, fp32 and bf16, on the first 64 advbench prompts (64 new tokens, batch 64). The
adapters are `--adapter DIR` (repeatable), else the demo's (`runs/demo/adapters/*/`), else one random r=8 adapter.
Every run is repeated once per adapter, interleaved. A batch decodes until its longest answer ends, so generated
tokens/s also depends on how long the answers are (safety-tuned adapters refuse briefly); speed is compared on rows x
decoding steps per second.

Prompts: the first 50 of I-MaliciousInstructions, advbench, xstest-v2-safe and I-PhysicalSafetySafe, with the Alpaca
template. Tokens/s counts generated tokens (up to EOS). The paper's way runs on `--paper-prompts` of them (fp32, as
the original code did on CPU); its tokens/s does not depend on how many prompts it runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _cpu import cpu_kind

from safedose.data import load_eval_prompts
from safedose.generate import Decoding, generate, generate_batch, load_adapter_info, load_model, load_tokenizer
from safedose.generate._hf import merged_variant, use_variant
from safedose.models import resolve_model
from safedose.templates import render_prompt

SETS = ("I-MaliciousInstructions", "advbench", "xstest-v2-safe", "I-PhysicalSafetySafe")


def paper_way(model_name: str, prompts: list[str], max_new_tokens: int) -> tuple[int, float]:
    model_dir = resolve_model(model_name)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, [], "fp32")
    tokens, started = 0, time.perf_counter()
    for text in prompts:
        enc = tokenizer(render_prompt("alpaca", text, "", tokenizer), return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=4, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        tokens += out.shape[1] - enc["input_ids"].shape[1]
    return tokens, time.perf_counter() - started


def random_adapter(model_dir: Path, out: Path) -> Path:
    """An r=8 LoRA on q/k/v/o with small random B (the demo's shape), for machines without trained adapters."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        task_type="CAUSAL_LM")  # fmt: skip
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    peft_model.save_pretrained(out)
    return out


def timed(model: Any, tokenizer: Any, texts: list[str], decoding: Decoding, context: Any) -> tuple[int, int, float]:
    """Generated tokens (up to EOS), row-steps (rows x forward passes: a batch decodes until its longest answer ends)
    and seconds for `texts` in batches of `decoding.batch_size`, inside `context`."""
    tokens, row_steps, steps = 0, 0, [0]
    hook = model.get_output_embeddings().register_forward_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    started = time.perf_counter()
    try:
        with context:
            for i in range(0, len(texts), decoding.batch_size):
                batch, steps[0] = texts[i : i + decoding.batch_size], 0
                results = generate_batch(model, tokenizer, batch, decoding, add_special_tokens=True)
                tokens, row_steps = tokens + sum(r["n_tokens"] for r in results), row_steps + len(batch) * steps[0]
    finally:
        hook.remove()
    return tokens, row_steps, time.perf_counter() - started


def lora_throughput(args: argparse.Namespace) -> None:
    model_dir = resolve_model(args.model)
    tokenizer = load_tokenizer(model_dir)
    texts = [render_prompt("alpaca", p.prompt, "", tokenizer) for p in load_eval_prompts("advbench")[: args.prompts]]
    texts.sort(key=lambda t: -len(tokenizer(t)["input_ids"]))  # as run_hf orders a variant's prompts
    tmp = tempfile.TemporaryDirectory()
    dirs = [Path(a) for a in args.adapter] or [
        p.parent for p in sorted(Path("runs/demo/adapters").glob("*/adapter_config.json"))
    ]
    adapters = [load_adapter_info(d) for d in dirs] or [load_adapter_info(random_adapter(model_dir, Path(tmp.name)))]
    n = len(adapters)
    print(f"CPU: {cpu_kind()}")
    print(f"adapters: {', '.join(a.name for a in adapters)}; {len(texts)} advbench prompts, {args.max_new_tokens} "
          f"new tokens, greedy, batch {args.batch_size}", flush=True)  # fmt: skip
    rows = []
    for dtype in args.dtypes:
        decoding = Decoding(max_new_tokens=args.max_new_tokens, dtype=dtype, batch_size=args.batch_size)
        warm = decoding.model_copy(update={"max_new_tokens": 4})
        plain, model = load_model(model_dir, [], dtype), load_model(model_dir, adapters, dtype)
        for m in (plain, model):
            generate_batch(m, tokenizer, texts[:4], warm, add_special_tokens=True)
        hooks = model.get_output_embeddings()._forward_pre_hooks  # load_model's contiguous LM-head input (CPU bf16)
        a = f"{n} adapter{'s' * (n > 1)}"
        runs: dict[str, tuple[int, int, float]] = {}
        for adapter in adapters:  # one round per adapter, every run in each, so that a change of load hits all alike
            name = adapter.name
            variants = [("base model (no PEFT)", plain, use_variant(plain, None), False),
                        ("base through PEFT (adapters disabled)", model, use_variant(model, None), False),
                        (f"{a}, PEFT unmerged", model, use_variant(model, name), False),
                        (f"{a}, merged into the weights", model, merged_variant(model, name), False)]  # fmt: skip
            if hooks:
                label = f"{a}, PEFT unmerged, strided LM-head input (before)"
                variants.insert(2, (label, model, use_variant(model, name), True))
            for label, m, context, without_hooks in variants:
                saved = dict(hooks)
                if without_hooks:
                    hooks.clear()
                try:
                    result = timed(m, tokenizer, texts, decoding, context)
                finally:
                    hooks.update(saved)
                total = runs.get(label, (0, 0, 0.0))
                runs[label] = (total[0] + result[0], total[1] + result[1], total[2] + result[2])
        del plain, model
        base = runs["base model (no PEFT)"]
        rows += [(dtype, label, *r, r[1] / r[2] / (base[1] / base[2])) for label, r in runs.items()]
        print(f"done {dtype}; load {'/'.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"CPU after: {cpu_kind()}")
    print(
        "| dtype | run | generated tokens | rows x steps | wall time (s) | tokens/s | rows x steps/s | speed vs base |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dtype, label, tokens, row_steps, wall, share in rows:
        rates = f"{tokens / wall:.0f} | {row_steps / wall:.0f} | {share:.0%}"
        print(f"| {dtype} | {label} | {tokens} | {row_steps} | {wall:.1f} | {rates} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 128; with --lora 64")
    parser.add_argument("--paper-prompts", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lora", action="store_true", help="base vs unmerged vs merged adapters instead")
    parser.add_argument("--adapter", action="append", default=[], help="--lora: adapter directory; repeatable")
    parser.add_argument("--prompts", type=int, default=64, help="--lora: the first N advbench prompts")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], help="--lora: dtypes to measure")
    args = parser.parse_args()
    if args.lora:
        args.max_new_tokens = args.max_new_tokens or 64
        lora_throughput(args)
        return
    args.max_new_tokens = args.max_new_tokens or 128
    print(f"CPU: {cpu_kind()}")
    prompts = [p for name in SETS for p in load_eval_prompts(name)[:50]]
    results = []
    tokens, wall = paper_way(args.model, [p.prompt for p in prompts[: args.paper_prompts]], args.max_new_tokens)
    results.append((f"paper: batch 1, 4 beams, fp32 ({args.paper_prompts} prompts)", tokens, wall))
    for label, beams in (("safedose hf greedy", 1), ("safedose hf 4 beams", 4)):
        decoding = Decoding(max_new_tokens=args.max_new_tokens, num_beams=beams, batch_size=args.batch_size)
        started = time.perf_counter()
        rows = generate(args.model, [], prompts, template="alpaca", decoding=decoding, progress=False)
        wall = time.perf_counter() - started
        dtype = decoding.key()["dtype"]
        results.append((f"{label}, {dtype}, batch {args.batch_size} ({len(prompts)} prompts)",
                        sum(r.n_tokens or 0 for r in rows), wall))  # fmt: skip
    base = results[0][1] / results[0][2]
    print("| run | generated tokens | wall time (s) | tokens/s | vs paper |\n|---|---|---|---|---|")
    for label, tokens, wall in results:
        print(f"| {label} | {tokens} | {wall:.0f} | {tokens / wall:.0f} | {tokens / wall / base:.1f}x |")


if __name__ == "__main__":
    main()
