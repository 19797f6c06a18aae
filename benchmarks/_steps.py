"""What the training-step benchmarks share: their options, a random batch, one optimizer step, and variants of a
step timed in interleaved rounds (so that load from other jobs hits all of them alike)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from _cpu import cpu_kind

from safedose.generate._settings import resolve_dtype
from safedose.models import resolve_model
from safedose.train._data import IGNORE


def step_options(parser: argparse.ArgumentParser, *, batch_size: int, length: int, dtype: str) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--length", type=int, default=length)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default=dtype)
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj", help="LoRA target modules")


def parse_step_options(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The options, with `targets` as a list and `half` (bf16 autocast) resolved; prints the CPU kind."""
    args = parser.parse_args()
    args.targets = args.targets.split(",")
    args.half = resolve_dtype(args.dtype) == "bf16"
    print(f"CPU: {cpu_kind()}; {'bf16 autocast' if args.half else 'fp32'}")
    return args


def random_batch(args: argparse.Namespace, *, prompt: float, pad: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random token rows, the first `prompt` share of each unlabelled; the last row `pad` tokens shorter."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (args.batch_size, args.length), generator=g)
    labels = ids.clone()
    labels[:, : int(args.length * prompt)] = IGNORE
    mask = torch.ones_like(ids)
    if pad:
        mask[-1, -pad:], labels[-1, -pad:], ids[-1, -pad:] = 0, IGNORE, 2
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def lora_model(args: argparse.Namespace) -> Any:
    """SmolLM2 (or `--model`) in fp32 with a seeded LoRA r=8 / alpha 16 / dropout 0.05 on `--targets`, training."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(args.model), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=args.targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config).train()


def adamw(model: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
    (loss / 1000).backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def warm_up(steps: dict[str, Callable[[], float]]) -> None:
    """Two steps of each variant, their losses printed (the first ones equal up to rounding)."""
    for name, step in steps.items():
        print(f"{name}: first step loss {step():.4f}, second {step():.4f}")


def time_steps(steps: dict[str, Callable[[], float]], *, rounds: int, tokens: int) -> None:
    """Median seconds per step of each variant over interleaved rounds, as a table against the first variant."""
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - started)
    print(f"CPU after: {cpu_kind()}")
    medians = {name: sorted(times)[rounds // 2] for name, times in seconds.items()}
    first = next(iter(medians))
    print(f"\n| variant | s/step (median) | real tokens/s | vs {first} |\n|---|---|---|---|")
    for name, median in medians.items():
        print(f"| {name} | {median:.2f} | {tokens / median:.0f} | {medians[first] / median:.3f}x |")
