"""The report: metrics files and a self-contained HTML page with figures."""

from safedose.report._html import write_report
from safedose.report._metrics_file import headline, write_metrics

__all__ = ["headline", "write_metrics", "write_report"]
