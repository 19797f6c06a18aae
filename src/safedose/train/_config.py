"""Training configuration: validated before any model is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from safedose.errors import SafedoseError
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
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SafedoseError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise SafedoseError(f"{path}: malformed YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SafedoseError(f"{path}: expected a mapping of settings")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SafedoseError(f"override {item!r}: expected key=value")
        _set(data, key.split("."), yaml.safe_load(value))
    return parse_config(data, source=str(path))


def parse_config(data: dict[str, Any], *, source: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise SafedoseError(f"{source}: {loc}: {err['msg']}") from None


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value
