"""Judges against each other: agreement, Wilson interval and Cohen's kappa on hand-computed answers."""

from __future__ import annotations

import math

import pytest

from safedose.evaluate import AgreementRow, judge_agreement
from safedose.run import JudgedAnswer, RoleVerdict

JUDGES = {"refusal": "refusal@1", "strmatch": "strmatch@1", "harm": "harm@2", "guard": "guard:g#p@1"}
Z = 1.959963984540054


def judged(variant: str, prompt_id: str, expected: str, **labels: str | None) -> JudgedAnswer:
    """One answer with a verdict per role given; a None label is a parse error (no usable label)."""
    verdicts = {role: RoleVerdict(judge=JUDGES[role], label=label, parse_error=label is None)
                for role, label in labels.items()}  # fmt: skip
    return JudgedAnswer(id=prompt_id, eval_set="advbench" if expected == "unsafe" else "xstest-v2-safe",
                        expected_label=expected, prompt=f"p{prompt_id}", response="r", variant=variant,  # type: ignore[arg-type]
                        template="alpaca", verdicts=verdicts)  # fmt: skip


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n * n)) / (1 + Z**2 / n)
    return centre - half, centre + half


# Unsafe prompts, "did the model comply?" (1 = yes):
#   refusal   compliance  partial  refusal  refusal  (none)    compliance  ->  1 1 0 0 ? 1
#   strmatch  compliance  refusal  refusal  refusal  compliance compliance ->  1 0 0 0 1 1
#   harm      harmful     harmful  harmless harmful  harmless  harmless    ->  1 1 0 1 0 0
UNSAFE = [
    ("compliance", "compliance", "harmful"),
    ("partial", "refusal", "harmful"),
    ("refusal", "refusal", "harmless"),
    ("refusal", "refusal", "harmful"),
    (None, "compliance", "harmless"),
    ("compliance", "compliance", "harmless"),
]


def study() -> list[JudgedAnswer]:
    unsafe = [judged("base", f"u{i}", "unsafe", refusal=r, strmatch=s, harm=h) for i, (r, s, h) in enumerate(UNSAFE)]
    # safe prompts: every answer complies for both judges (kappa undefined); harm does not answer "did it refuse?"
    safe = [judged("base", f"s{i}", "safe", refusal="compliance", strmatch="compliance", harm="harmless")
            for i in range(3)]  # fmt: skip
    return unsafe + safe


def by_pair(rows: list[AgreementRow], set_role: str = "harm") -> dict[tuple[str, str], AgreementRow]:
    return {(r.role_a, r.role_b): r for r in rows if r.set_role == set_role}


def test_agreement_kappa_and_counts_match_the_hand_computation() -> None:
    rows = judge_agreement(study())
    harm = by_pair(rows)
    assert list(harm) == [("refusal", "strmatch"), ("refusal", "harm"), ("strmatch", "harm")]

    # refusal vs strmatch: answer 5 unlabelled by the refusal judge; 4 of 5 agree; p_e = .6*.4 + .4*.6 = .48
    r = harm[("refusal", "strmatch")]
    assert (r.n, r.n_unlabelled, r.unlabelled_a, r.unlabelled_b, r.agree, r.yes_a, r.yes_b) == (5, 1, 1, 0, 4, 3, 2)
    assert r.agreement == pytest.approx(0.8) and r.kappa == pytest.approx((0.8 - 0.48) / (1 - 0.48))
    assert (r.lo, r.hi) == pytest.approx(wilson_by_hand(4, 5))
    assert (r.judge_a, r.judge_b, r.eval_sets, r.question) == ("refusal@1", "strmatch@1", ["advbench"], "complied")

    # refusal vs harm: 3 of 5 agree; p_e = .6*.6 + .4*.4 = .52
    r = harm[("refusal", "harm")]
    assert (r.n, r.n_unlabelled, r.agree, r.yes_a, r.yes_b) == (5, 1, 3, 3, 3)
    assert r.kappa == pytest.approx((0.6 - 0.52) / (1 - 0.52))

    # strmatch vs harm: all 6 labelled, 2 agree; p_e = .5; kappa = (1/3 - 1/2) / (1/2) = -1/3
    r = harm[("strmatch", "harm")]
    assert (r.n, r.n_unlabelled, r.agree) == (6, 0, 2)
    assert r.agreement == pytest.approx(1 / 3) and r.kappa == pytest.approx(-1 / 3)
    assert (r.lo, r.hi) == pytest.approx(wilson_by_hand(2, 6))

    # safe prompts: only refusal vs strmatch; one answer throughout, so kappa is undefined, agreement 1
    (safe,) = [r for r in rows if r.set_role == "over_refusal"]
    assert (safe.role_a, safe.role_b, safe.question, safe.n, safe.agree, safe.kappa) == (
        "refusal", "strmatch", "refused", 3, 3, None,
    )  # fmt: skip
    assert safe.agreement == 1.0 and safe.hi == pytest.approx(1.0) and safe.lo == pytest.approx(wilson_by_hand(3, 3)[0])


def test_a_missing_verdict_counts_as_unlabelled_and_no_labels_give_no_value() -> None:
    answers = [judged("base", "a", "unsafe", refusal="compliance", strmatch="refusal"),
               judged("base", "b", "unsafe", refusal="refusal"),  # the string match never judged it
               judged("n0", "a", "unsafe", refusal=None, strmatch="refusal")]  # fmt: skip
    rows = {r.variant: r for r in judge_agreement(answers)}
    assert (rows["base"].n, rows["base"].unlabelled_b, rows["base"].agree, rows["base"].kappa) == (1, 1, 0, 0.0)
    empty = rows["n0"]
    assert (empty.n, empty.n_unlabelled, empty.agreement, empty.lo, empty.kappa) == (0, 1, None, None, None)


def test_guard_enters_where_its_labels_answer_the_question_and_same_judges_are_not_paired() -> None:
    llama_guard = [judged("base", "u", "unsafe", refusal="refusal", guard="harmful"),
                   judged("base", "s", "safe", refusal="refusal", guard="harmless")]  # fmt: skip
    rows = judge_agreement(llama_guard)
    assert [(r.set_role, r.role_a, r.role_b) for r in rows] == [("harm", "refusal", "guard")]
    assert (rows[0].agree, rows[0].yes_b) == (0, 1)  # `harmful`: the guard says it complied

    classes = [judged("base", "s", "safe", refusal="partial", guard="refusal")]
    (row,) = judge_agreement(classes)
    assert (row.set_role, row.role_b, row.question, row.agree) == ("over_refusal", "guard", "refused", 1)

    wildguard = judged("base", "s", "safe", refusal="compliance", guard="harmless")  # and `response refusal: yes`
    wildguard = wildguard.model_copy(update={"verdicts": {**wildguard.verdicts, "guard": RoleVerdict(
        judge=JUDGES["guard"], label="harmless", refusal=True)}})  # fmt: skip
    (row,) = judge_agreement([wildguard])
    assert (row.set_role, row.role_b, row.n, row.agree, row.yes_a, row.yes_b) == ("over_refusal", "guard", 1, 0, 0, 1)

    string_match = RoleVerdict(judge="strmatch@1", label="refusal")  # judges.refusal: strmatch
    same = judged("base", "u", "unsafe").model_copy(update={"verdicts": {"refusal": string_match,
                                                                         "strmatch": string_match}})  # fmt: skip
    assert judge_agreement([same]) == []
