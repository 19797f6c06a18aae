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


def _fake_hub_cache(root: Path, repo_id: str, commit: str) -> Path:
    """The HF cache layout of one snapshot: models--ORG--NAME/{refs/main, snapshots/<commit>/config.json}."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "llama"}')
    (snapshot / "model.safetensors").write_bytes(b"weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_a_hub_model_is_identified_by_its_snapshot_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from huggingface_hub import constants

    import safedose.models._resolve as resolve

    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = _fake_hub_cache(tmp_path / "hub", "org/name", commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = resolve_model("org/name")
    assert found.resolve() == snapshot.resolve()
    assert resolve.local_model_dir("org/name") == found and resolve.local_model_dir("org/other") is None

    def no_rehash(path: Path) -> str:
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(resolve, "content_hash", no_rehash)
    assert model_hash(found) == commit and resolve.snapshot_commit(found) == commit
    # a local copy of the same files is a local directory: its content hash, as before
    copy = tmp_path / "copy"
    shutil.copytree(snapshot, copy)
    monkeypatch.undo()
    assert resolve.snapshot_commit(copy) is None and len(model_hash(copy)) == 64


def test_local_model_dir_checks_names_without_preparing(tmp_path: Path) -> None:
    from safedose.models import local_model_dir

    (tmp_path / "config.json").write_text("{}")
    assert local_model_dir(str(tmp_path)) == tmp_path
    with pytest.raises(SafedoseError, match="did you mean 'smollm2-135m-instruct'"):
        local_model_dir("smollm2-135m-instuct")
    with pytest.raises(SafedoseError, match=r"no config\.json"):
        local_model_dir(str(tmp_path.parent))
