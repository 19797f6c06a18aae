"""Faster pieces of the CPU training step that compute what PEFT and HF compute, in distribution or up to rounding.

- `LoraDropout`: PEFT's LoRA dropout (an independent Bernoulli(1 - p) keep mask per call, kept inputs scaled by
  1 / (1 - p)) drawn as Geometric(p) gaps between the dropped positions: about p x as many random numbers as PEFT's
  `bernoulli_`, which runs serially on CPU, and a saved index tensor instead of a float mask.
- `summed_cross_entropy`: the summed fp32 cross-entropy of (bf16) logits in row chunks, without materialising the
  fp32 copy of the logits, their log-softmax and its gradient over the whole vocabulary.
- `use_fp32_attention`: under bf16 autocast on CPU, HF's SDPA attention on fp32 copies of query, key and value: the
  CPU flash-attention kernels run faster in fp32 than in bf16 (and round less).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

CE_CHUNK_ROWS = 64
SDPA_FP32 = "safedose_sdpa_fp32"


def drop_positions(n: int, p: float, device: torch.device | str = "cpu", *, margin: float = 8.0) -> torch.Tensor:
    """Sorted positions (int64) of the ones among `n` independent Bernoulli(`p`) draws.

    The gaps between successive ones of a Bernoulli(p) sequence are independent Geometric(p) variables on
    {1, 2, ...}, so drawing the gaps gives exactly that distribution from about n x p uniform numbers (float64).
    Each round draws the expected number of gaps left plus `margin` standard deviations; one round almost always
    reaches the end.
    """
    if n == 0 or p == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    log_q = math.log1p(-p)
    parts: list[torch.Tensor] = []
    last = -1.0  # position of the previous one
    while last < n - 1:
        left = (n - 1 - last) * p
        u = torch.rand(max(math.ceil(left + margin * math.sqrt(left)), 16), dtype=torch.float64, device=device)
        # floor(log(1 - u) / log(1 - p)) + 1 with 1 - u in (0, 1]: P(gap = k) = (1 - p)^(k - 1) p
        positions = u.neg_().log1p_().div_(log_q).floor_().add_(1).cumsum_(0).add_(last)
        parts.append(positions)
        last = float(positions[-1])
    positions = torch.cat(parts) if len(parts) > 1 else parts[0]
    return positions[positions < n].to(torch.int64)


class _ScaleKept(torch.autograd.Function):
    """`x * scale` with the elements at `dropped` set to zero, stored in `dtype`; the gradient likewise."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dropped: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
        out = torch.empty(x.shape, dtype=dtype, device=x.device)
        torch.mul(x, scale, out=out)  # computed in x's dtype, rounded once to `dtype`
        out.view(-1).index_fill_(0, dropped, 0)
        ctx.save_for_backward(dropped)
        ctx.scale, ctx.x_dtype = scale, x.dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        (dropped,) = ctx.saved_tensors
        out = torch.empty(grad.shape, dtype=ctx.x_dtype, device=grad.device)
        torch.mul(grad.to(ctx.x_dtype), ctx.scale, out=out)
        out.view(-1).index_fill_(0, dropped, 0)
        return out, None, None, None


class LoraDropout(nn.Dropout):
    """PEFT's `nn.Dropout` on a LoRA input, the same distribution at a fraction of the cost on CPU.

    Training: each call keeps every element independently with probability 1 - p and scales the kept ones by the
    same fp32 factor as `nn.Dropout` (which multiplies by a float mask of 1 / (1 - p)); the backward pass applies
    the same mask. Under autocast an fp32 input comes out in the autocast dtype, rounded as the LoRA A matmul's own
    cast would round it. Evaluation: the identity.
    """

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.scale = float(torch.ones(()).div_(1 - p))  # nn.Dropout's mask value: fp32 1 divided by (1 - p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        dtype = x.dtype
        if dtype == torch.float32 and torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
        dropped = drop_positions(x.numel(), self.p, x.device)
        out: torch.Tensor = _ScaleKept.apply(x, dropped, self.scale, dtype)  # type: ignore[no-untyped-call]
        return out


def use_fast_lora_dropout(model: nn.Module) -> int:
    """Replace the `nn.Dropout` of every PEFT LoRA linear layer of `model` with `LoraDropout`; returns how many."""
    from peft.tuners.lora import Linear

    changed = 0
    for module in model.modules():
        if not isinstance(module, Linear):
            continue
        for name, dropout in module.lora_dropout.items():
            if type(dropout) is nn.Dropout and dropout.p > 0:
                module.lora_dropout[name] = LoraDropout(dropout.p)
                changed += 1
    return changed


class _SummedCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy in fp32 of `logits` (rows) against `targets`, `chunk` rows at a time through one fp32
    buffer (no fresh allocations: page faults were a good part of the unchunked version's time on CPU)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        n = logits.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        buf = torch.empty(min(chunk, n), logits.shape[1], dtype=torch.float32, device=logits.device)
        for start in range(0, n, chunk):
            end = min(start + chunk, n)
            rows = buf[: end - start].copy_(logits[start:end])
            top = rows.amax(dim=-1, keepdim=True)
            lse[start:end] = rows.sub_(top).exp_().sum(dim=-1).log_().add_(top.squeeze(1))
        target_logits = logits.gather(1, targets[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk = chunk
        return (lse - target_logits).sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, targets, lse = ctx.saved_tensors
        n = logits.shape[0]
        out = torch.empty_like(logits)
        buf = torch.empty(min(ctx.chunk, n), logits.shape[1], dtype=torch.float32, device=logits.device)
        for start in range(0, n, ctx.chunk):
            end = min(start + ctx.chunk, n)
            soft = buf[: end - start].copy_(logits[start:end]).sub_(lse[start:end, None]).exp_()
            soft[torch.arange(end - start, device=soft.device), targets[start:end]] -= 1
            out[start:end] = soft.mul_(grad)
        return out, None, None


def summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, chunk: int = CE_CHUNK_ROWS) -> torch.Tensor:
    """`F.cross_entropy(logits.float(), targets, reduction="sum")` for 2-D `logits`, equal up to fp32 rounding;
    the gradient comes back in the logits' dtype (as the `.float()` cast's backward gives it)."""
    loss: torch.Tensor = _SummedCrossEntropy.apply(logits, targets, chunk)  # type: ignore[no-untyped-call]
    return loss


def _sdpa_fp32(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any, **kwargs: Any
) -> tuple[torch.Tensor, Any]:
    """HF's SDPA attention on fp32 copies of query, key and value, with autocast off; the output in query's dtype."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return out.to(query.dtype), weights


def use_fp32_attention(model: Any) -> bool:
    """Switch `model` (HF, or PEFT around one) from SDPA attention to `_sdpa_fp32`; False if it uses another."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    config = model.config
    if config._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(SDPA_FP32, _sdpa_fp32)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SDPA_FP32, sdpa_mask)
    config._attn_implementation = SDPA_FP32
    return True
