import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safedose.data import EvalPrompt
from safedose.errors import SafedoseError
from safedose.generate import Decoding, generate
from safedose.generate import _hf as hf_backend
from tests.conftest import eval_file

FP32 = Decoding(max_new_tokens=12, dtype="fp32", batch_size=8)


def prompts(n: int) -> list[EvalPrompt]:
    return [EvalPrompt(id=f"p{i}", prompt=f"Tell me about item {i}" + " please" * (i % 3), eval_set="t")
            for i in range(n)]  # fmt: skip


def responses(rows: list[dict[str, object]]) -> list[object]:
    return [r.response for r in rows]


def test_many_adapters_on_one_base_equal_separate_loads(tiny_model: Path, tiny_adapters: list[Path]) -> None:
    ps = prompts(6)
    together = generate(str(tiny_model), tiny_adapters, ps, decoding=FP32, progress=False)
    assert [r.adapter for r in together] == [None] * 6 + ["adapter0"] * 6 + ["adapter1"] * 6
    base = generate(str(tiny_model), [], ps, template="alpaca", decoding=FP32, progress=False)
    assert responses(together[:6]) == responses(base)
    for i, adapter in enumerate(tiny_adapters):
        alone = generate(str(tiny_model), [adapter], ps, decoding=FP32, include_base=False, progress=False)
        assert responses(together[6 * (i + 1) : 6 * (i + 2)]) == responses(alone)
    # the adapters change the outputs, so the comparison above can fail
    assert responses(together[6:12]) != responses(base) and responses(together[12:]) != responses(base)


def test_batched_left_padded_greedy_equals_one_at_a_time(tiny_model: Path) -> None:
    ps = prompts(7)
    batched = generate(str(tiny_model), [], ps, template="alpaca", decoding=FP32, progress=False)
    single = generate(str(tiny_model), [], ps, template="alpaca", progress=False,
                      decoding=FP32.model_copy(update={"batch_size": 1}))  # fmt: skip
    assert responses(batched) == responses(single)
    assert all(r.n_tokens and r.n_tokens <= 12 for r in batched)
    half = generate(str(tiny_model), [], ps[:2], template="alpaca", progress=False,
                    decoding=FP32.model_copy(update={"dtype": "bf16"}))  # fmt: skip
    assert {r.dtype for r in batched} == {"fp32"} and {r.dtype for r in half} == {"bf16"}


def test_beams_and_sampling_run_and_are_reproducible(tiny_model: Path) -> None:
    ps = prompts(3)
    beams = Decoding(max_new_tokens=8, num_beams=4, dtype="fp32")
    sampled = Decoding(max_new_tokens=8, do_sample=True, temperature=0.9, top_p=0.95, seed=3, dtype="fp32")
    for decoding in (beams, sampled):
        a = generate(str(tiny_model), [], ps, template="alpaca", decoding=decoding, progress=False)
        b = generate(str(tiny_model), [], ps, template="alpaca", decoding=decoding, progress=False)
        assert responses(a) == responses(b)


def test_stop_strings_cut_the_response(tiny_model: Path) -> None:
    ps = prompts(4)
    free = generate(str(tiny_model), [], ps, template="alpaca", decoding=FP32, progress=False)
    text = next(str(r.response) for r in free if len(str(r.response)) > 6)
    stop = text[3:6]
    cut = generate(str(tiny_model), [], ps, template="alpaca", progress=False,
                   decoding=FP32.model_copy(update={"stop": (stop,)}))  # fmt: skip
    assert all(stop not in str(r.response) for r in cut)
    assert any(str(c.response) == str(f.response).split(stop)[0].strip() for c, f in zip(cut, free, strict=True))


def test_cached_rerun_does_not_load_the_model(
    tiny_model: Path, tiny_adapters: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ps, cache = prompts(5), tmp_path / "cache.sqlite"
    first = generate(str(tiny_model), tiny_adapters, ps, decoding=FP32, cache=cache, progress=False)

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded although everything was cached")

    monkeypatch.setattr(hf_backend, "load_model", no_model)
    assert generate(str(tiny_model), tiny_adapters, ps, decoding=FP32, cache=cache, progress=False) == first
    other = FP32.model_copy(update={"max_new_tokens": 5})  # another decoding is another key
    with pytest.raises(AssertionError, match="was loaded"):
        generate(str(tiny_model), tiny_adapters, ps, decoding=other, cache=cache, progress=False)


def test_template_parity(tiny_model: Path, tiny_adapters: list[Path]) -> None:
    with pytest.raises(SafedoseError, match="trained with template 'alpaca', not 'chat'"):
        generate(str(tiny_model), tiny_adapters, prompts(1), template="chat", decoding=FP32, progress=False)
    rows = generate(str(tiny_model), tiny_adapters[:1], prompts(1), template="chat", decoding=FP32,
                    allow_template_mismatch=True, progress=False)  # fmt: skip
    assert {r.template for r in rows} == {"chat"}
    assert {r.template for r in generate(str(tiny_model), tiny_adapters[:1], prompts(1), decoding=FP32,
                                            progress=False)} == {"alpaca"}  # fmt: skip


def test_base_model_check_is_separate_from_the_template_check(
    cli, tiny_model: Path, tiny_adapters: list[Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other-base"
    shutil.copytree(tiny_adapters[0], other)
    (other / "safedose.json").write_text(json.dumps({"template": "alpaca", "base_model_hash": "0" * 64}))
    ps = prompts(2)
    with pytest.raises(SafedoseError, match="trained on another base model"):
        generate(str(tiny_model), [other], ps, decoding=FP32, progress=False)
    with pytest.raises(SafedoseError, match="trained on another base model"):
        generate(str(tiny_model), [other], ps, decoding=FP32, allow_template_mismatch=True, progress=False)
    rows = generate(str(tiny_model), [other], ps, decoding=FP32, allow_base_mismatch=True, progress=False)
    assert [r.adapter for r in rows] == [None, None, "other-base", "other-base"]
    with pytest.raises(SafedoseError, match="trained with template 'alpaca', not 'chat'"):
        generate(str(tiny_model), [other], ps, template="chat", decoding=FP32, allow_base_mismatch=True, progress=False)

    prompts_file = eval_file(tmp_path / "p.jsonl", 2)
    args = ("generate", "--model", tiny_model, "--adapter", other, "--eval-set", prompts_file, "--max-new-tokens", "4",
            "--dtype", "fp32")  # fmt: skip
    refused = cli(*args, "--out", tmp_path / "a.jsonl", "--allow-template-mismatch")
    assert refused.code == 2 and "--allow-base-mismatch" in refused.err
    allowed = cli(*args, "--out", tmp_path / "b.jsonl", "--allow-base-mismatch")
    assert allowed.code == 0, allowed.err
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 4


def test_cli_writes_rows_and_rejects_bad_input(
    cli, tiny_model: Path, tiny_adapters: list[Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    prompts_file = eval_file(tmp_path / "p.jsonl", 3)
    out = tmp_path / "gen.jsonl"
    result = cli("generate", "--model", tiny_model, "--adapter", f"a={tiny_adapters[0]}", "--eval-set", prompts_file,
                 "--out", out, "--max-new-tokens", "6", "--dtype", "fp32")  # fmt: skip
    assert result.code == 0, result.err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {r["adapter"] for r in rows} == {None, "a"}
    assert {"id", "eval_set", "prompt", "response", "model", "adapter"} <= set(rows[0])
    assert {r["dtype"] for r in rows} == {"fp32"}  # the precision every answer was generated in
    bad = cli("generate", "--model", tiny_model, "--adapter", tmp_path, "--eval-set", prompts_file, "--out",
              tmp_path / "x.jsonl")  # fmt: skip
    assert bad.code == 2 and "not a PEFT adapter directory" in bad.err
    assert not (tmp_path / "x.jsonl").exists()
    bad = cli("generate", "--model", tiny_model, "--eval-set", prompts_file, "--out", tmp_path / "y.jsonl",
              "--num-beams", "0")  # fmt: skip
    assert bad.code == 2 and "num_beams" in bad.err


def _run(tiny_model: Path, adapter: Path, prompts_file: Path, out: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "safedose", "generate", "--model", str(tiny_model), "--adapter", str(adapter),
           "--eval-set", str(prompts_file), "--out", str(out), "--max-new-tokens", "40", "--batch-size", "2",
           "--dtype", "fp32"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})


def _cached(path: Path) -> int:
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_kill_9_mid_run_then_rerun_loses_and_duplicates_nothing(
    tiny_model: Path, tiny_adapters: list[Path], tmp_path: Path
) -> None:
    prompts_file = eval_file(tmp_path / "p.jsonl", 40)
    killed = tmp_path / "killed" / "gen.jsonl"
    proc = _run(tiny_model, tiny_adapters[0], prompts_file, killed)
    deadline = time.monotonic() + 300
    while _cached(killed.parent / "cache.sqlite") < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; give it more work"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _cached(killed.parent / "cache.sqlite")
    assert 10 <= done_before < 80 and not killed.exists()

    rerun = _run(tiny_model, tiny_adapters[0], prompts_file, killed)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()[-2000:] if rerun.stderr else ""
    clean = tmp_path / "clean" / "gen.jsonl"
    assert _run(tiny_model, tiny_adapters[0], prompts_file, clean).wait(timeout=300) == 0

    rows = [json.loads(line) for line in killed.read_text().splitlines()]
    assert len(rows) == 80 and len({(r["adapter"], r["id"]) for r in rows}) == 80
    assert rows == [json.loads(line) for line in clean.read_text().splitlines()]
    assert _cached(killed.parent / "cache.sqlite") == 80
