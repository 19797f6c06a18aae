"""The report: metrics files and a self-contained HTML page with figures."""

from safedose.report._html import write_report
from safedose.report._metrics_file import MetricsFile, compute_metrics, headline, load_metrics, write_metrics

__all__ = ["MetricsFile", "compute_metrics", "headline", "load_metrics", "write_metrics", "write_report"]
