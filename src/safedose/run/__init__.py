"""The run directory: its layout, schema version, manifest and the typed records it holds."""

from safedose.run._layout import (
    SCHEMA_VERSION,
    attacked_path,
    judged_path,
    manifest_path,
    metrics_path,
    open_run,
    read_attacked,
    read_judged,
    read_manifest,
    read_metrics,
    recommendation_path,
    report_dir,
    results_dir,
    robustness_path,
    write_attacked,
    write_judged,
)
from safedose.run._records import BASE, BASE_CHAT, JudgedAnswer, RoleVerdict

__all__ = [
    "BASE",
    "BASE_CHAT",
    "SCHEMA_VERSION",
    "JudgedAnswer",
    "RoleVerdict",
    "attacked_path",
    "judged_path",
    "manifest_path",
    "metrics_path",
    "open_run",
    "read_attacked",
    "read_judged",
    "read_manifest",
    "read_metrics",
    "recommendation_path",
    "report_dir",
    "results_dir",
    "robustness_path",
    "write_attacked",
    "write_judged",
]
