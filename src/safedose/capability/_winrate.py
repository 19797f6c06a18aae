"""AlpacaEval-style win-rate of a sweep's variants: each variant answers a seeded sample of AlpacaEval instructions,
the pairwise judge (`safedose.judges.pairwise_judge`) compares every answer with a reference answer. The raw
win-rate counts ties as half; the length-controlled one is AlpacaEval 2's correction."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safedose.cache import Cache
from safedose.capability._records import Cells, WinRate, placed
from safedose.capability._settings import WinRateSettings
from safedose.data import load_eval_prompts, sample_prompts
from safedose.files import write_jsonl
from safedose.generate import generate
from safedose.judges import Preference, compare, pairwise_judge, preference_score, raw_win_rate
from safedose.run import BASE
from safedose.stats import Z95

WIN_RATE_SET = "alpaca-eval"


def variant_win_rates(settings: WinRateSettings, model: str, variants: Sequence[tuple[str, Any]], cells: Cells,
                      template: str, decoding: Any, backend: str, cache: Cache,
                      results_dir: Path) -> list[WinRate]:  # fmt: skip
    """Answers of every variant (name, Adapter or None for the untuned base) to a seeded sample of AlpacaEval
    instructions, judged against the reference; every verdict goes to `results_dir`/preferences.jsonl."""
    assert settings.judge is not None
    judge = pairwise_judge(settings.judge, base_url=settings.base_url)
    prompts = sample_prompts(load_eval_prompts(WIN_RATE_SET), settings.limit, seed=settings.seed)
    settings_decoding = decoding.model_copy(update={"max_new_tokens": settings.max_new_tokens})
    adapters = [a for _, a in variants if a is not None]
    rows = generate(model, adapters, prompts, template=template, decoding=settings_decoding, backend=backend,  # type: ignore[arg-type]
                    cache=cache, progress=False)  # fmt: skip
    answers: dict[str, dict[str, str]] = {}
    names = {a.name: n for n, a in variants if a is not None}
    for r in rows:
        answers.setdefault(BASE if r.adapter is None else names[r.adapter], {})[r.id] = r.response
    if settings.reference == "untuned":
        reference, judged = answers[BASE], [n for n, a in variants if a is not None]
    else:
        reference, judged = {p.id: p.reference or "" for p in prompts}, [n for n, _ in variants]
    label = "untuned model (tuning template)" if settings.reference == "untuned" else "AlpacaEval 2.0 gpt4_1106_preview"
    out: list[WinRate] = []
    every: list[Preference] = []
    for name in judged:
        items = [(p.id, p.prompt, answers[name][p.id], reference[p.id]) for p in prompts]
        prefs = compare(judge, name, items, seed=settings.seed, cache=cache)
        every += prefs
        rate = win_rate(prefs, variant=name, judge=judge.id, reference=label)
        out.append(placed(rate, cells))
    write_jsonl(results_dir / "preferences.jsonl", (p.model_dump() for p in every))
    return out


def win_rate(preferences: Sequence[Preference], *, variant: str, judge: str, reference: str) -> WinRate:
    """Raw win-rate (ties half; 95% Wilson interval on the effective count) and the length-controlled win-rate."""
    parsed = [p for p in preferences if p.winner is not None]
    scores = [preference_score(p) for p in parsed]
    n = len(scores)
    rate, lo, hi = raw_win_rate(preferences)
    sem = math.sqrt(sum((s - rate) ** 2 for s in scores) / (n - 1) / n) if rate is not None and n > 1 else None
    lc, lc_lo, lc_hi, note = length_controlled(parsed)
    return WinRate(
        variant=variant, judge=judge, reference=reference, n=n, wins=sum(p.winner == "model" for p in parsed),
        losses=sum(p.winner == "reference" for p in parsed), ties=sum(p.winner == "tie" for p in parsed),
        parse_errors=len(preferences) - n, model_first=sum(p.model_first for p in preferences), win_rate=rate, lo=lo,
        hi=hi, stderr=sem, lc_win_rate=lc, lc_lo=lc_lo, lc_hi=lc_hi, lc_note=note,
    )  # fmt: skip


LC_MODEL = (
    "AlpacaEval 2's length-controlled win-rate with its `length_controlled_minimal` GLM: logit P(variant preferred) = "
    "theta + phi * tanh(d / sd(d)), d = reference length - variant length in characters, ties as 0.5 (a fractional "
    "logit, statsmodels GLM Binomial, robust standard errors); the LC win-rate is the prediction at d = 0, "
    "logistic(theta), with a 95% delta-method interval. AlpacaEval's default GLM adds an instruction-difficulty term "
    "and a regularisation towards its gamed baselines, both from files that are not in the data root"
)


def length_controlled(parsed: Sequence[Preference]) -> tuple[float | None, float | None, float | None, str | None]:
    """(LC win-rate, lo, hi, why it is missing) from the parsed preferences."""
    import numpy as np
    import statsmodels.api as sm

    if len(parsed) < 3:
        return None, None, None, "fewer than 3 parsed verdicts"
    y = np.array([preference_score(p) for p in parsed])
    d = np.array([p.reference_length - p.model_length for p in parsed], dtype=float)
    if np.all(y == y[0]):
        return None, None, None, f"every verdict has the same value ({y[0]:g}): the GLM cannot be fitted"
    if d.std(ddof=1) == 0:
        return None, None, None, "every answer has the reference's length: nothing to control for"
    x = sm.add_constant(np.tanh(d / d.std(ddof=1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            fit = sm.GLM(y, x, family=sm.families.Binomial()).fit(cov_type="HC0")
        except (Warning, ValueError, np.linalg.LinAlgError) as e:
            return (
                None,
                None,
                None,
                f"the GLM fit failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
            )
    theta, se = float(fit.params[0]), float(fit.bse[0])
    if not (math.isfinite(theta) and math.isfinite(se)):
        return None, None, None, "the GLM gave no finite intercept (separation)"

    def logistic(v: float) -> float:
        return 1 / (1 + math.exp(-v))

    return logistic(theta), logistic(theta - Z95 * se), logistic(theta + Z95 * se), None
