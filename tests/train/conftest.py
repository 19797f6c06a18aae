from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from tests.conftest import write_json


@pytest.fixture(scope="session")
def tiny_model(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=True, initializer_range=0.3,  # large enough embeddings for a frozen head to be learnable
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small, learnable instruction set: the answer repeats a word from the instruction."""
    out = tmp_path_factory.mktemp("tiny-data")
    words = ["apple", "river", "stone", "cloud", "maple", "tiger", "piano", "ocean"]
    rows = [
        {"id": f"r{i}", "instruction": f"Repeat the word {w} three times.", "input": "", "output": f"{w} {w} {w}"}
        for i, w in enumerate(words * 12)
    ]
    return write_json(out / "train.json", rows[:80]), write_json(out / "val.json", rows[80:])
