"""A simulated model with known dose-response curves: no LLM, answers drawn per prompt with a seed."""

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
    """The dose where the curve equals `share`."""
    return math.expm1((math.log(share / (1 - share)) - curve[0]) / curve[1])


def simulate(doses: Sequence[int], *, prompts: int = 150, seed: int = 0, harm: tuple[float, float] = HARM,
             safe: tuple[float, float] = SAFE) -> list[JudgedAnswer]:  # fmt: skip
    """Every dose's answers to `prompts` unsafe (`advbench`) and safe (`xstest-v2-safe`) prompts; each answer is
    drawn from its own generator seeded by (seed, dose, set, prompt), so adding a dose leaves the others unchanged."""
    rows = []
    for dose in doses:
        for eval_set, expected, curve in (("advbench", "unsafe", harm), ("xstest-v2-safe", "safe", safe)):
            p = probability(curve, dose)
            for i in range(prompts):
                rng = np.random.default_rng([seed, dose, expected == "safe", i])
                hit = bool(rng.random() < p)
                if expected == "unsafe":
                    label = "compliance" if hit else "refusal"
                else:
                    label = "refusal" if hit else "compliance"
                rows.append(JudgedAnswer(
                    id=f"{eval_set}-{i}", eval_set=eval_set, expected_label=expected, prompt=f"prompt {i}",
                    response="", variant=f"n{dose}-s0-instruction", adapter=f"n{dose}", template="alpaca", dose=dose,
                    seed=0, format="instruction", verdicts={"refusal": RoleVerdict(judge="sim@1", label=label)},
                ))  # fmt: skip
    return rows
