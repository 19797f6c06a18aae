"""The sweep configuration: validated (training settings included) before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safedose.attacks import PLAIN, Attack, parse_attack
from safedose.capability import CapabilitySettings
from safedose.config import NestedConfigError, read_config, validate_config
from safedose.errors import SafedoseError
from safedose.generate import Backend, Decoding, OpenAISettings, VllmSettings
from safedose.recommend import Target, check_target_sets
from safedose.sweep._executor import RaySettings
from safedose.sweep._safety import BuiltSource, SafetySource, safety_label
from safedose.train import TrainConfig

# Fields of TrainConfig that the sweep sets per cell.
CELL_FIELDS = ("model", "train_file", "val_file", "output_dir", "seed")


class EvalSets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    harm: list[str] = Field(min_length=1)
    over_refusal: list[str] = Field(default_factory=list)
    capability: CapabilitySettings = Field(default_factory=CapabilitySettings,
                                           description="benchmarks, reference NLL and win-rate")  # fmt: skip
    limit: int | None = Field(None, gt=0, description="a seeded sample of N prompts per set, stratified by category")
    sample_seed: int = Field(0, description="seed of the `limit` sample (the same for every cell)")
    capability_limit: int | None = Field(None, gt=0, description="the older name of capability.references_limit")

    def all_sets(self) -> list[str]:
        return [*self.harm, *self.over_refusal]

    @model_validator(mode="after")
    def _disjoint(self) -> EvalSets:
        both = sorted(set(self.harm) & set(self.over_refusal))
        if both:
            raise ValueError(f"{', '.join(both)} cannot be both a harm and an over-refusal set")
        if len(set(self.all_sets())) != len(self.all_sets()):
            raise ValueError("an eval set is listed twice")
        if self.capability_limit is not None:
            self.capability.references_limit = self.capability_limit
        return self


class Judges(BaseModel):
    """The judge of each verdict role (a judge spec; null: the role is not judged)."""

    model_config = ConfigDict(extra="forbid")

    refusal: str = "refusal"
    strmatch: str | None = Field("strmatch", description="XSTest's string match, a second opinion on refusals")
    harm: str | None = "harm"
    moderation: str | None = "moderation"
    guard: str | None = Field(None, description="a guard model, e.g. `guard:<model>#preset`; off by default")


# Every verdict role a sweep can judge, in the order the judges run.
ROLES = tuple(Judges.model_fields)


class AttackEntry(BaseModel):
    """One attack of the `attacks` axis and the harm sets it is asked on (default: every harm set it applies to)."""

    model_config = ConfigDict(extra="forbid")

    attack: str = Field(description="an attack spec, e.g. `prefill:5`, `template:gptfuzz#3`, `refusal_suppression`")
    sets: list[str] | None = Field(None, description="harm sets to attack; default: every one the attack applies to")


class Search(BaseModel):
    """`sweep --search`: from the smallest and largest dose, add the dose that best narrows the recommended dose's
    interval until it is narrower than `max_width` or `budget` cells are spent."""

    model_config = ConfigDict(extra="forbid")

    max_width: float = Field(gt=0, description="stop when the recommended dose's 95% interval is this narrow (doses)")
    budget: int = Field(gt=0, description="cells (dose x seed x format) to spend at most, the two start doses included")


class SweepConfig(BaseModel):
    """Everything that decides a dose-response study."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    output_dir: str | None = None
    model: str = "smollm2-135m-instruct"
    base: str = "dolly-15k"
    base_size: int = Field(gt=0)
    safety: SafetySource | list[SafetySource] = Field(
        "saferpaca-safety",
        description="the safety source (a catalogue name, a file, an `hf:` id or `{build: {...}}`), or a list of "
        "sources to compare: each dose is trained with each source on the same base rows and seeds",
    )
    doses: list[int] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    formats: list[Literal["instruction", "question", "mixed"]] = Field(
        default_factory=lambda: ["instruction"],  # type: ignore[arg-type]
        min_length=1,
        description="the form of the safety prompts per cell",
    )
    format_responder: str | None = Field(
        None, description="responder that rewrites safety prompts into the other form, e.g. hf:smollm2-135m-instruct"
    )
    safety_questions: str | None = Field(
        None, description="a file of question-form safety prompts by id, e.g. from `safedose data convert-format`"
    )
    val_size: int = Field(200, gt=0, description="base rows that choose the checkpoint")
    test_size: int = Field(200, gt=0, description="base rows that measure capability (never seen in training)")
    max_tokens: int | None = Field(None, gt=0)
    train: dict[str, Any] = Field(default_factory=dict)
    eval_sets: EvalSets
    attacks: list[str | AttackEntry] = Field(
        default_factory=lambda: [PLAIN],  # type: ignore[arg-type]
        description="attacks on the harm sets' prompts; every attacked answer is paired with its plain answer",
    )
    judges: Judges = Field(default_factory=Judges)
    decoding: Decoding = Field(default_factory=Decoding)
    backend: Backend = "hf"
    vllm: VllmSettings = Field(default_factory=VllmSettings, description="the vLLM engine (backend vllm)")
    openai: OpenAISettings = Field(
        default_factory=OpenAISettings, description="the endpoint serving the base model and every adapter by name"
    )
    executor: Literal["local", "ray"] = Field("local", description="where cells run: this process, or Ray tasks")
    ray: RaySettings = Field(default_factory=RaySettings, description="the Ray cluster and task resources")
    model_shape: dict[str, Any] | None = Field(
        None, description="config.json fields for --dry-run's memory estimate when the model is not local"
    )
    target: Target | None = Field(None, description="the limits the recommended dose must meet")
    search: Search | None = Field(None, description="settings of `sweep --search`")

    @field_validator("doses")
    @classmethod
    def _doses(cls, doses: list[int]) -> list[int]:
        if any(d < 0 for d in doses) or len(set(doses)) != len(doses):
            raise ValueError("doses must be distinct and non-negative")
        return sorted(doses)

    @field_validator("safety")
    @classmethod
    def _safety(cls, safety: SafetySource | list[SafetySource]) -> SafetySource | list[SafetySource]:
        sources = safety if isinstance(safety, list) else [safety]
        if not sources:
            raise ValueError("list at least one safety source")
        labels = [safety_label(s) for s in sources]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                if sources[labels.index(label)] == sources[i]:
                    raise ValueError(f"safety source {label!r} is listed twice")
                raise ValueError(f"two safety sources are both labelled {label!r} in cell names; rename one")
        for source in sources:
            if isinstance(source, BuiltSource):
                source.build.check()
        return safety

    @property
    def safety_sources(self) -> dict[str | None, SafetySource]:
        """Each safety source by the label its cells carry; one source has the label None (no safety axis)."""
        sources = self.safety if isinstance(self.safety, list) else [self.safety]
        if len(sources) == 1:
            return {None: sources[0]}
        return {safety_label(s): s for s in sources}

    @model_validator(mode="after")
    def _formats(self) -> SweepConfig:
        if len(set(self.formats)) != len(self.formats):
            raise ValueError("formats: a format is listed twice")
        if self.format_responder is not None and self.safety_questions is not None:
            raise ValueError("set format_responder or safety_questions, not both")
        if set(self.formats) != {"instruction"} and self.format_responder is None and self.safety_questions is None:
            raise ValueError(
                "formats question and mixed need question-form safety prompts: set format_responder (a responder "
                "spec, e.g. hf:smollm2-135m-instruct) or safety_questions (a file)"
            )
        return self

    @property
    def pairs_forms(self) -> bool:
        """Whether the safety items are paired across forms (then every format, instruction too, uses the pairs)."""
        return self.format_responder is not None or self.safety_questions is not None

    @model_validator(mode="after")
    def _train_settings(self) -> SweepConfig:
        clash = sorted(set(self.train) & set(CELL_FIELDS))
        if clash:
            raise ValueError(f"train: {', '.join(clash)} are set by the sweep per cell")
        self.cell_train_config("n0", "x", "x", 0)  # validates the training settings now
        return self

    @model_validator(mode="after")
    def _target_sets(self) -> SweepConfig:
        if self.target is not None:
            sets = {"harm": self.eval_sets.harm, "over_refusal": self.eval_sets.over_refusal}
            try:
                check_target_sets(self.target, sets, where="target")
            except SafedoseError as e:
                raise ValueError(str(e)) from None
        return self

    @model_validator(mode="after")
    def _attacks(self) -> SweepConfig:
        names = [a if isinstance(a, str) else a.attack for a in self.attacks]
        parsed = []
        for name in names:
            try:
                parsed.append(parse_attack(name).name)
            except SafedoseError as e:
                raise ValueError(str(e)) from None
        if len(set(parsed)) != len(parsed):
            raise ValueError("an attack is listed twice")
        prefills = [n for n in parsed if n.partition(":")[0] == "prefill"]
        if prefills and self.backend == "openai":
            raise ValueError(f"attack {prefills[0]!r} prefills answers by token ids: use backend hf or vllm (an "
                             "endpoint tokenises the text itself)")  # fmt: skip
        for entry in self.attacks:
            if isinstance(entry, AttackEntry):
                for name in entry.sets or []:
                    if name in self.eval_sets.over_refusal:
                        raise ValueError(f"attack {entry.attack!r} on {name!r}: attacks apply to harm sets, and "
                                         f"{name} is an over-refusal set")  # fmt: skip
                    if name not in self.eval_sets.harm:
                        raise ValueError(f"attack {entry.attack!r}: {name!r} is not one of eval_sets.harm "
                                         f"({', '.join(self.eval_sets.harm)})")  # fmt: skip
        return self

    def attack_plan(self) -> list[tuple[Attack, list[str]]]:
        """Every attack but `none` with the harm sets it is asked on, checked against them (one-line errors)."""
        out = []
        for entry in self.attacks:
            spec, sets = (entry, None) if isinstance(entry, str) else (entry.attack, entry.sets)
            attack = parse_attack(spec)
            if attack.name == PLAIN:
                continue
            if sets is None:
                sets = [s for s in self.eval_sets.harm if attack.applies_to(s)]
                if not sets:
                    attack.check_set(self.eval_sets.harm[0])  # says which set the attack needs
            for name in sets:
                attack.check_set(name)
            out.append((attack, sets))
        return out

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.name}")

    def cell_train_config(self, output_dir: str, train_file: str, val_file: str, seed: int) -> TrainConfig:
        data = {**self.train, "model": self.model, "train_file": train_file, "val_file": val_file,
                "output_dir": output_dir, "seed": seed}  # fmt: skip
        try:
            return TrainConfig.model_validate(data)
        except ValidationError as e:
            raise NestedConfigError(("train",), TrainConfig, e) from None


def load_sweep_config(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read a YAML sweep config with `key=value` overrides (dotted keys reach nested fields)."""
    return validate_config(SweepConfig, read_config(path, overrides), source=str(path), overrides=overrides)
