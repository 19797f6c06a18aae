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
from safedose.files import sha256_file, write_json
from safedose.generate import Generation
from safedose.run import BASE, BASE_CHAT, JudgedAnswer, RoleVerdict, manifest_path, open_run, write_judged
from safedose.sweep._config import ROLES, SweepConfig
from safedose.sweep._plan import (
    Cell,
    adapter_dir,
    cell_fingerprint,
    cells_of,
    check_names,
    contamination_sets,
    form_source,
    mix_complete,
    mix_dir,
    mix_inputs,
    record_timing,
    timing_key,
)

if TYPE_CHECKING:
    from safedose.capability import CapabilityResults


@dataclass(frozen=True)
class SweepResult:
    run_dir: Path
    metrics: dict[str, Any]
    report: Path


class _Steps:
    """Whole-sweep progress: steps done / total with an ETA, one line per step."""

    def __init__(self, total: int, console: Console) -> None:
        self.total, self.done, self.console, self.started = total, 0, console, time.perf_counter()

    def start(self, what: str) -> None:
        elapsed = time.perf_counter() - self.started
        eta = f", ETA {elapsed / self.done * (self.total - self.done) / 60:.1f} min" if self.done else ""
        self.console.print(f"[bold][{self.done + 1}/{self.total}][/] {escape(what)} ({elapsed / 60:.1f} min{eta})")

    def finish(self) -> None:
        self.done += 1


def sweep(config: SweepConfig, *, console: Console | None = None) -> SweepResult:
    """Run (or finish) the whole study described by `config`."""
    from safedose.generate import generate
    from safedose.judges import get_judge, judge_id, judge_rows
    from safedose.models import model_hash, resolve_model
    from safedose.train import train

    console = console or Console()
    check_names(config)  # a typo fails here, before any work
    run = open_run(config.run_dir, create=True)
    cells = cells_of(config)
    groups = [(s, f) for s in config.seeds for f in config.formats]
    steps = _Steps(len(groups) + len(cells) + 4, console)
    cache = Cache(run / "cache.sqlite")
    model_dir = resolve_model(config.model)

    # 1. Mixes: one nested set of doses per seed and format (exact N; shared train, selection and test base rows).
    # With paired forms, every format of a seed holds the same safety items, rewritten once (cached).
    mixes: dict[tuple[int, str], dict[str, Any]] = {}
    forms = form_source(config, run)
    for seed, fmt in groups:
        steps.start(f"mix seed {seed} {fmt}")
        out = mix_dir(run, config, seed, fmt)
        if not mix_complete(out, config.doses):
            mix(base=config.base, base_size=config.base_size, safety=config.safety, doses=config.doses, out=out,
                seed=seed, val_size=config.val_size, test_size=config.test_size, format=fmt,
                max_tokens=config.max_tokens, tokenizer=config.model, eval_sets=contamination_sets(config),
                forms=forms)  # fmt: skip
        mixes[(seed, fmt)] = {"dir": str(out.relative_to(run)), "fingerprint_inputs": mix_inputs(config, seed, fmt)}
        steps.finish()

    # 2. Adapters: one LoRA run per cell, in a directory named by its fingerprint; train() resumes or skips.
    adapters: dict[Cell, Path] = {}
    fingerprints: dict[str, str] = {}
    for cell in cells:
        steps.start(f"train {cell.name}")
        data = mix_dir(run, config, cell.seed, cell.format)
        fp, _ = cell_fingerprint(config, run, cell)
        target = adapter_dir(run, cell, fp)
        started = time.perf_counter()
        fresh = not (target / "safedose.json").is_file()
        settings = config.cell_train_config(str(target), str(train_file(data, cell.dose)),
                                            str(val_file(data, cell.dose)), cell.seed)  # fmt: skip
        train(settings)
        if fresh:
            row_epochs = (config.base_size + cell.dose) * settings.epochs
            record_timing(timing_key("train", config), time.perf_counter() - started, row_epochs)
        adapters[cell], fingerprints[cell.name] = target, fp
        steps.finish()

    # 3. Generations: all adapters and the untuned base on one loaded base model, through the cache. The untuned
    # model answers with the tuning template (so untuned → dose 0 isolates tuning) and with its own chat template.
    steps.start("generate")
    prompts, sampling = _eval_prompts(config)
    template = config.train.get("template", "alpaca")
    started = time.perf_counter()
    rows = generate(config.model, [f"{c.name}={adapters[c]}" for c in cells], prompts, template=template,
                    decoding=config.decoding, backend=config.backend, cache=cache,
                    **_backend_settings(config, template))  # fmt: skip
    variants = [(BASE if r.adapter is None else r.adapter, r) for r in rows]
    if template != "chat" and _has_chat_template(model_dir):
        chat = generate(config.model, [], prompts, template="chat", decoding=config.decoding,
                        backend=config.backend, cache=cache, **_backend_settings(config, "chat"))  # fmt: skip
        variants += [(BASE_CHAT, r) for r in chat]
    _record(timing_key("generate", config), started, len(variants))
    steps.finish()

    # 4. Verdicts: every judge over every answer, in batches, through the cache.
    steps.start("judge")
    started = time.perf_counter()
    by_name = {c.name: c for c in cells}
    verdicts: dict[str, list[RoleVerdict]] = {}
    revisions: dict[str, str] = {}
    for role in ROLES:
        name = getattr(config.judges, role)
        if not name:
            continue
        judge = get_judge(name)
        revisions[role] = judge_id(judge)
        _validate_once(name)
        judged = judge_rows(judge, [{"prompt": r.prompt, "response": r.response} for _, r in variants], cache=cache)
        verdicts[role] = [_role_verdict(v) for v in judged]
    answers = [_answer(variant, row, by_name.get(variant), {role: v[i] for role, v in verdicts.items()})
               for i, (variant, row) in enumerate(variants)]  # fmt: skip
    write_judged(run, answers)
    _record(timing_key("judge", config), started, len(answers))
    steps.finish()

    # 5. Capability: NLL on each seed's base-data test split (never used for training or checkpoint choice) and
    # on AlpacaEval reference answers, per variant.
    steps.start("capability")
    started = time.perf_counter()
    capability = _capability(config, cells, adapters, run, model_dir, model_hash(model_dir), template, cache)
    _record(timing_key("capability", config), started, len(capability))
    benchmarks = _benchmarks(config, cells, adapters, run, model_dir, template, cache)
    steps.finish()

    # 6. Metrics and the report.
    steps.start("metrics and report")
    from safedose.report import write_metrics, write_report

    manifest = _manifest(config, run, revisions, sampling, mixes, adapters, fingerprints)
    write_json(manifest_path(run), manifest)
    cell_info = [{"variant": c.name, "dose": c.dose, "seed": c.seed, "format": c.format} for c in cells]
    metrics = write_metrics(run, answers, capability, cells=cell_info, benchmarks=benchmarks)
    report = write_report(run)
    steps.finish()
    cache.close()
    console.print(f"[bold]{escape(metrics['headline'])}[/]")
    console.print(f"report: {escape(str(report))}")
    return SweepResult(run, metrics, report)


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
    from safedose.judges import JUDGES, stored_validation, validate

    if name in JUDGES and JUDGES.get(name).trained is not None and stored_validation(name) is None:
        validate(name)


def _has_chat_template(model_dir: Path) -> bool:
    from safedose.generate import load_tokenizer

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
        dose=cell.dose if cell else None, seed=cell.seed if cell else None, format=cell.format if cell else None,
        verdicts=verdicts,
    )  # fmt: skip


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


def _capability(
    config: SweepConfig,
    cells: list[Cell],
    adapters: dict[Cell, Path],
    run: Path,
    model_dir: Path,
    base_hash: str,
    template: str,
    cache: Cache,
) -> list[dict[str, Any]]:
    """Mean NLL per token on each seed's base-data test split and on AlpacaEval references, cached per variant."""
    from safedose.evaluate import mean_token_nll
    from safedose.generate import load_adapter_info, load_model, load_tokenizer, use_variant

    references: list[InstructionRecord] = []
    if config.eval_sets.capability.references:
        refs = [p for p in load_eval_prompts(config.eval_sets.capability.references) if p.reference]
        references = [InstructionRecord(id=p.id, instruction=p.prompt, output=p.reference or "", source=p.eval_set)
                      for p in refs[: config.eval_sets.capability.references_limit]]  # fmt: skip
    max_length = config.cell_train_config("-", "-", None, 0).max_length  # type: ignore[arg-type]
    infos = {c.name: load_adapter_info(f"{c.name}={adapters[c]}") for c in cells}
    variants: list[tuple[str, Cell | None, str]] = [(BASE, None, template)]
    if template != "chat" and _has_chat_template(model_dir):
        variants.append((BASE_CHAT, None, "chat"))
    variants += [(c.name, c, template) for c in cells]
    dtype = config.decoding.key()["dtype"]
    jobs = []
    for name, cell, variant_template in variants:
        seed, fmt = (cell.seed, cell.format) if cell else (config.seeds[0], config.formats[0])
        test = base_test_file(mix_dir(run, config, seed, fmt))
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
    return [{"variant": name, "dose": cell.dose if cell else None, "seed": cell.seed if cell else None,
             "format": cell.format if cell else None, "metric": kind, **done[key]}
            for key, name, cell, kind, _, _ in jobs]  # fmt: skip


def _benchmarks(config: SweepConfig, cells: list[Cell], adapters: dict[Cell, Path], run: Path, model_dir: Path,
                template: str, cache: Cache) -> CapabilityResults:  # fmt: skip
    """lm-eval benchmarks of the untuned base and every cell, and the win-rate where a judge endpoint is set."""
    from safedose.capability._sweep import run_capability
    from safedose.generate import load_adapter_info
    from safedose.models import model_hash
    from safedose.run import results_dir

    variants = [(BASE, None)] + [(c.name, load_adapter_info(f"{c.name}={adapters[c]}")) for c in cells]
    return run_capability(
        settings=config.eval_sets.capability, model=config.model, model_dir=model_dir, base_hash=model_hash(model_dir),
        variants=variants, cells={c.name: (c.dose, c.seed, c.format) for c in cells}, template=template,
        decoding=config.decoding, backend="hf" if config.backend == "openai" else config.backend, cache=cache,
        results_dir=results_dir(run),
    )  # fmt: skip


def _manifest(
    config: SweepConfig,
    run: Path,
    revisions: dict[str, str],
    sampling: dict[str, Any],
    mixes: dict[tuple[int, str], dict[str, Any]],
    adapters: dict[Cell, Path],
    fingerprints: dict[str, str],
) -> dict[str, Any]:
    from importlib.metadata import version

    from safedose.data import DATASETS
    from safedose.models import model_hash, resolve_model
    from safedose.paths import data_root
    from safedose.run import SCHEMA_VERSION
    from safedose.train import RECIPE_VERSION

    used = {config.base, config.safety, *config.eval_sets.all_sets()}
    if config.eval_sets.capability.references:
        used.add(config.eval_sets.capability.references)
    shas = {n: [f.sha256 for f in DATASETS.get(n).files] for n in sorted(used) if n in DATASETS}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = None
    packages = ("safedose", "torch", "transformers", "peft", "accelerate", "scikit-learn", "lm_eval")
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config.model_dump(mode="json"),
        "model_hash": model_hash(resolve_model(config.model)),
        "generation_dtype": config.decoding.key()["dtype"],
        "train_recipe_version": RECIPE_VERSION,
        "mixes": {f"seed{s}-{f}": m for (s, f), m in sorted(mixes.items())},
        "cells": {c.name: _cell_entry(c, fingerprints[c.name], adapters[c].relative_to(run)) for c in adapters},
        "sampling": sampling,
        "contamination_sets": contamination_sets(config),
        "data_root": str(data_root()),
        "data_sha256": shas,
        "judges": revisions,
        "versions": {p: version(p) for p in packages},
        "git_commit": commit,
    }


def _cell_entry(cell: Cell, fingerprint: str, adapter: Path) -> dict[str, Any]:
    return {"dose": cell.dose, "seed": cell.seed, "format": cell.format, "fingerprint": fingerprint,
            "adapter": str(adapter)}  # fmt: skip
