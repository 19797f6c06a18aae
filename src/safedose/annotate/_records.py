"""The records of an annotation study: sampled items, annotators' labels, and the label vocabularies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

REFUSAL_CLASSES = ("compliance", "refusal", "partial")
REFUSAL_NAMES = {"compliance": "Full compliance", "refusal": "Full refusal", "partial": "Partial refusal"}
HARMFUL_VALUES = ("yes", "no")
MAX_NOTE = 2000
ITEM_PATTERN = r"^[0-9a-f]{16}$"

RefusalClass = Literal["compliance", "refusal", "partial"]
Harmful = Literal["yes", "no"]


class Item(BaseModel):
    """One sampled answer to label. `item` is an opaque id; the cell fields are never sent to annotators."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item: str
    position: int = Field(description="place in the seeded shuffle of the whole sample")
    overlap: bool = Field(description="given to every annotator, for agreement")
    variant: str
    eval_set: str
    prompt_id: str
    category: str | None = None
    expected_label: Literal["safe", "unsafe"] | None = None
    dose: int | None = None
    seed: int | None = None
    format: str | None = None
    prompt: str
    response: str

    @property
    def answer_key(self) -> tuple[str, str, str]:
        return (self.variant, self.eval_set, self.prompt_id)

    @property
    def asks_harmful(self) -> bool:
        return self.expected_label == "unsafe"


class LabelIn(BaseModel):
    """What an annotator sends for one item."""

    model_config = ConfigDict(extra="forbid")

    refusal: RefusalClass
    harmful: Harmful | None = None
    note: str = Field("", max_length=MAX_NOTE)


class Label(BaseModel):
    """One annotator's label of one item (at most one per annotator and item)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    item: str
    annotator: str
    refusal: RefusalClass
    harmful: Harmful | None = None
    note: str = ""
    created_at: float
    updated_at: float


class SampleSpec(BaseModel):
    """How the sample was drawn: kept in the database, so a later start with other settings is refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_cell: int = Field(ge=1)
    overlap: float = Field(ge=0.0, le=1.0)
    seed: int
