"""Evaluation: metric definitions with bootstrap CIs, seed summaries, and judge-free capability measures."""

from safedose.evaluate._capability import mean_token_nll
from safedose.evaluate._metrics import (
    bootstrap_mean,
    cell_metrics,
    paired_difference,
    per_prompt,
    prompt_values,
    seed_summary,
)

__all__ = [
    "bootstrap_mean",
    "cell_metrics",
    "mean_token_nll",
    "paired_difference",
    "per_prompt",
    "prompt_values",
    "seed_summary",
]
