"""Training configuration: validated before any model is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from safedose.config import read_config, validate_config
from safedose.templates import TEMPLATES


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)


class TrainConfig(BaseModel):
    """Everything that decides a LoRA run; the defaults are the Safety-Tuned LLaMAs recipe where it has one."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2-135m-instruct"
    train_file: str
    val_file: str | None = None
    output_dir: str
    template: str = "alpaca"
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings())
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    epochs: int = Field(3, gt=0)
    max_steps: int | None = Field(None, gt=0)
    micro_batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    max_length: int = Field(256, gt=1)
    train_on_inputs: bool = False
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    eval_every: int = Field(25, gt=0)
    save_every: int = Field(25, gt=0)
    log_every: int = Field(1, gt=0)
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="mixed precision of the forward and backward pass; auto: bf16 where the device has it"
    )
    # Large-model settings: each one enters the fingerprint only when set, so fingerprints made before they existed
    # stay valid.
    base_dtype: Literal["fp32", "bf16", "fp16"] | None = Field(
        None, description="dtype of the frozen base weights in memory; null: fp32"
    )
    load_in_4bit: bool = Field(False, description="QLoRA: the frozen base in 4-bit NF4 (bitsandbytes, CUDA only)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass")
    accelerate_config: str | None = Field(
        None, description="an accelerate config file: training runs under `accelerate launch --config_file`"
    )
    log_with: Literal["tensorboard", "wandb"] | None = Field(
        None, description="also log every train_log.jsonl row to this tracker (through accelerate)"
    )

    @field_validator("accelerate_config")
    @classmethod
    def _readable_accelerate_config(cls, value: str | None) -> str | None:
        if value is not None:
            check_accelerate_config(value)
        return value

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        if value not in TEMPLATES:
            raise ValueError(TEMPLATES.unknown_message(value))
        return value


# accelerate's distributed types whose processes each hold the whole model and optimizer, as the training loop's
# checkpoints and adapter files assume.
WHOLE_MODEL_TYPES = frozenset({"NO", "MULTI_GPU", "MULTI_CPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU", "MULTI_HPU"})


def check_accelerate_config(path: str) -> dict[str, Any]:
    """Read an accelerate config file (YAML or JSON) and check that the training loop can run under it."""
    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: malformed YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not an accelerate config (expected a mapping)")
    kind = str(data.get("distributed_type", "NO")).upper()
    if kind not in WHOLE_MODEL_TYPES or data.get("fsdp_config") or data.get("deepspeed_config"):
        raise ValueError(
            f"{path}: distributed_type {kind} is not supported: the training loop saves whole LoRA weights and "
            "optimizer state on every process; use MULTI_GPU (data parallel) with base_dtype, load_in_4bit or "
            "gradient_checkpointing to fit the model"
        )
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config and apply `key=value` overrides (dotted keys reach nested fields)."""
    return parse_config(read_config(path, overrides), source=str(path), overrides=overrides)


def parse_config(data: dict[str, Any], *, source: str = "config", overrides: list[str] | None = None) -> TrainConfig:
    return validate_config(TrainConfig, data, source=source, overrides=overrides)
