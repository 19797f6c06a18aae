"""The pairwise win-rate: seeded answer order, verdicts mapped back to the right side, unparseable answers counted
(never a side), the length-controlled GLM, the validation against GPT-4's annotations, and the real `safedose serve`
as the judge."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from safedose.cache import Cache
from safedose.capability import win_rate
from safedose.capability._winrate import length_controlled
from safedose.errors import SafedoseError
from safedose.judges import Preference, compare, pairwise_judge, validate_pairwise
from safedose.judges._pairwise import model_first, parse_identifier, parse_ranking
from tests.conftest import json_endpoint, serve_process


@contextmanager
def fake_judge(verdict: Callable[[str], str]) -> Iterator[tuple[str, list[str]]]:
    """An OpenAI-compatible endpoint whose answer is `verdict(user message)`; yields its URL and the prompts seen."""
    seen: list[str] = []

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        user = str(body["messages"][-1]["content"])
        seen.append(user)
        return 200, {"choices": [{"message": {"content": verdict(user)}}]}

    with json_endpoint(respond) as url:
        yield url, seen


def prefers_best(user: str) -> str:
    """m when the first output says BEST, M when the second does, gibberish when neither."""
    first, _, second = user.partition('"model_identifier": "M"')
    return "m" if "BEST" in first.rpartition('"output"')[2] else "M" if "BEST" in second else "I like both"


def items(n: int) -> list[tuple[str, str, str, str]]:
    """Item i: the variant's answer is BEST for even i, the reference's for i % 6 == 1, neither otherwise."""
    out = []
    for i in range(n):
        mine = "BEST answer" if i % 2 == 0 else "plain answer " + "x" * i
        ref = "BEST reference" if i % 6 == 1 else "reference " + "y" * (n - i)
        out.append((f"q{i}", f"Question {i}?", mine, ref))
    return out


def test_order_is_seeded_and_verdicts_map_back_to_the_right_side(tmp_path: Path) -> None:
    data = items(24)
    with fake_judge(prefers_best) as (url, seen):
        judge = pairwise_judge("llm:fake", base_url=url)
        cache = Cache(tmp_path / "c.sqlite")
        prefs = compare(judge, "n50", data, seed=7, cache=cache)
        assert len(seen) == 24
        assert compare(judge, "n50", data, seed=7, cache=cache) == prefs and len(seen) == 24  # from the cache
    assert [p.model_first for p in prefs] == [model_first(f"q{i}", 7) for i in range(24)]
    assert 6 < sum(p.model_first for p in prefs) < 18  # both orders occur
    expected = ["model" if i % 2 == 0 else "reference" if i % 6 == 1 else None for i in range(24)]
    assert [p.winner for p in prefs] == expected
    rate = win_rate(prefs, variant="n50", judge=judge.id, reference="untuned")
    assert (rate.wins, rate.losses, rate.ties, rate.parse_errors) == (12, 4, 0, 8)
    assert rate.n == 16 and rate.win_rate == pytest.approx(12 / 16)
    assert rate.lo is not None and rate.hi is not None and rate.lo < 0.75 < rate.hi


def test_identical_answers_tie_without_a_call_and_nothing_parseable_is_no_zero() -> None:
    data = [("a", "Q?", "same", "same"), ("b", "Q2?", "one", "two"), ("c", "Q3?", "three", "four")]
    with fake_judge(lambda user: "no idea") as (url, seen):
        prefs = compare(pairwise_judge("llm:fake#alpaca-eval", base_url=url), "n0", data, seed=0)
    assert len(seen) == 2 and [p.winner for p in prefs] == ["tie", None, None]
    rate = win_rate(prefs[1:], variant="n0", judge="j", reference="untuned")
    assert rate.win_rate is None and rate.parse_errors == 2 and rate.n == 0


def test_parsers() -> None:
    assert [parse_identifier(a) for a in ("m", " M\n", "'m'", "**M**", "model m", "mM", "", "m or M")] == [
        1, 2, 1, 2, None, None, None, None]  # fmt: skip
    assert parse_ranking("[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]") == 2
    assert parse_ranking("[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]") == 1
    assert parse_ranking("[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 1}]") is None
    assert parse_ranking("model_1 is better") is None
    with pytest.raises(SafedoseError, match="did you mean 'alpaca-eval'"):
        pairwise_judge("llm:x#alpaca-evl")


def test_length_controlled_win_rate_removes_a_pure_length_preference() -> None:
    """A judge that only likes length, and variants that answer longer: the raw win-rate is high, LC near a half."""
    import numpy as np

    rng = np.random.default_rng(0)
    d = rng.normal(-150, 150, 400)  # reference length minus the variant's: the variant is mostly longer
    p_win = 1 / (1 + np.exp(2.5 * np.tanh(d / d.std(ddof=1))))
    won = rng.random(400) < p_win
    prefs = [Preference(id=str(i), variant="v", model_first=i % 2 == 0, winner="model" if w else "reference",
                        model_length=1000, reference_length=1000 + round(x))
             for i, (x, w) in enumerate(zip(d, won, strict=True))]  # fmt: skip
    rate = win_rate(prefs, variant="v", judge="j", reference="r")
    assert rate.win_rate is not None and rate.win_rate > 0.7
    assert rate.lc_win_rate is not None and rate.lc_lo is not None and rate.lc_hi is not None
    assert rate.lc_lo < 0.5 < rate.lc_hi and abs(rate.lc_win_rate - 0.5) < 0.1
    assert length_controlled(prefs[:2])[3] == "fewer than 3 parsed verdicts"


def test_validate_against_gpt4_annotations(cli: object) -> None:
    with fake_judge(lambda user: "M") as (url, seen):
        result = validate_pairwise("llm:fake#alpaca-eval", limit=40, base_url=url)
    assert result["n"] == 40 and result["parse_errors"] == 0 and 35 < len(seen) <= 40  # identical pairs tie
    assert result["picks_first_shown"] == 0.0  # always the second shown: pure position bias
    agreement = result["agreement_with_gpt4"]
    assert agreement is not None and -1 <= agreement["kappa"] <= 1 and agreement["n"] > 30
    assert 0 < result["win_rate_alpaca7b"]["gpt4"] < 0.5


def test_served_model_as_judge(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               cli: object) -> None:  # fmt: skip
    """Plumbing against the real server: the tiny random model's verdicts do not parse, and are counted as such."""
    for url in serve_process(tiny_model):
        judge = pairwise_judge(f"llm:{tiny_model}#alpaca-eval", base_url=url)
        prefs = compare(judge, "n0", items(6), seed=1, cache=Cache(tmp_path / "c.sqlite"))
        assert [p.model_first for p in prefs] == [model_first(f"q{i}", 1) for i in range(6)]
        assert all(p.raw for p in prefs) and {p.winner for p in prefs} <= {"model", "reference", None}
        rate = win_rate(prefs, variant="n0", judge=judge.id, reference="untuned")
        assert rate.n + rate.parse_errors == 6 and rate.wins + rate.losses + rate.ties == rate.n
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        run = cli("judge", "validate", f"llm:{tiny_model}#alpaca-eval", "--limit", "3")  # type: ignore[operator]
        assert run.code == 0, run.err
        assert json.loads(run.out)["n"] == 3
