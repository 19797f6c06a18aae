"""The sweep's capability step beyond the NLLs: benchmarks for the untuned base and every cell on one loaded model,
and the win-rate when a judge endpoint is configured (never guessed: the report says when it was skipped)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safedose.cache import Cache
from safedose.capability import (
    CapabilityResults,
    CapabilitySettings,
    Cells,
    Plan,
    TaskScore,
    WinRate,
    WinRateSettings,
    benchmark,
    capability_results,
    placed,
    resolve_tasks,
    variant_win_rates,
)
from safedose.errors import SafedoseError
from safedose.judges import endpoint_configured, pairwise_judge
from safedose.report import HEADLINE_DOSE
from safedose.sweep._timings import measured, record_timing


def timing_key(model: str) -> str:
    """Seconds per benchmark item and variant on this machine (for `--dry-run`)."""
    return f"benchmark-item:{model}"


def check_capability(settings: CapabilitySettings, *, field: str = "eval_sets.capability") -> None:
    """Every task resolves (its data present) and the win-rate judge name is valid, before any work."""
    try:
        resolve_tasks(settings.tasks)
        if settings.win_rate.judge:
            pairwise_judge(settings.win_rate.judge)
    except SafedoseError as e:
        raise SafedoseError(f"{field}: {e}") from None


def skip_note(settings: WinRateSettings) -> str | None:
    """Why the win-rate is not measured, or None when it is."""
    if not settings.judge:
        return "win-rate not measured: no judge configured (eval_sets.capability.win_rate.judge: llm:<model>)"
    if not endpoint_configured(settings.base_url):
        return (f"win-rate not measured: no endpoint for the judge {settings.judge} (set "
                "eval_sets.capability.win_rate.base_url or $OPENAI_BASE_URL)")  # fmt: skip
    return None


def run_capability(
    *,
    settings: CapabilitySettings,
    model: str,
    model_dir: Path,
    base_hash: str,
    variants: Sequence[tuple[str, Any]],
    cells: Cells,
    template: str,
    decoding: Any,
    backend: str,
    cache: Cache,
    results_dir: Path,
) -> CapabilityResults:
    """`variants`: (name, Adapter or None for the untuned base); `cells`: name → cell key."""
    scores: list[TaskScore] = []
    if settings.tasks:
        started = time.perf_counter()
        plan = Plan(resolve_tasks(settings.tasks), settings)
        raw = benchmark(model_dir, base_hash, variants, plan, dtype=decoding.dtype, cache=cache)
        scores = [placed(s, cells) for s in raw]
        elapsed = time.perf_counter() - started
        if elapsed > 2.0:  # a run served from the cache says nothing about speed
            record_timing(timing_key(model), elapsed, plan.items * len(variants))
    notes = [] if settings.tasks else ["no benchmark tasks configured (eval_sets.capability.tasks)"]
    rates: list[WinRate] = []
    note = skip_note(settings.win_rate)
    if note:
        notes.append(note)
    else:
        rates = variant_win_rates(settings.win_rate, model, variants, cells, template, decoding, backend, cache,
                                  results_dir)  # fmt: skip
    return capability_results(scores, rates, notes, headline_dose=HEADLINE_DOSE)


def plan_step(settings: CapabilitySettings, variants: int, model: str) -> tuple[str, str, str, float | None]:
    """The `--dry-run` line of the benchmarks and win-rate: what runs, and an estimate from this machine's timings."""
    tasks = ", ".join(settings.tasks) or "none"
    items = f"{settings.limit} items each" if settings.limit else "all items"
    note = skip_note(settings.win_rate) or f"win-rate by {settings.win_rate.judge} on {settings.win_rate.limit} prompts"
    per_item = measured(timing_key(model))
    n_items = len(settings.tasks) * (settings.limit or 0) * variants
    estimate = per_item * n_items if per_item and settings.limit else None
    detail = f"{variants} variants x tasks {tasks} ({items}); {note}; scores are cached per variant and task"
    return "capability: benchmarks and win-rate", "run", detail, estimate
