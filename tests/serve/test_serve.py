import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from safedose.data import EvalPrompt
from safedose.errors import SafedoseError
from safedose.generate import Decoding, OpenAISettings, generate, load_adapter_info
from safedose.generate._openai import post_json
from safedose.generate._settings import evaluated_dtype, fastest_request_dtype
from safedose.serve._app import Message, RequestError, Server, fold_system, serving_dtype
from safedose.templates import ALPACA_NO_INPUT
from tests.conftest import serve_process
from tests.run.manifests import cell_entry, manifest_dict

GREEDY = Decoding(max_new_tokens=12, dtype="fp32")
PROMPTS = [EvalPrompt(id=f"p{i}", prompt=f"Say something about number {i}", eval_set="t") for i in range(4)]


@pytest.fixture(scope="module")
def server(tiny_model: Path, tiny_adapters: list[Path]) -> Iterator[str]:
    """A real `safedose serve` process on 127.0.0.1 with the tiny base model and one adapter."""
    yield from serve_process(tiny_model, "--adapter", f"a0={tiny_adapters[0]}", "--template", "alpaca")


def test_models_lists_base_and_adapters(server: str, tiny_model: Path) -> None:
    data = httpx.get(f"{server}/models").json()
    assert [m["id"] for m in data["data"]] == [str(tiny_model), "a0"]


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_openai_backend_against_serve_equals_local_generation(
    server: str, tiny_model: Path, tiny_adapters: list[Path], mode: str
) -> None:
    local = generate(str(tiny_model), tiny_adapters[:1], PROMPTS, decoding=GREEDY, progress=False)
    settings = OpenAISettings(base_url=server, mode=mode, concurrency=4)  # type: ignore[arg-type]
    remote = generate(str(tiny_model), ["a0"], PROMPTS, backend="openai", openai=settings, decoding=GREEDY,
                      template="alpaca", progress=False)  # fmt: skip
    assert [r.adapter for r in remote] == [None] * 4 + ["a0"] * 4
    assert [r.response for r in remote] == [r.response for r in local]


def test_stream_gives_the_same_text(server: str) -> None:
    body = {"model": "a0", "messages": [{"role": "user", "content": "Name a colour"}], "temperature": 0}
    whole = httpx.post(f"{server}/chat/completions", json=body, timeout=60).json()
    pieces, done = [], False
    with httpx.stream("POST", f"{server}/chat/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                pieces.append(json.loads(line[6:])["choices"][0]["delta"].get("content", ""))
    assert done and "".join(pieces).strip() == whole["choices"][0]["message"]["content"]
    assert whole["object"] == "chat.completion" and whole["usage"]["completion_tokens"] > 0


def test_concurrent_requests_are_answered_like_sequential_ones(server: str) -> None:
    def ask(i: int) -> str:
        body = {"model": "a0", "prompt": f"Count to {i}", "temperature": 0, "max_tokens": 8}
        return str(httpx.post(f"{server}/completions", json=body, timeout=60).json()["choices"][0]["text"])

    sequential = [ask(i) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(ask, range(6))) == sequential


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "a0"}, 400, "messages"),
        ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "available: "),
        ({"model": "a0", "messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
        ({"model": "a0", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400, "max_tokens"),
        ({"model": "a0", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, 400,
         "exactly one user message"),
    ],
)  # fmt: skip
def test_malformed_requests_get_clear_json_errors(
    server: str, body: dict[str, object], status: int, needle: str
) -> None:
    r = httpx.post(f"{server}/chat/completions", json=body, timeout=30)
    assert r.status_code == status
    assert needle in r.json()["error"]["message"]


def test_alpaca_adapters_fold_system_messages_into_the_instruction(server: str) -> None:
    system, user = "Answer in one word.", "Name a colour"

    def completion(instruction: str) -> str:
        body = {"model": "a0", "prompt": ALPACA_NO_INPUT.format(instruction=instruction), "temperature": 0}
        return str(httpx.post(f"{server}/completions", json=body, timeout=60).json()["choices"][0]["text"])

    folded, dropped = completion(f"{system}\n\n{user}"), completion(user)
    assert folded != dropped  # otherwise the comparison below could not tell them apart
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    body = {"model": "a0", "messages": messages, "temperature": 0}
    chat = httpx.post(f"{server}/chat/completions", json=body, timeout=60).json()
    assert chat["choices"][0]["message"]["content"] == folded


def test_fold_system() -> None:
    msgs = [Message(role="system", content="Be brief. "), Message(role="system", content=" "),
            Message(role="user", content="Hi")]  # fmt: skip
    assert fold_system("a0", "alpaca", msgs) == "Be brief.\n\nHi"
    assert fold_system("a0", "alpaca", msgs[2:]) == "Hi"
    with pytest.raises(RequestError, match="exactly one user message"):
        fold_system("a0", "alpaca", [*msgs, Message(role="assistant", content="Hello")])
    with pytest.raises(RequestError, match="exactly one user message"):
        fold_system("a0", "alpaca", msgs[:1])


def test_invalid_json_body(server: str) -> None:
    r = httpx.post(f"{server}/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


def test_client_retries_on_429_and_5xx_then_gives_up() -> None:
    calls: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(429, headers={"retry-after": "0"}, json={"error": {"message": "slow down"}})
        if len(calls) == 2:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        return httpx.Response(200, json={"choices": [{"text": "ok"}]})

    settings = OpenAISettings(base_url="http://test/v1", max_retries=3)
    with httpx.Client(transport=httpx.MockTransport(flaky)) as client:
        assert post_json(client, settings, "/completions", {})["choices"][0]["text"] == "ok"
    assert len(calls) == 3

    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "broken"}})

    with httpx.Client(transport=httpx.MockTransport(down)) as client, pytest.raises(SafedoseError, match="HTTP 500"):
        post_json(client, settings.model_copy(update={"max_retries": 1}), "/completions", {})

    def unauthorised(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "bad key"}})

    with (
        httpx.Client(transport=httpx.MockTransport(unauthorised)) as client,
        pytest.raises(SafedoseError, match="HTTP 401: bad key"),
    ):
        post_json(client, settings, "/completions", {})


def in_run(adapter: Path, run: Path, dtype: str, *, backend: str = "hf") -> Path:
    """A copy of `adapter` as a sweep's cell in `run`, whose manifest says its answers were generated in `dtype`."""
    cell = run / "adapters" / f"n8-s0-instruction-{dtype}"
    shutil.copytree(adapter, cell)
    cells = {"n8-s0-instruction": cell_entry(8, adapter=str(cell.relative_to(run)))}
    manifest = manifest_dict(config={"backend": backend}, generation_dtype=dtype, cells=cells)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return cell


def test_the_evaluated_dtype_is_read_from_the_run_that_holds_the_adapter(
    tiny_adapters: list[Path], tmp_path: Path
) -> None:
    cell = in_run(tiny_adapters[0], tmp_path / "run", "bf16")
    assert evaluated_dtype(load_adapter_info(cell)) == "bf16"
    assert evaluated_dtype(load_adapter_info(f"x={cell}")) == "bf16"
    assert evaluated_dtype(load_adapter_info(tiny_adapters[0])) is None  # not in a run
    stray = cell.parent / "unlisted"
    shutil.copytree(tiny_adapters[0], stray)
    assert evaluated_dtype(load_adapter_info(stray)) is None  # in the run's folder, not one of its cells
    served = in_run(tiny_adapters[0], tmp_path / "served", "bf16", backend="openai")
    assert evaluated_dtype(load_adapter_info(served)) is None  # answered by an endpoint: its precision is unknown


def test_serve_defaults_to_the_study_dtype_and_auto_to_the_faster_one_on_cpu(
    tiny_model: Path, tiny_adapters: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fastest_request_dtype() == "fp32"
    cell = in_run(tiny_adapters[0], tmp_path / "run", "bf16")
    studied = Server(str(tiny_model), [f"a0={cell}"])
    assert studied.dtype == "bf16" and next(studied.model.parameters()).dtype == torch.bfloat16
    assert "as the study answered" in studied.dtype_note and "--dtype auto is faster here (fp32)" in studied.dtype_note
    fast = Server(str(tiny_model), [f"a0={cell}"], dtype="auto")
    assert fast.dtype == "fp32" and next(fast.model.parameters()).dtype == torch.float32
    assert "--dtype bf16 is closer" in fast.dtype_note
    exact = Server(str(tiny_model), [f"a0={in_run(tiny_adapters[0], tmp_path / 'fp32', 'fp32')}"])
    assert exact.dtype == "fp32" and "answers are the report's" in exact.dtype_note
    assert Server(str(tiny_model), [tiny_adapters[0]]).dtype == "fp32"  # no study: auto
    assert Server(str(tiny_model), [f"a0={cell}"], dtype="fp16").dtype == "fp16"
    other = in_run(tiny_adapters[1], tmp_path / "other", "fp16")
    assert serving_dtype(None, [load_adapter_info(cell), load_adapter_info(other)])[0] == "fp32"  # they disagree
    with pytest.raises(SafedoseError, match="dtype 'half'"):
        serving_dtype("half", [])
