import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from safedose.data import load_instructions
from safedose.errors import SafedoseError
from safedose.templates import render_prompt
from safedose.train import CausalLMLoss, load_config, parse_config, tokenize, train
from safedose.train._data import Example, collate

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def config(tiny_model: Path, tiny_data: tuple[Path, Path], out: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model": str(tiny_model), "train_file": str(tiny_data[0]), "val_file": str(tiny_data[1]),
        "output_dir": str(out), "lr": 3e-2, "epochs": 3, "micro_batch_size": 8, "max_length": 64,
        "eval_every": 5, "save_every": 5, "dtype": "fp32",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ALL_LINEAR},
        **extra,
    }  # fmt: skip


def log_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_alpaca_template_matches_the_reference_strings() -> None:
    for r in load_instructions("alpaca-tiny"):
        expected = next(x for x in json.loads(_alpaca_tiny().read_text()) if x["instruction"] == r.instruction)
        assert render_prompt("alpaca", r.instruction, r.input, None) + r.output == expected["text"]


def _alpaca_tiny() -> Path:
    from safedose.paths import data_root

    return data_root() / "instruction-tuning/alpaca-tiny-torchtune/alpaca_tiny.json"


def test_labels_mask_the_prompt_unless_asked(tiny_model: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model)
    (row,) = load_instructions("alpaca-tiny")[:1]
    (ex,) = tokenize([row], tok, template="chat", max_length=512, train_on_inputs=False)
    prompt_len = len(tok(render_prompt("chat", row.instruction, "", tok), add_special_tokens=False)["input_ids"])
    assert ex.labels[:prompt_len] == [-100] * prompt_len
    assert ex.labels[prompt_len:] == ex.input_ids[prompt_len:]
    assert ex.input_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    (full,) = tokenize([row], tok, template="chat", max_length=16, train_on_inputs=True)
    assert full.labels == full.input_ids and len(full.input_ids) == 16


def test_training_lowers_loss_and_writes_a_peft_adapter(
    tiny_model: Path, tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = train(parse_config(config(tiny_model, tiny_data, out)))
    rows = log_rows(out)
    assert [r["step"] for r in rows] == list(range(1, result.steps + 1)) and result.steps == 30
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
    vals = [(r["val_loss"], r["step"]) for r in rows if "val_loss" in r]
    assert (result.best_val_loss, result.best_step) == min(vals)
    manifest = json.loads((out / "safedose.json").read_text())
    assert manifest["template"] == "alpaca" and manifest["best_step"] == result.best_step
    assert len(manifest["base_model_hash"]) == 64 and len(manifest["train_file"]["sha256"]) == 64
    ids = torch.tensor([[1, 2, 3, 4]])
    best = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out)
    with torch.no_grad():
        tuned = best(ids).logits
        with best.disable_adapter():
            untouched = best(ids).logits
    assert not torch.allclose(tuned, untouched)
    last = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "last")
    with torch.no_grad():
        assert torch.allclose(last(ids).logits, tuned) == (result.best_step == result.steps)
    again = train(parse_config(config(tiny_model, tiny_data, out)))  # finished: returns at once
    assert again.steps == result.steps and len(log_rows(out)) == len(rows)


def test_kill_and_resume_equals_an_uninterrupted_run(
    tiny_model: Path, tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    settings = dict(epochs=8, micro_batch_size=4, save_every=3, eval_every=10)
    straight = train(parse_config(config(tiny_model, tiny_data, tmp_path / "straight", **settings)))
    cfg_path = tmp_path / "resume.yaml"
    out = tmp_path / "resumed"
    cfg_path.write_text(yaml.safe_dump(config(tiny_model, tiny_data, out, **settings)))
    cmd = [sys.executable, "-m", "safedose", "train", str(cfg_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((out / "checkpoints").glob("step-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "safedose.json").exists(), "the run finished before it could be killed"
    resumed_from = max(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))
    assert 0 < resumed_from < straight.steps
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = json.loads((out / "safedose.json").read_text())
    assert resumed["steps"] == straight.steps
    assert abs(resumed["final_train_loss"] - straight.final_train_loss) < 1e-3
    assert abs(resumed["best_val_loss"] - straight.best_val_loss) < 1e-3
    assert [r["step"] for r in log_rows(out)] == list(range(1, straight.steps + 1))
    for sub in ("", "last"):  # the weights themselves, best and last, not only the losses
        a = load_file(tmp_path / "straight" / sub / "adapter_model.safetensors")
        b = load_file(out / sub / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_two_process_data_parallel_run(tiny_model: Path, tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(config(tiny_model, tiny_data, out, epochs=2)))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "safedose", "train", str(cfg_path)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "safedose.json").read_text())
    assert manifest["world_size"] == 2
    a, b = manifest["rank_adapter_checksums"]
    assert a == b, "ranks drifted apart"
    assert [r["step"] for r in log_rows(out)] == list(range(1, manifest["steps"] + 1))  # written once
    assert manifest["steps"] == 2 * (80 // 8 // 2)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-{manifest['steps']}"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr=-1", "lr: Input should be greater than 0"),
        ("template=alpacca", "did you mean 'alpaca'"),
        ("lora.r=0", "lora.r: Input should be greater than 0"),
        ("bogus=1", "override 'bogus=1': bogus: unknown key; valid keys here: "),
    ],
)
def test_bad_config_values_fail_before_training(tmp_path: Path, override: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train_file": "x.json", "output_dir": str(tmp_path / "o")}))
    with pytest.raises(SafedoseError, match=message):
        load_config(path, [override])


def test_unknown_target_modules_and_empty_data(tiny_model: Path, tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = config(tiny_model, tiny_data, tmp_path / "o", lora={"target_modules": ["query_key_value"]})
    with pytest.raises(SafedoseError, match=r"lora.target_modules: \['query_key_value'\] not in the model"):
        train(parse_config(cfg))
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(SafedoseError, match="no training rows"):
        train(parse_config({**cfg, "train_file": str(empty)}))
    assert not (tmp_path / "o").exists()


def test_train_cli_reports_bad_config(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.yaml"
    path.write_text("train_file: [unclosed\n")
    res = cli("train", path)
    assert res.code == 2 and res.err.startswith(f"error: {path}: malformed YAML")


@pytest.mark.parametrize("name", ["paper-llama7b.yaml", "smollm2-lora.yaml"])
def test_shipped_configs_validate_and_start_with_their_command(name: str) -> None:
    path = Path(__file__).parents[2] / "configs" / name
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "safedose train configs/" + name in first
    assert load_config(path).lora.r == 8


def loss_batch(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded rows of different lengths whose prompts carry no label."""
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for n, n_prompt in ((12, 5), (7, 3), (10, 9), (4, 1)):
        ids = torch.randint(3, vocab, (n,), generator=gen).tolist()
        examples.append(Example(ids, [-100] * n_prompt + ids[n_prompt:]))
    return collate(examples, 0)


def test_causal_lm_loss_equals_hf_mean_loss_through_a_soft_capped_head() -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, final_logit_softcapping=3.0,
                          pad_token_id=0, initializer_range=0.2)  # fmt: skip
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(Gemma2ForCausalLM(config), lora)
    batch = loss_batch(256)
    n_tokens = int((batch["labels"][:, 1:] != -100).sum())
    ours = CausalLMLoss(model)(**batch) / n_tokens
    ours.backward()
    ours_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    theirs = model(**batch).loss
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    for a, b in zip(ours_grads, (p.grad for p in model.parameters() if p.requires_grad), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():  # the head alone (no soft-cap) gives another loss: the model's own forward matters
        hidden = model.get_base_model().model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = model.get_base_model().lm_head(hidden.last_hidden_state[:, :-1])
        uncapped = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten())
    assert abs(uncapped.item() - theirs.item()) > 0.1


@pytest.mark.slow
def test_causal_lm_loss_equals_hf_mean_loss_on_smollm2(smollm2_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")).eval()
    examples = tokenize(load_instructions("alpaca-tiny")[:6], tok, template="alpaca", max_length=128,
                        train_on_inputs=False)  # fmt: skip
    batch = collate(examples, tok.pad_token_id)
    with torch.no_grad():
        ours = CausalLMLoss(model)(**batch) / sum(e.n_loss_tokens for e in examples)
        assert float(ours) == pytest.approx(float(model(**batch).loss), abs=1e-5)
