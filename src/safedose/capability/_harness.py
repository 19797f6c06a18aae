"""Benchmarks through lm-evaluation-harness in this process: the base model loads once and every adapter is scored
by switching PEFT adapters under one `HFLM`, with seeded (stratified) item samples and cached results."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safedose.cache import Cache, cache_key
from safedose.capability._records import TaskScore
from safedose.capability._settings import BenchmarkSettings
from safedose.capability._tasks import TASKS_VERSION, TaskRef, resolve_tasks, task_manager
from safedose.data import allocate
from safedose.errors import SafedoseError
from safedose.files import sha256_file
from safedose.models import model_hash, resolve_model
from safedose.run import BASE
from safedose.stats import Estimate, bootstrap_mean, wilson

if TYPE_CHECKING:
    from safedose.generate import Adapter

TABLE = "benchmarks"
BINARY = (0.0, 1.0)


def sample_indices(docs: Sequence[Any], n: int | None, *, seed: int, task: str, stratify: str | None) -> list[int]:
    """A seeded sample of `n` item indices (all when `n` is None or larger), stratified by `stratify`, sorted."""
    if n is None or n >= len(docs):
        return list(range(len(docs)))
    strata: dict[str | None, list[int]] = {}
    for i, doc in enumerate(docs):
        strata.setdefault(str(doc[stratify]) if stratify else None, []).append(i)
    rng = random.Random(f"{seed}:{task}:items")
    chosen: list[int] = []
    for stratum, k in allocate({s: len(m) for s, m in strata.items()}, n, rng).items():
        chosen += rng.sample(strata[stratum], k)
    return sorted(chosen)


class Plan:
    """The leaf tasks to score, each with its item indices and the part of the cache key that describes it."""

    def __init__(self, refs: Sequence[TaskRef], settings: BenchmarkSettings) -> None:
        self.refs, self.settings = list(refs), settings
        self.manager = task_manager(any(r.builtin for r in refs))
        self.leaves: dict[str, tuple[TaskRef, list[int]]] = {}
        self.ids: dict[str, dict[str, Any]] = {}
        for ref in refs:
            try:
                tasks = self.manager.load([ref.spec])["tasks"]
            except Exception as e:  # lm-eval raises many kinds; the user needs one line
                raise SafedoseError(f"task {ref.name}: lm-eval could not load it ({type(e).__name__}: {e})") from None
            for leaf, task in tasks.items():
                docs = list(task.eval_docs)
                stratify = ref.benchmark.stratify if ref.benchmark else None
                name = ref.name if len(tasks) == 1 else leaf
                indices = sample_indices(docs, settings.limit, seed=settings.sample_seed, task=name, stratify=stratify)
                self.leaves[name] = (ref, indices)
                self.ids[name] = {"task": leaf, "definition": _definition(ref), "items": indices,
                                  "num_fewshot": settings.num_fewshot, "batch_size": settings.batch_size}  # fmt: skip
        self.lm_eval_names = {name: leaf["task"] for name, leaf in self.ids.items()}

    @property
    def items(self) -> int:
        """Items scored per variant, over every leaf task."""
        return sum(len(indices) for _, indices in self.leaves.values())


def _definition(ref: TaskRef) -> Any:
    """What decides a task's items and scoring: the shipped tasks' version, a YAML's hash, lm-eval's version."""
    from importlib.metadata import version

    if ref.benchmark is not None:
        return {"safedose_tasks": TASKS_VERSION, "yaml": sha256_file(Path(__file__).parent / "tasks" /
                                                                      f"{ref.benchmark.task[9:]}.yaml")}  # fmt: skip
    if ref.spec.endswith((".yaml", ".yml")):
        return {"yaml": sha256_file(Path(ref.spec)), "lm_eval": version("lm_eval")}
    return {"lm_eval": version("lm_eval")}


def score_loaded(model: Any, tokenizer: Any, variants: Sequence[tuple[str, str | None]], plan: Plan, *,
                 batch_size: int) -> dict[tuple[str, str], dict[str, Any]]:  # fmt: skip
    """Run every leaf task of `plan` for every (name, adapter or None) variant on one loaded model."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from safedose.generate import use_variant  # torch: loaded only when a model is scored

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, softmax_dtype="float32")
    by_spec: dict[str, list[str]] = {}
    for name, (ref, _) in plan.leaves.items():
        by_spec.setdefault(ref.spec, []).append(name)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for name, adapter in variants:
        # one task (or group) per call, so that a task's batches, and so its scores, never depend on the other tasks
        for spec, tasks in by_spec.items():
            samples = {plan.lm_eval_names[t]: plan.leaves[t][1] for t in tasks}
            with use_variant(model, adapter):
                result = simple_evaluate(model=lm, tasks=[spec], task_manager=plan.manager, samples=samples,
                                         num_fewshot=plan.settings.num_fewshot, log_samples=True,
                                         bootstrap_iters=1000)  # fmt: skip
            if result is None:
                raise SafedoseError("lm-eval returned no results")
            for task in tasks:
                out[(name, task)] = _task_result(result, plan.lm_eval_names[task])
    return out


def _task_result(result: dict[str, Any], leaf: str) -> dict[str, Any]:
    """lm-eval's value and standard error per metric, and each item's value, for one task."""
    metrics: dict[str, Any] = {}
    for key, value in result["results"][leaf].items():
        metric, _, flt = key.partition(",")
        if flt == "none" and not metric.endswith("_stderr") and isinstance(value, int | float):
            stderr = result["results"][leaf].get(f"{metric}_stderr,none")
            se = float(stderr) if isinstance(stderr, int | float) else None
            metrics[metric] = {"value": float(value), "stderr": se}
    for metric, entry in metrics.items():
        entry["items"] = {str(s["doc_id"]): float(s[metric]) for s in result["samples"][leaf] if metric in s}
    return metrics


def task_scores(name: str, task: str, metrics: dict[str, Any]) -> list[TaskScore]:
    """Records with a 95% interval: Wilson for 0/1 item values, else a bootstrap over items."""
    rows = []
    for metric, entry in sorted(metrics.items()):
        items: dict[str, float] = entry["items"]
        values = list(items.values())
        est = bootstrap_mean(values)
        if values and all(v in BINARY for v in values):
            est = Estimate(est.value, *wilson(round(sum(values)), len(values)), "wilson")
        rows.append(TaskScore(variant=name, task=task, metric=metric, value=entry["value"], stderr=entry["stderr"],
                              lo=est.lo, hi=est.hi, interval=est.interval, n=len(values), items=items))  # fmt: skip
    return rows


def benchmark(
    model_dir: Path,
    base_hash: str,
    variants: Sequence[tuple[str, Adapter | None]],
    plan: Plan,
    *,
    dtype: str,
    cache: Cache | None = None,
    loaded: Any = None,
) -> list[TaskScore]:
    """Scores of every variant on every task of `plan`, from the cache where it has them; the model is loaded (or
    `loaded`, a (model, tokenizer) pair, used) only for what is missing."""
    from safedose.generate import resolve_dtype  # torch: loaded only when a model is scored

    def key(adapter: Adapter | None, task: str) -> str:
        return cache_key(kind="benchmark", model=base_hash, adapter=adapter.hash if adapter else None,
                         dtype=resolve_dtype(dtype), **plan.ids[task])  # fmt: skip

    keys = {(name, task): key(adapter, task) for name, adapter in variants for task in plan.leaves}
    done = cache.get_many(TABLE, keys.values()) if cache else {}
    todo = [(name, adapter) for name, adapter in variants if any(keys[(name, t)] not in done for t in plan.leaves)]
    if todo:
        model, tokenizer = loaded or _load(model_dir, [a for _, a in variants if a is not None], dtype)
        results = score_loaded(model, tokenizer, [(n, a.name if a else None) for n, a in todo], plan,
                               batch_size=plan.settings.batch_size)  # fmt: skip
        fresh = {keys[k]: v for k, v in results.items()}
        done.update(fresh)
        if cache:
            cache.put_many(TABLE, fresh)
    return [row for name, _ in variants for task in plan.leaves
            for row in task_scores(name, task, done[keys[(name, task)]])]  # fmt: skip


def _load(model_dir: Path, adapters: list[Adapter], dtype: str) -> tuple[Any, Any]:
    from safedose.generate import load_model, load_tokenizer  # torch: loaded only when a model is scored

    return load_model(model_dir, adapters, dtype), load_tokenizer(model_dir)


def evaluate_benchmarks(
    model: str,
    adapters: Sequence[str | Path | Adapter],
    tasks: Sequence[str],
    *,
    settings: BenchmarkSettings | None = None,
    include_base: bool = True,
    dtype: str = "auto",
    cache: Cache | str | Path | None = None,
    allow_base_mismatch: bool = False,
) -> list[TaskScore]:
    """Score the base model (variant `base`) and every adapter (`NAME=PATH` or a path) on lm-eval tasks.

    Every task name and data file is checked before the model loads; the base weights load once and each adapter is
    activated in turn. Results are cached per variant and task (adapter hash, task definition, items, few-shot).
    """
    from safedose.generate import Adapter, check_base_model, load_adapter_info  # torch: loaded only when scoring

    settings = (settings or BenchmarkSettings()).model_copy(update={"tasks": list(tasks)})
    if not settings.tasks:
        raise SafedoseError("capability: give at least one task, e.g. --tasks arc-easy,piqa")
    refs = resolve_tasks(settings.tasks)
    infos = [a if isinstance(a, Adapter) else load_adapter_info(a) for a in adapters]
    names = [BASE] * include_base + [a.name for a in infos]
    if len(set(names)) != len(names):
        raise SafedoseError(f"variant names must be unique, got {names}; name adapters NAME=PATH")
    model_dir = resolve_model(model)
    base_hash = model_hash(model_dir)
    if not allow_base_mismatch:
        check_base_model(infos, base_hash, model)
    plan = Plan(refs, settings)
    variants: list[tuple[str, Adapter | None]] = [(BASE, None)] * include_base + [(a.name, a) for a in infos]
    store = cache if isinstance(cache, Cache) else Cache(cache) if cache else None
    try:
        return benchmark(model_dir, base_hash, variants, plan, dtype=dtype, cache=store)
    finally:
        if store is not None and not isinstance(cache, Cache):
            store.close()
