"""Evaluation: metric records with their intervals, dose differences, the dose-trend test, and judges' agreement
with each other on the study's answers."""

from safedose.evaluate._agreement import (
    AGREEMENT_DEFINITION,
    AGREEMENT_LABELS,
    REFUSAL_FIELD,
    AgreementRow,
    judge_agreement,
)
from safedose.evaluate._cross_format import CrossFormat, CrossFormatRow, FormatDifferenceRow, cross_format
from safedose.evaluate._differences import DifferenceRow, dose_differences
from safedose.evaluate._metrics import (
    BINARY_METRICS,
    CONTINUOUS_METRICS,
    DEFAULT_HARMFUL_COMPLIANCE,
    DEFINITIONS,
    INTERVALS,
    METRICS,
    MetricRow,
    PooledRow,
    answer_values,
    cell_metrics,
    estimate,
    pooled_metrics,
    pooled_name,
)
from safedose.evaluate._robustness import (
    ROBUSTNESS_DEFINITIONS,
    ROBUSTNESS_METRICS,
    RobustnessRow,
    prompt_outcomes,
    robustness_rows,
)
from safedose.evaluate._sources import SOURCE_METRICS, CrossSource, SourceDifferenceRow, cross_source
from safedose.evaluate._trend import TREND_MODEL, TrendFit, TrendRow, cell_trend, dose_trend

__all__ = [
    "AGREEMENT_DEFINITION",
    "AGREEMENT_LABELS",
    "BINARY_METRICS",
    "CONTINUOUS_METRICS",
    "DEFAULT_HARMFUL_COMPLIANCE",
    "DEFINITIONS",
    "INTERVALS",
    "METRICS",
    "REFUSAL_FIELD",
    "ROBUSTNESS_DEFINITIONS",
    "ROBUSTNESS_METRICS",
    "SOURCE_METRICS",
    "TREND_MODEL",
    "AgreementRow",
    "CrossFormat",
    "CrossFormatRow",
    "CrossSource",
    "DifferenceRow",
    "FormatDifferenceRow",
    "MetricRow",
    "PooledRow",
    "RobustnessRow",
    "SourceDifferenceRow",
    "TrendFit",
    "TrendRow",
    "answer_values",
    "cell_metrics",
    "cell_trend",
    "cross_format",
    "cross_source",
    "dose_differences",
    "dose_trend",
    "estimate",
    "judge_agreement",
    "pooled_metrics",
    "pooled_name",
    "prompt_outcomes",
    "robustness_rows",
]
