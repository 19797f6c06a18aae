"""Seconds per LoRA training step of SmolLM2-135M-Instruct, variants interleaved so that load hits all alike.

    .venv/bin/python benchmarks/train_step.py               # batch 8 x 160 tokens, r=8 on q/k/v/o, 5 rounds
    .venv/bin/python benchmarks/train_step.py --dtype fp32  # what a CPU without AVX-512 BF16 runs
    .venv/bin/python benchmarks/train_step.py --targets q_proj,v_proj --length 140  # train_throughput.py's LoRA

bf16 autocast where the CPU has native bf16 matmuls (`--dtype auto`), else fp32. The batch is right-padded as a
length-grouped one is (`--pad`: the last row that many tokens shorter). Each variant adds one change to the one
before it, from what training did before them to what `train` does now:

- `before`: frozen linears stored in bf16 except the tied LM head (autocast copies it every step), PEFT's LoRA
  dropout, SDPA given the padding mask, `F.cross_entropy` over fp32 logits;
- `+ LoRA dropout from Geometric gaps` (`LoraDropout`); `+ chunked cross-entropy` (`summed_cross_entropy`);
- `+ tied LM head in bf16`; `+ no padding mask` (right padding, causal attention alone);
- `+ fp32 attention`: SDPA on fp32 copies of query, key and value (bf16 only): what `train` does.

Every variant starts from the same weights and draws its dropout masks from the same seed; the first two steps'
losses are printed (the first equal up to rounding: LoRA B starts at zero, so dropout does not enter it).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _cpu import cpu_kind

from safedose.generate._settings import resolve_dtype
from safedose.models import resolve_model
from safedose.train._data import IGNORE
from safedose.train._fast import summed_cross_entropy, use_fast_lora_dropout, use_fp32_attention
from safedose.train._recipe import frozen_linears_to, summed_token_nll

CHANGES = ["LoRA dropout from Geometric gaps", "chunked cross-entropy", "tied LM head in bf16", "no padding mask",
           "fp32 attention"]  # fmt: skip


def partial_nll(changes: list[str], model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`summed_token_nll` with only some of its changes: as it was, the padding mask passed on and cross-entropy
    over the fp32 copy of the logits."""
    labels = batch["labels"]
    predicts = labels[:, 1:] != IGNORE
    keep = F.pad(predicts, (0, 1), value=False)
    mask = None if "no padding mask" in changes else batch["attention_mask"]
    logits = model(input_ids=batch["input_ids"], attention_mask=mask, logits_to_keep=keep, use_cache=False).logits
    if "chunked cross-entropy" in changes:
        return summed_cross_entropy(logits, labels[:, 1:][predicts])
    return F.cross_entropy(logits.float(), labels[:, 1:][predicts], reduction="sum")


def make_step(
    changes: list[str], args: argparse.Namespace, batch: dict[str, torch.Tensor], *, complete: bool
) -> Callable[[], float]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(args.model), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=args.targets, task_type="CAUSAL_LM")
    peft_model: Any = get_peft_model(model, config).train()
    half = args.half
    if half:
        head = peft_model.get_output_embeddings()
        tied = head.weight
        frozen_linears_to(peft_model, torch.bfloat16)
        if "tied LM head in bf16" not in changes:
            head.weight = tied  # as before: the tied head stayed fp32
    if "LoRA dropout from Geometric gaps" in changes:
        use_fast_lora_dropout(peft_model)
    if "fp32 attention" in changes:
        use_fp32_attention(peft_model)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)

    def step() -> float:
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
            loss = summed_token_nll(peft_model, **batch) if complete else partial_nll(changes, peft_model, batch)
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
    parser.add_argument("--pad", type=int, default=10, help="the last row is this many tokens shorter")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto")
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj", help="LoRA target modules")
    args = parser.parse_args()
    args.targets = args.targets.split(",")
    args.half = resolve_dtype(args.dtype) == "bf16"
    print(f"CPU: {cpu_kind()}; {'bf16 autocast' if args.half else 'fp32'}")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (args.batch_size, args.length), generator=g)
    labels = ids.clone()
    labels[:, : args.length // 3] = IGNORE  # the prompt
    mask = torch.ones_like(ids)
    if args.pad:
        mask[-1, -args.pad :], labels[-1, -args.pad :], ids[-1, -args.pad :] = 0, IGNORE, 2
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    applicable = [c for c in CHANGES if args.half or c not in ("tied LM head in bf16", "fp32 attention")]
    variants = {"before": []} | {f"+ {c}": applicable[: i + 1] for i, c in enumerate(applicable)}
    steps = {v: make_step(c, args, batch, complete=c == applicable) for v, c in variants.items()}
    for v, step in steps.items():
        print(f"{v}: first step loss {step():.4f}, second {step():.4f}")  # also the warm-up
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v, step in steps.items():
            started = time.perf_counter()
            step()
            seconds[v].append(time.perf_counter() - started)
    print(f"CPU after: {cpu_kind()}")
    tokens = int(mask.sum())  # real (non-pad) tokens per step
    base = sorted(seconds["before"])[args.rounds // 2]
    print("| variant | s/step (median) | real tokens/s | vs before |\n|---|---|---|---|")
    for v, times in seconds.items():
        median = sorted(times)[args.rounds // 2]
        print(f"| {v} | {median:.2f} | {tokens / median:.0f} | {base / median:.2f}x |")


if __name__ == "__main__":
    main()
