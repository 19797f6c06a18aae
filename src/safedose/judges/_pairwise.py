"""The pairwise judge: a chat model behind an OpenAI-compatible endpoint says which of two answers to an
instruction is better (AlpacaEval's prompts), shown in a seeded random order per item; unparseable verdicts are
counted, never given to a side. `validate_pairwise` measures it against GPT-4's AlpacaEval annotations (alpaca-7b
against text-davinci-003, annotator alpaca_eval_gpt4) in the data root."""

from __future__ import annotations

import ast
import json
import os
import random
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from safedose.cache import Cache, cache_key
from safedose.errors import SafedoseError
from safedose.files import sha256_text
from safedose.generate import OpenAISettings, post_json
from safedose.paths import data_root
from safedose.registry import Registry
from safedose.stats import agreement, wilson_share

TABLE = "pairwise"


class Preference(BaseModel):
    """One pairwise verdict: which answer the judge preferred, and in which order it saw them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    variant: str
    model_first: bool = Field(description="the variant's answer was shown first (output_1)")
    winner: str | None = Field(description="`model`, `reference`, `tie`; None: the judge's answer did not parse")
    model_length: int
    reference_length: int
    raw: str = ""


# AlpacaEval 2.0's comparison prompt (alpaca_eval_clf_gpt4_turbo, the annotator of its leaderboard): answer m or M.
ALPACA_EVAL_SYSTEM = (
    "You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) based on the "
    "quality of their responses to a given instruction. This process will be used to create a leaderboard reflecting "
    "the most accurate and human-preferred answers."
)
ALPACA_EVAL_USER = (
    "I require a leaderboard for various large language models. I'll provide you with prompts given to these models "
    "and their corresponding outputs. Your task is to assess these responses, and select the model that produces the "
    'best output from a human perspective.\n\n## Instruction\n\n{{\n    "instruction": """{instruction}""",\n}}\n\n'
    "## Model Outputs\n\nHere are the unordered outputs from the models. Each output is associated with a specific "
    'model, identified by a unique model identifier.\n\n{{\n    {{\n        "model_identifier": "m",\n        '
    '"output": """{output_1}"""\n    }},\n    {{\n        "model_identifier": "M",\n        "output": """{output_2}"""'
    "\n    }}\n}}\n\n## Task\n\nEvaluate the models based on the quality and relevance of their outputs, and select "
    "the model that generated the best output. Answer by providing the model identifier of the best model. We will "
    "use your output as the name of the best model, so make sure your output only contains one of the following "
    "model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.\n\n## Best Model Identifier"
)
# AlpacaEval 1.0's ranking prompt (alpaca_eval_gpt4, the annotator of the GPT-4 annotations in the data root).
GPT4_SYSTEM = "You are a helpful assistant, that ranks models by the quality of their answers."
GPT4_USER = (
    "I want you to create a leaderboard of different of large-language models. To do so, I will give you the "
    "instructions (prompts) given to the models, and the responses of two models. Please rank the models based on "
    "which responses would be preferred by humans. All inputs and outputs should be python dictionaries.\n\nHere is "
    'the prompt:\n{{\n    "instruction": """{instruction}""",\n}}\n\nHere are the outputs of the models:\n[\n    {{\n'
    '        "model": "model_1",\n        "answer": """{output_1}"""\n    }},\n    {{\n        "model": "model_2",\n'
    '        "answer": """{output_2}"""\n    }}\n]\n\nNow please rank the models by the quality of their answers, so '
    "that the model with rank 1 has the best output. Then return a list of the model names and ranks, i.e., produce "
    "the following output:\n[\n    {{'model': <model-name>, 'rank': <model-rank>}},\n    {{'model': <model-name>, "
    "'rank': <model-rank>}}\n]\n\nYour response must be a valid Python dictionary and should contain nothing else "
    "because we will directly execute it in Python. Please provide the ranking that the majority of humans would give."
)


def parse_identifier(answer: str) -> int | None:
    """`m` → 1, `M` → 2 (the whole answer, quotes and punctuation around it aside); anything else → None."""
    found = re.fullmatch(r"[\s\"'`*.:]*(m|M)[\s\"'`*.:]*", answer)
    return None if found is None else (1 if found.group(1) == "m" else 2)


def parse_ranking(answer: str) -> int | None:
    """The output ranked 1 in a `[{'model': 'model_1', 'rank': 1}, ...]` answer; None unless exactly one is."""
    try:
        ranked = ast.literal_eval(answer.strip())
        ranks = {str(r["model"]): int(r["rank"]) for r in ranked}
    except (ValueError, SyntaxError, TypeError, KeyError, MemoryError, RecursionError):
        return None
    best = [m for m, rank in ranks.items() if rank == 1]
    return (
        {"model_1": 1, "model_2": 2}.get(best[0]) if len(best) == 1 and set(ranks) == {"model_1", "model_2"} else None
    )


@dataclass(frozen=True)
class Preset:
    system: str
    user: str
    parse: Callable[[str], int | None]
    max_tokens: int


PRESETS: Registry[Preset] = Registry("pairwise preset")
PRESETS.add("alpaca-eval", Preset(ALPACA_EVAL_SYSTEM, ALPACA_EVAL_USER, parse_identifier, 4))
PRESETS.add("alpaca-eval-gpt4", Preset(GPT4_SYSTEM, GPT4_USER, parse_ranking, 100))


class PairwiseJudge:
    """`llm:<model>[#preset]` as a pairwise judge: which of two outputs (1 or 2) answers the instruction better."""

    def __init__(self, model: str, *, preset: str = "alpaca-eval", settings: OpenAISettings | None = None) -> None:
        self.model, self.preset_name, self.preset = model, preset, PRESETS.get(preset)
        self.settings = settings or OpenAISettings()
        self.id = f"llm:{model}#{preset}"

    def messages(self, instruction: str, output_1: str, output_2: str) -> list[dict[str, str]]:
        user = self.preset.user.format(instruction=instruction, output_1=output_1, output_2=output_2)
        return [{"role": "system", "content": self.preset.system}, {"role": "user", "content": user}]

    def compare(self, rows: Sequence[tuple[str, str, str]]) -> list[tuple[int | None, str]]:
        """(instruction, output 1, output 2) → (preferred position or None when unparseable, the raw answer)."""
        import httpx

        def one(client: Any, row: tuple[str, str, str]) -> tuple[int | None, str]:
            body = {"model": self.model, "messages": self.messages(*row), "temperature": 0.0,
                    "max_tokens": self.preset.max_tokens}  # fmt: skip
            data = post_json(client, self.settings, "/chat/completions", body)
            try:
                answer = str(data["choices"][0]["message"]["content"] or "")
            except (KeyError, IndexError, TypeError):
                raise SafedoseError(f"judge {self.id}: unexpected response shape: {str(data)[:200]}") from None
            return self.preset.parse(answer), answer[:200]

        with httpx.Client() as client, ThreadPoolExecutor(self.settings.concurrency) as pool:
            return list(pool.map(lambda r: one(client, r), rows))


def pairwise_judge(name: str, *, base_url: str | None = None) -> PairwiseJudge:
    """`llm:<model>[#preset]` (preset alpaca-eval by default), or a one-line error."""
    kind, _, rest = name.partition(":")
    model, _, preset = rest.partition("#")
    if kind != "llm" or not model:
        raise SafedoseError(f"win-rate judge {name!r}: use llm:<model>[#preset] (presets: {', '.join(PRESETS)})")
    if (preset or "alpaca-eval") not in PRESETS:
        raise SafedoseError(f"win-rate judge {name!r}: {PRESETS.unknown_message(preset)}")
    return PairwiseJudge(model, preset=preset or "alpaca-eval", settings=OpenAISettings(base_url=base_url))


def is_pairwise(name: str) -> bool:
    """A judge name with a pairwise preset (`llm:<model>#alpaca-eval`)."""
    return name.startswith("llm:") and name.rpartition("#")[2] in PRESETS


def endpoint_configured(base_url: str | None) -> bool:
    """A judge endpoint is named in the config or the environment (never guessed)."""
    return bool(base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"))


def model_first(item: str, seed: int) -> bool:
    """Whether the variant's answer is shown first: seeded per item, independent of the variant and the judge."""
    return random.Random(f"{seed}:{item}:order").random() < 0.5


def compare(judge: PairwiseJudge, variant: str, items: Sequence[tuple[str, str, str, str]], *, seed: int,
            cache: Cache | None = None) -> list[Preference]:  # fmt: skip
    """(id, instruction, variant's answer, reference answer) → one Preference each, from the cache where it has them.

    Identical answers are a tie without asking the judge."""
    shown = []
    for item, instruction, answer, reference in items:
        first = model_first(item, seed)
        shown.append((first, (instruction, answer, reference) if first else (instruction, reference, answer)))
    keys = [cache_key(kind="pairwise", judge=judge.id, **{k: sha256_text(v) for k, v in zip(("i", "a", "b"), s,
                                                                                            strict=True)})
            for _, s in shown]  # fmt: skip
    done = cache.get_many(TABLE, keys) if cache else {}
    todo = [i for i, (k, (_, s)) in enumerate(zip(keys, shown, strict=True))
            if k not in done and s[1].strip() != s[2].strip()]  # fmt: skip
    if todo:
        fresh = {keys[i]: {"position": p, "raw": raw}
                 for i, (p, raw) in zip(todo, judge.compare([shown[i][1] for i in todo]), strict=True)}  # fmt: skip
        done.update(fresh)
        if cache:
            cache.put_many(TABLE, fresh)
    out = []
    for (item, _, answer, reference), key, (first, _) in zip(items, keys, shown, strict=True):
        verdict = done.get(key)  # none: identical answers, a tie
        winner: str | None = "tie"
        raw = ""
        if verdict is not None:
            position, raw = verdict["position"], verdict["raw"]
            winner = None if position is None else "model" if (position == 1) == first else "reference"
        out.append(Preference(id=item, variant=variant, model_first=first, winner=winner, model_length=len(answer),
                              reference_length=len(reference), raw=raw))  # fmt: skip
    return out


def preference_score(p: Preference) -> float:
    """A parsed verdict as the variant's score: a win 1, a tie 0.5, a loss 0."""
    return {"model": 1.0, "reference": 0.0, "tie": 0.5}[p.winner or ""]


def raw_win_rate(preferences: Sequence[Preference]) -> tuple[float | None, float | None, float | None]:
    """The variant's share of the parsed verdicts (ties half) and its 95% Wilson interval; None without any."""
    scores = [preference_score(p) for p in preferences if p.winner is not None]
    rate = sum(scores) / len(scores) if scores else None
    lo, hi = wilson_share(rate, len(scores)) if rate is not None else (None, None)
    return rate, lo, hi


ANNOTATIONS = "alpaca-eval/results/alpaca-7b/alpaca_eval_gpt4/annotations.json"
GPT4_WINNER = {"1": "reference", "2": "model"}  # output_1 = text_davinci_003 (the reference), output_2 = alpaca-7b


def load_annotations() -> list[dict[str, Any]]:
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
    parse_errors = sum(p.winner is None for p in prefs)
    rate, lo, hi = raw_win_rate(prefs)
    return {
        "judge": judge.id,
        "split": f"{len(chosen)} of the 805 AlpacaEval pairs (alpaca-7b vs text_davinci_003) annotated by "
        f"alpaca_eval_gpt4 (seed {seed}); GPT-4's ties / unparsed (preference 0) are left out of the agreement",
        "n": len(chosen),
        "parse_errors": parse_errors,
        "parse_error_rate": parse_errors / len(chosen),
        "agreement_with_gpt4": agreement([h for h, _ in both], [str(j) for _, j in both], ("model", "reference"))
        if both
        else None,
        "win_rate_alpaca7b": {
            "judge": rate,
            "judge_ci95": [lo, hi],
            "gpt4": sum(gpt4_scores) / len(gpt4_scores),
        },
        "picks_first_shown": first / len(parsed) if parsed else None,
        "shown_first_share": sum(p.model_first for p in prefs) / len(prefs),
    }
