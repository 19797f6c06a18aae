"""How close an fp32 LoRA training step (what CPUs without AVX-512 BF16 run) is to this CPU's matmul ceiling, and
what two fusions that keep the method's arithmetic would gain.

    .venv/bin/python benchmarks/fp32_ceiling.py                 # batch 4 x 140 tokens, LoRA r=8 on q/k/v/o
    .venv/bin/python benchmarks/fp32_ceiling.py --batch-size 8 --dtype bf16

1. sgemm throughput at the step's shapes against a 2048^3 one (the machine's ceiling);
2. the share of `aten::mm` in a profiled training step (`train`'s own step: `summed_token_nll`, `LoraDropout`);
3. the step with each fusion, variants interleaved, median seconds per step:
   - `fused head`: the LM head's logits and cross-entropy 256 rows at a time with the gradient computed in the
     same pass (the logits never exist all at once);
   - `fused gate/up`: a frozen MLP's gate and up projections as one matmul, silu(gate) x up and its gradient into
     one tensor.
Both give the losses of the plain step up to rounding (printed). Neither is used by `train`: see
docs/performance.md for what they measured.
"""

from __future__ import annotations

import argparse
import time
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
from torch import nn

from safedose.train import frozen_linears_to, summed_token_nll
from safedose.train._data import IGNORE
from safedose.train._fast import use_fast_lora_dropout, use_fp32_attention

HEAD_CHUNK = 256


class HeadCrossEntropy(torch.autograd.Function):
    """Summed fp32 cross-entropy of `hidden @ weight.T`, HEAD_CHUNK rows of logits at a time; the (frozen head's
    only) gradient, softmax minus one-hot times `weight`, computed in the same pass."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n = hidden.shape[0]
        logits_buf = torch.empty(min(HEAD_CHUNK, n), weight.shape[0], dtype=hidden.dtype)
        fp32_buf = logits_buf if hidden.dtype == torch.float32 else torch.empty_like(logits_buf, dtype=torch.float32)
        losses, grad = torch.empty(n), torch.empty_like(hidden)
        for start in range(0, n, HEAD_CHUNK):
            end = min(start + HEAD_CHUNK, n)
            logits = torch.mm(hidden[start:end], weight.t(), out=logits_buf[: end - start])
            rows = logits if logits is fp32_buf else fp32_buf[: end - start].copy_(logits)
            target_logits = rows.gather(1, targets[start:end, None]).squeeze(1)
            top = rows.amax(dim=1, keepdim=True)
            sums = rows.sub_(top).exp_().sum(dim=1)
            losses[start:end] = sums.log().add_(top.squeeze(1)).sub_(target_logits)
            soft = rows.div_(sums[:, None])
            soft[torch.arange(end - start), targets[start:end]] -= 1
            torch.mm(soft if soft is logits else logits.copy_(soft), weight, out=grad[start:end])
        ctx.save_for_backward(grad)
        return losses.sum()

    @staticmethod
    def backward(ctx: Any, incoming: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (grad,) = ctx.saved_tensors
        return grad * incoming, None, None


class SiluTimesUp(torch.autograd.Function):
    """silu(gate) * up of one tensor holding gate then up; the gradient into one such tensor."""

    @staticmethod
    def forward(ctx: Any, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(gate_up, act)
        return act * up

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        gate_up, act = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        out = torch.empty_like(gate_up)
        grad_gate, grad_up = out.chunk(2, dim=-1)
        torch.mul(grad, act, out=grad_up)
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=grad_gate)
        return out


class FusedGateUpMLP(nn.Module):
    gate_up: torch.Tensor

    def __init__(self, mlp: Any) -> None:
        super().__init__()
        self.down_proj = mlp.down_proj
        self.register_buffer("gate_up", torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(SiluTimesUp.apply(F.linear(x, self.gate_up)))  # type: ignore[no-untyped-call]
        return out


def gflops(m: int, k: int, n: int, rounds: int = 10) -> float:
    a, b = torch.randn(m, k), torch.randn(n, k)
    for _ in range(2):
        a @ b.t()
    started = time.perf_counter()
    for _ in range(rounds):
        a @ b.t()
    return 2 * m * k * n * rounds / (time.perf_counter() - started) / 1e9


def make_step(args: argparse.Namespace, batch: dict[str, torch.Tensor], variant: str) -> Callable[[], float]:
    peft_model = lora_model(args)
    if args.half:  # as `train` does under bf16 autocast
        frozen_linears_to(peft_model, torch.bfloat16)
        use_fp32_attention(peft_model)
    use_fast_lora_dropout(peft_model)
    base = peft_model.get_base_model()
    if variant == "fused gate/up":
        for layer in base.model.layers:
            layer.mlp = FusedGateUpMLP(layer.mlp)
    optimizer = adamw(peft_model)
    labels = batch["labels"]
    keep = F.pad(labels[:, 1:] != IGNORE, (0, 1), value=False)
    targets = labels[:, 1:][labels[:, 1:] != IGNORE]

    def step() -> float:
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.half):
            if variant == "fused head":
                hidden = base.model(input_ids=batch["input_ids"], use_cache=False).last_hidden_state[keep]
                weight = base.lm_head.weight
                dtype = torch.bfloat16 if args.half else torch.float32
                with torch.autocast("cpu", enabled=False):
                    loss = HeadCrossEntropy.apply(hidden.to(dtype), weight.to(dtype), targets)  # type: ignore[no-untyped-call]
            else:
                loss = summed_token_nll(peft_model, **batch)
        return optimizer_step(loss, optimizer)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    step_options(parser, batch_size=4, length=140, dtype="fp32")
    args = parse_step_options(parser)
    rows = args.batch_size * args.length
    print("\n| sgemm (fp32) | GFLOP/s |\n|---|---|")
    shapes = [(2048, 2048, 2048), (rows, 576, 1536), (rows, 1536, 576), (rows, 576, 576), (rows // 2, 576, 49152)]
    for m, k, n in shapes:
        print(f"| {m} x {k} x {n} | {gflops(m, k, n):.0f} |")

    batch = random_batch(args, prompt=1 / 2)  # half of each row is the prompt, as in the demo's mixes
    steps = {v: make_step(args, batch, v) for v in ("plain", "fused head", "fused gate/up")}
    warm_up(steps)

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        steps["plain"]()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mm = sum(e.self_cpu_time_total for e in events if e.key == "aten::mm")
    print(f"\naten::mm: {100 * mm / total:.0f}% of a plain step's CPU time")
    time_steps(steps, rounds=args.rounds, tokens=rows)


if __name__ == "__main__":
    main()
