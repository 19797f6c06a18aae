"""The seed paper's cross-format table: harmful compliance on instruction-form and on question-form harm sets for each
training format and dose, with the intervals of the other tables, and the paired change between training formats.

An eval set's form is the `form` the catalogue declares; a set without one (a file, a set of mixed form) takes the
form of at least `INFERRED_FORM_SHARE` of its prompts by `safedose.data.detect_form`, else it is left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from safedose.data import DATASETS, FORMS, detect_form
from safedose.evaluate._differences import Pairs, paired_change, paired_values
from safedose.evaluate._metrics import (
    BINARY_METRICS,
    DEFAULT_HARMFUL_COMPLIANCE,
    at_least_wilson,
    estimate,
    observations,
    pooled_name,
    seeds_by_prompts,
    variants,
)
from safedose.run import CellFields, CellKey, JudgedAnswer, safety_field
from safedose.stats import Interval, hierarchical_bootstrap

INFERRED_FORM_SHARE = 0.9
REFERENCE_FORMAT = "instruction"


def all_sets_label(form: str) -> str:
    """The name of the row pooling every eval set of one form."""
    return f"all {form}-form sets"


class CrossFormatRow(CellFields):
    """Harmful compliance of one variant (a cell, a dose pooled over seeds, or the untuned model) on one eval set, or
    on every set of one form together (`eval_set` = `all <form>-form sets`). `seed` is None for the untuned model and
    for rows pooled over seeds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    form: str = Field(description="the form of the eval set's prompts")
    eval_set: str
    sets: list[str]
    metric: str
    value: float | None
    lo: float | None
    hi: float | None
    interval: Interval
    n: int
    n_unlabelled: int
    seeds: list[int]


class FormatDifferenceRow(BaseModel):
    """The change from one training format to another at the same dose and seed, on the same prompts (`to` minus
    `from`); pooled rows average the per-seed changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    dose: int
    safety: str | None = safety_field()
    form: str
    eval_set: str
    from_format: str
    to_format: str
    seeds: list[int]
    pooled: bool
    value: float | None
    lo: float | None
    hi: float | None
    interval: Interval
    n: int = Field(description="paired answers (prompt x seed) with a usable label on both sides")
    n_unlabelled: int


class CrossFormat(BaseModel):
    """metrics.json `cross_format`: the table's rows and the paired changes between training formats."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    forms: dict[str, str] = Field(description="eval set -> form of its prompts")
    form_source: dict[str, str] = Field(description="eval set -> `catalog` or `inferred` (from its prompts)")
    reference_format: str | None
    rows: list[CrossFormatRow]
    differences: list[FormatDifferenceRow]


def eval_set_forms(answers: Sequence[JudgedAnswer]) -> tuple[dict[str, str], dict[str, str]]:
    """The form of each unsafe eval set among the answers, and where it came from (catalogue or inferred)."""
    prompts: dict[str, dict[str, str]] = defaultdict(dict)
    for a in answers:
        if a.expected_label == "unsafe":
            prompts[a.eval_set][a.id] = a.prompt
    forms: dict[str, str] = {}
    source: dict[str, str] = {}
    for name, by_id in sorted(prompts.items()):
        declared = DATASETS.get(name).form if name in DATASETS else None
        if declared:
            forms[name], source[name] = declared, "catalog"
            continue
        detected = [detect_form(p) for p in by_id.values()]
        for form in FORMS:
            if detected and detected.count(form) >= INFERRED_FORM_SHARE * len(detected):
                forms[name], source[name] = form, "inferred"
    return forms, source


def cross_format(
    answers: Sequence[JudgedAnswer],
    *,
    cells: Sequence[Mapping[str, Any]] = (),
    metric: str = DEFAULT_HARMFUL_COMPLIANCE,
) -> CrossFormat | None:
    """The cross-format table of `metric` (default: strict harmful compliance), or None when no harm set has a form."""
    forms, form_source = eval_set_forms(answers)
    if not forms:
        return None
    info = variants(answers, cells)
    by_form: dict[str, list[str]] = defaultdict(list)
    for name, form in forms.items():
        by_form[form].append(name)
    groups: dict[tuple[str, str, str], dict[str, float | None]] = defaultdict(dict)
    for o in observations(answers):
        if o.metric != metric or o.eval_set not in forms:
            continue
        form = forms[o.eval_set]
        key = f"{o.eval_set}\t{o.prompt_id}"
        groups[(o.variant, form, o.eval_set)][key] = o.value
        if len(by_form[form]) > 1:
            groups[(o.variant, form, all_sets_label(form))][key] = o.value

    def sets_of(form: str, group: str) -> list[str]:
        return sorted(by_form[form]) if group == all_sets_label(form) else [group]

    rows: list[CrossFormatRow] = []
    for (variant, form, group), values in sorted(groups.items()):
        v = info[variant]
        usable = [x for x in values.values() if x is not None]
        est = estimate(metric, usable)
        rows.append(CrossFormatRow(
            variant=variant, **v.key.as_dict(), form=form, eval_set=group,
            sets=sets_of(form, group), metric=metric, value=est.value, lo=est.lo, hi=est.hi, interval=est.interval,
            n=len(usable), n_unlabelled=len(values) - len(usable), seeds=[] if v.seed is None else [v.seed],
        ))  # fmt: skip

    tuned: Tuned = defaultdict(dict)
    for (variant, form, group), values in groups.items():
        v = info[variant]
        if v.dose is not None and v.seed is not None:
            tuned[(v.dose, v.key.arm, form, group)][v.seed] = values
    for (dose, arm, form, group), by_seed in sorted(tuned.items(), key=lambda kv: str(kv[0])):
        if len(by_seed) < 2:
            continue
        seeds, matrix = seeds_by_prompts(by_seed)
        est = hierarchical_bootstrap(matrix)
        if metric in BINARY_METRICS:
            est = at_least_wilson(est, matrix)
        n = int((~np.isnan(matrix)).sum())
        rows.append(CrossFormatRow(
            variant=pooled_name(dose, arm), dose=dose, seed=None, **arm.arm_dict(), form=form, eval_set=group,
            sets=sets_of(form, group), metric=metric, value=est.value, lo=est.lo, hi=est.hi, interval=est.interval,
            n=n, n_unlabelled=sum(len(p) for p in by_seed.values()) - n, seeds=seeds,
        ))  # fmt: skip

    formats = sorted({arm.format for (_, arm, _, _) in tuned if arm.format is not None})
    reference = REFERENCE_FORMAT if REFERENCE_FORMAT in formats else (formats[0] if formats else None)
    differences = _differences(tuned, formats, reference, metric)
    return CrossFormat(metric=metric, forms=forms, form_source=form_source, reference_format=reference, rows=rows,
                       differences=differences)  # fmt: skip


Tuned = dict[tuple[int, CellKey, str, str], dict[int, dict[str, float | None]]]  # (dose, arm, form, set) -> seeds


def _differences(tuned: Tuned, formats: Sequence[str], reference: str | None, metric: str) -> list[FormatDifferenceRow]:
    """Each training format against the reference format at the same dose, seed and safety source, paired over
    prompts."""
    rows: list[FormatDifferenceRow] = []
    keys = sorted({(dose, arm.safety or "", form, group) for (dose, arm, form, group) in tuned})
    for to_format in (f for f in formats if f != reference):
        for dose, safety, form, group in keys:
            arm = CellKey(format=reference, safety=safety or None)
            before = tuned.get((dose, arm, form, group))
            after = tuned.get((dose, replace(arm, format=to_format), form, group))
            if not before or not after:
                continue
            per_seed: dict[int, Pairs] = {}
            for seed in sorted(set(before) & set(after)):
                per_seed[seed] = paired_values(before[seed], after[seed])
            for seeds in [[s] for s in per_seed] + ([list(per_seed)] if len(per_seed) >= 2 else []):
                change = paired_change(metric, {s: per_seed[s] for s in seeds})
                est = change.est
                rows.append(FormatDifferenceRow(
                    metric=metric, dose=dose, safety=arm.safety, form=form, eval_set=group,
                    from_format=str(reference), to_format=to_format, seeds=change.seeds, pooled=len(seeds) > 1,
                    value=est.value, lo=est.lo, hi=est.hi, interval=est.interval, n=change.n,
                    n_unlabelled=change.n_unlabelled,
                ))  # fmt: skip
    return rows
