"""What safety costs in capability: lm-evaluation-harness benchmarks scored with every adapter on one loaded base,
and an AlpacaEval-style pairwise win-rate (raw and length-controlled) from any OpenAI-compatible judge."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safedose.capability._harness import evaluate_benchmarks, sample_indices
    from safedose.capability._records import Preference, ScoreChange, TaskScore, WinRate
    from safedose.capability._settings import BenchmarkSettings, CapabilitySettings, WinRateSettings
    from safedose.capability._summary import CapabilityResults
    from safedose.capability._tasks import (
        BENCHMARKS,
        TASKS_VERSION,
        Benchmark,
        resolve_task,
        resolve_tasks,
        tasks_dir,
    )
    from safedose.capability._validate import validate_pairwise
    from safedose.capability._winrate import compare, pairwise_judge, win_rate

# Imported on first use, so that `safedose --help` does not load torch.
_WHERE = {
    "evaluate_benchmarks": "_harness", "sample_indices": "_harness", "Preference": "_records",
    "ScoreChange": "_records", "TaskScore": "_records", "WinRate": "_records", "BenchmarkSettings": "_settings",
    "CapabilitySettings": "_settings", "WinRateSettings": "_settings", "BENCHMARKS": "_tasks",
    "TASKS_VERSION": "_tasks", "Benchmark": "_tasks", "resolve_task": "_tasks", "resolve_tasks": "_tasks",
    "tasks_dir": "_tasks", "pairwise_judge": "_winrate", "compare": "_winrate", "win_rate": "_winrate",
    "validate_pairwise": "_validate", "CapabilityResults": "_summary",
}  # fmt: skip

__all__ = [
    "BENCHMARKS",
    "TASKS_VERSION",
    "Benchmark",
    "BenchmarkSettings",
    "CapabilityResults",
    "CapabilitySettings",
    "Preference",
    "ScoreChange",
    "TaskScore",
    "WinRate",
    "WinRateSettings",
    "compare",
    "evaluate_benchmarks",
    "pairwise_judge",
    "resolve_task",
    "resolve_tasks",
    "sample_indices",
    "tasks_dir",
    "validate_pairwise",
    "win_rate",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'safedose.capability' has no attribute {name!r}")
    return getattr(importlib.import_module(f"safedose.capability.{_WHERE[name]}"), name)
