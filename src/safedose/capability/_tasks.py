"""The benchmark tasks: safedose's shipped lm-eval YAML tasks over the data root, any lm-eval task by name, or a
task YAML file; every name is checked (with a did-you-mean) and every data file found before a model loads."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from safedose.capability._dataset import FILES, data_path
from safedose.errors import SafedoseError
from safedose.registry import Registry

# Bumped whenever a shipped task YAML or its loader changes what a task scores (it is part of every cache key).
TASKS_VERSION = 1


@dataclass(frozen=True)
class Benchmark:
    """One of safedose's shipped tasks."""

    name: str
    lm_eval: str = ""
    stratify: str | None = None
    description: str = ""

    @property
    def task(self) -> str:
        return self.lm_eval or "safedose_" + self.name.replace("-", "_")


BENCHMARKS: Registry[Benchmark] = Registry("task")
for _b in (
    Benchmark("arc-easy", description="ARC-Easy test (2,376), 4-way multiple choice"),
    Benchmark("arc-challenge", description="ARC-Challenge test (1,172), 4-way multiple choice"),
    Benchmark("piqa", description="PIQA validation (1,838), 2-way"),
    Benchmark("openbookqa", description="OpenBookQA test (500), 4-way, no fact given"),
    Benchmark("copa", description="COPA (SuperGLUE validation, 100), 2-way"),
    Benchmark("boolq", description="BoolQ dev (3,270), yes / no"),
    Benchmark("winogrande", description="WinoGrande xl dev (1,267), partial scoring"),
    Benchmark("mmlu", stratify="subject", description="MMLU test (14,042; 57 subjects), A-D; few-shot from dev"),
    Benchmark("truthfulqa-mc1", description="TruthfulQA MC1 (817)"),
    Benchmark("truthfulqa-mc2", description="TruthfulQA MC2 (817), probability mass of the true answers"),
):
    BENCHMARKS.add(_b.name, _b)


def tasks_dir() -> Path:
    """The lm-eval include path of the shipped tasks (`lm_eval --include_path` takes it as it is)."""
    return Path(__file__).parent / "tasks"


@dataclass(frozen=True)
class TaskRef:
    """A task as the user named it and as lm-eval loads it."""

    name: str  # the name in results: safedose's name, the lm-eval name, or the YAML's task name
    spec: str  # what TaskManager.load takes: a task name or a YAML path
    benchmark: Benchmark | None

    @property
    def lm_eval_name(self) -> str:
        return self.benchmark.task if self.benchmark else self.name

    @property
    def builtin(self) -> bool:
        """A task of lm-eval's own index (needs its default task folders, and usually the network)."""
        return self.benchmark is None and not self.spec.endswith((".yaml", ".yml"))


def resolve_task(name: str) -> TaskRef:
    """A shipped task (its data present), a task YAML file, or a task of lm-eval's index; else a one-line error."""
    by_lm_eval = {b.task: b for b in (BENCHMARKS.get(n) for n in BENCHMARKS)}
    bench = BENCHMARKS.get(name) if name in BENCHMARKS else by_lm_eval.get(name)
    if bench is not None:
        path = data_path(bench.name)
        if not path.exists():
            raise SafedoseError(f"task {name}: its data file {FILES[bench.name]} is missing from the data root {path}")
        return TaskRef(bench.name, bench.task, bench)
    if name.endswith((".yaml", ".yml")):
        path = Path(name).expanduser()
        if not path.is_file():
            raise SafedoseError(f"task {name}: no such task YAML file")
        return TaskRef(_yaml_task_name(path), str(path.resolve()), None)
    index = lm_eval_tasks()
    if name in index:
        return TaskRef(name, name, None)
    ours = list(BENCHMARKS) + list(by_lm_eval)
    close = difflib.get_close_matches(name, ours, n=1, cutoff=0.6) or difflib.get_close_matches(name, index, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise SafedoseError(
        f"unknown task {name!r}{hint} (safedose's: {', '.join(BENCHMARKS)}; or any of lm-eval's {len(index)} task "
        "names, or a task YAML file)"
    )


def resolve_tasks(names: list[str]) -> list[TaskRef]:
    refs = [resolve_task(n) for n in names]
    seen = [r.name for r in refs]
    if len(set(seen)) != len(seen):
        raise SafedoseError(f"a task is listed twice: {', '.join(n for n in dict.fromkeys(seen) if seen.count(n) > 1)}")
    return refs


def _yaml_task_name(path: Path) -> str:
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        cfg: dict[str, Any] = load_yaml(path, resolve_func=False)
    except Exception as e:  # any YAML or include error, as one line
        raise SafedoseError(f"task {path}: not a readable task YAML ({type(e).__name__}: {e})") from None
    name = cfg.get("task") if isinstance(cfg, dict) else None
    if not isinstance(name, str):
        raise SafedoseError(f"task {path}: the YAML names no `task`")
    return name


@lru_cache(maxsize=1)
def lm_eval_tasks() -> list[str]:
    """Every name in lm-eval's task index (its own tasks, groups and tags; building it takes seconds)."""
    return list(task_manager(True).all_tasks)


def task_manager(with_defaults: bool) -> Any:
    """lm-eval's TaskManager over the shipped tasks (and lm-eval's own when a task needs them)."""
    import logging

    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return TaskManager(include_path=str(tasks_dir()), include_defaults=with_defaults)
