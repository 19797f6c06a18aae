"""YAML configs with `key=value` overrides, validated by pydantic into one-line errors."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar, get_args

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


class NestedConfigError(ValueError):
    """A validation error of a settings mapping checked by another model (e.g. a sweep's `train:`), raised inside a
    validator so that `validate_config` can say which key, with did-you-mean, under `prefix`."""

    def __init__(self, prefix: tuple[str, ...], model: type[BaseModel], error: ValidationError) -> None:
        self.prefix, self.model, self.error = prefix, model, error.errors()[0]
        super().__init__(f"{'.'.join(prefix)}.{_loc(self.error['loc'])}: {self.error['msg']}")


def validate_config(model: type[M], data: dict[str, Any], *, source: str, overrides: list[str] | None = None) -> M:
    """`model.model_validate(data)`, with the first problem as one line: the override that caused it (else
    `SOURCE`), the key, the nearest valid key for an unknown one and the expected form of a bad value."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise SafedoseError(_explain(model, e.errors()[0], source, overrides or [])) from None


def _loc(loc: tuple[int | str, ...] | list[int | str]) -> str:
    return ".".join(str(x) for x in loc)


def _explain(model: type[BaseModel], err: Any, source: str, overrides: list[str]) -> str:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    nested = (err.get("ctx") or {}).get("error")
    if isinstance(nested, NestedConfigError):
        model, err = nested.model, nested.error
        prefix, loc = nested.prefix, tuple(err["loc"])
    else:
        prefix = ()
    key = _loc(prefix + loc)
    problem = _problem(model, loc, err, prefix)
    keys = [item.partition("=")[0].split(".") for item in overrides]
    path = [str(x) for x in prefix + loc]
    blamed = [
        item for item, k in zip(overrides, keys, strict=True) if k and (k == path[: len(k)] or path == k[: len(path)])
    ]
    if blamed and key:
        return f"override {blamed[-1]!r}: {key}: {problem}"
    return f"{source}: {key or '(top level)'}: {problem}"


def _problem(model: type[BaseModel], loc: tuple[int | str, ...], err: Any, prefix: tuple[str, ...]) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        names = _field_names(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
        where = ".".join([*prefix, *map(str, loc[:-1]), close[0]]) if close else ""
        hint = f"; did you mean {where}?" if close else f"; valid keys here: {', '.join(names)}"
        return f"unknown key{hint}"
    if kind == "list_type":
        shown = f"[{value}]" if isinstance(value, str) and "," in value else "[a,b]"
        return f"expects a list, got {value!r}; write a list as {shown}"
    if kind == "missing":
        return "required, not set"
    expected = {"int_parsing": "an integer", "int_type": "an integer", "int_from_float": "a whole number",
                "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
                "bool_type": "true or false", "string_type": "a string", "dict_type": "a mapping of settings",
                "model_type": "a mapping of settings"}.get(kind)  # fmt: skip
    if expected is not None:
        return f"expects {expected}, got {value!r}"
    return str(err["msg"]).removeprefix("Value error, ")


def _field_names(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the (nested) model at `loc`; empty where `loc` leaves the models."""
    current: Any = model
    for part in loc:
        field = (
            current.model_fields.get(str(part))
            if isinstance(current, type) and issubclass(current, BaseModel)
            else None
        )
        if field is None:
            return []
        candidates = [field.annotation, *get_args(field.annotation)]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []
