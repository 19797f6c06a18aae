"""Cross-fitting: a trained judge never scores an answer to a prompt it was trained on.

A trained judge keeps K models fitted on folds split by prompt, plus one fitted on everything. An answer to a prompt
of the training pool (matched by a hash of the normalised prompt text, so no hand-kept list of overlaps is needed) is
scored by the fold model that never saw that prompt; answers to other prompts by the full model. The hyperparameter
(one value shared by the K + 1 models) is chosen by the same prompt-grouped cross-validation; the judges' validation
numbers come from nested cross-validation, where held-out data chose nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from safedose.files import sha256_text

FOLDS = 5
FULL = "full"


def prompt_key(prompt: str) -> str:
    """The identity of a prompt: sha256 of its lowercased text with whitespace collapsed."""
    return sha256_text(" ".join(str(prompt).lower().split()))


def fold_of(key: str, folds: int = FOLDS) -> int:
    return int(key[:8], 16) % folds


def grouped_folds(keys: Sequence[str], folds: int = FOLDS) -> np.ndarray:
    """The fold of each training example, decided by its prompt's key (every answer to a prompt in one fold)."""
    return np.array([fold_of(k, folds) for k in keys])


@dataclass
class CrossFitted:
    """The full model, one model per fold (fold k never saw the prompts of fold k) and the training pool's keys."""

    full: Any
    folds: list[Any]
    seen: frozenset[str]
    hyperparameter: Any = None
    cv_loss: dict[str, float] = field(default_factory=dict)

    def assign(self, prompts: Sequence[str]) -> list[tuple[str, Any]]:
        """(scored_by, model) for each prompt: its held-out fold model if the prompt was in training, else full."""
        out = []
        for prompt in prompts:
            key = prompt_key(prompt)
            if key in self.seen:
                k = fold_of(key, len(self.folds))
                out.append((f"fold-{k + 1}/{len(self.folds)}", self.folds[k]))
            else:
                out.append((FULL, self.full))
        return out

    def apply(
        self, prompts: Sequence[str], score: Callable[[Any, list[int]], np.ndarray]
    ) -> tuple[np.ndarray, list[str]]:
        """`score(model, row_indices)` for each group of rows that one model scores; results in row order."""
        assigned = self.assign(prompts)
        by_model: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(assigned):
            by_model.setdefault(name, []).append(i)
        models = {name: model for name, model in assigned}
        result: np.ndarray | None = None
        for name, rows in by_model.items():
            values = np.asarray(score(models[name], rows))
            if result is None:
                result = np.zeros((len(prompts), *values.shape[1:]), dtype=values.dtype)
            result[rows] = values
        if result is None:
            result = np.zeros(0)
        return result, [name for name, _ in assigned]


def score_answers(
    models: CrossFitted,
    rows: Sequence[dict[str, Any]],
    score: Callable[[Any, list[str]], np.ndarray],
    *,
    by: str = "prompt",
) -> tuple[list[int], np.ndarray, list[str | None]]:
    """`score(model, responses)` for the non-blank answers of `rows`, each by the model that the row's `by` field
    (its prompt, or the response itself) is assigned to. Returns their row indices, their scores and `scored_by` for
    every row (None where the answer is blank and nothing scored it)."""
    filled = [i for i, r in enumerate(rows) if str(r["response"] or "").strip()]
    responses = [str(rows[i]["response"]) for i in filled]
    values, assigned = models.apply([str(rows[i][by]) for i in filled],
                                    lambda model, idx: score(model, [responses[j] for j in idx]))  # fmt: skip
    scored_by: list[str | None] = [None] * len(rows)
    for i, name in zip(filled, assigned, strict=True):
        scored_by[i] = name
    return filled, values, scored_by


def cross_fit(
    keys: Sequence[str],
    fit: Callable[[np.ndarray, Any], Any],
    *,
    grid: Sequence[Any],
    loss: Callable[[Any, np.ndarray], float],
    folds: int = FOLDS,
) -> tuple[CrossFitted, dict[str, float]]:
    """Fit `fit(train_rows, hyperparameter)` on every fold for every value in `grid`, keep the value with the lowest
    mean held-out `loss(model, held_out_rows)`, its fold models, and a full model with it. Returns the models and the
    cross-validated loss of each value."""
    fold = grouped_folds(keys, folds)
    everything = np.arange(len(keys))
    tasks = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(folds)] + [(everything, None)]
    fitted = _fit_in_parallel(fit, loss, grid, tasks)
    scores = {str(v): float(np.mean([fitted[k][j][1] for k in range(folds)])) for j, v in enumerate(grid)}
    best = min(range(len(grid)), key=lambda j: scores[str(grid[j])])  # the first of equal losses, as before
    models = [fitted[k][best][0] for k in range(folds)]
    full = fitted[folds][best][0]
    return CrossFitted(full, models, frozenset(keys), grid[best], scores), scores


def choose_by_inner_cv(
    keys: Sequence[str],
    fit: Callable[[np.ndarray, Any], Any],
    *,
    grid: Sequence[Any],
    loss: Callable[[Any, np.ndarray], float],
    folds: int = 3,
    jobs: int | None = None,
) -> tuple[Any, dict[str, float]]:
    """The grid value with the lowest grouped-CV loss inside `keys`' rows (for nested validation); `jobs` worker
    processes (None: one per core)."""
    fold = grouped_folds(keys, folds)
    tasks = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(folds)]
    fitted = _fit_in_parallel(fit, loss, grid, tasks, keep_models=False, jobs=jobs)
    scores = {str(v): float(np.mean([fitted[k][j][1] for k in range(folds)])) for j, v in enumerate(grid)}
    best = min(grid, key=lambda v: scores[str(v)])
    return best, scores


Task = tuple[np.ndarray, np.ndarray | None]  # training rows, held-out rows (None: no loss wanted)


def _fit_in_parallel(
    fit: Callable[[np.ndarray, Any], Any],
    loss: Callable[[Any, np.ndarray], float],
    grid: Sequence[Any],
    tasks: Sequence[Task],
    *,
    keep_models: bool = True,
    jobs: int | None = None,
) -> list[list[tuple[Any, float]]]:
    """For each task, (model, held-out loss) for every grid value, one worker process per task on the machine's
    cores (joblib). A worker fits a task's features once for every value. BLAS runs on one thread inside a task
    (its reductions' order depends on the thread count), so the models are the same in a worker, in this process
    and on any number of cores."""
    return in_processes(_fit_task, [(fit, loss, grid, train, held, keep_models) for train, held in tasks], jobs=jobs)


def in_processes(
    function: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, jobs: int | None = None
) -> list[Any]:
    """`[function(*args) for args in calls]`, in joblib worker processes (`jobs`; None: one per core, at most one
    per call); results in call order."""
    from joblib import Parallel, cpu_count, delayed

    run = delayed(function)
    return list(Parallel(n_jobs=jobs or min(len(calls), max(cpu_count(), 1)))(run(*args) for args in calls))


def _fit_task(
    fit: Callable[[np.ndarray, Any], Any],
    loss: Callable[[Any, np.ndarray], float],
    grid: Sequence[Any],
    train: np.ndarray,
    held: np.ndarray | None,
    keep_models: bool,
) -> list[tuple[Any, float]]:
    from threadpoolctl import threadpool_limits

    out = []
    with threadpool_limits(1):
        for value in grid:
            model = fit(train, value)
            out.append((model if keep_models else None, float("nan") if held is None else loss(model, held)))
    return out
