"""YAML configs with `key=value` overrides, validated by pydantic into one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from safedose.errors import SafedoseError

M = TypeVar("M", bound=BaseModel)


def read_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML mapping and apply `key=value` overrides (dotted keys reach nested fields; values are YAML)."""
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
        target = data
        keys = key.split(".")
        for part in keys[:-1]:
            target = target.setdefault(part, {})
        target[keys[-1]] = yaml.safe_load(value)
    return data


def validate_config(model: type[M], data: dict[str, Any], *, source: str) -> M:
    """`model.model_validate(data)`, with the first problem as one line: `SOURCE: field.path: message`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise SafedoseError(f"{source}: {loc}: {err['msg']}") from None
