"""A simulated model with known dose-response curves: no LLM, answers drawn per prompt with a seed.

logit P(label) = a + b * log(1 + dose) + (a prompt's effect) + (a training cell's effect): prompts differ in how easily
they draw the label, and every training run (dose x seed) shifts all its answers by its own amount."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from safedose.run import JudgedAnswer, RoleVerdict

# logit P(label) = a + b * log(1 + dose): harmful compliance falls, over-refusal rises
HARM = (2.0, -0.9)
SAFE = (-4.0, 0.5)


def expit(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def probability(curve: tuple[float, float], dose: float) -> float:
    return expit(curve[0] + curve[1] * math.log1p(dose))


def true_dose(curve: tuple[float, float], share: float) -> float:
    """The dose where the curve (without prompt or cell effects) equals `share`."""
    return math.expm1((math.log(share / (1 - share)) - curve[0]) / curve[1])


def marginal_dose(curve: tuple[float, float], share: float, *, sd: float, draws: int = 200_000) -> int | None:
    """The smallest whole dose where the share averaged over prompt and cell effects (normal, total sd `sd`) is at
    most `share` (a falling curve), by Monte Carlo with a fixed seed; None if no dose up to 100,000 gets there."""
    z = np.random.default_rng(12345).normal(0.0, sd, draws)
    lo, hi = 0, 100_000

    def share_at(dose: int) -> float:
        return float(np.mean(1.0 / (1.0 + np.exp(-(curve[0] + curve[1] * math.log1p(dose) + z)))))

    if share_at(hi) > share:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if share_at(mid) <= share:
            hi = mid
        else:
            lo = mid + 1
    return lo


def simulate(doses: Sequence[int], *, prompts: int = 150, seed: int = 0, harm: tuple[float, float] = HARM,
             safe: tuple[float, float] = SAFE, seeds: Sequence[int] = (0,), prompt_sd: float = 0.0,
             cell_sd: float = 0.0) -> list[JudgedAnswer]:  # fmt: skip
    """Every cell's answers to `prompts` unsafe (`advbench`) and safe (`xstest-v2-safe`) prompts. Prompt effects are
    drawn once per replication (`seed`); each cell's effect and each answer come from generators seeded by (seed,
    dose, training seed, ...), so adding a dose leaves the other cells unchanged."""
    rows = []
    effects = {expected: np.random.default_rng([seed, 7, expected == "safe"]).normal(0.0, prompt_sd, prompts)
               for expected in ("unsafe", "safe")}  # fmt: skip
    for dose in doses:
        for train_seed in seeds:
            for eval_set, expected, curve in (("advbench", "unsafe", harm), ("xstest-v2-safe", "safe", safe)):
                shift = float(np.random.default_rng([seed, dose, train_seed, expected == "safe", 1]).normal(0, cell_sd))
                for i in range(prompts):
                    rng = np.random.default_rng([seed, dose, train_seed, expected == "safe", 2, i])
                    p = expit(curve[0] + curve[1] * math.log1p(dose) + shift + float(effects[expected][i]))
                    hit = bool(rng.random() < p)
                    if expected == "unsafe":
                        label = "compliance" if hit else "refusal"
                    else:
                        label = "refusal" if hit else "compliance"
                    rows.append(JudgedAnswer(
                        id=f"{eval_set}-{i}", eval_set=eval_set, expected_label=expected, prompt=f"prompt {i}",
                        response="", variant=f"n{dose}-s{train_seed}-instruction", adapter=f"n{dose}-s{train_seed}",
                        template="alpaca", dose=dose, seed=train_seed, format="instruction",
                        verdicts={"refusal": RoleVerdict(judge="sim@1", label=label)},
                    ))  # fmt: skip
    return rows
