"""Hand-made judged answers for the metric and report tests."""

from __future__ import annotations

from safedose.run import JudgedAnswer, RoleVerdict


def answer(
    variant: str,
    prompt_id: str,
    *,
    refusal: str | None = "refusal",
    harm: float | None = None,
    moderation: str | None = None,
    eval_set: str = "advbench",
    expected: str = "unsafe",
    category: str | None = None,
    dose: int | None = None,
    seed: int | None = None,
    fmt: str | None = None,
    prompt: str | None = None,
    template: str = "alpaca",
    omit_refusal: bool = False,
) -> JudgedAnswer:
    """One answer; `refusal=None` is a verdict without a usable label (parse error), `omit_refusal` drops it."""
    verdicts: dict[str, RoleVerdict] = {}
    if not omit_refusal:
        verdicts["refusal"] = RoleVerdict(judge="refusal@1", label=refusal, parse_error=refusal is None)
    if harm is not None:
        verdicts["harm"] = RoleVerdict(judge="harm@2", label="harmful" if harm >= 0.5 else "harmless", score=harm)
    if moderation is not None:
        verdicts["moderation"] = RoleVerdict(judge="moderation@2", label=moderation)
    if dose is not None and fmt is None:
        fmt = "instruction"
    return JudgedAnswer(
        id=prompt_id, eval_set=eval_set, category=category, expected_label=expected,
        prompt=prompt or f"prompt {prompt_id}", response=f"answer of {variant} to {prompt_id}", variant=variant,
        adapter=None if dose is None else variant, template="chat" if variant == "base-chat" else template,
        dose=dose, seed=seed, format=fmt, verdicts=verdicts,
    )  # fmt: skip


def cell(dose: int, seed: int = 0, fmt: str = "instruction") -> dict[str, object]:
    return {"variant": f"n{dose}-s{seed}-{fmt}", "dose": dose, "seed": seed, "format": fmt}


def tuned(dose: int, seed: int, prompt_id: str, refusal: str | None, **kw: object) -> JudgedAnswer:
    return answer(f"n{dose}-s{seed}-instruction", prompt_id, refusal=refusal, dose=dose, seed=seed, **kw)
