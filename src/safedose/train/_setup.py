"""A run's setup: what its options need, its precision, the tokenised data, the LoRA model on its base, the
optimizer and the schedule, gathered in one `Session`."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from safedose.data import load_instructions
from safedose.errors import SafedoseError
from safedose.models import torch_dtype
from safedose.train._config import WHOLE_MODEL_TYPES, TrainConfig
from safedose.train._data import Example, length_grouped_batches, tokenize
from safedose.train._fast import use_fast_lora_dropout, use_fp32_attention
from safedose.train._loss import CausalLMLoss
from safedose.train._outputs import TRACKERS


def fresh_state() -> dict[str, Any]:
    """The position and best validation of a run that has taken no step."""
    return {"step": 0, "epoch": 0, "batch": 0, "best_val_loss": None, "best_step": None}


@dataclass
class Session:
    """What one training process holds from setup to its last step; `state` is what a checkpoint records."""

    config: TrainConfig
    out: Path
    accelerator: Any
    tokenizer: Any
    peft_model: Any
    loss_module: Any  # the loss through `peft_model`, as `accelerator.prepare` wrapped it
    optimizer: Any
    scheduler: Any
    params: list[nn.Parameter]
    train_ex: list[Example]
    val_ex: list[Example]
    lengths: list[int]
    batches_per_epoch: int  # per process
    total_steps: int
    state: dict[str, Any] = field(default_factory=fresh_state)

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)


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


def mixed_precision(dtype: str) -> str:
    """accelerate's mixed precision for the config's `dtype` (`auto`: bf16 where this machine supports it)."""
    if dtype == "fp32":
        return "no"
    if dtype in ("bf16", "fp16"):
        return dtype
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"


def setup(config: TrainConfig, out: Path, model_dir: Path, precision: str) -> Session:
    """Data and tokenizer first (everything that can be wrong with the input fails before the model loads), then
    the accelerator, the LoRA model, optimizer and schedule, prepared for this process."""
    from accelerate import Accelerator  # accelerate, peft, transformers: loaded only when a model is trained
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    tokenizer, train_ex, val_ex = _examples(config, model_dir)

    AcceleratorState._reset_state()  # a second train() in one process may use another precision
    trackers: dict[str, Any] = {}
    if config.log_with:
        trackers = {"log_with": config.log_with, "project_dir": str(out / TRACKERS)}
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(), **trackers)
    if accelerator.distributed_type.value not in WHOLE_MODEL_TYPES:
        raise SafedoseError(f"accelerate: distributed type {accelerator.distributed_type.value} is not supported; "
                            "use data parallel (MULTI_GPU)")  # fmt: skip
    set_seed(config.seed)
    peft_model, loss_module = _lora_model(config, model_dir, precision, accelerator)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    # Each process takes every world-th batch; all processes take the same number of batches.
    world = accelerator.num_processes
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
    return Session(config, out, accelerator, tokenizer, peft_model, loss_module, optimizer, scheduler, params,
                   train_ex, val_ex, lengths, batches_per_epoch, total_steps)  # fmt: skip


def _examples(config: TrainConfig, model_dir: Path) -> tuple[Any, list[Example], list[Example]]:
    """The tokenizer and the tokenised training and validation rows."""
    from transformers import AutoTokenizer  # transformers: loaded only when a model is trained

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

    return tokenizer, encode(train_rows), encode(val_rows)


def _lora_model(config: TrainConfig, model_dir: Path, precision: str, accelerator: Any) -> tuple[Any, CausalLMLoss]:
    """The base model with LoRA adapters on `config.lora.target_modules`, and the loss through it."""
    from peft import LoraConfig, get_peft_model  # peft, transformers: loaded only when a model is trained
    from transformers import AutoModelForCausalLM

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
        frozen_linears_to(peft_model, torch_dtype(precision))
    if accelerator.device.type == "cpu":  # on CUDA PEFT's dropout is one fused kernel, bf16 attention fast
        use_fast_lora_dropout(peft_model)
        if precision in ("bf16", "fp16"):
            use_fp32_attention(peft_model)
    loss_module = CausalLMLoss(peft_model)
    if config.load_in_4bit:  # what accelerate reads to leave a quantized model where it was loaded
        loss_module.__dict__.update(is_loaded_in_4bit=True, hf_device_map=model.hf_device_map)
    return peft_model, loss_module


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
        model = auto.from_pretrained(model_dir, dtype=torch_dtype(config.base_dtype or "fp32"))
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return model
    from peft import prepare_model_for_kbit_training  # peft, transformers: loaded only for a 4-bit base
    from transformers import BitsAndBytesConfig

    compute = torch_dtype(config.base_dtype or "bf16")
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=compute)  # fmt: skip
    model = auto.from_pretrained(model_dir, dtype=compute, quantization_config=quantization,
                                 device_map={"": device_index})  # fmt: skip
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})  # fmt: skip


def _check_target_modules(model: Any, targets: list[str]) -> None:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = [t for t in targets if t not in names]
    if unknown:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise SafedoseError(f"lora.target_modules: {unknown} not in the model; its linear layers are {linear}")
