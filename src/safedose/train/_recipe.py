"""The LoRA recipe: read it top to bottom.

One process by default; `accelerate launch` runs it data-parallel, and a config with `accelerate_config` launches
itself that way. Every `save_every` optimizer steps a checkpoint (adapter, optimizer, scheduler, RNG, data position)
is written atomically, and a rerun of the same command continues from it. The adapter with the lowest validation
loss is the output; the last one is kept in `last/`.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
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
from safedose.files import atomic_open, honour_umask, sha256_file, write_json
from safedose.train._config import WHOLE_MODEL_TYPES, TrainConfig, check_accelerate_config
from safedose.train._data import IGNORE, Example, collate, length_grouped_batches, tokenize
from safedose.train._fast import summed_cross_entropy, use_fast_lora_dropout, use_fp32_attention
from safedose.train._fingerprint import FINGERPRINT_FILE, _flatten, differing_keys, fingerprint, fingerprint_inputs

CHECKPOINTS = "checkpoints"
MANIFEST = "safedose.json"
LOG = "train_log.jsonl"
TRACKERS = "trackers"
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Set by every `accelerate launch` in the processes it starts.
LAUNCHED_ENV = "ACCELERATE_MIXED_PRECISION"


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    best_step: int | None
    best_val_loss: float | None
    final_train_loss: float
    steps: int


class CausalLMLoss(nn.Module):
    """Summed next-token loss of the labelled tokens through the model's own forward (see `summed_token_nll`)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return summed_token_nll(self.model, input_ids, attention_mask, labels)


def summed_token_nll(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Summed next-token NLL (fp32) of the tokens whose label is not -100, from the logits of `model`'s own forward.

    The model applies its own head (logit soft-capping, logit scaling, ...); a boolean `logits_to_keep` asks it to
    project only the positions that predict a label. Divided by the label count this is HF's mean `loss`. A
    right-padded batch goes in without its attention mask: under the causal mask alone no real token sees a pad, so
    the real tokens' outputs are the same, and attention takes its mask-free kernel.
    """
    device = model.device
    labels = labels.to(device)
    predicts = labels[:, 1:] != IGNORE
    keep = F.pad(predicts, (0, 1), value=False)
    mask = None if _right_padded(attention_mask) else attention_mask.to(device)
    out = model(input_ids=input_ids.to(device), attention_mask=mask, logits_to_keep=keep, use_cache=False)
    logits = out.logits if out.logits.dim() == 2 else out.logits[keep]  # a model that ignores the mask keeps all
    return summed_cross_entropy(logits, labels[:, 1:][predicts])


def _right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is ones, then zeros (or all ones)."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


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
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    from safedose.models import model_hash, resolve_model

    check_requirements(config)
    # 0. What decides this adapter, and whether `output_dir` already holds it (finished or in part).
    out = Path(config.output_dir)
    model_dir = resolve_model(config.model)
    precision = _mixed_precision(config.dtype)
    inputs = fingerprint_inputs(config, base_model_hash=model_hash(model_dir), mixed_precision=precision)
    digest = fingerprint(inputs)
    if _holds_other_run(out, inputs, digest, force=force):
        _clear(out)
    if (out / MANIFEST).is_file():
        return _result(out)
    if config.accelerate_config and LAUNCHED_ENV not in os.environ:
        return _launch(config, force=force)

    # 1. Data and tokenizer: everything that can be wrong with the input fails before the model loads.
    train_rows = load_instructions(config.train_file)
    val_rows = load_instructions(config.val_file) if config.val_file else []
    if not train_rows:
        raise SafedoseError(f"{config.train_file}: no training rows")
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
    trackers: dict[str, Any] = {}
    if config.log_with:
        trackers = {"log_with": config.log_with, "project_dir": str(out / TRACKERS)}
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(), **trackers)
    if accelerator.distributed_type.value not in WHOLE_MODEL_TYPES:
        raise SafedoseError(f"accelerate: distributed type {accelerator.distributed_type.value} is not supported; "
                            "use data parallel (MULTI_GPU)")  # fmt: skip
    set_seed(config.seed)
    model = _load_base(AutoModelForCausalLM, model_dir, config, accelerator.local_process_index)
    _check_target_modules(model, config.lora.target_modules)
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    if precision in ("bf16", "fp16") and not config.base_dtype and not config.load_in_4bit:
        frozen_linears_to(peft_model, TORCH_DTYPES[precision])
    if accelerator.device.type == "cpu":  # on CUDA PEFT's dropout is one fused kernel, bf16 attention fast
        use_fast_lora_dropout(peft_model)
        if precision in ("bf16", "fp16"):
            use_fp32_attention(peft_model)
    loss_module = CausalLMLoss(peft_model)
    if config.load_in_4bit:  # what accelerate reads to leave a quantized model where it was loaded
        loss_module.__dict__.update(is_loaded_in_4bit=True, hf_device_map=model.hf_device_map)
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
            honour_umask(staging)  # safetensors writes 0600
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
    if accelerator.is_main_process and not (out / FINGERPRINT_FILE).is_file():
        write_json(out / FINGERPRINT_FILE, {"fingerprint": digest, "inputs": inputs})
    accelerator.wait_for_everyone()
    if config.log_with:
        (out / TRACKERS).mkdir(exist_ok=True)
        accelerator.init_trackers("safedose", config=_tracker_config(config),
                                  init_kwargs={"wandb": {"name": out.name, "dir": str(out / TRACKERS)}})  # fmt: skip
    loss_module.train()
    started, tokens_seen, last_loss = time.perf_counter(), 0, float("nan")
    window = torch.zeros(2)
    progress = _progress(accelerator.is_main_process, total_steps, state["step"])
    ga = config.gradient_accumulation_steps
    while state["step"] < total_steps:
        epoch = state["epoch"]
        batches = length_grouped_batches(lengths, config.micro_batch_size, seed=config.seed, epoch=epoch)
        mine = batches[rank : world * batches_per_epoch : world]
        first = state["batch"]
        for b in range(first, len(mine)):
            chunk = [train_ex[i] for i in mine[b]]
            n_tokens = sum(e.n_loss_tokens for e in chunk)
            batch = collate(chunk, tokenizer.pad_token_id)
            if b == first or b % ga == 0:  # a step starts: count its loss tokens over its micro-batches and the ranks
                local = sum(train_ex[i].n_loss_tokens for m in mine[b : (b // ga + 1) * ga] for i in m)
                step_tokens = _global_count(accelerator, local)
            last_in_step = (b + 1) % ga == 0 or b + 1 == len(mine)
            sync = contextlib.nullcontext() if last_in_step else accelerator.no_sync(loss_module)
            with sync, accelerator.autocast():
                loss_sum = loss_module(**batch)
            # the step's gradient is that of the mean over all its loss tokens (DDP averages over ranks: times world)
            accelerator.backward(loss_sum * world / max(step_tokens, 1))
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
            if len(row) > 2 and config.log_with:
                accelerator.log({k: v for k, v in row.items() if k != "step"}, step=step)
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
            "fingerprint": digest,
            "fingerprint_inputs": inputs,
            "steps": state["step"],
            "best_step": state["best_step"],
            "best_val_loss": state["best_val_loss"],
            "final_train_loss": last_loss,
            "world_size": world,
            "rank_adapter_checksums": rank_checksums,
            "mixed_precision": accelerator.mixed_precision,
            "accelerate_config": _accelerate_config_record(config),
            "versions": _versions(),
        }
        write_json(out / MANIFEST, manifest)
    accelerator.wait_for_everyone()
    if config.log_with:
        accelerator.end_training()
    accelerator.free_memory()
    return TrainResult(out, state["best_step"], state["best_val_loss"], last_loss, state["step"])


def check_requirements(config: TrainConfig) -> None:
    """The packages and device the config's options need, checked before any work (one-line errors)."""
    if config.load_in_4bit:
        if not torch.cuda.is_available():
            raise SafedoseError("load_in_4bit: QLoRA's 4-bit base needs a CUDA GPU; this machine has none")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise SafedoseError("load_in_4bit needs the bitsandbytes package: pip install 'safedose[qlora]'")
    if config.log_with == "tensorboard" and not any(
        importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")
    ):
        raise SafedoseError("log_with: tensorboard needs the tensorboardX package: pip install 'safedose[tensorboard]'")
    if config.log_with == "wandb" and importlib.util.find_spec("wandb") is None:
        raise SafedoseError("log_with: wandb needs the wandb package: pip install wandb (then `wandb login`)")


def frozen_linears_to(model: Any, dtype: torch.dtype) -> int:
    """Store the frozen weights (and biases) of `model`'s linear layers in `dtype`, the autocast dtype; returns how
    many layers changed.

    Autocast casts a frozen fp32 weight to `dtype` on every forward (its cast cache keeps only weights that require
    grad); stored in `dtype` the matmuls get bit-identical inputs without the copies (8% faster training of SmolLM2
    on CPU, docs/performance.md). A frozen weight shared with another module (a tied LM head) gets a copy of its own
    in `dtype`, the other module keeps the original; trainable layers stay as they are.
    """
    uses: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        uses[param.data_ptr()] = uses.get(param.data_ptr(), 0) + 1
    changed = 0
    for module in model.modules():
        trainable = any(p.requires_grad for p in module.parameters())
        if type(module) is not nn.Linear or trainable:
            continue
        if not module.weight.is_floating_point() or module.weight.dtype == dtype:
            continue
        if uses[module.weight.data_ptr()] > 1:
            module.weight = nn.Parameter(module.weight.detach().to(dtype), requires_grad=False)
        module.to(dtype)
        changed += 1
    return changed


def _load_base(auto: Any, model_dir: Path, config: TrainConfig, device_index: int) -> Any:
    """The frozen base model in `base_dtype` (fp32 when unset), or in 4-bit NF4 for QLoRA, checkpointed if asked."""
    if not config.load_in_4bit:
        model = auto.from_pretrained(model_dir, dtype=TORCH_DTYPES[config.base_dtype or "fp32"])
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return model
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    compute = TORCH_DTYPES[config.base_dtype or "bf16"]
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=compute)  # fmt: skip
    model = auto.from_pretrained(model_dir, dtype=compute, quantization_config=quantization,
                                 device_map={"": device_index})  # fmt: skip
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})  # fmt: skip


def _launch(config: TrainConfig, *, force: bool) -> TrainResult:
    """Train under `accelerate launch --config_file` in child processes; the finished output_dir is the result."""
    assert config.accelerate_config is not None
    with tempfile.TemporaryDirectory() as tmp:
        import yaml

        path = Path(tmp) / "train.yaml"
        path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config.accelerate_config,
               "-m", "safedose", "train", str(path), *(["--force"] if force else [])]  # fmt: skip
        done = subprocess.run(cmd, check=False)
    if done.returncode != 0 or not (Path(config.output_dir) / MANIFEST).is_file():
        raise SafedoseError(f"accelerate launch --config_file {config.accelerate_config}: training exited with code "
                            f"{done.returncode} (its output is above); rerun to resume")  # fmt: skip
    return _result(Path(config.output_dir))


def _result(out: Path) -> TrainResult:
    done = json.loads((out / MANIFEST).read_text())
    return TrainResult(out, done["best_step"], done["best_val_loss"], done["final_train_loss"], done["steps"])


def _accelerate_config_record(config: TrainConfig) -> dict[str, Any] | None:
    if not config.accelerate_config:
        return None
    path = Path(config.accelerate_config).expanduser()
    return {"path": str(path), "sha256": sha256_file(path), "settings": check_accelerate_config(str(path))}


def _tracker_config(config: TrainConfig) -> dict[str, Any]:
    """The settings as scalars, as trackers' hyperparameter tables want them."""
    flat = _flatten(config.model_dump(mode="json"))
    return {k: v if isinstance(v, int | float | str | bool) else json.dumps(v) for k, v in flat.items()}


def _holds_other_run(out: Path, inputs: dict[str, Any], digest: str, *, force: bool) -> bool:
    """True when `out` holds (part of) a run of another config and `force` says to start afresh; else an error."""
    recorded = next((out / f for f in (MANIFEST, FINGERPRINT_FILE) if (out / f).is_file()), None)
    if recorded is None:
        if _latest_checkpoint(out) is None:
            return False
        theirs: dict[str, Any] = {"fingerprint": None, "fingerprint_inputs": {}}
    else:
        theirs = json.loads(recorded.read_text())
    their_inputs = theirs.get("fingerprint_inputs", theirs.get("inputs", {}))
    if theirs.get("fingerprint") == digest:
        return False
    if force:
        return True
    keys = differing_keys(their_inputs, inputs) or ["fingerprint (written by an older safedose)"]
    shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
    raise SafedoseError(
        f"{out}: holds an adapter trained with other settings ({shown} differ); choose another output_dir, "
        "or pass --force to train it again"
    )


def _clear(out: Path) -> None:
    """Remove what `train` writes into `out` (and nothing else)."""
    for name in (MANIFEST, FINGERPRINT_FILE, LOG, CHECKPOINTS, "last", TRACKERS, "README.md"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for target in (*out.glob("adapter_model.*"), out / "adapter_config.json"):
        target.unlink(missing_ok=True)


def _global_count(accelerator: Any, local: int) -> int:
    """`local` summed over the processes."""
    if accelerator.num_processes == 1:
        return local
    return int(accelerator.reduce(torch.tensor([local], device=accelerator.device), reduction="sum").item())


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
