from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma2Config, Gemma2ForCausalLM

from safedose.data import InstructionRecord, load_instructions
from safedose.train import mean_token_nll
from safedose.train._data import collate, tokenize


def rows(n: int) -> list[InstructionRecord]:
    return [InstructionRecord(id=f"r{i}", instruction=f"Describe item {i}" + " in detail" * (i % 3),
                              output=f"Item {i} is " + "quite " * (i % 4) + "useful.", source="t")
            for i in range(n)]  # fmt: skip


def hf_mean_loss(model: Any, tokenizer: Any, records: list[InstructionRecord], max_length: int) -> float:
    """HF's own mean loss over all response tokens, in one batch."""
    examples = tokenize(records, tokenizer, template="alpaca", max_length=max_length, train_on_inputs=False)
    with torch.no_grad():
        return float(model(**collate(examples, tokenizer.pad_token_id)).loss)


def head_only_nll(model: Any, tokenizer: Any, records: list[InstructionRecord]) -> float:
    """The decoder's hidden states through the output embeddings alone: what skips the model's own head."""
    batch = collate(tokenize(records, tokenizer, template="alpaca", max_length=512, train_on_inputs=False), 0)
    with torch.no_grad():
        hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = model.get_output_embeddings()(hidden[:, :-1])
    return float(F.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten()))


@pytest.fixture(scope="module")
def softcapped(smollm2_dir: Path) -> tuple[Any, Any]:
    """A tiny random Gemma 2 with a strong final logit soft-cap, and SmolLM2's tokenizer."""
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, final_logit_softcapping=3.0, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, initializer_range=0.2,
    )  # fmt: skip
    return Gemma2ForCausalLM(config).eval(), tok


def test_mean_token_nll_equals_hf_loss_through_a_soft_capped_head(softcapped: tuple[Any, Any]) -> None:
    model, tok = softcapped
    records = rows(7)
    ours = mean_token_nll(model, tok, records, template="alpaca", max_length=512, batch_size=3)
    assert ours == pytest.approx(hf_mean_loss(model, tok, records, 512), abs=1e-5)
    assert abs(ours - head_only_nll(model, tok, records)) > 0.1  # the soft-cap matters on this model


def test_mean_token_nll_uses_the_callers_max_length(softcapped: tuple[Any, Any]) -> None:
    model, tok = softcapped
    records = rows(5)
    short = mean_token_nll(model, tok, records, template="alpaca", max_length=40)
    assert short == pytest.approx(hf_mean_loss(model, tok, records, 40), abs=1e-5)
    assert short != pytest.approx(mean_token_nll(model, tok, records, template="alpaca", max_length=512), abs=1e-4)


@pytest.mark.slow
def test_mean_token_nll_equals_hf_loss_on_smollm2(smollm2_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    records = load_instructions("alpaca-tiny")[:10]
    ours = mean_token_nll(model, tok, records, template="alpaca", max_length=256, batch_size=4)
    assert ours == pytest.approx(hf_mean_loss(model, tok, records, 256), abs=1e-5)
