from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from safedose.cli import main


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
