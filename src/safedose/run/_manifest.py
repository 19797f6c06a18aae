"""RUN/manifest.json as typed records: what a sweep ran with (config, fingerprints, sampled prompts, judges,
versions) and, for `sweep --search`, the search's log.

The sweep writes it after every finished sweep; the search adds its log after every round. Every key either writes
is a field here, so an unknown key is an error. Fields added after run schema 2 have defaults, so a manifest written
before them still reads; a field that is None where the writer leaves the key out is left out again on writing, so
a manifest read and written back keeps its text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safedose.errors import SafedoseError
from safedose.files import write_json
from safedose.run._cell import CellKey, safety_field
from safedose.run._layout import manifest_path, read_result


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MixEntry(_Record):
    """One nested mix: its directory in the run and what decides its files."""

    dir: str = Field(description="data/seed{S}-{format}/{fingerprint}, relative to the run")
    fingerprint_inputs: dict[str, Any] = Field(description="the inputs the mix's fingerprint is the digest of")


class CellEntry(_Record):
    """One training cell: its axes (as in `CellKey`), its fingerprint and its adapter."""

    dose: int
    seed: int
    format: str
    safety: str | None = safety_field()
    fingerprint: str
    adapter: str = Field(description="adapters/{cell}-{fingerprint}, relative to the run")

    @property
    def key(self) -> CellKey:
        return CellKey.of(self)


class SampledSet(_Record):
    """What one eval set's `limit` sample drew."""

    pool: int = Field(description="prompts in the set")
    n: int = Field(description="prompts drawn")
    by_category: dict[str, int]
    ids: list[str]


class AttackedSet(_Record):
    """One attack on one harm set's sampled prompts."""

    prompts: int = Field(description="sampled prompts of the set")
    attacked: int = Field(description="prompts the attack produced a variant of")
    asked: int = Field(description="attacked prompts asked (an attack may make several per prompt)")


class AttackSummary(_Record):
    """One attack of the `attacks` axis: its family, version and the sets it was applied to."""

    family: str
    version: int
    sets: dict[str, AttackedSet]


class Sampling(_Record):
    """The eval prompts every variant answered: the seeded sample of each set and the attacks on them."""

    limit: int | None = Field(description="prompts per set (None: every prompt)")
    seed: int
    sets: dict[str, SampledSet]
    attacks: dict[str, AttackSummary] = Field(default_factory=dict, description="none before the attacks axis")


class Choice(_Record):
    """One dose the search added, why, and the recommended dose's interval before it was added."""

    dose: int
    reason: str
    interval_before: list[int | None] | None = Field(description="[lo, hi]; hi None: beyond the tested range")
    estimate_before: int | None


class SearchLog(_Record):
    """The search so far (manifest.json: `search`)."""

    start: list[int]
    budget: int
    max_width: float
    cells_per_dose: int
    choices: list[Choice]
    doses: list[int]
    cells: int
    stop: str | None = Field(description="why the search stopped; None while it runs")
    estimate: int | None = None
    interval: list[int | None] | None = None


class Manifest(_Record):
    """RUN/manifest.json, in the order the sweep writes its keys."""

    schema_version: int = Field(description="the run directory's schema (run.json)")
    config: dict[str, Any] = Field(description="the sweep config as run (validated by the sweep that reads it)")
    model_hash: str = Field(description="content hash of the base model")
    generation_dtype: str = Field(description="the precision every answer was generated in")
    train_recipe_version: int
    mixes: dict[str, MixEntry] = Field(description="by mix name, seed{S}-{format}[-{safety}]")
    cells: dict[str, CellEntry] = Field(description="by cell name")
    sampling: Sampling
    contamination_sets: list[str] = Field(description="the eval sets every mix was decontaminated against")
    data_root: str
    data_sha256: dict[str, list[str]] = Field(description="per catalog dataset used, its files' SHA-256")
    judges: dict[str, str] = Field(description="judge id by role")
    versions: dict[str, str] = Field(description="package versions")
    git_commit: str | None = Field(description="None outside a git checkout")
    search: SearchLog | None = Field(None, exclude_if=lambda v: v is None, description="`sweep --search` only")


def read_manifest(run: Path) -> Manifest:
    """RUN/manifest.json as a `Manifest`; a missing, malformed or foreign one is a one-line error."""
    data = read_result(run, manifest_path(run))
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise SafedoseError(f"{manifest_path(run)}: not a safedose manifest ({where}: {first['msg']})") from None


def write_manifest(run: Path, manifest: Manifest) -> None:
    write_json(manifest_path(run), manifest.model_dump(mode="json"))
