"""Frozen linear weights (a tied LM head too) stored in the autocast dtype: the same losses and LoRA gradients, bit for
bit."""

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from safedose.train import frozen_linears_to, summed_token_nll


def lora_model(path: Path, **overrides: Any) -> Any:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **overrides)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(model, config).train()


def loss_and_grads(model: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 200, (3, 17), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100
    torch.manual_seed(2)  # the same dropout masks
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = summed_token_nll(model, ids, torch.ones_like(ids), labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("tied", [True, False])
def test_bf16_frozen_linears_give_bit_identical_losses_and_grads(tiny_model: Path, tied: bool) -> None:
    reference, cast = lora_model(tiny_model, tie_word_embeddings=tied), lora_model(tiny_model, tie_word_embeddings=tied)
    # 2 layers x (q, k, v, o, gate, up, down) and the LM head; a tied head gets a bf16 copy of the embedding matrix
    assert frozen_linears_to(cast, torch.bfloat16) == 15
    dtypes = {n: p.dtype for n, p in cast.named_parameters(remove_duplicate=False)}
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n or "embed" in n or "norm" in n)
    assert dtypes["base_model.model.model.layers.0.mlp.up_proj.weight"] == torch.bfloat16
    head, embedding = cast.get_output_embeddings().weight, cast.get_input_embeddings().weight
    assert head.dtype == torch.bfloat16 and not head.requires_grad and embedding.dtype == torch.float32
    assert torch.equal(head, embedding.to(torch.bfloat16)) == tied and head.data_ptr() != embedding.data_ptr()
    loss, grads = loss_and_grads(reference)
    cast_loss, cast_grads = loss_and_grads(cast)
    assert torch.equal(loss, cast_loss)
    assert grads.keys() == cast_grads.keys() and len(grads) == 16
    assert all(torch.equal(grads[n], cast_grads[n]) for n in grads)
    assert any(g.abs().sum() > 0 for g in grads.values())
