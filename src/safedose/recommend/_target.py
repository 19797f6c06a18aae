"""The question a user asks: the most harmful compliance and over-refusal they accept, as a validated target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from safedose.config import validate_config
from safedose.errors import SafedoseError

# Metric -> which eval sets it is measured on: harm sets (unsafe prompts) or over-refusal sets (safe prompts).
TARGET_METRICS: dict[str, str] = {
    "harmful_compliance": "harm",
    "harmful_compliance_lenient": "harm",
    "over_refusal": "over_refusal",
}
EXAMPLE = "target: {harmful_compliance: {max: 0.05}, over_refusal: {max: 0.10}}"


class Limit(BaseModel):
    """The most of one metric that is acceptable, on every listed eval set (default: every set that measures it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max: float = Field(gt=0, lt=1, description="the largest acceptable share, e.g. 0.05")
    sets: list[str] | None = Field(None, min_length=1, description="eval sets it must hold on (default: all)")


class Target(BaseModel):
    """Upper limits on harmful compliance and over-refusal; a dose meets the target when every limit holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    harmful_compliance: Limit | None = None
    harmful_compliance_lenient: Limit | None = None
    over_refusal: Limit | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> Target:
        if not self.limits():
            raise ValueError(f"set at least one limit, e.g. {EXAMPLE}")
        return self

    def limits(self) -> dict[str, Limit]:
        return {m: limit for m in TARGET_METRICS if (limit := getattr(self, m)) is not None}


def check_target_sets(target: Target, sets: Mapping[str, Sequence[str]], *, where: str) -> None:
    """Every set a limit names must be one `sets[role]` evaluates (role: `harm` or `over_refusal`)."""
    for metric, limit in target.limits().items():
        role = TARGET_METRICS[metric]
        allowed = list(sets.get(role, []))
        kind = "harm" if role == "harm" else "over-refusal"
        if not allowed:
            raise SafedoseError(f"{where}.{metric}: no {kind} set is evaluated here")
        for name in limit.sets or []:
            if name not in allowed:
                listed = ", ".join(allowed)
                raise SafedoseError(f"{where}.{metric}.sets: {name!r} is not a {kind} set here ({kind} sets: {listed})")


def parse_target(text: str) -> Target:
    """A target from YAML or JSON text, or from a file holding it; `{target: {...}}` and `{...}` both work."""
    path = Path(text).expanduser()
    source = "--target"
    try:
        if len(text) < 4096 and path.is_file():
            source, text = str(path), path.read_text(encoding="utf-8")
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SafedoseError(f"{source}: malformed YAML or JSON: {str(e).splitlines()[0]}") from None
    if isinstance(data, dict) and set(data) == {"target"}:
        data = data["target"]
    if not isinstance(data, dict):
        raise SafedoseError(f"{source}: expected a mapping such as {EXAMPLE.removeprefix('target: ')}")
    return validate_config(Target, data, source=source)
