"""The safety axis: the sources a sweep compares, their labels in cell names, and sources built as a sweep step.

A source is a catalogue name, a file, an `hf:` id, or `{build: {...}}`: rows made by `safedose data build-safety`
(prompts answered by a responder, filtered by the judges) as a cached step before the mixes. A built source is
identified by its settings and the hashes of its prompt sources, so the mixes and cells after it are named before it
runs (`--dry-run`) and rebuilt only when a setting changes.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

RESPONDER_KINDS = ("preference", "hf", "openai")
# Bumped when what a built source holds changes for the same settings (the builder's filters, its judges' roles).
BUILD_VERSION = 1


class SafetyBuild(BaseModel):
    """Safety rows built by `safedose data build-safety` as a step of the sweep."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the source's name in cell names and tables")
    prompts: list[str] = Field(min_length=1, description="prompt sources: catalogue names or files")
    responder: str = Field(description="who answers: preference:hh-rlhf-harmless, hf:MODEL or openai:MODEL")
    system: str | None = Field(None, description="a system prompt for an hf: or openai: responder")
    n: int | None = Field(None, gt=0, description="rows to keep (default: the sweep's largest dose)")
    allow_fewer: bool = Field(False, description="keep going with fewer than n rows when the prompts run out")
    refusal_judge: str = Field("refusal", description="keeps answers it labels a refusal")
    harm_judge: str = Field("harm", description="drops answers it scores 0.5 or more")
    prompt_judge: str = Field("prompt-harm", description="keeps prompts it scores a harmful request on their own")

    def check(self) -> None:
        kind = self.responder.partition(":")[0]
        if kind not in RESPONDER_KINDS or ":" not in self.responder:
            raise ValueError(f"build {self.label}: responder {self.responder!r} is not one of "
                             f"{', '.join(k + ':...' for k in RESPONDER_KINDS)}")  # fmt: skip


class BuiltSource(BaseModel):
    """`{build: {...}}` in a sweep's `safety` list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    build: SafetyBuild


SafetySource = str | BuiltSource


def safety_label(source: SafetySource) -> str:
    """A source's label in cell names and tables: a catalogue name as it is, a file's stem, a hub id's last part, a
    built source's own label."""
    if isinstance(source, BuiltSource):
        return source.build.label
    name = source.removeprefix("hf:").rstrip("/").rsplit("/", 1)[-1]
    if not source.startswith("hf:") and ("/" in source or "." in name):
        name = Path(name).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "source"
