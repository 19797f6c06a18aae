"""The sweep recipe: mixes → adapters → generations → verdicts → capability → metrics → report. Read top to bottom.

Every step stores what it finished (mix files, adapter manifests, rows in `cache.sqlite`) before the next begins,
and every mix and adapter directory is named by the fingerprint of what decides it, so a killed sweep rerun with the
same command skips the finished work and ends with the same metrics, and a changed setting never reuses stale work.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from safedose.cache import Cache, cache_key
from safedose.data import (
    DATASETS,
    EvalPrompt,
    InstructionRecord,
    load_eval_prompts,
    load_instructions,
    mix,
    sample_prompts,
    train_file,
    val_file,
)
from safedose.data import test_file as base_test_file
from safedose.files import sha256_file
from safedose.generate import Generation, generate, load_adapter_info, load_model, load_tokenizer, use_variant
from safedose.judges import JUDGES, get_judge, judge_id, judge_rows, stored_validation, validate
from safedose.models import model_hash, resolve_model
from safedose.paths import data_root
from safedose.report import write_metrics, write_report
from safedose.run import (
    BASE,
    BASE_CHAT,
    RUN_FILE,
    SCHEMA_VERSION,
    CellEntry,
    CellKey,
    JudgedAnswer,
    Manifest,
    MixEntry,
    RoleVerdict,
    Sampling,
    attacked_path,
    open_run,
    results_dir,
    write_attacked,
    write_judged,
    write_manifest,
)
from safedose.sweep._capability_step import run_capability
from safedose.sweep._config import ROLES, Judges, SweepConfig
from safedose.sweep._executor import Executor, make_executor
from safedose.sweep._fingerprints import (
    Cell,
    adapter_dir,
    base_excludes,
    cell_fingerprint,
    cells_of,
    contamination_sets,
    form_source,
    mix_complete,
    mix_dir,
    mix_group_name,
    mix_groups,
    mix_inputs,
    mix_step_name,
    safety_file,
)
from safedose.sweep._plan import check_names
from safedose.sweep._safety import BuiltSource
from safedose.sweep._timings import record_timing, timing_key
from safedose.train import RECIPE_VERSION, mean_token_nll, train

if TYPE_CHECKING:
    from safedose.capability import CapabilityResults
    from safedose.generate import Adapter
    from safedose.train import TrainConfig


@dataclass(frozen=True)
class SweepResult:
    run_dir: Path
    metrics: dict[str, Any]
    report: Path


class _Steps:
    """Whole-sweep progress: steps done / total and the time elapsed, one line per step. No ETA: steps differ too
    much in length (and in what the cache spares them) for the elapsed time to predict the rest; `--dry-run`
    estimates from the timings measured on this machine."""

    def __init__(self, total: int, console: Console) -> None:
        self.total, self.done, self.console, self.started = total, 0, console, time.perf_counter()

    def start(self, what: str) -> None:
        elapsed = time.perf_counter() - self.started
        self.console.print(f"[bold][{self.done + 1}/{self.total}][/] {escape(what)} ({elapsed / 60:.1f} min elapsed)")

    def finish(self) -> None:
        self.done += 1


def sweep(config: SweepConfig, *, console: Console | None = None) -> SweepResult:
    """Run (or finish) the whole study described by `config`, in this process or on Ray (`config.executor`)."""
    console = console or Console()
    check_names(config)  # a typo fails here, before any work
    executor = make_executor(config.executor, config.ray, console=console)  # an unreachable cluster fails here too
    fresh = not (config.run_dir / RUN_FILE).is_file()
    try:
        run = open_run(config.run_dir, create=True)
    except BaseException:
        executor.close()
        raise
    cache = Cache(run / "cache.sqlite")
    try:
        return _sweep(config, run, executor, cache, console)
    except BaseException:
        cache.close()
        if fresh:
            _discard_unfinished(run)
        raise
    finally:
        cache.close()
        executor.close()


def _discard_unfinished(run: Path) -> None:
    """Remove a run directory this sweep started when it failed before finishing any work (no mix, no adapter):
    its run.json and empty cache.sqlite are not worth resuming from."""
    bookkeeping = {RUN_FILE, "cache.sqlite", "cache.sqlite-wal", "cache.sqlite-shm", "cache.sqlite-journal"}
    if any(p.is_file() and p.relative_to(run).as_posix() not in bookkeeping for p in run.rglob("*")):
        return
    for name in bookkeeping:
        (run / name).unlink(missing_ok=True)
    for folder in sorted((p for p in run.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()
    run.rmdir()


def _sweep(config: SweepConfig, run: Path, executor: Executor, cache: Cache, console: Console) -> SweepResult:
    cells = cells_of(config)
    groups_of_mixes = mix_groups(config)
    builds = [s for s in config.safety_sources.values() if isinstance(s, BuiltSource)]
    steps = _Steps(len(builds) + len(groups_of_mixes) + 5, console)

    # 0. Built safety sources: `safedose data build-safety` with the sweep's settings, once per fingerprint.
    for source in builds:
        steps.start(f"build safety {source.build.label}")
        _build_source(config, source, Path(safety_file(config, run, source)))
        steps.finish()

    # 1. Mixes: one nested set of doses per seed, format and safety source (exact N; shared train, selection and test
    # base rows, the same for every source). With paired forms, every format of a seed holds the same safety items,
    # rewritten once (cached).
    mixes: dict[tuple[int, str, str | None], MixEntry] = {}
    forms = form_source(config, run)
    for seed, fmt, safety in groups_of_mixes:
        steps.start(mix_step_name(seed, fmt, safety))
        out = mix_dir(run, config, seed, fmt, safety)
        if not mix_complete(out, config.doses):
            mix(base=config.base, base_size=config.base_size,
                safety=safety_file(config, run, config.safety_sources[safety]), doses=config.doses, out=out,
                seed=seed, val_size=config.val_size, test_size=config.test_size, format=fmt,
                max_tokens=config.max_tokens, tokenizer=config.model, eval_sets=contamination_sets(config),
                forms=forms,
                base_excludes=[safety_file(config, run, s) for s in base_excludes(config, safety)])  # fmt: skip
        mixes[(seed, fmt, safety)] = MixEntry(dir=str(out.relative_to(run)),
                                              fingerprint_inputs=mix_inputs(config, seed, fmt, safety))  # fmt: skip
        steps.finish()

    # 2. Adapters: one LoRA run per cell (a task each with Ray), in a directory named by its fingerprint; train()
    # resumes from the last checkpoint or returns the finished adapter. Cells with the same fingerprint (dose 0 of
    # every safety source: the same base rows) share one run.
    steps.start(f"train {len(cells)} cells")
    adapters: dict[Cell, Path] = {}
    fingerprints: dict[str, str] = {}
    calls: list[tuple[Any, ...]] = []
    owners: dict[str, Cell] = {}
    for cell in cells:
        data = mix_dir(run, config, cell.seed, cell.format, cell.safety).absolute()
        fp, _ = cell_fingerprint(config, run, cell)
        owner = owners.setdefault(fp, cell)
        adapters[cell], fingerprints[cell.name] = adapter_dir(run, owner, fp), fp
        if owner is cell:
            settings = config.cell_train_config(str(adapters[cell].absolute()), str(train_file(data, cell.dose)),
                                                str(val_file(data, cell.dose)), cell.seed)  # fmt: skip
            calls.append((settings,))
    trained = executor.map(_train_cell, calls, stage="train", names=[c.name for c in owners.values()])
    for cell, (settings,), seconds in zip(owners.values(), calls, trained, strict=True):
        if seconds is not None:  # trained now, not found finished
            record_timing(timing_key("train", config), seconds, (config.base_size + cell.dose) * settings.epochs)
    steps.finish()

    # Steps 3-5 run per group of cells: one group with the local executor, `ray.adapters_per_task` cells per Ray task
    # otherwise (the untuned model goes with the first group). Each variant's answers, verdicts and scores do not
    # depend on the group it is in, so the merged rows, their order and every number equal one local call's.
    groups = executor.groups(cells)
    task_config = config.model_copy(update={"output_dir": str(run.absolute())})  # a worker may start elsewhere
    group_names = [g[0].name if len(g) == 1 else f"{g[0].name}..{g[-1].name}" for g in groups]
    paths = {c.name: str(adapters[c].absolute()) for c in cells}
    order = {BASE: 0, **{c.name: i + 1 for i, c in enumerate(cells)}, BASE_CHAT: len(cells) + 1}

    # 3. Generations: the untuned base and every adapter, through the cache. The untuned model answers with the
    # tuning template (so untuned → dose 0 isolates tuning) and with its own chat template.
    steps.start("generate")
    prompts, sampling = _eval_prompts(config)
    attacked, sampling["attacks"] = _attacked_prompts(config, prompts)
    started = time.perf_counter()
    calls = [(task_config, {c.name: paths[c.name] for c in g}, g is groups[0], [*prompts, *attacked]) for g in groups]
    answered = executor.map(_generations, calls, stage="generate", names=group_names, store=cache)
    variants: list[tuple[str, Generation]] = sorted((v for part in answered for v in part), key=lambda v: order[v[0]])
    _record(timing_key("generate", config), started, len(variants))
    steps.finish()

    # 4. Verdicts: every judge over every answer, in batches, through the cache; trained judges are built and
    # validated once, before any answer is judged.
    steps.start("judge")
    started = time.perf_counter()
    (revisions,) = executor.map(_prepare_judges, [(config.judges,)], stage="judge", names=["judges"])
    in_group = [{c.name for c in g} | ({BASE, BASE_CHAT} if g is groups[0] else set()) for g in groups]
    index = [[i for i, (variant, _) in enumerate(variants) if variant in names] for names in in_group]
    calls = [(config.judges, [variants[i][1] for i in rows]) for rows in index]
    verdicts: dict[str, list[RoleVerdict]] = {role: [None] * len(variants) for role in revisions}  # type: ignore[list-item]
    for rows, part in zip(index, executor.map(_verdicts, calls, stage="judge", names=group_names, store=cache),
                          strict=True):  # fmt: skip
        for role, found in part.items():
            for i, verdict in zip(rows, found, strict=True):
                verdicts[role][i] = verdict
    by_name = {c.name: c for c in cells}
    judged = [_answer(variant, row, by_name.get(variant), {role: v[i] for role, v in verdicts.items()})
              for i, (variant, row) in enumerate(variants)]  # fmt: skip
    answers = [a for a in judged if a.attack is None]
    attacked_answers = [a for a in judged if a.attack is not None]
    write_judged(run, answers)
    if attacked_answers or attacked_path(run).is_file():
        write_attacked(run, attacked_answers)
    _record(timing_key("judge", config), started, len(answers))
    steps.finish()

    # 5. Capability: NLL on each seed's base-data test split (never used for training or checkpoint choice) and on
    # AlpacaEval reference answers, and the lm-eval benchmarks, per variant. With several groups the step runs once
    # more over every variant on the driver, which only reads the tasks' values back from the store.
    steps.start("capability")
    started = time.perf_counter()
    calls = [(task_config, g, g is groups[0], paths) for g in groups]
    scored = executor.map(_capability_step, calls, stage="capability", names=group_names, store=cache)
    capability, benchmarks = scored[0] if len(scored) == 1 else _capability_step(task_config, cells, True, paths,
                                                                                 store=cache)  # fmt: skip
    _record(timing_key("capability", config), started, len(capability))
    steps.finish()

    # 6. Metrics and the report.
    steps.start("metrics and report")
    write_manifest(run, _manifest(config, run, revisions, sampling, mixes, adapters, fingerprints))
    cell_info = [{"variant": c.name, **c.key.as_dict()} for c in cells]
    metrics = write_metrics(run, answers, capability, cells=cell_info, benchmarks=benchmarks)
    report = write_report(run)
    steps.finish()
    console.print(f"[bold]{escape(metrics['headline'])}[/]")
    console.print(f"report: {escape(str(report))}")
    return SweepResult(run, metrics, report)


def _build_source(config: SweepConfig, source: BuiltSource, out: Path) -> None:
    """Build a safety source unless its file is there: `n` rows (default: the largest dose), filtered by the build's
    judges, decontaminated against the sweep's eval sets."""
    from safedose.build import build_safety  # looked up at call time: tests patch it

    if out.is_file():
        return
    spec = source.build
    out.parent.mkdir(parents=True, exist_ok=True)
    build_safety(prompts=spec.prompts, responder=spec.responder, out=out, n=spec.n or max(config.doses),
                 allow_fewer=spec.allow_fewer, system=spec.system, eval_sets=contamination_sets(config),
                 refusal_judge=spec.refusal_judge, harm_judge=spec.harm_judge,
                 prompt_judge=spec.prompt_judge)  # fmt: skip


def _backend_settings(config: SweepConfig, template: str) -> dict[str, Any]:
    """The generation backend's settings from the config. An endpoint gets chat requests for chat-template prompts
    (it applies the model's template) and the rendered text as a completion otherwise (the Alpaca template)."""
    if config.backend == "openai":
        return {"openai": config.openai.model_copy(update={"mode": "chat" if template == "chat" else "completions"})}
    return {"vllm": config.vllm} if config.backend == "vllm" else {}


def _record(key: str, started: float, units: int) -> None:
    """Remember this machine's speed for `--dry-run`; a step served from the cache says nothing about speed."""
    elapsed = time.perf_counter() - started
    if elapsed > 2.0:
        record_timing(key, elapsed, units)


def _validate_once(name: str) -> None:
    """Trained judges are validated once per build (the report shows their agreement with humans)."""
    if name in JUDGES and JUDGES.get(name).trained is not None and stored_validation(name) is None:
        validate(name)


def _has_chat_template(model_dir: Path) -> bool:
    return bool(getattr(load_tokenizer(model_dir), "chat_template", None))


def _role_verdict(row: dict[str, Any]) -> RoleVerdict:
    """A judged row's verdict fields, with `scored_by` (which of a cross-fitted judge's models scored it) and a
    guard's `refusal` field where the judge gives them."""
    label = None if row.get("parse_error") else row.get("label")
    scored_by, refusal = row.get("scored_by"), row.get("refusal")
    return RoleVerdict(judge=row["judge"], label=label, score=row.get("score"),
                       parse_error=bool(row.get("parse_error")), categories=row.get("categories"),
                       scored_by=None if scored_by is None else str(scored_by),
                       refusal=refusal if isinstance(refusal, bool) else None)  # fmt: skip


def _answer(variant: str, row: Generation, cell: Cell | None, verdicts: dict[str, RoleVerdict]) -> JudgedAnswer:
    return JudgedAnswer(
        id=row.id, eval_set=row.eval_set, category=row.category, expected_label=row.expected_label,
        prompt=row.prompt, response=row.response, variant=variant, adapter=row.adapter, template=row.template,
        dtype=row.dtype, verdicts=verdicts, attack=row.attack, **(cell.key if cell else CellKey()).as_dict(),
    )  # fmt: skip


def _attacked_prompts(config: SweepConfig, prompts: list[EvalPrompt]) -> tuple[list[EvalPrompt], dict[str, Any]]:
    """Every attack's prompts on the sampled prompts of its harm sets (the same ids), and what was attacked."""
    out: list[EvalPrompt] = []
    summary: dict[str, Any] = {}
    for attack, sets in config.attack_plan():
        entry = summary.setdefault(attack.name, {"family": attack.family, "version": attack.version, "sets": {}})
        for name in sets:
            label = load_eval_prompts(name)[0].eval_set
            plain = [p for p in prompts if p.eval_set == label]
            rows = attack.apply(plain, source=name)
            out += rows
            entry["sets"][name] = {"prompts": len(plain), "attacked": len({r.id for r in rows}), "asked": len(rows)}
    return out, summary


def _eval_prompts(config: SweepConfig) -> tuple[list[EvalPrompt], dict[str, Any]]:
    """Each harm / over-refusal set, sampled (seeded, stratified by category) to `limit`, with what was drawn."""
    prompts: list[EvalPrompt] = []
    sampling: dict[str, Any] = {"limit": config.eval_sets.limit, "seed": config.eval_sets.sample_seed, "sets": {}}
    for name in config.eval_sets.all_sets():
        pool = load_eval_prompts(name)
        rows = sample_prompts(pool, config.eval_sets.limit, seed=config.eval_sets.sample_seed)
        expected = "unsafe" if name in config.eval_sets.harm else "safe"
        prompts += [p if p.expected_label else p.model_copy(update={"expected_label": expected}) for p in rows]
        by_category: dict[str, int] = {}
        for p in rows:
            by_category[p.category or "(none)"] = by_category.get(p.category or "(none)", 0) + 1
        sampling["sets"][name] = {"pool": len(pool), "n": len(rows), "by_category": dict(sorted(by_category.items())),
                                  "ids": [p.id for p in rows]}  # fmt: skip
    return prompts, sampling


# -- the work of one group of cells: module-level functions, so that a Ray task can run them ----------------------


def _train_cell(settings: TrainConfig) -> float | None:
    """Train (or resume, or find finished) one cell; the seconds it took when it trained now."""
    started, fresh = time.perf_counter(), not (Path(settings.output_dir) / "safedose.json").is_file()
    train(settings)
    return time.perf_counter() - started if fresh else None


def _generations(config: SweepConfig, adapters: dict[str, str], with_base: bool, prompts: list[EvalPrompt], *,
                 store: Cache) -> list[tuple[str, Generation]]:  # fmt: skip
    """Every answer of these adapters (and, `with_base`, of the untuned model with both templates) as (variant, row)."""
    template = config.train.get("template", "alpaca")
    specs = [f"{name}={path}" for name, path in adapters.items()]
    rows = generate(config.model, specs, prompts, template=template, decoding=config.decoding, include_base=with_base,
                    backend=config.backend, cache=store, **_backend_settings(config, template))  # fmt: skip
    variants = [(BASE if r.adapter is None else r.adapter, r) for r in rows]
    if with_base and template != "chat" and _has_chat_template(resolve_model(config.model)):
        chat = generate(config.model, [], prompts, template="chat", decoding=config.decoding,
                        backend=config.backend, cache=store, **_backend_settings(config, "chat"))  # fmt: skip
        variants += [(BASE_CHAT, r) for r in chat]
    return variants


def _prepare_judges(judges: Judges) -> dict[str, str]:
    """Build (once) and validate (once per build) every trained judge; each role's judge revision."""
    from safedose.annotate import judge_labels  # fastapi: the annotation app is loaded only when judges are made

    revisions = {}
    for role in ROLES:
        name = getattr(judges, role)
        if name:
            revisions[role] = judge_id(get_judge(name, human_labels=judge_labels(name)))
            _validate_once(name)
    return revisions


def _verdicts(judges: Judges, rows: list[Generation], *, store: Cache) -> dict[str, list[RoleVerdict]]:
    """Every role's verdict on every answer, in order."""
    from safedose.annotate import judge_labels  # fastapi: the annotation app is loaded only when judges are made

    out = {}
    for role in ROLES:
        name = getattr(judges, role)
        if name:
            # an attacked answer is judged against its plain request (as HarmBench judges a jailbreak's behaviour)
            asked = [{"prompt": r.attack.plain_prompt if r.attack else r.prompt, "response": r.response} for r in rows]
            judged = judge_rows(get_judge(name, human_labels=judge_labels(name)), asked, cache=store)
            out[role] = [_role_verdict(v) for v in judged]
    return out


def _capability_step(config: SweepConfig, cells: list[Cell], with_base: bool, adapters: dict[str, str], *,
                     store: Cache) -> tuple[list[dict[str, Any]], CapabilityResults]:  # fmt: skip
    """NLL values and lm-eval benchmarks of these cells (and, `with_base`, the untuned model), through the store."""
    model_dir = resolve_model(config.model)
    infos = {c.name: load_adapter_info(f"{c.name}={adapters[c.name]}") for c in cells}
    template = config.train.get("template", "alpaca")
    run = config.run_dir
    capability = _capability(config, cells, infos, with_base, run, model_dir, model_hash(model_dir), template, store)
    return capability, _benchmarks(config, cells, infos, with_base, run, model_dir, template, store)


def _capability(config: SweepConfig, cells: list[Cell], infos: dict[str, Adapter], with_base: bool, run: Path,
                model_dir: Path, base_hash: str, template: str, cache: Cache) -> list[dict[str, Any]]:  # fmt: skip
    """Mean NLL per token on each seed's base-data test split and on AlpacaEval references, cached per variant."""
    references: list[InstructionRecord] = []
    if config.eval_sets.capability.references:
        refs = [p for p in load_eval_prompts(config.eval_sets.capability.references) if p.reference]
        references = [InstructionRecord(id=p.id, instruction=p.prompt, output=p.reference or "", source=p.eval_set)
                      for p in refs[: config.eval_sets.capability.references_limit]]  # fmt: skip
    max_length = config.cell_train_config("-", "-", None, 0).max_length  # type: ignore[arg-type]
    variants: list[tuple[str, Cell | None, str]] = []
    if with_base:
        variants.append((BASE, None, template))
        if template != "chat" and _has_chat_template(model_dir):
            variants.append((BASE_CHAT, None, "chat"))
    variants += [(c.name, c, template) for c in cells]
    dtype = config.decoding.key()["dtype"]
    jobs = []
    for name, cell, variant_template in variants:
        seed, fmt, safety = (cell.seed, cell.format, cell.safety) if cell else (
            config.seeds[0], config.formats[0], next(iter(config.safety_sources)))  # fmt: skip
        test = base_test_file(mix_dir(run, config, seed, fmt, safety))
        for kind, data in (("test_loss", test), ("reference_nll", references)):
            if kind == "reference_nll" and not references:
                continue
            data_id = sha256_file(test) if kind == "test_loss" else [r.id for r in references]
            key = cache_key(kind=kind, model=base_hash, adapter=infos[name].hash if cell else None, data=data_id,
                            template=variant_template, dtype=dtype, max_length=max_length)  # fmt: skip
            jobs.append((key, name, cell, kind, data, variant_template))
    done = cache.get_many("capability", [j[0] for j in jobs])
    todo = [j for j in jobs if j[0] not in done]
    if todo:
        tokenizer = load_tokenizer(model_dir)
        tokenizer.padding_side = "right"
        model = load_model(model_dir, list(infos.values()), config.decoding.dtype)
        for key, name, cell, _kind, data, variant_template in todo:
            rows = load_instructions(str(data)) if isinstance(data, Path) else data
            with use_variant(model, name if cell else None):
                value = mean_token_nll(model, tokenizer, rows, template=variant_template, max_length=max_length)
            cache.put_many("capability", {key: {"value": value, "n": len(rows)}})
            done[key] = {"value": value, "n": len(rows)}
    return [{"variant": name, **(cell.key if cell else CellKey()).as_dict(), "metric": kind, **done[key]}
            for key, name, cell, kind, _, _ in jobs]  # fmt: skip


def _benchmarks(config: SweepConfig, cells: list[Cell], infos: dict[str, Adapter], with_base: bool, run: Path,
                model_dir: Path, template: str, cache: Cache) -> CapabilityResults:  # fmt: skip
    """lm-eval benchmarks of the untuned base and every cell, and the win-rate where a judge endpoint is set."""
    variants: list[tuple[str, Adapter | None]] = [(BASE, None)] if with_base else []
    variants += [(c.name, infos[c.name]) for c in cells]
    return run_capability(
        settings=config.eval_sets.capability, model=config.model, model_dir=model_dir, base_hash=model_hash(model_dir),
        variants=variants, cells={c.name: c.key for c in cells}, template=template,
        decoding=config.decoding, backend="hf" if config.backend == "openai" else config.backend, cache=cache,
        results_dir=results_dir(run),
    )  # fmt: skip


def _manifest(
    config: SweepConfig,
    run: Path,
    revisions: dict[str, str],
    sampling: dict[str, Any],
    mixes: dict[tuple[int, str, str | None], MixEntry],
    adapters: dict[Cell, Path],
    fingerprints: dict[str, str],
) -> Manifest:
    from importlib.metadata import version

    safety = [s.build.prompts if isinstance(s, BuiltSource) else [s] for s in config.safety_sources.values()]
    used = {config.base, *(name for names in safety for name in names), *config.eval_sets.all_sets()}
    if config.eval_sets.capability.references:
        used.add(config.eval_sets.capability.references)
    shas = {n: [f.sha256 for f in DATASETS.get(n).files] for n in sorted(used) if n in DATASETS}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = None
    packages = ("safedose", "torch", "transformers", "peft", "accelerate", "scikit-learn", "lm_eval")
    return Manifest(
        schema_version=SCHEMA_VERSION,
        config=config.model_dump(mode="json"),
        model_hash=model_hash(resolve_model(config.model)),
        generation_dtype=config.decoding.key()["dtype"],
        train_recipe_version=RECIPE_VERSION,
        mixes={mix_group_name(*k): m for k, m in sorted(mixes.items(), key=lambda i: (*i[0][:2], i[0][2] or ""))},
        cells={c.name: _cell_entry(c, fingerprints[c.name], adapters[c].relative_to(run)) for c in adapters},
        sampling=Sampling.model_validate(sampling),
        contamination_sets=contamination_sets(config),
        data_root=str(data_root()),
        data_sha256=shas,
        judges=revisions,
        versions={p: version(p) for p in packages},
        git_commit=commit,
    )


def _cell_entry(cell: Cell, fingerprint: str, adapter: Path) -> CellEntry:
    return CellEntry(dose=cell.dose, seed=cell.seed, format=cell.format, safety=cell.safety, fingerprint=fingerprint,
                     adapter=str(adapter))  # fmt: skip
