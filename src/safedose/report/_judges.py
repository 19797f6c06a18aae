"""Judge validity: each judge's stored agreement with humans, cross-fitting notes, and the run's human audit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safedose.run import JudgedAnswer, Manifest


def _stored_validation(name: str) -> dict[str, Any] | None:
    from safedose.judges import stored_validation  # judges loads torch: only when a report is written

    try:
        return stored_validation(name)
    except KeyError:  # not a judge trained here: nothing is stored for it
        return None


def human_audit(run: Path) -> dict[str, Any] | None:
    """The run's human audit (`safedose annotate`), if it has labels."""
    from safedose.annotate import audit_section  # annotate loads torch and fastapi: only when a report is written

    return audit_section(run)


def _held_out_note(judged: Sequence[JudgedAnswer], role: str) -> str:
    """How many answers a cross-fitted judge scored with a fold model (their prompts were in its training data)."""
    scored = [a.verdicts[role].scored_by for a in judged if role in a.verdicts and a.verdicts[role].scored_by]
    folds = sum(1 for s in scored if s != "full")
    if not scored:
        return ""
    sets = sorted(
        {a.eval_set for a in judged if role in a.verdicts and (a.verdicts[role].scored_by or "full") != "full"}
    )
    where = f" ({', '.join(sets)})" if sets else ""
    return (f" Cross-fitted: {folds} of {len(scored)} answers{where} answer prompts this judge was trained on and were "
            "scored by a model trained without them; the rest by the full model.")  # fmt: skip


def judge_validity(manifest: Manifest, judged: Sequence[JudgedAnswer] = ()) -> list[dict[str, str]]:
    out = []
    for role, ident in manifest.judges.items():
        name = str(ident).partition("@")[0]
        stored = _stored_validation(name)
        if stored is None:
            text = f"no stored validation: `safedose judge validate {name}` measures it"
        elif stored.get("judge") not in (None, ident):
            text = f"the stored validation is of {stored['judge']}, not of {ident}"
        else:
            text = _validity(stored)
        out.append({"id": f"{role}: {ident}", "text": text + _held_out_note(judged, role)})
    return out


def _ci_note(result: dict[str, Any]) -> str:
    if result.get("kappa_ci95_resampled") == "groups":
        return "95% CI resampling prompts"
    return "95% CI resampling rows, not prompts (an older validation; `safedose judge validate` renews it)"


def _validity(m: dict[str, Any]) -> str:
    if "pooled" in m:
        r, s = m["pooled"]["refusal"], m["pooled"]["strmatch"]
        folds = ", ".join(f"{k} κ {v['refusal']['kappa']:.2f}" for k, v in m["per_held_out_model"].items())
        unseen = "unseen model and prompt" if "chosen" in m else "leave-one-model-out"
        text = (f"Cohen's κ {r['kappa']:.2f} [{r['kappa_ci95'][0]:.2f}, {r['kappa_ci95'][1]:.2f}] ({_ci_note(r)}) "
                f"against XSTest's human labels, {unseen} ({folds}); string match κ {s['kappa']:.2f}")  # fmt: skip
        gpt4 = [v["gpt4_judge"]["kappa"] for v in m["per_held_out_model"].values() if "gpt4_judge" in v]
        if gpt4:
            text += f"; XSTest's own GPT-4 judge κ {', '.join(f'{k:.2f}' for k in gpt4)}"
        humans = [v["annotator_1_vs_2"]["kappa"] for v in m["per_held_out_model"].values() if "annotator_1_vs_2" in v]
        if humans:
            text += f"; XSTest's two annotators agree with each other at κ {min(humans):.2f}–{max(humans):.2f}"
        return text
    if "all" in m and "kappa" in m["all"]:
        a = m["all"]
        return (f"Cohen's κ {a['kappa']:.2f} [{a['kappa_ci95'][0]:.2f}, {a['kappa_ci95'][1]:.2f}] ({_ci_note(a)}) "
                f"on {m.get('split', 'XSTest')}")  # fmt: skip
    if "brier" in m:
        lo, hi = m["auc_ci95"]
        means = m["xstest_unsafe_mean_score_by_human_label"]
        return (f"AUC {m['auc']:.3f} [{lo:.3f}, {hi:.3f}] (95% CI resampling questions), Brier score {m['brier']:.3f} "
                f"on {m['split']}; hh-rlhf pairwise accuracy {m['hh_rlhf_pairwise_accuracy']:.2f}; on XSTest's unsafe "
                f"prompts mean score {means['compliance']:.2f} / {means.get('partial', float('nan')):.2f} / "
                f"{means['refusal']:.2f} for human-labelled compliance / partial / refusal")  # fmt: skip
    if "pairwise_accuracy" in m:
        lo, hi = m["pairwise_accuracy_ci95"]
        text = (f"pairwise accuracy {m['pairwise_accuracy']:.2f} [{lo:.2f}, {hi:.2f}] on {m['n_pairs']} held-out "
                "hh-rlhf pairs")  # fmt: skip
        if "xstest_unsafe_auc_compliance_vs_refusal" in m:
            text += (f"; AUC {m['xstest_unsafe_auc_compliance_vs_refusal']:.2f} for XSTest's human-labelled "
                     "compliances vs refusals on unsafe prompts")  # fmt: skip
        return text
    if "macro_auc" in m:
        return f"macro-AUC {m['macro_auc']:.3f} on held-out OpenAI moderation samples"
    return json.dumps(m)[:200]
