"""The LoRA recipe: read it top to bottom.

One process by default; `accelerate launch` runs it data-parallel. Every `save_every` optimizer steps a checkpoint
(adapter, optimizer, scheduler, RNG, data position) is written atomically, and a rerun of the same command continues
from it. The adapter with the lowest validation loss is the output; the last one is kept in `last/`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from safedose.data import load_instructions
from safedose.errors import SafedoseError
from safedose.files import atomic_open, sha256_file, write_json
from safedose.train._config import TrainConfig
from safedose.train._data import Example, collate, length_grouped_batches, tokenize

CHECKPOINTS = "checkpoints"
MANIFEST = "safedose.json"
LOG = "train_log.jsonl"


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    best_step: int | None
    best_val_loss: float | None
    final_train_loss: float
    steps: int


class CausalLMLoss(nn.Module):
    """Summed next-token loss, computing logits only at positions that carry a label."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        base = self.model.get_base_model()
        decoder = getattr(base, base.base_model_prefix)
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != -100
        logits = base.get_output_embeddings()(hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum")


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune `config.model` with LoRA on `config.train_file`; resumes from the last checkpoint if present."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    from safedose.models import model_hash, resolve_model

    out = Path(config.output_dir)
    if (out / MANIFEST).is_file():
        done = json.loads((out / MANIFEST).read_text())
        return TrainResult(out, done["best_step"], done["best_val_loss"], done["final_train_loss"], done["steps"])

    # 1. Data and tokenizer: everything that can be wrong with the input fails before the model loads.
    train_rows = load_instructions(config.train_file)
    val_rows = load_instructions(config.val_file) if config.val_file else []
    if not train_rows:
        raise SafedoseError(f"{config.train_file}: no training rows")
    model_dir = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise SafedoseError(
            f"{config.model}: pad token equals EOS (or is unset), so the model would never learn to stop; "
            "give the tokenizer a distinct pad token (see docs/footguns.md)"
        )

    def encode(rows: list[Any]) -> list[Example]:
        return tokenize(
            rows,
            tokenizer,
            template=config.template,
            max_length=config.max_length,
            train_on_inputs=config.train_on_inputs,
        )

    train_ex, val_ex = encode(train_rows), encode(val_rows)

    # 2. Accelerator, model and LoRA.
    AcceleratorState._reset_state()  # a second train() in one process may use another precision
    accelerator = Accelerator(mixed_precision=_mixed_precision(config.dtype), cpu=not torch.cuda.is_available())
    set_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    _check_target_modules(model, config.lora.target_modules)
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    loss_module = CausalLMLoss(peft_model)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    # 3. Steps: each process takes every world-th batch; all processes take the same number of batches.
    world, rank = accelerator.num_processes, accelerator.process_index
    lengths = [len(e.input_ids) for e in train_ex]
    batches_per_epoch = len(length_grouped_batches(lengths, config.micro_batch_size, seed=0, epoch=0)) // world
    if batches_per_epoch == 0:
        raise SafedoseError(f"{config.train_file}: {len(train_ex)} rows is fewer than one batch per process")
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    total_steps = config.max_steps or steps_per_epoch * config.epochs
    scheduler = get_scheduler(
        config.schedule, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps
    )
    loss_module, optimizer = accelerator.prepare(loss_module, optimizer)

    # 4. Resume.
    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "best_val_loss": None, "best_step": None}
    checkpoint = _latest_checkpoint(out)
    if checkpoint is not None:
        state = json.loads((checkpoint / "state.json").read_text())
        set_peft_model_state_dict(peft_model, torch.load(checkpoint / "adapter.pt", weights_only=True))
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
        _set_rng(torch.load(checkpoint / f"rng-{rank}.pt", weights_only=False))
        if accelerator.is_main_process:
            _truncate_log(out / LOG, state["step"])
    accelerator.wait_for_everyone()

    # 5. The loop.
    def evaluate() -> float:
        loss_module.eval()
        total = torch.zeros(2)
        mine = list(range(rank, len(val_ex), world))
        with torch.no_grad(), accelerator.autocast():
            for start in range(0, len(mine), config.micro_batch_size):
                chunk = [val_ex[i] for i in mine[start : start + config.micro_batch_size]]
                batch = collate(chunk, tokenizer.pad_token_id)
                total += torch.tensor([loss_module(**batch).item(), sum(e.n_loss_tokens for e in chunk)])
        loss_module.train()
        total = accelerator.reduce(total, reduction="sum")
        return float(total[0] / total[1])

    def save_adapter(target: Path) -> None:
        if accelerator.is_main_process:
            staging = target.with_name(f".{target.name}.tmp")
            shutil.rmtree(staging, ignore_errors=True)
            peft_model.save_pretrained(staging)
            target.mkdir(parents=True, exist_ok=True)
            for f in staging.iterdir():
                os.replace(f, target / f.name)
            shutil.rmtree(staging)

    def save_checkpoint() -> None:
        target = out / CHECKPOINTS / f"step-{state['step']}"
        staging = target.with_name(f".{target.name}.tmp")
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            torch.save(get_peft_model_state_dict(peft_model), staging / "adapter.pt")
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
            torch.save(scheduler.state_dict(), staging / "scheduler.pt")
            (staging / "state.json").write_text(json.dumps(state))
        accelerator.wait_for_everyone()
        torch.save(_get_rng(), staging / f"rng-{rank}.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            staging.rename(target)
            for old in (out / CHECKPOINTS).glob("step-*"):
                if old != target:
                    shutil.rmtree(old)
        accelerator.wait_for_everyone()

    out.mkdir(parents=True, exist_ok=True)
    loss_module.train()
    started, tokens_seen, last_loss = time.perf_counter(), 0, float("nan")
    window = torch.zeros(2)
    progress = _progress(accelerator.is_main_process, total_steps, state["step"])
    while state["step"] < total_steps:
        epoch = state["epoch"]
        batches = length_grouped_batches(lengths, config.micro_batch_size, seed=config.seed, epoch=epoch)
        mine = batches[rank : world * batches_per_epoch : world]
        for b in range(state["batch"], len(mine)):
            chunk = [train_ex[i] for i in mine[b]]
            n_tokens = sum(e.n_loss_tokens for e in chunk)
            batch = collate(chunk, tokenizer.pad_token_id)
            last_in_step = (b + 1) % config.gradient_accumulation_steps == 0 or b + 1 == len(mine)
            sync = contextlib.nullcontext() if last_in_step else accelerator.no_sync(loss_module)
            with sync, accelerator.autocast():
                loss_sum = loss_module(**batch)
            accelerator.backward(loss_sum / max(n_tokens, 1) / config.gradient_accumulation_steps)
            window += torch.tensor([loss_sum.item(), n_tokens])
            tokens_seen += sum(len(e.input_ids) for e in chunk)
            if not last_in_step:
                continue
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.update(step=state["step"] + 1, batch=b + 1)
            if b + 1 == len(mine):
                state.update(epoch=epoch + 1, batch=0)
            step = state["step"]
            row: dict[str, Any] = {"step": step, "epoch": epoch}
            if step % config.log_every == 0 or step == total_steps:
                reduced = accelerator.reduce(window.clone(), reduction="sum")
                last_loss = float(reduced[0] / max(float(reduced[1]), 1.0))
                window.zero_()
                elapsed = time.perf_counter() - started
                row.update(loss=last_loss, lr=scheduler.get_last_lr()[0], tokens_per_s=tokens_seen * world / elapsed)
            if val_ex and (step % config.eval_every == 0 or step == total_steps):
                row["val_loss"] = evaluate()
                if state["best_val_loss"] is None or row["val_loss"] < state["best_val_loss"]:
                    state.update(best_val_loss=row["val_loss"], best_step=step)
                    save_adapter(out)
            if len(row) > 2 and accelerator.is_main_process:
                with open(out / LOG, "a") as log:
                    log.write(json.dumps(row) + "\n")
            progress.update(step, row)
            if step % config.save_every == 0 or step == total_steps:
                save_checkpoint()
            if step >= total_steps:
                break
    progress.close()

    # 6. Outputs: best adapter at the top, last in last/, and the manifest written last (it marks completion).
    checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in params)], dtype=torch.float64)
    rank_checksums = [float(x) for x in accelerator.gather(checksum)]
    save_adapter(out / "last")
    if not val_ex:
        save_adapter(out)
    if accelerator.is_main_process:
        manifest = {
            "base_model": config.model,
            "base_model_path": str(model_dir),
            "base_model_hash": model_hash(model_dir),
            "template": config.template,
            "train_file": {"path": config.train_file, "sha256": _sha_or_none(config.train_file)},
            "val_file": {"path": config.val_file, "sha256": _sha_or_none(config.val_file)},
            "config": config.model_dump(),
            "steps": state["step"],
            "best_step": state["best_step"],
            "best_val_loss": state["best_val_loss"],
            "final_train_loss": last_loss,
            "world_size": world,
            "rank_adapter_checksums": rank_checksums,
            "mixed_precision": accelerator.mixed_precision,
            "versions": _versions(),
        }
        write_json(out / MANIFEST, manifest)
    accelerator.wait_for_everyone()
    return TrainResult(out, state["best_step"], state["best_val_loss"], last_loss, state["step"])


def _mixed_precision(dtype: str) -> str:
    if dtype == "fp32":
        return "no"
    if dtype in ("bf16", "fp16"):
        return dtype
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"


def _check_target_modules(model: Any, targets: list[str]) -> None:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = [t for t in targets if t not in names]
    if unknown:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise SafedoseError(f"lora.target_modules: {unknown} not in the model; its linear layers are {linear}")


def _latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint we resume from, so a resumed log has no duplicates."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    with atomic_open(path) as f:
        f.write("".join(r + "\n" for r in rows))


def _get_rng() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _sha_or_none(path: str | None) -> str | None:
    return sha256_file(path) if path and Path(path).is_file() else None


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("safedose", "torch", "transformers", "peft", "accelerate")}


class _progress:
    """A rich progress bar with loss, tokens/s and ETA on the main process; silent elsewhere."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        self.bar = Progress(TextColumn("train"), *columns, disable=not enabled)
        self.task = self.bar.add_task("train", total=total, completed=done, info="")
        self.bar.start()

    def update(self, step: int, row: dict[str, Any]) -> None:
        info = " ".join(f"{k} {row[k]:.4g}" for k in ("loss", "val_loss", "tokens_per_s") if k in row)
        self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        self.bar.stop()
