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
        apply_override(data, item)
    return data


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in `data` (missing mappings are created); a one-line error names a bad override."""
    key, sep, value = item.partition("=")
    keys = key.split(".")
    if not sep or not all(keys):
        raise SafedoseError(f"override {item!r}: expected key=value with a dotted key such as lora.r=16")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise SafedoseError(f"override {item!r}: malformed YAML value: {str(e).splitlines()[0]}") from None
    target = data
    for depth, part in enumerate(keys[:-1]):
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            parent = ".".join(keys[: depth + 1])
            shown = repr(child) if len(repr(child)) <= 40 else f"{repr(child)[:37]}..."
            raise SafedoseError(
                f"override {item!r}: {parent} is {shown} ({type(child).__name__}), not a mapping of settings"
            )
        target = child
    target[keys[-1]] = parsed


def validate_config(model: type[M], data: dict[str, Any], *, source: str) -> M:
    """`model.model_validate(data)`, with the first problem as one line: `SOURCE: field.path: message`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise SafedoseError(f"{source}: {loc}: {err['msg']}") from None
