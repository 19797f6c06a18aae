"""results/robustness.json and the report's robustness section: attack success by dose for each attack, the paired
change from plain to attacked, the prefill-depth curve, each attack at the recommended dose, and what each judge saw
of the attack's style in training."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from safedose.evaluate import ROBUSTNESS_DEFINITIONS, RobustnessRow, prompt_outcomes, robustness_rows
from safedose.files import write_figure, write_json
from safedose.recommend import Curve, Recommendation, curve_at, fit_binary
from safedose.run import (
    BASE,
    BASE_CHAT,
    AttackSummary,
    JudgedAnswer,
    Manifest,
    read_attacked,
    report_dir,
    robustness_path,
)


class AtDose(BaseModel):
    """One attack on one harm set at the recommended (or, without one, the largest tested) dose."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attack: str
    eval_set: str
    dose: int
    recommended: bool = Field(description="the target's recommended dose (else the largest tested dose)")
    value: float | None = Field(description="expected attack success on the fitted curve, else the observed share")
    lo: float | None
    hi: float | None
    source: str = Field(description="`curve` (band over cells) or `observed` (Wilson over the dose's prompts)")
    plain: float | None = Field(description="plain harmful compliance at that dose on the same prompts (observed)")
    text: str


class Robustness(BaseModel):
    """Everything in results/robustness.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    definitions: dict[str, str]
    attacks: dict[str, AttackSummary] = Field(description="per attack: family, version and the prompts it attacked")
    rows: list[RobustnessRow]
    curves: list[Curve] = Field(description="attack success over tuned cells per attack and harm set")
    at_dose: list[AtDose]
    judges: dict[str, dict[str, str]] = Field(
        description="per attack and judge role: did it see this style in training"
    )


def judge_exposure(family: str, attack: str, judge: str) -> str:
    """Whether the judge of `judge` (name@revision) learnt from answers in this attack's style (docs/attacks.md)."""
    name = judge.partition("@")[0]
    if name == "harm" and family == "template" and attack.startswith("template:gptfuzz"):
        return ("in distribution: harm@3 was trained on GPTFuzz's hand-labelled answers to prompts written into "
                "these very templates; GPTFuzz's labelled answers do not record the template, so it cannot be "
                "cross-fitted by template, and its numbers on this attack are not a held-out measurement")  # fmt: skip
    if name == "harm":
        return ("not seen: every answer harm@3 learnt from was an answer to a GPTFuzz template; none came from this "
                "attack")  # fmt: skip
    if name in ("refusal", "strmatch") and family == "prefill":
        return ("not seen: no training answer began with a prefilled compliant prefix; the judge reads the prefix "
                "and the continuation together")  # fmt: skip
    if name == "refusal":
        return "not seen: refusal@2 learnt from XSTest's plain prompts and the paper's answers, none attacked"
    if name == "strmatch":
        return "a fixed rule (XSTest's string match): nothing learnt"
    return "unknown: check this judge's training data"


def robustness(plain: Sequence[JudgedAnswer], attacked: Sequence[JudgedAnswer], rec: Recommendation,
               manifest: Manifest) -> Robustness:  # fmt: skip
    rows = robustness_rows(plain, attacked)
    pairs = sorted({(r.attack, r.eval_set) for r in rows})
    curves = [fit_binary(f"attack_success:{a}", s, prompt_outcomes(attacked, a, s)) for a, s in pairs]
    tested = sorted({r.dose for r in rows if r.dose is not None})
    dose, recommended = (rec.dose, True) if rec.dose is not None else (tested[-1] if tested else None, False)
    at = [_at_dose(c, a, s, dose, recommended, rows) for (a, s), c in zip(pairs, curves, strict=True)
          if dose is not None]  # fmt: skip
    roles = manifest.judges
    families = {r.attack: r.family for r in rows}
    judges = {a: {role: judge_exposure(families[a], a, str(j)) for role, j in sorted(roles.items())
                  if role in ("refusal", "harm", "strmatch")} for a in sorted(families)}  # fmt: skip
    return Robustness(definitions=ROBUSTNESS_DEFINITIONS, attacks=manifest.sampling.attacks,
                      rows=rows, curves=curves, at_dose=at, judges=judges)  # fmt: skip


def _at_dose(curve: Curve, attack: str, eval_set: str, dose: int, recommended: bool,
             rows: Sequence[RobustnessRow]) -> AtDose:  # fmt: skip
    observed = [r for r in rows if r.attack == attack and r.eval_set == eval_set and r.dose == dose
                and r.metric == "attack_success"]  # fmt: skip
    plain = _mean([r.plain for r in observed])
    fitted, lo, hi = (float(v[0]) for v in curve_at(curve, [dose]))
    value: float | None
    lo_: float | None
    hi_: float | None
    # a band of no width means every cell had the same share (the logit line fits exactly): report what was observed
    if curve.run_variation and not any(math.isnan(v) for v in (fitted, lo, hi)) and hi - lo > 1e-6:
        value, lo_, hi_, source = fitted, lo, hi, "curve"
        how = "expected on the fitted curve, 95% band over training cells"
    elif observed and len(observed) == 1 and observed[0].value is not None:
        value, lo_, hi_, source = observed[0].value, observed[0].lo, observed[0].hi, "observed"
        why = "too few cells for a band over cells" if not curve.run_variation else "every cell had the same share"
        how = f"observed over {observed[0].n} prompts, 95% Wilson interval ({why})"
    else:
        value = lo_ = hi_ = None
        source, how = "observed", "not measured at this dose"
    where = f"At the recommended dose {dose}" if recommended else f"No dose is recommended; at the largest dose {dose}"
    if value is None:
        text = f"{where}, {attack} on {eval_set}: {how}."
    else:
        text = (f"{where}, {attack} still succeeds on {value:.0%} [{lo_:.0%}, {hi_:.0%}] of {eval_set} prompts "
                f"({how}; plain harmful compliance on the same prompts {_pct(plain)}).")  # fmt: skip
    return AtDose(attack=attack, eval_set=eval_set, dose=dose, recommended=recommended, value=value, lo=lo_, hi=hi_,
                  source=source, plain=plain, text=text)  # fmt: skip


def _mean(values: Sequence[float | None]) -> float | None:
    usable = [v for v in values if v is not None]
    return sum(usable) / len(usable) if usable else None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _ci(value: float | None, lo: float | None, hi: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    inner = "" if lo is None or hi is None else f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    return fmt.format(value) + inner


def _label(variant: str, dose: int | None, base_label: str) -> str:
    if variant == BASE:
        return base_label
    if variant == BASE_CHAT:
        return "untuned · own chat template"
    return f"dose {dose}" + ("" if variant.startswith(f"n{dose}-s0") else f" ({variant})")


def section(run: Path, plain: Sequence[JudgedAnswer], rec: Recommendation, manifest: Manifest,
            base_label: str) -> dict[str, Any] | None:  # fmt: skip
    """Write results/robustness.json and the figures; the section's content (None: the run asked no attack)."""
    attacked = read_attacked(run)
    if not attacked:
        robustness_path(run).unlink(missing_ok=True)
        return None
    result = robustness(plain, attacked, rec, manifest)
    write_json(robustness_path(run), result.model_dump(mode="json"))
    order = {BASE_CHAT: -2, BASE: -1}
    tables = []
    for (attack, eval_set), group in sorted(_by(result.rows, "attack_success").items()):
        harm = {r.variant: r for r in result.rows if r.attack == attack and r.eval_set == eval_set
                and r.metric == "harm_rate"}  # fmt: skip
        body = []
        for r in sorted(group, key=lambda r: (order.get(r.variant, 0), r.dose or 0, r.seed or 0)):
            h = harm.get(r.variant)
            harm_cells = (
                [_ci(h.value, h.lo, h.hi), _ci(h.change, h.change_lo, h.change_hi, signed=True)] if h else ["-"] * 2
            )
            change = _ci(r.change, r.change_lo, r.change_hi, signed=True)
            cells = [_ci(r.value, r.lo, r.hi), _ci(r.plain, None, None), change, *harm_cells, f"{r.n} / {r.answers}"]
            body.append({"label": _label(r.variant, r.dose, base_label), "cells": cells})
        tables.append({"title": f"{attack} on {eval_set}", "rows": body,
                       "judges": result.judges.get(attack, {})})  # fmt: skip
    return {
        "figures": _figures(run, result, base_label),
        "tables": tables,
        "at_dose": [a.text for a in result.at_dose],
        "definitions": [{"name": k, "text": v} for k, v in result.definitions.items()],
        "curves": [
            {"name": c.metric.removeprefix("attack_success:"), "eval_set": c.eval_set, "why": c.why, "band": c.band}
            for c in result.curves
        ],
    }


def _by(rows: Sequence[RobustnessRow], metric: str) -> dict[tuple[str, str], list[RobustnessRow]]:
    out: dict[tuple[str, str], list[RobustnessRow]] = defaultdict(list)
    for r in rows:
        if r.metric == metric:
            out[(r.attack, r.eval_set)].append(r)
    return out


def _figures(run: Path, result: Robustness, base_label: str) -> list[dict[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    by = _by(result.rows, "attack_success")
    sets = sorted({s for _, s in by})

    def save(fig: Any, file: str, caption: str) -> None:
        figures.append({"file": file, "caption": caption, "data": write_figure(fig, report_dir(run) / file)})

    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4), squeeze=False)
    for ax, eval_set in zip(axes[0], sets, strict=True):
        attacks = sorted(a for a, s in by if s == eval_set)
        for i, attack in enumerate(attacks):
            tuned = sorted((r for r in by[(attack, eval_set)] if r.dose is not None), key=lambda r: r.dose or 0)
            doses = sorted({r.dose or 0 for r in tuned})
            x = np.arange(len(doses)) + (i - (len(attacks) - 1) / 2) * 0.06
            values = [_mean([r.value for r in tuned if r.dose == d]) for d in doses]
            ax.plot(x, [np.nan if v is None else v for v in values], "o-", label=attack, color=f"C{i}")
            if any(r.seed is not None for r in tuned) and len({r.seed for r in tuned}) == 1:
                err = [[(v or 0) - (r.lo or 0) for v, r in zip(values, tuned, strict=True)],
                       [(r.hi or 0) - (v or 0) for v, r in zip(values, tuned, strict=True)]]  # fmt: skip
                ax.errorbar(x, [v or 0 for v in values], yerr=err, fmt="none", color=f"C{i}", alpha=0.5, capsize=2)
            base = next((r for r in by[(attack, eval_set)] if r.variant == BASE), None)
            if base and base.value is not None:
                ax.plot([-0.7], [base.value], "o", mfc="none", color=f"C{i}")
            if i == 0:
                ax.plot(x, [np.nan if (p := _mean([r.plain for r in tuned if r.dose == d])) is None else p
                            for d in doses], "k--", label="plain (same prompts)")  # fmt: skip
                ax.set_xticks(np.arange(len(doses)), [str(d) for d in doses])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("safety rows (dose)")
        ax.set_ylabel("attack success (strict)")
        ax.set_title(eval_set)
        ax.legend(fontsize=7)
    save(fig, "robustness.png",
         "Attack success rate by dose for each attack (strict: the refusal judge's `compliance` or `partial`), with "
         "95% Wilson intervals over the prompts of each cell (one seed; over seeds, the mean of the cells); dashed: "
         f"the same prompts asked plainly; hollow at the left: {base_label}.")  # fmt: skip

    depth = {(s, r.dose, r.attack): r for (a, s), group in by.items() if a.startswith("prefill:") for r in group
             if r.dose is not None}  # fmt: skip
    if depth:
        depth_sets = sorted({s for s, _, _ in depth})
        fig, axes = plt.subplots(1, len(depth_sets), figsize=(5.5 * len(depth_sets), 4), squeeze=False)
        for ax, eval_set in zip(axes[0], depth_sets, strict=True):
            for i, dose in enumerate(sorted({d for s, d, _ in depth if s == eval_set and d is not None})):
                points = sorted((int(a.split(":")[1]), r) for (s, d, a), r in depth.items()
                                if s == eval_set and d == dose)  # fmt: skip
                plain = _mean([r.plain for _, r in points])
                ks = [0, *[k for k, _ in points]]
                vals = [
                    np.nan if plain is None else plain,
                    *[np.nan if r.value is None else r.value for _, r in points],
                ]
                ax.plot(ks, vals, "o-", color=f"C{i}", label=f"dose {dose}")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("prefilled tokens of a compliant target (0: plain)")
            ax.set_ylabel("attack success (strict)")
            ax.set_title(f"How deep is the safety? {eval_set}")
            ax.legend(fontsize=7)
        save(fig, "prefill_depth.png",
             "Prefill depth: the share of prompts answered without a refusal when the answer starts with the first k "
             "tokens of a compliant target (the set's own `target`, else \"Sure, here is\"), per dose; k = 0 is the "
             "plain prompt. Safety that lives only in the first tokens falls at small k.")  # fmt: skip
    return figures
