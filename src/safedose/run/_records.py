"""The typed records a run directory holds: judged answers and their verdicts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from safedose.attacks import AttackInfo
from safedose.run._cell import CellFields

# The untuned model, answered with the tuning template (`BASE`) and with its own chat template (`BASE_CHAT`).
BASE = "base"
BASE_CHAT = "base-chat"


class RoleVerdict(BaseModel):
    """One judge's verdict on one answer. `label` is None when the judge gave no usable label."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    judge: str = Field(description="name@revision")
    label: str | None
    score: float | None = None
    parse_error: bool = False
    categories: dict[str, float] | None = None
    scored_by: str | None = Field(None, description="which of a cross-fitted judge's models scored it")
    refusal: bool | None = Field(None, description="a guard's own verdict on whether the answer refuses (WildGuard)")


class JudgedAnswer(CellFields):
    """One answer of one variant (a tuned cell or the untuned base) to one eval prompt, with every judge's verdict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    eval_set: str
    category: str | None = None
    expected_label: Literal["safe", "unsafe"] | None = None
    prompt: str
    response: str
    adapter: str | None = None
    template: str
    dtype: str | None = Field(None, description="the precision the answer was generated in (None: an endpoint)")
    verdicts: dict[str, RoleVerdict] = Field(
        default_factory=dict, description="by role: refusal, strmatch, harm, moderation, guard"
    )
    attack: AttackInfo | None = Field(
        None, description="an attacked answer's attack (its plain request in `attack.plain_prompt`); None: plain"
    )

    def label(self, role: str) -> str | None:
        verdict = self.verdicts.get(role)
        return verdict.label if verdict else None

    def score(self, role: str) -> float | None:
        verdict = self.verdicts.get(role)
        return verdict.score if verdict else None
