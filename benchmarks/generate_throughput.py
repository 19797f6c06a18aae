"""Generation throughput: the paper's way (one prompt at a time, HF generate, 4 beams) against safedose `hf`.

    .venv/bin/python benchmarks/generate_throughput.py                 # 200 prompts, 128 new tokens
    .venv/bin/python benchmarks/generate_throughput.py --paper-prompts 200   # the paper's way on all of them (slow)

Prompts: the first 50 of I-MaliciousInstructions, advbench, xstest-v2-safe and I-PhysicalSafetySafe, with the Alpaca
template. Tokens/s counts generated tokens (up to EOS). The paper's way runs on `--paper-prompts` of them (fp32, as
the original code did on CPU); its tokens/s does not depend on how many prompts it runs.
"""

from __future__ import annotations

import argparse
import time

import torch

from safedose.data import load_eval_prompts
from safedose.generate import Decoding, generate, load_model, load_tokenizer
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--paper-prompts", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
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
                        sum(int(r["n_tokens"]) for r in rows), wall))  # fmt: skip
    base = results[0][1] / results[0][2]
    print("| run | generated tokens | wall time (s) | tokens/s | vs paper |\n|---|---|---|---|---|")
    for label, tokens, wall in results:
        print(f"| {label} | {tokens} | {wall:.0f} | {tokens / wall:.0f} | {tokens / wall / base:.1f}x |")


if __name__ == "__main__":
    main()
