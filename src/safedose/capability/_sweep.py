"""The sweep's capability step beyond the NLLs: benchmarks for the untuned base and every cell on one loaded model,
and the win-rate when a judge endpoint is configured (never guessed: the report says when it was skipped)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safedose.cache import Cache
from safedose.capability._harness import Plan, benchmark
from safedose.capability._records import Preference, TaskScore, WinRate
from safedose.capability._settings import CapabilitySettings, WinRateSettings
from safedose.capability._summary import CapabilityResults, changes, headline_changes
from safedose.capability._tasks import resolve_tasks
from safedose.capability._winrate import compare, endpoint_configured, pairwise_judge, win_rate
from safedose.errors import SafedoseError

WIN_RATE_SET = "alpaca-eval"


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
    cells: Mapping[str, tuple[int, int, str]],
    template: str,
    decoding: Any,
    backend: str,
    cache: Cache,
    results_dir: Path,
) -> CapabilityResults:
    """`variants`: (name, Adapter or None for the untuned base); `cells`: name → (dose, seed, format)."""
    from safedose.report._metrics_file import HEADLINE_DOSE
    from safedose.run import BASE
    from safedose.sweep._plan import record_timing

    scores: list[TaskScore] = []
    if settings.tasks:
        started = time.perf_counter()
        plan = Plan(resolve_tasks(settings.tasks), settings)
        raw = benchmark(model_dir, base_hash, variants, plan, dtype=decoding.dtype, cache=cache)
        scores = [_placed(s, cells) for s in raw]
        elapsed = time.perf_counter() - started
        if elapsed > 2.0:  # a run served from the cache says nothing about speed
            record_timing(timing_key(model), elapsed, sum(len(v[1]) for v in plan.leaves.values()) * len(variants))
    notes = [] if settings.tasks else ["no benchmark tasks configured (eval_sets.capability.tasks)"]
    rates: list[WinRate] = []
    note = skip_note(settings.win_rate)
    if note:
        notes.append(note)
    else:
        rates = _win_rates(settings.win_rate, model, variants, cells, template, decoding, backend, cache, results_dir)
    return CapabilityResults(tasks=list(dict.fromkeys(s.task for s in scores)),
                             scores=[s.model_copy(update={"items": {}}) for s in scores],
                             changes=changes(scores, BASE), headline_changes=headline_changes(scores, HEADLINE_DOSE),
                             win_rates=rates, notes=notes)  # fmt: skip


def _placed(row: Any, cells: Mapping[str, tuple[int, int, str]]) -> Any:
    dose, seed, fmt = cells.get(row.variant, (None, None, None))
    return row.model_copy(update={"dose": dose, "seed": seed, "format": fmt})


def _win_rates(settings: WinRateSettings, model: str, variants: Sequence[tuple[str, Any]],
               cells: Mapping[str, tuple[int, int, str]], template: str, decoding: Any, backend: str, cache: Cache,
               results_dir: Path) -> list[WinRate]:  # fmt: skip
    """Answers of every variant to a seeded sample of AlpacaEval instructions, judged against the reference."""
    from safedose.data import load_eval_prompts, sample_prompts
    from safedose.files import write_jsonl
    from safedose.generate import generate
    from safedose.run import BASE

    assert settings.judge is not None
    judge = pairwise_judge(settings.judge, base_url=settings.base_url)
    prompts = sample_prompts(load_eval_prompts(WIN_RATE_SET), settings.limit, seed=settings.seed)
    settings_decoding = decoding.model_copy(update={"max_new_tokens": settings.max_new_tokens})
    adapters = [a for _, a in variants if a is not None]
    rows = generate(model, adapters, prompts, template=template, decoding=settings_decoding, backend=backend,  # type: ignore[arg-type]
                    cache=cache, progress=False)  # fmt: skip
    answers: dict[str, dict[str, str]] = {}
    names = {a.name: n for n, a in variants if a is not None}
    for r in rows:
        answers.setdefault(BASE if r.adapter is None else names[r.adapter], {})[r.id] = r.response
    if settings.reference == "untuned":
        reference, judged = answers[BASE], [n for n, a in variants if a is not None]
    else:
        reference, judged = {p.id: p.reference or "" for p in prompts}, [n for n, _ in variants]
    label = "untuned model (tuning template)" if settings.reference == "untuned" else "AlpacaEval 2.0 gpt4_1106_preview"
    out: list[WinRate] = []
    every: list[Preference] = []
    for name in judged:
        items = [(p.id, p.prompt, answers[name][p.id], reference[p.id]) for p in prompts]
        prefs = compare(judge, name, items, seed=settings.seed, cache=cache)
        every += prefs
        rate = win_rate(prefs, variant=name, judge=judge.id, reference=label)
        out.append(_placed(rate, cells))
    write_jsonl(results_dir / "preferences.jsonl", (p.model_dump() for p in every))
    return out


def plan_step(settings: CapabilitySettings, variants: int, model: str) -> tuple[str, str, str, float | None]:
    """The `--dry-run` line of the benchmarks and win-rate: what runs, and an estimate from this machine's timings."""
    from safedose.sweep._plan import measured

    tasks = ", ".join(settings.tasks) or "none"
    items = f"{settings.limit} items each" if settings.limit else "all items"
    note = skip_note(settings.win_rate) or f"win-rate by {settings.win_rate.judge} on {settings.win_rate.limit} prompts"
    per_item = measured(timing_key(model))
    n_items = len(settings.tasks) * (settings.limit or 0) * variants
    estimate = per_item * n_items if per_item and settings.limit else None
    detail = f"{variants} variants x tasks {tasks} ({items}); {note}; scores are cached per variant and task"
    return "capability: benchmarks and win-rate", "run", detail, estimate
