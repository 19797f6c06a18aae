"""`safedose judge validate llm:<model>#alpaca-eval`: a pairwise judge against the GPT-4 annotations of the
AlpacaEval outputs in the data root (alpaca-7b against text-davinci-003, annotator alpaca_eval_gpt4)."""

from __future__ import annotations

import json
import random
from typing import Any

from safedose.capability._winrate import compare, endpoint_configured, pairwise_judge, win_rate
from safedose.errors import SafedoseError

ANNOTATIONS = "alpaca-eval/results/alpaca-7b/alpaca_eval_gpt4/annotations.json"
GPT4_WINNER = {"1": "reference", "2": "model"}  # output_1 = text_davinci_003 (the reference), output_2 = alpaca-7b


def load_annotations() -> list[dict[str, Any]]:
    from safedose.paths import data_root

    path = data_root() / ANNOTATIONS
    if not path.is_file():
        raise SafedoseError(f"{path}: the GPT-4 annotations of AlpacaEval are missing from the data root")
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return rows


def validate_pairwise(
    name: str, *, limit: int | None = None, seed: int = 0, base_url: str | None = None
) -> dict[str, Any]:
    """Agreement with GPT-4's preferences on a seeded sample of `limit` pairs (all 805 by default), the judge's
    win-rate of alpaca-7b next to GPT-4's, its parse errors and how often it picks the answer shown first."""
    from safedose.stats import agreement

    judge = pairwise_judge(name, base_url=base_url)
    if not endpoint_configured(base_url):
        raise SafedoseError(f"judge {name}: no endpoint configured; set $OPENAI_BASE_URL (and $OPENAI_API_KEY)")
    rows = load_annotations()
    chosen = list(range(len(rows)))
    if limit and limit < len(rows):
        chosen = sorted(random.Random(f"{seed}:validate").sample(chosen, limit))
    items = [(str(i), rows[i]["instruction"], rows[i]["output_2"], rows[i]["output_1"]) for i in chosen]
    prefs = compare(judge, "alpaca-7b", items, seed=seed)
    gpt4 = {str(i): GPT4_WINNER.get(str(rows[i]["preference"])) for i in chosen}
    both = [(h, p.winner) for p in prefs if (h := gpt4[p.id]) and p.winner in ("model", "reference")]
    parsed = [p for p in prefs if p.winner in ("model", "reference")]
    first = sum((p.winner == "model") == p.model_first for p in parsed)
    gpt4_scores = [{"model": 1.0, "reference": 0.0}.get(gpt4[str(i)] or "", 0.5) for i in chosen]
    mine = win_rate(prefs, variant="alpaca-7b", judge=judge.id, reference="text_davinci_003")
    return {
        "judge": judge.id,
        "split": f"{len(chosen)} of the 805 AlpacaEval pairs (alpaca-7b vs text_davinci_003) annotated by "
        f"alpaca_eval_gpt4 (seed {seed}); GPT-4's ties / unparsed (preference 0) are left out of the agreement",
        "n": len(chosen),
        "parse_errors": mine.parse_errors,
        "parse_error_rate": mine.parse_errors / len(chosen),
        "agreement_with_gpt4": agreement([h for h, _ in both], [str(j) for _, j in both], ("model", "reference"))
        if both
        else None,
        "win_rate_alpaca7b": {
            "judge": mine.win_rate,
            "judge_ci95": [mine.lo, mine.hi],
            "gpt4": sum(gpt4_scores) / len(gpt4_scores),
        },
        "picks_first_shown": first / len(parsed) if parsed else None,
        "shown_first_share": sum(p.model_first for p in prefs) / len(prefs),
    }
