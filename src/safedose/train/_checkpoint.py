"""Checkpoints: every `save_every` optimizer steps the adapter, optimizer, scheduler, RNG and data position are
written atomically, and a rerun resumes from the latest one."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from safedose.files import honour_umask
from safedose.train._outputs import CHECKPOINTS, LOG, latest_checkpoint, truncate_log
from safedose.train._setup import Session


def resume(s: Session) -> None:
    """Load the latest checkpoint in `s.out`, if any, into the session; the log loses rows written after it."""
    from peft import set_peft_model_state_dict  # peft: loaded only when a model is trained

    checkpoint = latest_checkpoint(s.out)
    if checkpoint is not None:
        s.state = json.loads((checkpoint / "state.json").read_text())
        set_peft_model_state_dict(s.peft_model, torch.load(checkpoint / "adapter.pt", weights_only=True))
        s.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        s.scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
        _set_rng(torch.load(checkpoint / f"rng-{s.rank}.pt", weights_only=False))
        if s.accelerator.is_main_process:
            truncate_log(s.out / LOG, s.state["step"])
    s.accelerator.wait_for_everyone()


def save_checkpoint(s: Session) -> None:
    """Write `checkpoints/step-N` (each process its own RNG state) and remove the older ones."""
    from peft import get_peft_model_state_dict  # peft: loaded only when a model is trained

    accelerator = s.accelerator
    target = s.out / CHECKPOINTS / f"step-{s.state['step']}"
    staging = target.with_name(f".{target.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        torch.save(get_peft_model_state_dict(s.peft_model), staging / "adapter.pt")
        torch.save(s.optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(s.scheduler.state_dict(), staging / "scheduler.pt")
        (staging / "state.json").write_text(json.dumps(s.state))
    accelerator.wait_for_everyone()
    torch.save(_get_rng(), staging / f"rng-{s.rank}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        staging.rename(target)
        for old in (s.out / CHECKPOINTS).glob("step-*"):
            if old != target:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def save_adapter(s: Session, target: Path) -> None:
    """The adapter's files into `target`, each replaced atomically (main process only)."""
    if s.accelerator.is_main_process:
        staging = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        s.peft_model.save_pretrained(staging)
        honour_umask(staging)  # safetensors writes 0600
        target.mkdir(parents=True, exist_ok=True)
        for f in staging.iterdir():
            os.replace(f, target / f.name)
        shutil.rmtree(staging)


def _get_rng() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
