"""Before any work: every name a config uses resolves, and the dry-run plan says what will run, what is already on
disk (found by fingerprint, `safedose.sweep._fingerprints`) and how long the rest takes here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safedose.attacks import TemplateAttack
from safedose.build import make_rewriter
from safedose.data import DATASETS, load_eval_prompts, load_instructions, missing_source, resolve, train_file, val_file
from safedose.errors import SafedoseError
from safedose.judges import JUDGES, get_judge, judge_id
from safedose.models import local_model_dir
from safedose.paths import data_root
from safedose.run import manifest_path, metrics_path
from safedose.sweep._capability_step import check_capability, plan_step
from safedose.sweep._config import ROLES, SweepConfig
from safedose.sweep._fingerprints import (
    HF_PREFIX,
    Cell,
    adapter_dir,
    cell_fingerprint,
    cells_of,
    mix_complete,
    mix_dir,
    mix_groups,
    mix_step_name,
    safety_file,
)
from safedose.sweep._memory import model_shape
from safedose.sweep._safety import BuiltSource
from safedose.sweep._timings import measured, timing_key
from safedose.train import CHECKPOINTS, MANIFEST

# -- names resolve before anything runs ---------------------------------------------------------------------------


def check_names(config: SweepConfig) -> None:
    """Every dataset, eval set, judge and the model resolve (with did-you-mean on a typo), or a one-line error.
    Nothing is downloaded or converted here: a hub id need not be in the HF cache yet."""
    _check_source("base", config.base)
    for source in config.safety_sources.values():
        if isinstance(source, BuiltSource):
            for name in source.build.prompts:
                _check_source(f"safety: build {source.build.label}: prompts", name)
        else:
            _check_source("safety", source)
    if len(config.safety_sources) > 1:
        _check_safety_sizes(config)
    for role in ("harm", "over_refusal"):
        for name in getattr(config.eval_sets, role):
            _check_source(f"eval_sets.{role}", name)
    if config.safety_questions is not None:
        _check_source("safety_questions", config.safety_questions)
    if config.format_responder is not None:
        try:
            make_rewriter(config.format_responder)
        except SafedoseError as e:
            raise SafedoseError(f"format_responder: {e}") from None
    if config.eval_sets.capability.references:
        _check_source("eval_sets.capability.references", config.eval_sets.capability.references)
    check_capability(config.eval_sets.capability)
    for role in ROLES:
        name = getattr(config.judges, role)
        if name:
            base, sep, arg = name.partition(":")
            try:
                JUDGES.get(base)
            except SafedoseError as e:
                raise SafedoseError(f"judges.{role}: {e}") from None
            if sep and not arg:
                raise SafedoseError(f"judges.{role}: {name!r} needs an argument after the colon")
    for attack, _ in config.attack_plan():
        try:
            attack.prepare()
        except SafedoseError as e:
            raise SafedoseError(f"attacks: {e}") from None
    try:
        local_model_dir(config.model)
    except SafedoseError as e:
        raise SafedoseError(f"model: {e}") from None


def _check_safety_sizes(config: SweepConfig) -> None:
    """Every compared safety source holds the largest dose (rows before filtering; the mix checks after), so that a
    dose means the same number of rows for each."""
    largest = max(config.doses)
    for source in config.safety_sources.values():
        if isinstance(source, BuiltSource):
            if source.build.n is not None and source.build.n < largest:
                raise SafedoseError(f"safety: build {source.build.label}: n {source.build.n} is fewer than the "
                                    f"largest dose ({largest})")  # fmt: skip
            continue
        if source.startswith(HF_PREFIX):
            continue
        size = len(load_instructions(source))
        if size < largest:
            raise SafedoseError(f"safety: {source}: {size} rows, fewer than the largest dose ({largest})")


def _check_source(field: str, name: str) -> None:
    if name.startswith(HF_PREFIX):
        return
    if name in DATASETS:
        res = resolve(DATASETS.get(name), data_root(), verify=False)
        if not res.ok:
            raise SafedoseError(f"{field}: {name}: {res.status}")
        return
    path = Path(name).expanduser()
    if path.is_dir():
        raise SafedoseError(f"{field}: {name}: is a directory; give a data file")
    if not path.is_file():
        raise SafedoseError(f"{field}: {missing_source(name)}")


# -- the plan -----------------------------------------------------------------------------------------------------


# A step that needs no work of its own: a cell whose training data and settings equal an earlier cell's.
SHARED = "shared"


@dataclass(frozen=True)
class Step:
    name: str
    status: str  # "cached", "resume", "run", "shared"
    detail: str
    seconds: float | None

    @property
    def needs_work(self) -> bool:
        return self.status not in ("cached", SHARED)


def plan(config: SweepConfig) -> list[Step]:
    """Every step of the sweep, whether its result is already on disk, and an estimate of its time here (None: not
    measured on this machine). Nothing is downloaded: without the model here, what needs its hash is planned as
    work to do."""
    check_names(config)
    run = config.run_dir
    here = local_model_dir(config.model) is not None
    steps: list[Step] = []
    cells = cells_of(config)
    for source in config.safety_sources.values():
        if isinstance(source, BuiltSource):
            built = Path(safety_file(config, run, source))
            detail = (f"{built}: {source.build.n or max(config.doses)} rows from {', '.join(source.build.prompts)} "
                      f"answered by {source.build.responder}, filtered by the judges")  # fmt: skip
            steps.append(Step(f"build safety {source.build.label}", "cached" if built.is_file() else "run", detail,
                              None))  # fmt: skip
    for seed, fmt, safety in mix_groups(config):
        name = mix_step_name(seed, fmt, safety)
        if not here and config.max_tokens is not None:
            detail = "named by the model's tokenizer (max_tokens), once the model is on this machine"
            steps.append(Step(name, "run", detail, 5.0))
            continue
        out = mix_dir(run, config, seed, fmt, safety)
        done = mix_complete(out, config.doses)
        detail, estimate = str(out), None if done else 5.0
        if config.pairs_forms:
            forms = config.format_responder or config.safety_questions
            cached = " (rewrites cached in data/formats.sqlite)" if config.format_responder else ""
            detail += f"; safety prompts paired with their question form from {forms}{cached}"
            estimate = None if config.format_responder and not done else estimate
        steps.append(Step(name, "cached" if done else "run", detail, estimate))
    per_row_epoch = measured(timing_key("train", config))
    epochs = config.cell_train_config("-", "-", None, 0).epochs  # type: ignore[arg-type]
    fingerprints: dict[str, str] = {}
    owners: dict[str, Cell] = {}
    for cell in cells:
        rows = config.base_size + cell.dose
        estimate = per_row_epoch * rows * epochs if per_row_epoch else None
        data = mix_dir(run, config, cell.seed, cell.format, cell.safety) if here or config.max_tokens is None else None
        if data is None or not (train_file(data, cell.dose).is_file() and val_file(data, cell.dose).is_file()):
            after = "its mix is written" if here else "the model is on this machine"
            steps.append(Step(f"train {cell.name}", "run", f"after {after}{_flops(config, rows)}", estimate))
            continue
        if not here:
            steps.append(Step(f"train {cell.name}", "run", f"once the model is on this machine{_flops(config, rows)}",
                              estimate))  # fmt: skip
            continue
        fp, _ = cell_fingerprint(config, run, cell)
        owner = owners.setdefault(fp, cell)
        if owner is not cell:
            if owner.name in fingerprints:  # finished with its owner
                fingerprints[cell.name] = fp
            steps.append(Step(f"train {cell.name}", SHARED, f"the same training data: one run with {owner.name}", None))
            continue
        target = adapter_dir(run, cell, fp)
        checkpoints = sorted((target / CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        if (target / MANIFEST).is_file():
            fingerprints[cell.name] = fp
            steps.append(Step(f"train {cell.name}", "cached", str(target), None))
        elif checkpoints:
            steps.append(Step(f"train {cell.name}", "resume", f"{target} from {checkpoints[-1].name}", estimate))
        else:
            steps.append(Step(f"train {cell.name}", "run", f"{target}{_flops(config, rows)}", estimate))
    all_trained = len(fingerprints) == len(cells)
    answered, same_report = _finished_variants(config, fingerprints)
    new = [c for c in cells if c.name not in answered]
    n_prompts = sum(min(config.eval_sets.limit or 10**9, _size(s)) for s in config.eval_sets.all_sets())
    n_prompts += _attacked_prompts(config)
    n_variants = len(cells) + 2
    todo = len(new) + (0 if answered else 2)  # the untuned model's two variants go with the first run
    answers = n_prompts * todo
    status = "cached" if not todo else "run"
    reused = f"; {n_variants - todo} of {n_variants} variants finished" if todo and answered else ""
    note = "finished rows are reused from cache.sqlite" if (run / "cache.sqlite").is_file() else "nothing cached yet"
    per_answer = measured(timing_key("generate", config))
    steps.append(Step("generate", status, f"{n_variants} variants x {n_prompts} prompts{reused}; {note}",
                      _times(per_answer, answers, status)))  # fmt: skip
    per_verdict, per_value = measured(timing_key("judge", config)), measured(timing_key("capability", config))
    steps.append(Step("judge", status, f"verdicts are cached per judge revision and answer{reused}",
                      _times(per_verdict, answers, status)))  # fmt: skip
    values = todo * (2 if config.eval_sets.capability.references else 1)
    steps.append(Step("capability", status, f"values are cached per variant and data{reused}",
                      _times(per_value, values, status)))  # fmt: skip
    name, _, detail, estimate = plan_step(config.eval_sets.capability, max(todo - 1, 0), config.model)
    steps.append(Step(name, status, detail, None if status == "cached" else estimate))
    report = "cached" if same_report and not todo else "run"
    steps.append(Step("metrics and report", report, "" if all_trained else "after every cell is trained",
                      None if report == "cached" else 5.0))  # fmt: skip
    return steps


def _times(per_unit: float | None, units: int, status: str) -> float | None:
    return None if status == "cached" or per_unit is None else per_unit * units


def _flops(config: SweepConfig, rows: int) -> str:
    """`; about N FLOP` of training `rows` rows (6 x parameters x tokens, every row at max_length: an upper bound),
    from the model's shape; empty when the shape is not known without loading the model."""
    try:
        shape, _ = model_shape(config.model, config.model_shape)
    except SafedoseError:
        return ""
    train = config.cell_train_config("-", "-", None, 0)  # type: ignore[arg-type]
    flops = 6 * shape.parameters() * rows * train.epochs * train.max_length
    return f"; at most {flops:.1e} FLOP (6 x parameters x tokens)"


def _finished_variants(config: SweepConfig, fingerprints: dict[str, str]) -> tuple[set[str], bool]:
    """The cells whose answers, verdicts and capability values a finished sweep of this study holds (trained with
    today's fingerprints, judged by today's judge revisions), and whether its metrics and report are today's."""
    run = config.run_dir
    try:
        manifest = json.loads(manifest_path(run).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return set(), False
    if not metrics_path(run).is_file() or not isinstance(manifest, dict):
        return set(), False
    ignored = ("doses", "seeds", "formats", "target", "search", "executor", "ray", "output_dir", "name")
    now = config.model_dump(mode="json")
    then = {"attacks": ["none"], **(manifest.get("config") or {})}  # runs from before the attacks axis had none
    if any(now.get(k) != then.get(k) for k in now if k not in ignored) or manifest.get("judges") != _revisions(config):
        return set(), False
    cells = manifest.get("cells") or {}
    answered = {name for name, fp in fingerprints.items() if (cells.get(name) or {}).get("fingerprint") == fp}
    same = answered == set(cells) and all(now.get(k) == then.get(k) for k in ("doses", "seeds", "formats", "target"))
    return answered, same


def _revisions(config: SweepConfig) -> dict[str, str] | None:
    """Each judged role's judge revision (`name@revision`), read without building a judge; None where a judge's
    revision is only known once it is made (a local model or an endpoint)."""
    out = {}
    for role in ROLES:
        name = getattr(config.judges, role)
        if not name:
            continue
        entry = JUDGES.get(name.partition(":")[0])
        if entry.trained is not None:
            out[role] = f"{entry.trained.name}@{entry.trained.revision}"
        elif entry.kind == "rule":
            out[role] = judge_id(get_judge(name))
        else:
            return None
    return out


def _attacked_prompts(config: SweepConfig) -> int:
    """Attacked prompts per variant, at most (a transferred prompt that does not exist is not asked)."""
    total = 0
    for attack, sets in config.attack_plan():
        per_prompt = len(attack.chosen()) if isinstance(attack, TemplateAttack) else 1
        total += per_prompt * sum(min(config.eval_sets.limit or 10**9, _size(s)) for s in sets)
    return total


def _size(name: str) -> int:
    if name in DATASETS:
        return DATASETS.get(name).rows
    return len(load_eval_prompts(name))
