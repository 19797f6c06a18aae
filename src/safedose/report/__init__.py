"""The report: metrics files, the recommendation and a self-contained HTML page with figures."""

from safedose.report._html import write_report
from safedose.report._metrics_file import MetricsFile, compute_metrics, headline, load_metrics, write_metrics
from safedose.report._recommendation import config_target, load_recommendation, write_recommendation

__all__ = [
    "MetricsFile",
    "compute_metrics",
    "config_target",
    "headline",
    "load_metrics",
    "load_recommendation",
    "write_metrics",
    "write_recommendation",
    "write_report",
]
