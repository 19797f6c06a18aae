"""Agreement between annotators: Cohen's kappa per pair, Krippendorff's alpha across all, with intervals that resample
items; and the human majority label of each item."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from safedose.annotate._records import HARMFUL_VALUES, REFUSAL_CLASSES, Label
from safedose.stats import kappa_codes
from safedose.stats import krippendorff_alpha as stats_alpha

Field = Literal["refusal", "harmful"]
N_BOOT = 1000
VALUES: dict[str, tuple[str, ...]] = {"refusal": REFUSAL_CLASSES, "harmful": HARMFUL_VALUES}


def by_item(labels: Sequence[Label], field: Field) -> dict[str, dict[str, str]]:
    """item -> annotator -> value, for labels that carry a value of `field`."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for label in labels:
        value = getattr(label, field)
        if value is not None:
            out[label.item][label.annotator] = value
    return dict(out)


def majority(labels: Sequence[Label], field: Field) -> tuple[dict[str, str], int]:
    """Each item's most frequent value of `field` among its annotators; items whose top values tie are left out
    (their count is returned too)."""
    winners, ties = {}, 0
    for item, values in by_item(labels, field).items():
        top = Counter(values.values()).most_common()
        if len(top) > 1 and top[0][1] == top[1][1]:
            ties += 1
        else:
            winners[item] = top[0][0]
    return winners, ties


def _interval(draws: np.ndarray) -> list[float] | None:
    finite = draws[np.isfinite(draws)]
    if finite.size < 0.5 * draws.size:
        return None
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return [float(lo), float(hi)]


def pairwise_kappa(labels: Sequence[Label], field: Field, *, seed: int = 0) -> list[dict[str, Any]]:
    """Cohen's kappa of every pair of annotators on the items both labelled, 95% bootstrap interval over those items."""
    values = VALUES[field]
    table = by_item(labels, field)
    names = sorted({a for v in table.values() for a in v})
    rng = np.random.default_rng(seed)
    out = []
    for first, second in itertools.combinations(names, 2):
        both = [v for v in table.values() if first in v and second in v]
        if not both:
            continue
        a = np.array([values.index(v[first]) for v in both])
        b = np.array([values.index(v[second]) for v in both])
        draws = rng.integers(0, len(both), (N_BOOT, len(both)))
        kappa = float(kappa_codes(a, b, len(values)))
        out.append({
            "annotators": [first, second], "n": len(both), "agreement": float(np.mean(a == b)),
            "kappa": None if np.isnan(kappa) else kappa,
            "kappa_ci95": _interval(kappa_codes(a[draws], b[draws], len(values))),
        })  # fmt: skip
    return out


def krippendorff_alpha(labels: Sequence[Label], field: Field, *, seed: int = 0) -> dict[str, Any]:
    """Krippendorff's alpha (nominal) across all annotators on items with two or more labels, 95% bootstrap interval
    over those items."""
    values = VALUES[field]
    table = {item: v for item, v in by_item(labels, field).items() if len(v) >= 2}
    names = sorted({a for v in table.values() for a in v})
    result: dict[str, Any] = {"n_items": len(table), "n_annotators": len(names), "alpha": None, "alpha_ci95": None}
    if len(names) < 2 or not table:
        return result
    matrix = np.full((len(names), len(table)), np.nan)
    for col, v in enumerate(table.values()):
        for name, value in v.items():
            matrix[names.index(name), col] = values.index(value)

    def alpha(columns: np.ndarray) -> float:
        value = stats_alpha(matrix[:, columns], value_domain=range(len(values)))
        return float("nan") if value is None else value

    rng = np.random.default_rng(seed)
    everything = alpha(np.arange(len(table)))
    draws = np.array([alpha(rng.integers(0, len(table), len(table))) for _ in range(N_BOOT)])
    result["alpha"] = None if np.isnan(everything) else everything
    result["alpha_ci95"] = _interval(draws)
    return result


def agreement_summary(labels: Sequence[Label]) -> dict[str, Any]:
    """Pairwise kappa and Krippendorff's alpha for the refusal class and for the harmful question."""
    fields: tuple[Field, ...] = ("refusal", "harmful")
    return {f: {"pairs": pairwise_kappa(labels, f), "krippendorff": krippendorff_alpha(labels, f)} for f in fields}
