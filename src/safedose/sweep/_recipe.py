"""The sweep recipe: mixes → adapters → generations → verdicts → capability → metrics → report. Read top to bottom.

Every step stores what it finished (mix files, adapter manifests, rows in `cache.sqlite`) before the next begins,
so a killed sweep rerun with the same command skips the finished work and ends with the same metrics.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from safedose.cache import Cache, cache_key
from safedose.data import EvalPrompt, InstructionRecord, load_eval_prompts, load_instructions, mix, train_file, val_file
from safedose.files import sha256_file, write_json, write_jsonl
from safedose.sweep._config import SweepConfig

BASE = "base"


@dataclass(frozen=True)
class Cell:
    dose: int
    seed: int
    format: str

    @property
    def name(self) -> str:
        return f"n{self.dose}-s{self.seed}-{self.format}"


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
    run = config.run_dir
    run.mkdir(parents=True, exist_ok=True)
    cells = [Cell(d, s, f) for s in config.seeds for f in config.formats for d in config.doses]
    steps = _Steps(len(config.seeds) + len(cells) + 4, console)
    cache = Cache(run / "cache.sqlite")

    # 1. Mixes: one nested set of doses per seed (exact N, shared base rows and validation rows).
    for seed in config.seeds:
        steps.start(f"mix seed {seed}")
        out = run / "data" / f"seed{seed}"
        if not (out / "datasheet.json").is_file():
            mix(base=config.base, base_size=config.base_size, safety=config.safety, doses=config.doses, out=out,
                seed=seed, val_size=config.val_size, max_tokens=config.max_tokens, tokenizer=config.model)  # fmt: skip
        steps.finish()

    # 2. Adapters: one LoRA run per cell; train() itself resumes an interrupted run and skips a finished one.
    for cell in cells:
        steps.start(f"train {cell.name}")
        data = run / "data" / f"seed{cell.seed}"
        train(config.cell_train_config(str(run / "adapters" / cell.name), str(train_file(data, cell.dose)),
                                       str(val_file(data, cell.dose)), cell.seed))  # fmt: skip
        steps.finish()

    # 3. Generations: all adapters and the untouched base on one loaded base model, through the cache.
    steps.start("generate")
    prompts = _eval_prompts(config)
    adapters = [f"{c.name}={run / 'adapters' / c.name}" for c in cells]
    template = config.train.get("template", "alpaca")
    rows = generate(config.model, adapters, prompts, template=template, decoding=config.decoding,
                    backend=config.backend, cache=cache)  # fmt: skip
    steps.finish()

    # 4. Verdicts: every judge over every generation, in batches, through the cache.
    steps.start("judge")
    by_cell = {c.name: c for c in cells}
    judged = [{**r, "variant": r["adapter"] or BASE, **_cell_fields(by_cell.get(r["adapter"] or ""))} for r in rows]
    revisions: dict[str, str] = {}
    for role in ("refusal", "harm", "moderation"):
        name = getattr(config.judges, role)
        if not name:
            continue
        judge = get_judge(name)
        revisions[role] = judge_id(judge)
        _validate_once(name)
        verdicts = judge_rows(judge, judged, cache=cache)
        for row, v in zip(judged, verdicts, strict=True):
            row[f"{role}_label"], row[f"{role}_score"] = v["label"], v["score"]
            if "categories" in v:
                row[f"{role}_categories"] = v["categories"]
    write_jsonl(run / "results" / "judged.jsonl", judged)
    steps.finish()

    # 5. Capability: held-out base-data loss and AlpacaEval reference log-likelihood, per variant.
    steps.start("capability")
    model_dir = resolve_model(config.model)
    capability = _capability(config, cells, run, model_dir, model_hash(model_dir), template, cache)
    steps.finish()

    # 6. Metrics and the report.
    steps.start("metrics and report")
    from safedose.report import write_metrics, write_report

    manifest = _manifest(config, run, revisions)
    write_json(run / "manifest.json", manifest)
    metrics = write_metrics(run, judged, capability, cells=[_cell_fields(c) | {"variant": c.name} for c in cells])
    report = write_report(run)
    steps.finish()
    cache.close()
    console.print(f"[bold]{escape(metrics['headline'])}[/]")
    console.print(f"report: {escape(str(report))}")
    return SweepResult(run, metrics, report)


def _validate_once(name: str) -> None:
    """Trained judges are validated once per build (the report shows their agreement with humans)."""
    from safedose.judges import validate
    from safedose.judges._trained import TRAINED, stored_validation

    if name in TRAINED and stored_validation(name) is None:
        validate(name)


def _cell_fields(cell: Cell | None) -> dict[str, Any]:
    if cell is None:
        return {"dose": None, "seed": None, "format": None}
    return {"dose": cell.dose, "seed": cell.seed, "format": cell.format}


def _eval_prompts(config: SweepConfig) -> list[EvalPrompt]:
    prompts = []
    for name in config.eval_sets.harm + config.eval_sets.over_refusal:
        rows = load_eval_prompts(name)[: config.eval_sets.limit]
        expected = "unsafe" if name in config.eval_sets.harm else "safe"
        prompts += [p if p.expected_label else p.model_copy(update={"expected_label": expected}) for p in rows]
    return prompts


def _capability(
    config: SweepConfig, cells: list[Cell], run: Path, model_dir: Path, base_hash: str, template: str, cache: Cache
) -> list[dict[str, Any]]:
    """Mean NLL per token on each seed's held-out base rows and on AlpacaEval references, cached per variant."""
    from safedose.evaluate import mean_token_nll
    from safedose.generate import load_adapter_info, load_model, load_tokenizer, use_variant

    references: list[InstructionRecord] = []
    if config.eval_sets.capability:
        refs = [p for p in load_eval_prompts(config.eval_sets.capability) if p.reference]
        references = [InstructionRecord(id=p.id, instruction=p.prompt, output=p.reference or "", source=p.eval_set)
                      for p in refs[: config.eval_sets.capability_limit]]  # fmt: skip
    variants: list[tuple[str, Cell | None]] = [(BASE, None)] + [(c.name, c) for c in cells]
    infos = {c.name: load_adapter_info(f"{c.name}={run / 'adapters' / c.name}") for c in cells}
    dtype = config.decoding.key()["dtype"]
    jobs = []
    for name, cell in variants:
        seed = cell.seed if cell else config.seeds[0]
        val = val_file(run / "data" / f"seed{seed}", cell.dose if cell else config.doses[0])
        for kind, path_or_rows in (("val_loss", val), ("reference_nll", references)):
            if kind == "reference_nll" and not references:
                continue
            data_id = sha256_file(val) if kind == "val_loss" else [r.id for r in references]
            key = cache_key(kind=kind, model=base_hash, adapter=infos[name].hash if cell else None, data=data_id,
                            template=template, dtype=dtype)  # fmt: skip
            jobs.append((key, name, cell, kind, path_or_rows))
    done = cache.get_many("capability", [j[0] for j in jobs])
    todo = [j for j in jobs if j[0] not in done]
    if todo:
        tokenizer = load_tokenizer(model_dir)
        tokenizer.padding_side = "right"
        model = load_model(model_dir, list(infos.values()), config.decoding.dtype)
        for key, name, _, _kind, data in todo:
            rows = load_instructions(str(data)) if isinstance(data, Path) else data
            with use_variant(model, None if name == BASE else name):
                value = mean_token_nll(model, tokenizer, rows, template=template)
            cache.put_many("capability", {key: {"value": value, "n": len(rows)}})
            done[key] = {"value": value, "n": len(rows)}
    return [{"variant": name, **_cell_fields(cell), "metric": kind, **done[key]}
            for key, name, cell, kind, _ in jobs]  # fmt: skip


def _manifest(config: SweepConfig, run: Path, revisions: dict[str, str]) -> dict[str, Any]:
    from importlib.metadata import version

    from safedose.data import DATASETS
    from safedose.models import model_hash, resolve_model
    from safedose.paths import data_root

    used = {config.base, config.safety, *config.eval_sets.harm, *config.eval_sets.over_refusal}
    if config.eval_sets.capability:
        used.add(config.eval_sets.capability)
    shas = {n: [f.sha256 for f in DATASETS.get(n).files] for n in sorted(used) if n in DATASETS}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = None
    packages = ("safedose", "torch", "transformers", "peft", "accelerate", "scikit-learn")
    return {
        "config": config.model_dump(mode="json"),
        "model_hash": model_hash(resolve_model(config.model)),
        "generation_dtype": config.decoding.key()["dtype"],
        "data_root": str(data_root()),
        "data_sha256": shas,
        "judges": revisions,
        "versions": {p: version(p) for p in packages},
        "git_commit": commit,
    }


def read_judged(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "results" / "judged.jsonl").read_text().splitlines() if line]
