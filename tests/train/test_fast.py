"""The faster training pieces compute what they replace: PEFT's dropout in distribution, the rest up to rounding."""

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from safedose.train import summed_token_nll
from safedose.train._fast import (
    SDPA_FP32,
    LoraDropout,
    drop_positions,
    summed_cross_entropy,
    use_fast_lora_dropout,
    use_fp32_attention,
)
from safedose.train._loss import _right_padded

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def within(count: float, n: int, p: float, sigmas: float = 5.0) -> bool:
    """`count` successes of `n` Bernoulli(`p`) trials lie within `sigmas` standard deviations of n * p."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize(("p", "margin"), [(0.05, 8.0), (0.3, 8.0), (0.05, -3.0)])  # -3: several rounds per draw
def test_drop_positions_are_independent_bernoulli_draws(p: float, margin: float) -> None:
    torch.manual_seed(0)
    n, draws = 5_000, 200
    masks = torch.zeros(draws, n, dtype=torch.bool)
    for row in masks:
        positions = drop_positions(n, p, margin=margin)
        assert positions.dtype == torch.int64 and bool((positions[1:] > positions[:-1]).all())
        assert len(positions) == 0 or (int(positions[0]) >= 0 and int(positions[-1]) < n)
        row[positions] = True
    total = n * draws
    assert within(masks.sum(), total, p)
    assert within(masks[:, : n // 10].sum(), total // 10, p) and within(masks[:, -n // 10 :].sum(), total // 10, p)
    assert within((masks[:, 1:] & masks[:, :-1]).sum(), (n - 1) * draws, p * p)  # neighbours independent
    assert within((masks[1:] & masks[:-1]).sum(), n * (draws - 1), p * p)  # successive draws independent
    per_draw = masks.sum(1).double()  # Binomial(n, p): its variance too
    assert per_draw.var().item() == pytest.approx(n * p * (1 - p), rel=0.3)
    assert drop_positions(0, p).numel() == 0 and drop_positions(10, 0.0).numel() == 0


def peft_dropout(x: torch.Tensor, dropped: torch.Tensor, p: float) -> torch.Tensor:
    """What `nn.Dropout` computes given its mask: x times (bernoulli keep mask / (1 - p)) in fp32."""
    noise = torch.ones(x.numel(), dtype=x.dtype)
    noise[dropped] = 0
    return x * noise.view(x.shape).div_(1 - p)


@pytest.mark.parametrize("autocast", [False, True])
def test_lora_dropout_equals_peft_given_the_same_mask(autocast: bool) -> None:
    dropout = LoraDropout(0.05).train()
    assert dropout.scale == float(F.dropout(torch.ones(1000), 0.05, training=True).max())
    x = torch.randn(4, 33, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        torch.manual_seed(3)
        ours = dropout(x)
    torch.manual_seed(3)
    dropped = drop_positions(x.numel(), 0.05)
    theirs = peft_dropout(x, dropped, 0.05)
    if autocast:  # what the LoRA A matmul's own autocast cast would make of PEFT's fp32 output
        theirs = theirs.to(torch.bfloat16)
    assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
    assert 0 < int((ours == 0).sum()) < x.numel() // 10
    grad = torch.randn(x.shape, dtype=ours.dtype)
    ours.backward(grad)
    ours_grad, x.grad = x.grad, None
    theirs.backward(grad)
    assert torch.equal(ours_grad, x.grad)
    dropout.eval()
    assert dropout(x) is x


def test_fast_dropout_replaces_peft_s_in_every_lora_layer_with_independent_masks(tiny_model: Path) -> None:
    config = LoraConfig(r=4, lora_dropout=0.1, target_modules=TARGETS, task_type="CAUSAL_LM")
    model: Any = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), config).train()
    assert use_fast_lora_dropout(model) == 8 and use_fast_lora_dropout(model) == 0
    layers = [m for m in model.modules() if hasattr(m, "lora_dropout")]
    assert all(type(m.lora_dropout["default"]) is LoraDropout for m in layers)
    x = torch.ones(2, 17, 64)
    q, k = (layer.lora_dropout["default"](x) == 0 for layer in layers[:2])
    assert not torch.equal(q, k)  # each module draws its own mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [7, 64])
def test_summed_cross_entropy_equals_torch_s(dtype: torch.dtype, chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(45, 301, generator=gen) * 4).to(dtype).requires_grad_()
    targets = torch.randint(0, 301, (45,), generator=gen)
    ours = summed_cross_entropy(logits, targets, chunk)
    (ours * 0.5).backward()
    ours_grad, logits.grad = logits.grad, None
    theirs = F.cross_entropy(logits.float(), targets, reduction="sum")
    (theirs * 0.5).backward()
    assert ours.dtype == torch.float32 and ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert ours_grad is not None and ours_grad.dtype == dtype
    # equal up to fp32 rounding before the cast to the logits' dtype: at most one bf16 step apart
    tolerance = 1e-6 if dtype == torch.float32 else 2**-8
    assert torch.allclose(ours_grad.float(), logits.grad.float(), rtol=tolerance, atol=1e-7)


def test_right_padded_masks_are_recognised() -> None:
    assert _right_padded(torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]]))
    assert not _right_padded(torch.tensor([[1, 1, 1], [0, 1, 1]]))  # left padding keeps its mask
    assert not _right_padded(torch.tensor([[1, 0, 1]]))


def lora_model(path: Path, **overrides: Any) -> Any:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **overrides)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, init_lora_weights=False,
                        task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(model, config).train()


def padded_batch(vocab: int, pad_left: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (3, 19), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 12:], mask[2, 5:] = 0, 0
    if pad_left:
        mask = mask.flip(1)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("pad_left", [False, True])
def test_summed_token_nll_equals_hf_loss_with_or_without_the_mask(tiny_model: Path, pad_left: bool) -> None:
    model = lora_model(tiny_model)
    batch = padded_batch(model.config.vocab_size, pad_left)
    n_tokens = int((batch["labels"][:, 1:] != -100).sum())
    ours = summed_token_nll(model, **batch) / n_tokens
    ours.backward()
    ours_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    theirs = model(**batch).loss  # HF's own loss, with the padding mask
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    for a, b in zip(ours_grads, (p.grad for p in model.parameters() if p.requires_grad), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fp32_attention_changes_only_autocast_s_attention(tiny_model: Path) -> None:
    batch = padded_batch(512)

    def loss(model: Any, autocast: bool) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return float(summed_token_nll(model, **batch).detach())

    model = lora_model(tiny_model)
    exact, bf16 = loss(model, False), loss(model, True)
    assert use_fp32_attention(model) and model.config._attn_implementation == SDPA_FP32
    assert not use_fp32_attention(model)  # already switched
    assert loss(model, False) == pytest.approx(exact, rel=1e-6)  # in fp32 the same attention
    fp32_attention = loss(model, True)
    assert fp32_attention != bf16 and fp32_attention == pytest.approx(exact, rel=1e-2)
    eager = lora_model(tiny_model, attn_implementation="eager")
    assert not use_fp32_attention(eager)
