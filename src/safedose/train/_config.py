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
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        if value not in TEMPLATES:
            raise ValueError(TEMPLATES.unknown_message(value))
        return value


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config and apply `key=value` overrides (dotted keys reach nested fields)."""
    return parse_config(read_config(path, overrides), source=str(path))


def parse_config(data: dict[str, Any], *, source: str = "config") -> TrainConfig:
    return validate_config(TrainConfig, data, source=source)
