"""What an attacked prompt and answer carry: the attack that made them and the plain prompt they pair with."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from safedose.data import EvalPrompt

PLAIN = "none"


class AttackInfo(BaseModel):
    """The attack behind one attacked prompt (and its answer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the attack as configured, in canonical form, e.g. `prefill:5`")
    version: int = Field(description="the attack's version; a changed text or rule gets a new one")
    family: str = Field(description="the registered family, e.g. `prefill`, `template`, `refusal_suppression`")
    variant: str | None = Field(None, description="which template or transferred prompt, where there are several")
    plain_prompt: str = Field(description="the eval prompt before the attack (the plain answer's prompt)")
    prefill_target: str | None = Field(None, description="prefill: the compliant target the answer starts with")
    prefill_tokens: int | None = Field(None, description="prefill: its first k tokens (None: all of it)")
    prefill_source: Literal["target", "fixed"] | None = Field(
        None, description="prefill: the set's own target, or the fixed prefix for a set without targets"
    )
    prefill: str | None = Field(None, description="prefill: the prefix as the model saw it (decoded token ids)")

    @property
    def id(self) -> str:
        """Name and version, as they enter cache keys."""
        return f"{self.name}@{self.version}"


class AttackedPrompt(EvalPrompt):
    """An eval prompt under an attack: same `id`, `eval_set` and category as its plain prompt; `prompt` is the text
    the model is asked (for a prefill, the plain prompt: the attack is in the answer's start)."""

    attack: AttackInfo
