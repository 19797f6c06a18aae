"""The training loop: micro-batches accumulated into optimizer steps, the log, validation and checkpoints."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import torch

from safedose.train._checkpoint import save_adapter, save_checkpoint
from safedose.train._data import collate, length_grouped_batches
from safedose.train._outputs import LOG
from safedose.train._setup import Session


def train_loop(s: Session) -> float:
    """Optimizer steps from the session's position to `s.total_steps`; returns the last logged training loss.

    Each step's gradient is that of the mean over all its loss tokens (over its micro-batches and the processes).
    The adapter with the lowest validation loss is saved to `s.out` as it appears.
    """
    config, accelerator, state = s.config, s.accelerator, s.state
    world, rank = s.world, s.rank
    s.loss_module.train()
    started, tokens_seen, last_loss = time.perf_counter(), 0, float("nan")
    window = torch.zeros(2)
    progress = _progress(accelerator.is_main_process, s.total_steps, state["step"])
    ga = config.gradient_accumulation_steps
    while state["step"] < s.total_steps:
        epoch = state["epoch"]
        batches = length_grouped_batches(s.lengths, config.micro_batch_size, seed=config.seed, epoch=epoch)
        mine = batches[rank : world * s.batches_per_epoch : world]
        first = state["batch"]
        for b in range(first, len(mine)):
            chunk = [s.train_ex[i] for i in mine[b]]
            n_tokens = sum(e.n_loss_tokens for e in chunk)
            batch = collate(chunk, s.tokenizer.pad_token_id)
            if b == first or b % ga == 0:  # a step starts: count its loss tokens over its micro-batches and the ranks
                local = sum(s.train_ex[i].n_loss_tokens for m in mine[b : (b // ga + 1) * ga] for i in m)
                step_tokens = _global_count(accelerator, local)
            last_in_step = (b + 1) % ga == 0 or b + 1 == len(mine)
            sync = contextlib.nullcontext() if last_in_step else accelerator.no_sync(s.loss_module)
            with sync, accelerator.autocast():
                loss_sum = s.loss_module(**batch)
            # the step's gradient is that of the mean over all its loss tokens (DDP averages over ranks: times world)
            accelerator.backward(loss_sum * world / max(step_tokens, 1))
            window += torch.tensor([loss_sum.item(), n_tokens])
            tokens_seen += sum(len(e.input_ids) for e in chunk)
            if not last_in_step:
                continue
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(s.params, config.max_grad_norm)
            s.optimizer.step()
            s.scheduler.step()
            s.optimizer.zero_grad(set_to_none=True)
            state.update(step=state["step"] + 1, batch=b + 1)
            if b + 1 == len(mine):
                state.update(epoch=epoch + 1, batch=0)
            step = state["step"]
            row: dict[str, Any] = {"step": step, "epoch": epoch}
            if step % config.log_every == 0 or step == s.total_steps:
                reduced = accelerator.reduce(window.clone(), reduction="sum")
                last_loss = float(reduced[0] / max(float(reduced[1]), 1.0))
                window.zero_()
                elapsed = time.perf_counter() - started
                row.update(loss=last_loss, lr=s.scheduler.get_last_lr()[0], tokens_per_s=tokens_seen * world / elapsed)
            if s.val_ex and (step % config.eval_every == 0 or step == s.total_steps):
                row["val_loss"] = validation_loss(s)
                if state["best_val_loss"] is None or row["val_loss"] < state["best_val_loss"]:
                    state.update(best_val_loss=row["val_loss"], best_step=step)
                    save_adapter(s, s.out)
            _log(s, row)
            progress.update(step, row)
            if step % config.save_every == 0 or step == s.total_steps:
                save_checkpoint(s)
            if step >= s.total_steps:
                break
    progress.close()
    return last_loss


def validation_loss(s: Session) -> float:
    """Mean loss per token over the validation examples, each process taking every world-th one."""
    s.loss_module.eval()
    total = torch.zeros(2)
    mine = list(range(s.rank, len(s.val_ex), s.world))
    size = s.config.micro_batch_size
    with torch.no_grad(), s.accelerator.autocast():
        for start in range(0, len(mine), size):
            chunk = [s.val_ex[i] for i in mine[start : start + size]]
            batch = collate(chunk, s.tokenizer.pad_token_id)
            total += torch.tensor([s.loss_module(**batch).item(), sum(e.n_loss_tokens for e in chunk)])
    s.loss_module.train()
    total = s.accelerator.reduce(total, reduction="sum")
    return float(total[0] / total[1])


def _log(s: Session, row: dict[str, Any]) -> None:
    """A step's row into the log and the trackers, when it holds more than the step and epoch."""
    if len(row) > 2 and s.accelerator.is_main_process:
        with open(s.out / LOG, "a") as log:
            log.write(json.dumps(row) + "\n")
    if len(row) > 2 and s.config.log_with:
        s.accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])


def _global_count(accelerator: Any, local: int) -> int:
    """`local` summed over the processes."""
    if accelerator.num_processes == 1:
        return local
    return int(accelerator.reduce(torch.tensor([local], device=accelerator.device), reduction="sum").item())


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
