"""Human annotation of a run's answers: a blinded labelling app, agreement between annotators, judges measured
against them, and judge rates corrected by their audit."""

from safedose.annotate._agreement import agreement_summary, krippendorff_alpha, majority, pairwise_kappa
from safedose.annotate._api import DEFAULT_URL, annotate, export, import_file, invite, sample_spec
from safedose.annotate._app import check_bind, create_app
from safedose.annotate._audit import (
    Audit,
    corrected_rates,
    has_audit,
    judge_against_humans,
    judge_labels,
    judges_against_humans,
    load_audit,
    training_labels,
)
from safedose.annotate._exchange import EXPORT_FORMATS, export_labels, import_labels, read_labels
from safedose.annotate._records import Item, Label, LabelIn, SampleSpec
from safedose.annotate._report import audit_section
from safedose.annotate._store import DB_NAME, Store, db_path, open_store
from safedose.annotate._summary import app_summary
from safedose.judges import labels_digest

__all__ = [
    "DB_NAME",
    "DEFAULT_URL",
    "EXPORT_FORMATS",
    "Audit",
    "Item",
    "Label",
    "LabelIn",
    "SampleSpec",
    "Store",
    "agreement_summary",
    "annotate",
    "app_summary",
    "audit_section",
    "check_bind",
    "corrected_rates",
    "create_app",
    "db_path",
    "export",
    "export_labels",
    "has_audit",
    "import_file",
    "import_labels",
    "invite",
    "judge_against_humans",
    "judge_labels",
    "judges_against_humans",
    "krippendorff_alpha",
    "labels_digest",
    "load_audit",
    "majority",
    "open_store",
    "pairwise_kappa",
    "read_labels",
    "sample_spec",
    "training_labels",
]
