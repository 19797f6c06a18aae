"""Cross-fitting: an answer to a prompt the judge trained on is scored by the model that never saw that prompt."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from safedose.judges import get_judge, prompt_key
from safedose.judges._crossfit import FULL, choose_by_inner_cv, cross_fit, fold_of

PROMPTS = [f"Prompt number {i}" for i in range(40)]
POOL = [p for p in PROMPTS for _ in range(3)]  # three answers per prompt


def _recording_fit(seen: list[set[str]]) -> Any:
    def fit(rows: np.ndarray, value: float) -> dict[str, Any]:
        prompts = {POOL[i] for i in rows}
        seen.append(prompts)
        return {"prompts": prompts, "value": value}

    return fit


def test_a_prompt_of_the_pool_is_scored_by_the_fold_model_that_never_saw_it() -> None:
    seen: list[set[str]] = []
    models, cv = cross_fit([prompt_key(p) for p in POOL], _recording_fit(seen), grid=[1.0, 2.0],
                           loss=lambda model, rows: abs(model["value"] - 2.0))  # fmt: skip
    assert set(cv) == {"1.0", "2.0"} and models.hyperparameter == 2.0
    assert len(seen) == 2 * 5 + 1 and len(models.folds) == 5
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


def test_inner_cross_validation_chooses_the_lowest_loss() -> None:
    chosen, losses = choose_by_inner_cv([prompt_key(p) for p in POOL], lambda rows, v: v, grid=[3, 1, 2],
                                        loss=lambda model, rows: float(model))  # fmt: skip
    assert chosen == 1 and losses == {"3": 3.0, "1": 1.0, "2": 2.0}


@pytest.mark.parametrize("name", ["refusal", "harm"])
def test_trained_judges_never_score_an_answer_to_a_prompt_they_trained_on(name: str) -> None:
    from safedose.judges._data import gptfuzz, xstest_rows

    judge: Any = get_judge(name)
    trained_on = xstest_rows()[0]["prompt"] if name == "refusal" else gptfuzz("train")[0].prompt
    rows = [{"prompt": trained_on, "response": "Sure, here is how."}, {"prompt": "Never seen before?", "response": "x"}]
    verdicts = judge.judge(rows)
    k = fold_of(prompt_key(trained_on))
    assert verdicts[0]["scored_by"] == f"fold-{k + 1}/5" and verdicts[1]["scored_by"] == FULL
    assert prompt_key(trained_on) in judge.models.seen
