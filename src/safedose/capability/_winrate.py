"""AlpacaEval-style pairwise win-rate: a chat model behind an OpenAI-compatible endpoint compares each variant's
answer with a reference answer, shown in a seeded random order per item; unparseable verdicts are counted, never
given to a side. The raw win-rate counts ties as half; the length-controlled one is AlpacaEval 2's correction."""

from __future__ import annotations

import ast
import math
import os
import random
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from safedose.cache import Cache, cache_key
from safedose.capability._records import Preference, WinRate
from safedose.errors import SafedoseError
from safedose.files import sha256_text
from safedose.generate._openai import OpenAISettings, post_json
from safedose.registry import Registry
from safedose.stats import Z95, wilson_share

TABLE = "pairwise"

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


def _score(p: Preference) -> float:
    return {"model": 1.0, "reference": 0.0, "tie": 0.5}[p.winner or ""]


def win_rate(preferences: Sequence[Preference], *, variant: str, judge: str, reference: str) -> WinRate:
    """Raw win-rate (ties half; 95% Wilson interval on the effective count) and the length-controlled win-rate."""
    parsed = [p for p in preferences if p.winner is not None]
    scores = [_score(p) for p in parsed]
    n = len(scores)
    rate = sum(scores) / n if n else None
    lo, hi = wilson_share(rate, n) if rate is not None else (None, None)
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
    y = np.array([_score(p) for p in parsed])
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
