from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from safedose.cli import main
from safedose.models import model_hash


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `safedose ARGS...` in-process and return its exit code and output."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def alpaca_rows(n: int, prefix: str = "Task", *, output: str = "Answer") -> list[dict[str, str]]:
    return [{"instruction": f"{prefix} number {i} about topic {i * 7}", "input": "", "output": f"{output} {i}"}
            for i in range(n)]  # fmt: skip


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 prepared from the embedded GGUF into a fresh cache by two concurrent `models prepare` processes."""
    cache = tmp_path_factory.mktemp("cache")
    env = {**os.environ, "SAFEDOSE_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "safedose", "models", "prepare", "smollm2-135m-instruct"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    os.environ["SAFEDOSE_CACHE"] = str(cache)  # later resolve_model() calls in this session reuse it
    return cache / "models" / "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def tiny_model(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=True, initializer_range=0.3,  # large enough embeddings for a frozen head to be learnable
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two randomly initialised LoRA adapters on the tiny model, with the manifest the trainer writes."""
    out = tmp_path_factory.mktemp("adapters")
    paths = []
    for i, targets in enumerate((["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"])):
        torch.manual_seed(100 + i)
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        config = LoraConfig(r=4, lora_alpha=32, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM")
        path = out / f"adapter{i}"
        get_peft_model(base, config).save_pretrained(path)
        manifest = {"template": "alpaca", "base_model_hash": model_hash(tiny_model)}
        (path / "safedose.json").write_text(json.dumps(manifest))
        paths.append(path)
    return paths


def eval_file(path: Path, n: int, prefix: str = "Explain") -> Path:
    """A JSONL eval set of `n` prompts of varied length."""
    rows = [{"id": f"p{i}", "prompt": f"{prefix} item {i}" + " in more detail" * (i % 4)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def serve_process(model: Path, *args: str) -> Iterator[str]:
    """Run `safedose serve` on a free port of 127.0.0.1 (greedy fp32, 12 tokens); yield its /v1 URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cmd = [sys.executable, "-m", "safedose", "serve", "--model", str(model), "--port", str(port), "--dtype", "fp32",
           "--max-tokens", "12", *args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while True:
        try:
            httpx.get(f"{url}/models", timeout=2).raise_for_status()
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                raise RuntimeError(f"server did not start: {err}") from None
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


Reply = tuple[int, dict[str, Any]]


@contextlib.contextmanager
def json_endpoint(respond: Callable[[str, dict[str, Any]], Reply]) -> Iterator[str]:
    """A loopback HTTP server answering each POST with `respond(path, json_body)` -> (status, json); yields the base
    URL `http://127.0.0.1:PORT/v1` (a fake OpenAI-compatible endpoint, with `retry-after: 0` on errors)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            status, data = respond(self.path, body)
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.send_header("retry-after", "0")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
