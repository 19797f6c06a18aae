"""Seconds per LoRA training step of SmolLM2-135M-Instruct, variants interleaved so that load hits all alike.

    .venv/bin/python benchmarks/train_step.py            # batch 8 x 160 tokens, r=8 on q/k/v/o, 3 rounds

Variants (bf16 autocast where the CPU has native bf16 matmuls, else fp32 and the first two are the same):
`fp32 base` keeps every base weight in fp32, so autocast copies each frozen weight to bf16 on every forward;
`frozen linears in bf16` is what `train` does (`frozen_linears_to`); `… without LoRA dropout` shows what PEFT's
dropout on each LoRA input costs. Every variant starts from the same weights and sees the same dropout masks; the
first step's losses are printed, equal where the variants compute the same thing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from _cpu import cpu_kind

from safedose.generate._settings import resolve_dtype
from safedose.models import resolve_model
from safedose.train._recipe import frozen_linears_to, summed_token_nll

VARIANTS = ["fp32 base", "frozen linears in bf16", "frozen linears in bf16, without LoRA dropout"]


def make_step(variant: str, args: argparse.Namespace, batch: dict[str, torch.Tensor]) -> Callable[[], float]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(args.model), dtype=torch.float32)
    dropout = 0.0 if "without" in variant else 0.05
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    peft_model: Any = get_peft_model(model, config).train()
    half = resolve_dtype("auto") == "bf16"
    if half and "frozen" in variant:
        frozen_linears_to(peft_model, torch.bfloat16)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)

    def step() -> float:
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
            loss = summed_token_nll(peft_model, **batch)
        (loss / 1000).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_kind()}")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (args.batch_size, args.length), generator=g)
    labels = ids.clone()
    labels[:, : args.length // 3] = -100  # the prompt
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    steps = {v: make_step(v, args, batch) for v in VARIANTS}
    for v, step in steps.items():
        print(f"{v}: first step loss {step():.4f}")  # also the warm-up
    seconds = dict.fromkeys(VARIANTS, 0.0)
    for _ in range(args.rounds):
        for v, step in steps.items():
            started = time.perf_counter()
            step()
            seconds[v] += time.perf_counter() - started
    print(f"CPU after: {cpu_kind()}")
    tokens = args.batch_size * args.length * args.rounds
    print("| variant | s/step | tokens/s | vs fp32 base |\n|---|---|---|---|")
    for v in VARIANTS:
        rate = f"{seconds[v] / args.rounds:.2f} | {tokens / seconds[v]:.0f}"
        print(f"| {v} | {rate} | {seconds[VARIANTS[0]] / seconds[v]:.2f}x |")


if __name__ == "__main__":
    main()
