"""Responders: an OpenAI-compatible endpoint (a loopback fake), a tiny local model, the preference data; specs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from safedose.build import HH_HARMLESS, make_responder
from safedose.data import hh_pairs
from safedose.errors import SafedoseError
from safedose.generate import Decoding
from tests.conftest import json_endpoint

SHORT = Decoding(max_new_tokens=8, dtype="fp32")


@dataclass
class Fake:
    """What the fake endpoint saw; prompts in `fail` get `status`, prompts in `empty` an empty answer."""

    url: str = ""
    fail: set[str] = field(default_factory=set)
    status: int = 500
    empty: set[str] = field(default_factory=set)
    seen: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def prompts(self) -> list[str]:
        return [str(body["messages"][-1]["content"]) for body in self.seen]


@contextmanager
def fake_endpoint() -> Iterator[Fake]:
    """A loopback /v1/chat/completions that refuses every prompt, unless told to fail or answer nothing."""
    fake = Fake()

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prompt = str(body["messages"][-1]["content"])
        with fake.lock:
            fake.seen.append(body)
        if prompt in fake.fail or "*" in fake.fail:
            return fake.status, {"error": {"message": f"cannot answer {prompt!r}"}}
        text = "" if prompt in fake.empty else f"I'm sorry, but I can't help with that request: {prompt}"
        message = {"role": "assistant", "content": text}
        return 200, {"choices": [{"message": message}], "usage": {"completion_tokens": 9}}

    with json_endpoint(respond) as url:
        fake.url = url
        yield fake


def test_openai_answers_are_cached_and_carry_the_system_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-key")
    prompts = ["first question", "second question", "first question"]
    with fake_endpoint() as fake:
        r = make_responder("openai:m1", system="Be careful.", cache=tmp_path / "c.sqlite", base_url=fake.url)
        answers = r.respond(prompts)
        assert answers == [f"I'm sorry, but I can't help with that request: {p}" for p in prompts]
        assert sorted(fake.prompts()) == ["first question", "second question"]  # the repeat is asked once
        assert all(b["messages"][0] == {"role": "system", "content": "Be careful."} and b["model"] == "m1"
                   for b in fake.seen)  # fmt: skip
        again = make_responder("openai:m1", system="Be careful.", cache=tmp_path / "c.sqlite", base_url=fake.url)
        assert again.respond(prompts) == answers and len(fake.seen) == 2
        assert r.respond(["first question"], system="Other.") and len(fake.seen) == 3  # another system: asked
    ident = r.identity()
    assert ident["spec"] == "openai:m1" and ident["model"] == "m1" and ident["base_url"] == fake.url
    assert ident["system"] == "Be careful." and ident["decoding"]["max_new_tokens"] == 512
    assert "sk-secret-key" not in json.dumps(ident)


def test_a_failing_prompt_becomes_none_and_is_asked_again_next_time(tmp_path: Path) -> None:
    prompts = [f"question {i}" for i in range(6)]
    with fake_endpoint() as fake:
        fake.fail = {"question 2"}
        r = make_responder("openai:m", cache=tmp_path / "c.sqlite", base_url=fake.url, concurrency=2)
        answers = r.respond(prompts)
        assert answers[2] is None and all(a for i, a in enumerate(answers) if i != 2)
        assert len(r.errors) == 1 and "HTTP 500" in r.errors[0] and "\n" not in r.errors[0]  # type: ignore[attr-defined]
        fake.fail, fake.seen = set(), []
        assert all(r.respond(prompts)) and fake.prompts() == ["question 2"]


def test_all_failing_is_one_line_error(tmp_path: Path) -> None:
    with fake_endpoint() as fake:
        fake.fail, fake.status = {"*"}, 400
        r = make_responder("openai:m", cache=tmp_path / "c.sqlite", base_url=fake.url)
        message = r"^responder openai:m: all 3 prompts failed \(first error: .*HTTP 400"
        with pytest.raises(SafedoseError, match=message) as e:
            r.respond(["a", "b", "c"])
        assert "\n" not in str(e.value)
        fake.seen = []
        with pytest.raises(SafedoseError, match="the first 16 prompts all failed, giving up"):
            r.respond([f"q{i}" for i in range(100)])
        assert len(set(fake.prompts())) < 100


def test_bad_specs() -> None:
    for spec, message in [("gpt-4o", "use openai:MODEL"), ("openai:", "use openai:MODEL"),
                          ("vllm:x", "unknown kind 'vllm'"), ("preference:other", "only preference:hh-rlhf-harmless"),
                          ("hf:+adapter", "hf:MODEL\\+ADAPTER_DIR")]:  # fmt: skip
        with pytest.raises(SafedoseError, match=message):
            make_responder(spec)
    with pytest.raises(SafedoseError, match="not supported"):
        make_responder(f"preference:{HH_HARMLESS}", system="Be safe.")
    with pytest.raises(SafedoseError, match="only for openai"):
        make_responder("hf:smollm2-135m-instruct", base_url="http://127.0.0.1:1/v1")


def test_preference_answers() -> None:
    prompt, chosen, _ = hh_pairs()[0]
    r = make_responder(f"preference:{HH_HARMLESS}")
    assert r.respond([prompt.upper(), "no such conversation at all"]) == [chosen, None]
    ident = r.identity()
    assert ident["source"] == HH_HARMLESS and len(ident["files"][0]["sha256"]) == 64


def test_hf_responder_on_a_tiny_model(tiny_model: Path, tiny_adapters: list[Path], tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"
    base = make_responder(f"hf:{tiny_model}", decoding=SHORT, cache=cache)
    plain, with_system = base.respond(["Say hi"]), base.respond(["Say hi"], system="Be brief.")
    assert len(plain) == len(with_system) == 1 and all(isinstance(a, str) for a in plain + with_system)
    tuned = make_responder(f"hf:{tiny_model}+{tiny_adapters[0]}", decoding=SHORT, cache=cache, system="Be brief.")
    assert len(tuned.respond(["Say hi", "Say bye"])) == 2
    ident = tuned.identity()
    assert ident["adapter_hash"] and ident["adapter_template"] == "alpaca" and len(ident["model_hash"]) == 64
    assert ident["system"] == "Be brief." and ident["decoding"]["dtype"] == "fp32"
    import sqlite3

    with sqlite3.connect(cache) as db:  # base, base with system, adapter with system (two prompts)
        assert db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 4
