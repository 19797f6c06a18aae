"""What safety costs in capability: lm-evaluation-harness benchmarks scored with every adapter on one loaded base,
and an AlpacaEval-style pairwise win-rate (raw and length-controlled) from any OpenAI-compatible judge."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safedose.capability._harness import Plan, benchmark, evaluate_benchmarks, sample_indices
    from safedose.capability._records import Cells, ScoreChange, TaskScore, WinRate, placed
    from safedose.capability._report import change_by_dose, report_section
    from safedose.capability._settings import BenchmarkSettings, CapabilitySettings, WinRateSettings
    from safedose.capability._summary import CapabilityResults, capability_results, csv_rows, with_clause
    from safedose.capability._tasks import BENCHMARKS, TASKS_VERSION, Benchmark, resolve_task, resolve_tasks, tasks_dir
    from safedose.capability._winrate import WIN_RATE_SET, variant_win_rates, win_rate

# Imported on first use, so that `safedose --help` does not load torch.
_WHERE = {
    "Plan": "_harness", "benchmark": "_harness", "evaluate_benchmarks": "_harness", "sample_indices": "_harness",
    "Cells": "_records", "ScoreChange": "_records", "TaskScore": "_records", "WinRate": "_records",
    "placed": "_records", "change_by_dose": "_report", "report_section": "_report", "BenchmarkSettings": "_settings",
    "CapabilitySettings": "_settings", "WinRateSettings": "_settings", "CapabilityResults": "_summary",
    "capability_results": "_summary", "csv_rows": "_summary", "with_clause": "_summary", "BENCHMARKS": "_tasks",
    "TASKS_VERSION": "_tasks", "Benchmark": "_tasks", "resolve_task": "_tasks", "resolve_tasks": "_tasks",
    "tasks_dir": "_tasks", "WIN_RATE_SET": "_winrate", "variant_win_rates": "_winrate", "win_rate": "_winrate",
}  # fmt: skip

__all__ = [
    "BENCHMARKS",
    "TASKS_VERSION",
    "WIN_RATE_SET",
    "Benchmark",
    "BenchmarkSettings",
    "CapabilityResults",
    "CapabilitySettings",
    "Cells",
    "Plan",
    "ScoreChange",
    "TaskScore",
    "WinRate",
    "WinRateSettings",
    "benchmark",
    "capability_results",
    "change_by_dose",
    "csv_rows",
    "evaluate_benchmarks",
    "placed",
    "report_section",
    "resolve_task",
    "resolve_tasks",
    "sample_indices",
    "tasks_dir",
    "variant_win_rates",
    "win_rate",
    "with_clause",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'safedose.capability' has no attribute {name!r}")
    return getattr(importlib.import_module(f"safedose.capability.{_WHERE[name]}"), name)
