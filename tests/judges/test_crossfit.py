"""Cross-fitting: an answer to a prompt the judge trained on is scored by the model that never saw that prompt."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from safedose.judges import get_judge, prompt_key
from safedose.judges._crossfit import FULL, _fit_in_parallel, choose_by_inner_cv, cross_fit, fold_of

PROMPTS = [f"Prompt number {i}" for i in range(40)]
POOL = [p for p in PROMPTS for _ in range(3)]  # three answers per prompt


def _recording_fit(rows: np.ndarray, value: float) -> dict[str, Any]:
    return {"prompts": {POOL[i] for i in rows}, "value": value, "pid": os.getpid()}


def test_a_prompt_of_the_pool_is_scored_by_the_fold_model_that_never_saw_it() -> None:
    models, cv = cross_fit([prompt_key(p) for p in POOL], _recording_fit, grid=[1.0, 2.0],
                           loss=lambda model, rows: abs(model["value"] - 2.0))  # fmt: skip
    assert set(cv) == {"1.0", "2.0"} and models.hyperparameter == 2.0 and len(models.folds) == 5
    assert {m["value"] for m in [models.full, *models.folds]} == {2.0}
    assert models.full["prompts"] == set(PROMPTS)
    for prompt in PROMPTS:
        ((scored_by, model),) = models.assign([prompt.upper() + "  "])  # case and spacing do not matter
        k = fold_of(prompt_key(prompt))
        assert scored_by == f"fold-{k + 1}/5" and model is models.folds[k]
        assert prompt not in model["prompts"] and len(model["prompts"]) > 20
    assert models.assign(["a prompt nobody trained on"]) == [(FULL, models.full)]


def test_apply_keeps_row_order_across_models() -> None:
    models, _ = cross_fit([prompt_key(p) for p in POOL], lambda rows, v: len(rows), grid=[0], loss=lambda m, r: 0.0)
    prompts = [PROMPTS[0], "unseen", PROMPTS[1]]
    values, scored_by = models.apply(prompts, lambda model, idx: np.full(len(idx), float(model)))
    assert scored_by[1] == FULL and values[1] == len(POOL)
    assert values[0] == len(POOL) - sum(fold_of(prompt_key(p)) == fold_of(prompt_key(PROMPTS[0])) for p in POOL)


def test_folds_fit_in_worker_processes_with_the_results_of_one_process() -> None:
    keys = [prompt_key(p) for p in POOL]
    fold = np.array([fold_of(k) for k in keys])
    tasks = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(5)]

    def loss(model: dict[str, Any], rows: np.ndarray) -> float:
        return len(model["prompts"]) / model["value"] + len(rows)

    one = _fit_in_parallel(_recording_fit, loss, [1.0, 4.0], tasks, jobs=1)
    two = _fit_in_parallel(_recording_fit, loss, [1.0, 4.0], tasks, jobs=2)
    strip = [[({k: v for k, v in m.items() if k != "pid"}, x) for m, x in task] for task in one]
    assert strip == [[({k: v for k, v in m.items() if k != "pid"}, x) for m, x in task] for task in two]
    assert {m["pid"] for task in one for m, _ in task} == {os.getpid()}
    assert os.getpid() not in {m["pid"] for task in two for m, _ in task}  # the folds ran in worker processes


def test_inner_cross_validation_chooses_the_lowest_loss() -> None:
    chosen, losses = choose_by_inner_cv([prompt_key(p) for p in POOL], lambda rows, v: v, grid=[3, 1, 2],
                                        loss=lambda model, rows: float(model))  # fmt: skip
    assert chosen == 1 and losses == {"3": 3.0, "1": 1.0, "2": 2.0}


@pytest.mark.parametrize("name", ["refusal", "harm"])
def test_trained_judges_never_score_an_answer_to_a_prompt_they_trained_on(name: str) -> None:
    from safedose.data import gptfuzz, xstest_rows

    judge: Any = get_judge(name)
    trained_on = xstest_rows()[0]["prompt"] if name == "refusal" else gptfuzz("train")[0].prompt
    rows = [{"prompt": trained_on, "response": "Sure, here is how."}, {"prompt": "Never seen before?", "response": "x"}]
    verdicts = judge.judge(rows)
    k = fold_of(prompt_key(trained_on))
    assert verdicts[0].scored_by == f"fold-{k + 1}/5" and verdicts[1].scored_by == FULL
    assert prompt_key(trained_on) in judge.models.seen


def test_features_are_fitted_once_per_training_set_and_equal_a_fit_then_transform() -> None:
    from safedose.judges._features import fitted_once, lexical_features, refusal_features

    texts = [f"I cannot help with {i}, sorry." if i % 3 else f"Sure! Step {i}: mix the things." for i in range(60)]
    for make in (lexical_features, refusal_features):
        features = fitted_once(make, texts)
        rows = np.arange(0, 60, 2)
        vectoriser, x = features(rows)
        again, x_again = features(rows.copy())
        assert again is vectoriser and x_again is x  # the same rows: fitted once
        reference = make().fit([texts[i] for i in rows])
        expected = reference.transform([texts[i] for i in rows])
        assert x.shape == expected.shape and abs(x - expected).max() < 1e-12  # equal up to summation order
        assert abs(vectoriser.transform(texts[1:2]) - reference.transform(texts[1:2])).max() < 1e-12
        assert features(np.arange(30))[0] is not vectoriser
