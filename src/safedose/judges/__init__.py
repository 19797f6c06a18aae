"""Judges of model responses: one protocol, a registry, cached verdicts, and measured agreement with humans."""

from safedose.judges import _hf_reward, _remote, _trained  # noqa: F401  (registers the judges)
from safedose.judges._base import JUDGES, Judge, Verdict, get_judge, judge_id, judge_rows, read_rows
from safedose.judges._strmatch import StrMatchJudge, strmatch_label
from safedose.judges._trained import TRAINED, stored_validation
from safedose.judges._validate import build, validate

__all__ = [
    "JUDGES",
    "TRAINED",
    "Judge",
    "StrMatchJudge",
    "Verdict",
    "build",
    "get_judge",
    "judge_id",
    "judge_rows",
    "read_rows",
    "stored_validation",
    "strmatch_label",
    "validate",
]
