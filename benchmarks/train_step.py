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
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _steps import (
    adamw,
    lora_model,
    optimizer_step,
    parse_step_options,
    random_batch,
    step_options,
    time_steps,
    warm_up,
)

from safedose.train import frozen_linears_to, summed_token_nll
from safedose.train._data import IGNORE
from safedose.train._fast import summed_cross_entropy, use_fast_lora_dropout, use_fp32_attention

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
    peft_model = lora_model(args)
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
    optimizer = adamw(peft_model)

    def step() -> float:
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
            loss = summed_token_nll(peft_model, **batch) if complete else partial_nll(changes, peft_model, batch)
        return optimizer_step(loss, optimizer)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    step_options(parser, batch_size=8, length=160, dtype="auto")
    parser.add_argument("--pad", type=int, default=10, help="the last row is this many tokens shorter")
    args = parse_step_options(parser)
    batch = random_batch(args, prompt=1 / 3, pad=args.pad)
    applicable = [c for c in CHANGES if args.half or c not in ("tied LM head in bf16", "fp32 attention")]
    variants: dict[str, list[str]] = {"before": []} | {f"+ {c}": applicable[: i + 1] for i, c in enumerate(applicable)}
    steps = {v: make_step(c, args, batch, complete=c == applicable) for v, c in variants.items()}
    warm_up(steps)
    time_steps(steps, rounds=args.rounds, tokens=int(batch["attention_mask"].sum()))  # real (non-pad) tokens


if __name__ == "__main__":
    main()
