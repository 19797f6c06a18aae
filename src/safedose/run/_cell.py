"""The cell key: the sweep axes that name one training run, defined once for every record that carries them.

A sweep trains one cell per point of its axes (dose x seed x format x safety source). `CellKey` is that point;
`CellFields` are the same axes as fields of a record (a judged answer, a metric row, a benchmark score, an item to
label), after the name of the variant that answered. The untuned model has every axis None. Adding an axis means
adding it to both classes here (a test checks they agree), to the sweep config, and to the code that varies it;
grouping, tables and the report read the axes through `CellKey`.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields, replace
from typing import Any

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class CellKey:
    """One training cell (every axis set) or the untuned model (every axis None)."""

    dose: int | None = None
    seed: int | None = None
    format: str | None = None
    safety: str | None = None

    @classmethod
    def of(cls, record: Any) -> CellKey:
        """The key of any record with the axes as attributes (`CellFields`, a sweep cell, a plain row)."""
        return cls(**{axis: getattr(record, axis) for axis in AXES})

    @property
    def tuned(self) -> bool:
        return self.dose is not None

    @property
    def arm(self) -> CellKey:
        """The cells one dose-response line runs through: this key without its dose and seed."""
        return replace(self, dose=None, seed=None)

    @property
    def name(self) -> str:
        """The cell's name in a run directory and in every table, e.g. `n30-s0-instruction`."""
        if self.dose is None or self.seed is None or self.format is None:
            raise ValueError(f"{self} is not a training cell: every axis needs a value")
        return f"n{self.dose}-s{self.seed}-{self.format}" + (f"-{self.safety}" if self.safety else "")

    def sort_key(self) -> tuple[tuple[bool, str], ...]:
        """Orders keys with None first on each axis and numbers numerically."""
        return tuple((v is not None, f"{v:012d}" if isinstance(v, int) else str(v or "")) for v in astuple(self))

    def as_dict(self) -> dict[str, Any]:
        return {axis: getattr(self, axis) for axis in AXES}

    def arm_dict(self) -> dict[str, Any]:
        """The axes that tell arms apart (all but dose and seed), as fields of a row about one arm."""
        return {axis: getattr(self, axis) for axis in ARM_AXES}

    @property
    def arm_label(self) -> str:
        """The arm's axes joined for names and captions, e.g. `instruction` or `instruction-hh` ('' untuned)."""
        return "-".join(str(v) for v in self.arm_dict().values() if v is not None)


# The axes, in the order of `CellKey`'s fields, and those that tell dose-response lines (arms) apart.
AXES: tuple[str, ...] = tuple(f.name for f in fields(CellKey))
ARM_AXES: tuple[str, ...] = tuple(a for a in AXES if a not in ("dose", "seed"))


def safety_field() -> Any:
    """The `safety` field of a row about an arm: written only when a sweep compares safety sources."""
    return Field(None, exclude_if=lambda v: v is None, description="the safety source's label (None: the one source)")


class CellFields(BaseModel):
    """The variant that answered and its cell axes, as the leading fields of a record (None: the untuned model)."""

    variant: str = Field(description="the cell name, `base` or `base-chat`")
    dose: int | None = None
    seed: int | None = None
    format: str | None = Field(None, description="the form of the safety prompts trained on (None: untuned)")
    safety: str | None = safety_field()

    @property
    def cell(self) -> CellKey:
        return CellKey.of(self)
