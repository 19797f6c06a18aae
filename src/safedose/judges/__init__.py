"""Judges of model responses: one protocol, one registry, cached verdicts, and measured agreement with humans."""

from safedose.judges import (  # noqa: F401  (registers the judges)
    _guard,
    _harm,
    _hf_reward,
    _moderation,
    _prompt_harm,
    _refusal,
    _remote,
)
from safedose.judges._base import (
    JUDGES,
    Judge,
    JudgeEntry,
    TrainedJudge,
    Verdict,
    get_judge,
    judge_id,
    judge_rows,
    read_rows,
    register_judge,
)
from safedose.judges._crossfit import prompt_key
from safedose.judges._strmatch import StrMatchJudge, strmatch_label
from safedose.judges._validate import build, list_judges, stored_validation, validate

__all__ = [
    "JUDGES",
    "Judge",
    "JudgeEntry",
    "StrMatchJudge",
    "TrainedJudge",
    "Verdict",
    "build",
    "get_judge",
    "judge_id",
    "judge_rows",
    "list_judges",
    "prompt_key",
    "read_rows",
    "register_judge",
    "stored_validation",
    "strmatch_label",
    "validate",
]
