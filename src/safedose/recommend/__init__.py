"""The answer to the user's question: fitted dose-response curves with 95% bands, and the smallest dose that meets a
target with its interval and what it costs."""

from safedose.recommend._curves import (
    BANDS,
    RULE,
    Curve,
    Knot,
    arms_of,
    change_between,
    curve_at,
    expected_after,
    fit_binary,
    fit_capability,
    fit_curves,
)
from safedose.recommend._recommend import (
    BY_SOURCE,
    INTERVAL_METHOD,
    Constraint,
    Expected,
    Observed,
    Recommendation,
    recommend,
    recommend_from_curves,
)
from safedose.recommend._target import EXAMPLE, TARGET_METRICS, Limit, Target, check_target_sets, parse_target

__all__ = [
    "BANDS",
    "BY_SOURCE",
    "EXAMPLE",
    "INTERVAL_METHOD",
    "RULE",
    "TARGET_METRICS",
    "Constraint",
    "Curve",
    "Expected",
    "Knot",
    "Limit",
    "Observed",
    "Recommendation",
    "Target",
    "arms_of",
    "change_between",
    "check_target_sets",
    "curve_at",
    "expected_after",
    "fit_binary",
    "fit_capability",
    "fit_curves",
    "parse_target",
    "recommend",
    "recommend_from_curves",
]
