import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eval_file, json_endpoint


@dataclass
class Fake:
    """What the fake endpoint saw, and which prompt it fails."""

    url: str = ""
    fail: str | None = None
    status: int = 500
    seen: list[tuple[str, int]] = field(default_factory=list)


@contextmanager
def fake_openai() -> Iterator[Fake]:
    """A local OpenAI-compatible /v1/chat/completions that answers `answer: PROMPT`, unless told to fail."""
    fake = Fake()

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prompt = str(body["messages"][-1]["content"])
        code = fake.status if prompt == fake.fail else 200
        fake.seen.append((prompt, code))
        if code != 200:
            return code, {"error": {"message": f"cannot answer {prompt!r}"}}
        message = {"role": "assistant", "content": f"answer: {prompt}"}
        return 200, {"choices": [{"message": message}], "usage": {"completion_tokens": 2}}

    with json_endpoint(respond) as url:
        fake.url = url
        yield fake


def _cached(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])


@pytest.mark.parametrize("status", [400, 500])
def test_a_failed_request_keeps_the_answers_that_arrived_and_a_rerun_sends_only_the_rest(
    cli, tmp_path: Path, status: int
) -> None:  # type: ignore[no-untyped-def]
    prompts_file = eval_file(tmp_path / "p.jsonl", 30)
    texts = [json.loads(line)["prompt"] for line in prompts_file.read_text().splitlines()]
    out = tmp_path / "gen.jsonl"
    args = ("generate", "--model", "fake", "--backend", "openai", "--eval-set", prompts_file, "--out", out,
            "--concurrency", "2")  # fmt: skip

    with fake_openai() as fake:
        fake.fail, fake.status = texts[2], status
        failed = cli(*args, "--base-url", fake.url)
        assert failed.code == 2
        assert failed.err.count("\n") == 1 and "1 of 30 prompts failed (p2;" in failed.err and "rerun" in failed.err
        assert f"HTTP {status}" in failed.err and not out.exists()
        answered = {prompt for prompt, code in fake.seen if code == 200}
        assert answered and len({prompt for prompt, _ in fake.seen}) < 30  # the rest was not sent
        assert _cached(tmp_path / "cache.sqlite") == len(answered)

        fake.fail, fake.seen = None, []
        rerun = cli(*args, "--base-url", fake.url)
        assert rerun.code == 0, rerun.err
        assert sorted(prompt for prompt, _ in fake.seen) == sorted(set(texts) - answered)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(30)]
    assert [r["response"] for r in rows] == [f"answer: {t}" for t in texts]
    assert {r["dtype"] for r in rows} == {None}  # an endpoint's precision is not known here
