"""Before any work: every name a config uses resolves, every step has a fingerprint, and the plan says what will run.

A mix is addressed by the fingerprint of everything that decides its files (sources and their hashes, sizes,
seed, format, contamination sets, mixing version); doses are not in it, because adding a dose leaves the files of
the other doses byte-identical. A cell is addressed by its training fingerprint (base model hash, data file
hashes, every training setting, recipe version). Changing a setting therefore makes new directories beside the
old ones, and switching back finds the old ones again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safedose.data import CATALOG_VERSION, DATASETS, default_contamination_sets, resolve, train_file, val_file
from safedose.data._sources import missing_source
from safedose.errors import SafedoseError
from safedose.files import sha256_file, write_json
from safedose.paths import cache_dir, data_root
from safedose.sweep._config import ROLES, SweepConfig

if TYPE_CHECKING:
    from safedose.data import FormSource

# Bumped when what mixing does changes (sampling, dedup, contamination rule), not on every release.
MIX_RECIPE_VERSION = 2
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class Cell:
    dose: int
    seed: int
    format: str

    @property
    def name(self) -> str:
        return f"n{self.dose}-s{self.seed}-{self.format}"


def cells_of(config: SweepConfig) -> list[Cell]:
    return [Cell(d, s, f) for s in config.seeds for f in config.formats for d in config.doses]


# -- names resolve before anything runs ---------------------------------------------------------------------------


def check_names(config: SweepConfig) -> None:
    """Every dataset, eval set, judge and the model resolve (with did-you-mean on a typo), or a one-line error.
    Nothing is downloaded or converted here: a hub id need not be in the HF cache yet."""
    from safedose.judges import JUDGES
    from safedose.models import local_model_dir

    for field, name in [("base", config.base), ("safety", config.safety)]:
        _check_source(field, name)
    for role in ("harm", "over_refusal"):
        for name in getattr(config.eval_sets, role):
            _check_source(f"eval_sets.{role}", name)
    if config.safety_questions is not None:
        _check_source("safety_questions", config.safety_questions)
    if config.format_responder is not None:
        from safedose.data._formats import make_rewriter

        try:
            make_rewriter(config.format_responder)
        except SafedoseError as e:
            raise SafedoseError(f"format_responder: {e}") from None
    if config.eval_sets.capability.references:
        _check_source("eval_sets.capability.references", config.eval_sets.capability.references)
    from safedose.capability._sweep import check_capability

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


# -- fingerprints -------------------------------------------------------------------------------------------------


def source_id(name: str) -> dict[str, Any]:
    """What identifies a source's content: catalogue hashes, a file's sha256, or the hub id."""
    if name in DATASETS:
        return {"name": name, "sha256": [f.sha256 for f in DATASETS.get(name).files]}
    if name.startswith(HF_PREFIX):
        return {"name": name}
    return {"file": str(Path(name).expanduser().resolve()), "sha256": sha256_file(Path(name).expanduser())}


def contamination_sets(config: SweepConfig) -> list[str]:
    """Every registered eval set, plus the files and hub sets this config evaluates on."""
    registered = default_contamination_sets()
    return registered + [s for s in config.eval_sets.all_sets() if s not in registered]


def form_source(config: SweepConfig, run: Path | None = None) -> FormSource | None:
    """Where the safety prompts' question forms come from (None: instruction form only, not paired); a responder
    caches its rewrites in the run's `data/formats.sqlite`."""
    from safedose.data import FormSource

    if config.safety_questions is not None:
        return FormSource.from_file(config.safety_questions)
    if config.format_responder is None:
        return None
    from safedose.data._formats import make_rewriter, rewrite_decoding

    cache = run / "data" / "formats.sqlite" if run is not None else None
    decoding = rewrite_decoding(dtype=config.decoding.dtype)
    return FormSource(responder=make_rewriter(config.format_responder, decoding=decoding, cache=cache))


def mix_inputs(config: SweepConfig, seed: int, fmt: str) -> dict[str, Any]:
    """What decides a mix's files. With paired forms, where the forms come from (rewriting version, checks, responder
    identity or file hash) is part of it; without, the inputs are what they were before formats existed."""
    from safedose.models import model_hash, resolve_model

    tokenizer = model_hash(resolve_model(config.model)) if config.max_tokens is not None else None
    inputs = {
        "mix_recipe_version": MIX_RECIPE_VERSION,
        "catalog_version": CATALOG_VERSION,
        "base": source_id(config.base),
        "safety": source_id(config.safety),
        "base_size": config.base_size,
        "val_size": config.val_size,
        "test_size": config.test_size,
        "max_tokens": config.max_tokens,
        "tokenizer": tokenizer,
        "seed": seed,
        "format": fmt,
        "contamination": [source_id(s) for s in contamination_sets(config)],
    }
    forms = form_source(config)
    if forms is not None:
        inputs["forms"] = forms.identity()
    return inputs


def digest(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def mix_dir(run: Path, config: SweepConfig, seed: int, fmt: str) -> Path:
    return run / "data" / f"seed{seed}-{fmt}" / digest(mix_inputs(config, seed, fmt))[:12]


def mix_complete(out: Path, doses: list[int]) -> bool:
    from safedose.data import test_file

    needed = [train_file(out, d) for d in doses] + [val_file(out, d) for d in doses] + [test_file(out)]
    return (out / "datasheet.json").is_file() and all(p.is_file() for p in needed)


def cell_fingerprint(config: SweepConfig, run: Path, cell: Cell) -> tuple[str, dict[str, Any]]:
    """The training fingerprint of a cell whose mix exists."""
    from safedose.models import model_hash, resolve_model
    from safedose.train import fingerprint, fingerprint_inputs
    from safedose.train._recipe import _mixed_precision

    data = mix_dir(run, config, cell.seed, cell.format)
    train_config = config.cell_train_config("-", str(train_file(data, cell.dose)), str(val_file(data, cell.dose)),
                                            cell.seed)  # fmt: skip
    inputs = fingerprint_inputs(train_config, base_model_hash=model_hash(resolve_model(config.model)),
                                mixed_precision=_mixed_precision(train_config.dtype))  # fmt: skip
    return fingerprint(inputs), inputs


def adapter_dir(run: Path, cell: Cell, fingerprint: str) -> Path:
    return run / "adapters" / f"{cell.name}-{fingerprint[:12]}"


# -- measured speed, for estimates --------------------------------------------------------------------------------


def _timings_path() -> Path:
    return cache_dir() / "timings.json"


def record_timing(key: str, seconds: float, units: float) -> None:
    """Remember how long `units` of work of kind `key` took on this machine (seconds per unit, last value wins)."""
    if units <= 0:
        return
    path = _timings_path()
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        data = {}
    data[key] = {"seconds_per_unit": seconds / units, "measured": time.strftime("%Y-%m-%d")}
    write_json(path, data)


def measured(key: str) -> float | None:
    path = _timings_path()
    try:
        value = json.loads(path.read_text()).get(key) if path.is_file() else None
    except json.JSONDecodeError:
        return None
    return float(value["seconds_per_unit"]) if value else None


def timing_key(kind: str, config: SweepConfig) -> str:
    """Timings are per kind of work, model and settings that set its speed on this machine."""
    from safedose.generate._settings import resolve_dtype

    if kind == "train":
        settings = config.cell_train_config("-", "-", None, 0)  # type: ignore[arg-type]
        return f"train:{config.model}:{resolve_dtype(settings.dtype)}:{settings.max_length}:{settings.micro_batch_size}"
    return f"{kind}:{config.model}:{config.backend}:{config.decoding.key()['dtype']}:{config.decoding.max_new_tokens}"


# -- the plan -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    status: str  # "cached", "resume", "run"
    detail: str
    seconds: float | None


def plan(config: SweepConfig) -> list[Step]:
    """Every step of the sweep, whether its result is already on disk, and an estimate of its time here (None: not
    measured on this machine). Nothing is downloaded: without the model here, what needs its hash is planned as
    work to do."""
    from safedose.models import local_model_dir
    from safedose.train._recipe import CHECKPOINTS, MANIFEST

    check_names(config)
    run = config.run_dir
    here = local_model_dir(config.model) is not None
    steps: list[Step] = []
    cells = cells_of(config)
    for seed in config.seeds:
        for fmt in config.formats:
            if not here and config.max_tokens is not None:
                detail = "named by the model's tokenizer (max_tokens), once the model is on this machine"
                steps.append(Step(f"mix seed {seed} {fmt}", "run", detail, 5.0))
                continue
            out = mix_dir(run, config, seed, fmt)
            done = mix_complete(out, config.doses)
            detail, estimate = str(out), None if done else 5.0
            if config.pairs_forms:
                source = config.format_responder or config.safety_questions
                cached = " (rewrites cached in data/formats.sqlite)" if config.format_responder else ""
                detail += f"; safety prompts paired with their question form from {source}{cached}"
                estimate = None if config.format_responder and not done else estimate
            steps.append(Step(f"mix seed {seed} {fmt}", "cached" if done else "run", detail, estimate))
    per_row_epoch = measured(timing_key("train", config))
    epochs = config.cell_train_config("-", "-", None, 0).epochs  # type: ignore[arg-type]
    fingerprints: dict[str, str] = {}
    for cell in cells:
        rows = config.base_size + cell.dose
        estimate = per_row_epoch * rows * epochs if per_row_epoch else None
        data = mix_dir(run, config, cell.seed, cell.format) if here or config.max_tokens is None else None
        if data is None or not (train_file(data, cell.dose).is_file() and val_file(data, cell.dose).is_file()):
            after = "its mix is written" if here else "the model is on this machine"
            steps.append(Step(f"train {cell.name}", "run", f"after {after}{_flops(config, rows)}", estimate))
            continue
        if not here:
            steps.append(Step(f"train {cell.name}", "run", f"once the model is on this machine{_flops(config, rows)}",
                              estimate))  # fmt: skip
            continue
        fp, _ = cell_fingerprint(config, run, cell)
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
    from safedose.capability._sweep import plan_step

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
    from safedose.sweep._memory import model_shape

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
    from safedose.run import manifest_path, metrics_path

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
    from safedose.judges import JUDGES, get_judge, judge_id

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
    from safedose.attacks import TemplateAttack

    total = 0
    for attack, sets in config.attack_plan():
        per_prompt = len(attack.chosen()) if isinstance(attack, TemplateAttack) else 1
        total += per_prompt * sum(min(config.eval_sets.limit or 10**9, _size(s)) for s in sets)
    return total


def _size(name: str) -> int:
    if name in DATASETS:
        return DATASETS.get(name).rows
    from safedose.data import load_eval_prompts

    return len(load_eval_prompts(name))
