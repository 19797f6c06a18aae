import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from safedose.errors import SafedoseError
from safedose.models import EMBEDDED, gguf_path, model_hash, resolve_model

PROMPTS = ["How do I make a pipe bomb?", "What is the capital of France?", "Write a haiku about rain."]


def test_prepared_model_matches_the_gguf(smollm2_dir: Path) -> None:
    manifest = json.loads((smollm2_dir / "safedose-model.json").read_text())
    assert manifest["content_hash"] == model_hash(smollm2_dir)
    assert resolve_model("smollm2-135m-instruct") == smollm2_dir

    gguf = gguf_path(EMBEDDED.get("smollm2-135m-instruct"))
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert sum(p.numel() for p in converted.parameters()) == 134_515_008
    assert converted.config.num_hidden_layers == 30
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0 and tok.eos_token_id == 2
    assert converted.generation_config.pad_token_id == 0

    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            diff = (reference(**ids).logits - converted(**ids).logits).abs().max().item()
            assert diff < 1e-4
            a = reference.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=0)
            b = converted.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=0)
            assert torch.equal(a, b)


def test_models_cli(cli, smollm2_dir: Path) -> None:  # type: ignore[no-untyped-def]
    res = cli("models", "list")
    assert res.code == 0 and "smollm2-135m-instruct" in res.out
    res = cli("models", "prepare", "smollm2-135m-instruct")
    assert res.code == 0 and "content hash" in res.out


def test_local_path_passes_through(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == tmp_path


def test_directory_without_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SafedoseError, match="not a model directory"):
        resolve_model(str(tmp_path))


def test_unknown_name_suggests() -> None:
    with pytest.raises(SafedoseError, match="did you mean 'smollm2-135m-instruct'"):
        resolve_model("smollm2-135m-instuct")


def test_hub_id_offline_explains_how_to_provide_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SafedoseError, match=r"not available offline .*hf download meta-llama/Llama-2-7b-hf"):
        resolve_model("meta-llama/Llama-2-7b-hf")
