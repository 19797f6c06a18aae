"""The report: metrics files, the recommendation and a self-contained HTML page with figures."""

from safedose.report._html import write_report
from safedose.report._metrics_file import (
    HEADLINE_DOSE,
    MetricsFile,
    compute_metrics,
    headline,
    load_metrics,
    write_metrics,
)
from safedose.report._recommendation import config_target, load_recommendation, write_recommendation
from safedose.report._robustness import AtDose, Robustness, judge_exposure, robustness

__all__ = [
    "HEADLINE_DOSE",
    "AtDose",
    "MetricsFile",
    "Robustness",
    "compute_metrics",
    "config_target",
    "headline",
    "judge_exposure",
    "load_metrics",
    "load_recommendation",
    "robustness",
    "write_metrics",
    "write_recommendation",
    "write_report",
]
