"""The LoRA recipe: read it top to bottom.

One process by default; `accelerate launch` runs it data-parallel, and a config with `accelerate_config` launches
itself that way. Every `save_every` optimizer steps a checkpoint (adapter, optimizer, scheduler, RNG, data position)
is written atomically, and a rerun of the same command continues from it. The adapter with the lowest validation
loss is the output; the last one is kept in `last/`.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import yaml

from safedose.errors import SafedoseError
from safedose.files import sha256_file, write_json
from safedose.models import model_hash, resolve_model
from safedose.train._checkpoint import resume, save_adapter
from safedose.train._config import TrainConfig, check_accelerate_config
from safedose.train._fingerprint import FINGERPRINT_FILE, _flatten, fingerprint, fingerprint_inputs
from safedose.train._loop import train_loop
from safedose.train._outputs import MANIFEST, TRACKERS, TrainResult, clear, holds_other_run, read_result
from safedose.train._setup import Session, check_requirements, mixed_precision, setup

# Set by every `accelerate launch` in the processes it starts.
LAUNCHED_ENV = "ACCELERATE_MIXED_PRECISION"


def train(config: TrainConfig, *, force: bool = False) -> TrainResult:
    """Fine-tune `config.model` with LoRA on `config.train_file`; resumes from the last checkpoint if present.

    A finished (or partly trained) `output_dir` is reused only when its fingerprint matches `config`; otherwise
    this is an error naming the settings that differ, unless `force` starts the run afresh. With
    `accelerate_config`, outside an `accelerate launch`, it runs itself under `accelerate launch --config_file`.
    The model's memory is given back before it returns (the sweep's next step needs the device).
    """
    try:
        return _train(config, force=force)
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train(config: TrainConfig, *, force: bool) -> TrainResult:
    check_requirements(config)
    # 0. What decides this adapter, and whether `output_dir` already holds it (finished or in part).
    out = Path(config.output_dir)
    model_dir = resolve_model(config.model)
    precision = mixed_precision(config.dtype)
    inputs = fingerprint_inputs(config, base_model_hash=model_hash(model_dir), mixed_precision=precision)
    digest = fingerprint(inputs)
    if holds_other_run(out, inputs, digest, force=force):
        clear(out)
    if (out / MANIFEST).is_file():
        return read_result(out)
    if config.accelerate_config and LAUNCHED_ENV not in os.environ:
        return _launch(config, force=force)

    # 1. Data, model with LoRA, optimizer and schedule; 2. resume from the latest checkpoint.
    s = setup(config, out, model_dir, precision)
    resume(s)

    # 3. The loop, after the fingerprint is on disk (a partial run is recognised by it).
    out.mkdir(parents=True, exist_ok=True)
    if s.accelerator.is_main_process and not (out / FINGERPRINT_FILE).is_file():
        write_json(out / FINGERPRINT_FILE, {"fingerprint": digest, "inputs": inputs})
    s.accelerator.wait_for_everyone()
    if config.log_with:
        (out / TRACKERS).mkdir(exist_ok=True)
        s.accelerator.init_trackers("safedose", config=_tracker_config(config),
                                    init_kwargs={"wandb": {"name": out.name, "dir": str(out / TRACKERS)}})  # fmt: skip
    last_loss = train_loop(s)

    # 4. Outputs: best adapter at the top, last in last/, and the manifest written last (it marks completion).
    checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in s.params)], dtype=torch.float64)
    rank_checksums = [float(x) for x in s.accelerator.gather(checksum)]
    save_adapter(s, out / "last")
    if not s.val_ex:
        save_adapter(s, out)
    if s.accelerator.is_main_process:
        write_json(out / MANIFEST, _manifest(s, model_dir, digest, inputs, last_loss, rank_checksums))
    s.accelerator.wait_for_everyone()
    if config.log_with:
        s.accelerator.end_training()
    s.accelerator.free_memory()
    return TrainResult(out, s.state["best_step"], s.state["best_val_loss"], last_loss, s.state["step"])


def _manifest(s: Session, model_dir: Path, digest: str, inputs: dict[str, Any], last_loss: float,
              rank_checksums: list[float]) -> dict[str, Any]:  # fmt: skip
    """What `safedose.json` records of a finished run."""
    config = s.config
    return {
        "base_model": config.model,
        "base_model_path": str(model_dir),
        "base_model_hash": model_hash(model_dir),
        "template": config.template,
        "train_file": {"path": config.train_file, "sha256": _sha_or_none(config.train_file)},
        "val_file": {"path": config.val_file, "sha256": _sha_or_none(config.val_file)},
        "config": config.model_dump(),
        "fingerprint": digest,
        "fingerprint_inputs": inputs,
        "steps": s.state["step"],
        "best_step": s.state["best_step"],
        "best_val_loss": s.state["best_val_loss"],
        "final_train_loss": last_loss,
        "world_size": s.world,
        "rank_adapter_checksums": rank_checksums,
        "mixed_precision": s.accelerator.mixed_precision,
        "accelerate_config": _accelerate_config_record(config),
        "versions": {p: version(p) for p in ("safedose", "torch", "transformers", "peft", "accelerate")},
    }


def _launch(config: TrainConfig, *, force: bool) -> TrainResult:
    """Train under `accelerate launch --config_file` in child processes; the finished output_dir is the result."""
    assert config.accelerate_config is not None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.yaml"
        path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config.accelerate_config,
               "-m", "safedose", "train", str(path), *(["--force"] if force else [])]  # fmt: skip
        done = subprocess.run(cmd, check=False)
    if done.returncode != 0 or not (Path(config.output_dir) / MANIFEST).is_file():
        raise SafedoseError(f"accelerate launch --config_file {config.accelerate_config}: training exited with code "
                            f"{done.returncode} (its output is above); rerun to resume")  # fmt: skip
    return read_result(Path(config.output_dir))


def _accelerate_config_record(config: TrainConfig) -> dict[str, Any] | None:
    if not config.accelerate_config:
        return None
    path = Path(config.accelerate_config).expanduser()
    return {"path": str(path), "sha256": sha256_file(path), "settings": check_accelerate_config(str(path))}


def _tracker_config(config: TrainConfig) -> dict[str, Any]:
    """The settings as scalars, as trackers' hyperparameter tables want them."""
    flat = _flatten(config.model_dump(mode="json"))
    return {k: v if isinstance(v, int | float | str | bool) else json.dumps(v) for k, v in flat.items()}


def _sha_or_none(path: str | None) -> str | None:
    return sha256_file(path) if path and Path(path).is_file() else None
