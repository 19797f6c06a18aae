"""The large-model settings: base dtype, 4-bit base, gradient checkpointing, accelerate config, trackers."""

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from safedose.errors import SafedoseError
from safedose.train import RECIPE_VERSION, check_requirements, fingerprint, fingerprint_inputs, parse_config, train
from tests.train.test_train import config, log_rows

# The fingerprint of the default settings before the large-model settings existed (train_file absent, base hash and
# precision fixed, recipe version 2): adding settings must not move it, or every finished adapter would be trained
# again. A new recipe version moves every fingerprint on purpose, so it is held at the pinned one here.
PINNED = "69427b25bd55e52cd10c6960339e1f19b74cf2138ce4b6ddaf3b5d1a02827b80"
PINNED_RECIPE_VERSION = 2

MULTI_PROCESS = {"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU", "num_processes": 2,
                 "num_machines": 1, "machine_rank": 0, "mixed_precision": "no", "dynamo_config": {},
                 "rdzv_backend": "static", "same_network": True, "use_cpu": False}  # fmt: skip


def _inputs(**extra: Any) -> dict[str, Any]:
    settings = parse_config({"train_file": "/nonexistent/t.json", "output_dir": "o", **extra})
    inputs = fingerprint_inputs(settings, base_model_hash="0" * 64, mixed_precision="bf16")
    assert inputs["recipe_version"] == RECIPE_VERSION
    return {**inputs, "recipe_version": PINNED_RECIPE_VERSION}


def test_fingerprints_of_earlier_settings_do_not_move(tmp_path: Path) -> None:
    assert fingerprint(_inputs()) == PINNED
    assert fingerprint(_inputs(log_with="tensorboard")) == PINNED  # where logs go decides nothing
    unset = {"base_dtype": None, "load_in_4bit": False, "gradient_checkpointing": False, "accelerate_config": None}
    assert fingerprint(_inputs(**unset)) == PINNED
    accelerate = tmp_path / "accelerate.yaml"
    accelerate.write_text(yaml.safe_dump(MULTI_PROCESS))
    for key, value in [("base_dtype", "bf16"), ("load_in_4bit", True), ("gradient_checkpointing", True)]:
        inputs = _inputs(**{key: value})
        assert inputs[key] == value and fingerprint(inputs) != PINNED
    inputs = _inputs(accelerate_config=str(accelerate))
    assert "accelerate_config" not in inputs and len(inputs["accelerate_config_sha256"]) == 64


def test_accelerate_configs_are_checked_when_read(tmp_path: Path) -> None:
    with pytest.raises(SafedoseError, match=r"accelerate_config: .*missing\.yaml: no such file"):
        parse_config({"train_file": "t", "output_dir": "o", "accelerate_config": str(tmp_path / "missing.yaml")})
    for bad, needle in [({**MULTI_PROCESS, "distributed_type": "FSDP"}, "distributed_type FSDP is not supported"),
                        ({**MULTI_PROCESS, "distributed_type": "DEEPSPEED"}, "DEEPSPEED is not supported"),
                        ([1, 2], "not an accelerate config")]:  # fmt: skip
        path = tmp_path / "a.yaml"
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(SafedoseError, match=needle):
            parse_config({"train_file": "t", "output_dir": "o", "accelerate_config": str(path)})


def test_4bit_base_and_trackers_say_what_they_need(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    settings = parse_config({"train_file": "t", "output_dir": "o", "load_in_4bit": True})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = r"^load_in_4bit: QLoRA's 4-bit base needs a CUDA GPU; this machine has none$"
    with pytest.raises(SafedoseError, match=message):
        check_requirements(settings)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if "bitsandbytes" in name or
                        name.startswith(("tensorboard", "wandb")) else real(name))  # fmt: skip
    with pytest.raises(SafedoseError, match=r"pip install 'safedose\[qlora\]'"):
        check_requirements(settings)
    for tracker, needle in [("tensorboard", r"safedose\[tensorboard\]"), ("wandb", "pip install wandb")]:
        with pytest.raises(SafedoseError, match=needle):
            check_requirements(parse_config({"train_file": "t", "output_dir": "o", "log_with": tracker}))


def test_gradient_checkpointing_and_a_bf16_base_train(
    tiny_model: Path, tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    plain = train(parse_config(config(tiny_model, tiny_data, tmp_path / "plain", max_steps=3)))
    checkpointed = train(parse_config(config(tiny_model, tiny_data, tmp_path / "gc", max_steps=3,
                                             gradient_checkpointing=True)))  # fmt: skip
    # recomputing activations changes memory, not the numbers
    assert checkpointed.final_train_loss == pytest.approx(plain.final_train_loss, abs=1e-5)
    assert checkpointed.best_val_loss == pytest.approx(plain.best_val_loss, abs=1e-5)
    manifest = json.loads((tmp_path / "gc" / "safedose.json").read_text())
    assert manifest["fingerprint_inputs"]["gradient_checkpointing"] is True
    plain_inputs = json.loads((tmp_path / "plain" / "safedose.json").read_text())["fingerprint_inputs"]
    assert "gradient_checkpointing" not in plain_inputs
    half = train(parse_config(config(tiny_model, tiny_data, tmp_path / "bf16", max_steps=3, base_dtype="bf16")))
    assert half.final_train_loss == pytest.approx(plain.final_train_loss, rel=0.03)  # bf16 weights, fp32 LoRA
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "bf16" / "last" / "adapter_model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


def _scalars(events: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalar summaries of a TensorBoard event file (TFRecord framing: length, crc, Event proto, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    data, pos, out = events.read_bytes(), 0, {}  # type: ignore[var-annotated]
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        event = Event.FromString(data[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_log_with_tensorboard_writes_events_beside_train_log(
    tiny_model: Path, tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    pytest.importorskip("tensorboardX")
    out = tmp_path / "run"
    train(parse_config(config(tiny_model, tiny_data, out, max_steps=4, eval_every=2, log_with="tensorboard")))
    rows = log_rows(out)  # the run dir's log stays, whole
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in (out / "trackers").rglob("events.out.tfevents.*"):
        for tag, values in _scalars(events).items():
            scalars.setdefault(tag, []).extend(values)
    assert [step for step, _ in scalars["loss"]] == [1, 2, 3, 4]
    assert [v for _, v in scalars["loss"]] == pytest.approx([r["loss"] for r in rows], rel=1e-5)
    assert [step for step, _ in scalars["val_loss"]] == [2, 4]


def test_accelerate_config_launches_the_processes_it_names(
    tiny_model: Path, tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    accelerate = tmp_path / "accelerate.yaml"
    accelerate.write_text(yaml.safe_dump(MULTI_PROCESS))
    out = tmp_path / "ddp"
    result = train(parse_config(config(tiny_model, tiny_data, out, max_steps=2, accelerate_config=str(accelerate))))
    manifest = json.loads((out / "safedose.json").read_text())
    assert result.steps == 2 and manifest["world_size"] == 2
    assert manifest["accelerate_config"]["settings"]["num_processes"] == 2
    assert manifest["fingerprint_inputs"]["accelerate_config_sha256"] == manifest["accelerate_config"]["sha256"]
    a, b = manifest["rank_adapter_checksums"]
    assert a == b
