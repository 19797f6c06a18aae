"""Benchmarks through lm-eval: the in-process path (one base, adapters switched) equals the `lm_eval` command line,
sampling is seeded and stratified, and bad task names or missing data fail before a model loads."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safedose.capability import BenchmarkSettings, evaluate_benchmarks, sample_indices, tasks_dir
from safedose.capability._dataset import read_docs
from safedose.capability._tasks import resolve_task
from safedose.errors import SafedoseError

TASKS = ["arc-easy", "copa", "winogrande"]


def test_in_process_scores_equal_the_lm_eval_command_line(
    tiny_model: Path, tiny_adapters: list[Path], tmp_path: Path
) -> None:
    settings = BenchmarkSettings(limit=6, sample_seed=3, batch_size=4)
    rows = evaluate_benchmarks(str(tiny_model), [f"a0={tiny_adapters[0]}", f"a1={tiny_adapters[1]}"], TASKS,
                               settings=settings, dtype="fp32", cache=tmp_path / "c.sqlite")  # fmt: skip
    mine = {(r.variant, r.task, r.metric): r for r in rows}
    assert {r.n for r in rows} == {6}
    samples = {f"safedose_{t.replace('-', '_')}": list(map(int, mine[("base", t, "acc")].items)) for t in TASKS}
    for variant, adapter in (("a1", tiny_adapters[1]),):
        out = tmp_path / variant
        args = f"pretrained={tiny_model},peft={adapter},dtype=float32"
        cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", args, "--include_path",
               str(tasks_dir()), "--tasks", ",".join(samples), "--samples", json.dumps(samples), "--batch_size", "4",
               "--device", "cpu", "--output_path", str(out)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        result = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
        for task in TASKS:
            theirs = result[f"safedose_{task.replace('-', '_')}"]
            for metric in ("acc", "acc_norm"):
                if f"{metric},none" in theirs:
                    ours = mine[(variant, task, metric)]
                    assert ours.value == pytest.approx(theirs[f"{metric},none"], abs=1e-9), (task, metric)
                    assert ours.stderr == pytest.approx(theirs[f"{metric}_stderr,none"], abs=1e-9)
    # adapters change the scores (they are really switched), and a rerun is served from the cache
    assert any(mine[("base", t, "acc")].items != mine[("a1", t, "acc")].items for t in TASKS) or any(
        mine[("base", t, "acc_norm")].value != mine[("a1", t, "acc_norm")].value for t in ("arc-easy",)
    )
    again = evaluate_benchmarks(str(tiny_model), [f"a0={tiny_adapters[0]}", f"a1={tiny_adapters[1]}"], TASKS,
                                settings=settings, dtype="fp32", cache=tmp_path / "c.sqlite")  # fmt: skip
    assert again == rows


def test_samples_are_seeded_and_stratified_by_subject() -> None:
    docs = read_docs("mmlu")
    a = sample_indices(docs, 114, seed=0, task="mmlu", stratify="subject")
    assert a == sample_indices(docs, 114, seed=0, task="mmlu", stratify="subject")
    assert a != sample_indices(docs, 114, seed=1, task="mmlu", stratify="subject")
    subjects = [docs[i]["subject"] for i in a]
    share = {s: sum(d["subject"] == s for d in docs) / len(docs) for s in set(subjects)}
    assert len(share) == 57 and all(abs(subjects.count(s) - 114 * p) < 1.5 for s, p in share.items())
    assert sample_indices(docs[:10], None, seed=0, task="x", stratify=None) == list(range(10))


def test_every_shipped_task_reads_its_files() -> None:
    sizes = {"arc-easy": 2376, "arc-challenge": 1172, "piqa": 1838, "openbookqa": 500, "copa": 100, "boolq": 3270,
             "winogrande": 1267, "mmlu": 14042, "truthfulqa-mc1": 817, "truthfulqa-mc2": 817}  # fmt: skip
    assert {t: len(read_docs(t)) for t in sizes} == sizes
    assert resolve_task("safedose_piqa").name == "piqa"


def test_bad_task_names_and_missing_data_fail_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    with pytest.raises(SafedoseError, match=r"unknown task 'arc-esay'; did you mean 'arc-easy'\?"):
        evaluate_benchmarks(str(tiny_model), [], ["arc-esay"])
    with pytest.raises(SafedoseError, match="did you mean 'hellaswag'"):
        resolve_task("hellaswg")
    monkeypatch.setenv("SAFEDOSE_DATA", str(tmp_path))
    with pytest.raises(SafedoseError, match=r"task piqa: its data file .*piqa.jsonl is missing"):
        evaluate_benchmarks(str(tiny_model), [], ["piqa"])


def test_cli_prints_scores_writes_json_and_rejects_bad_tasks(
    cli: Callable[..., Any], tiny_model: Path, tiny_adapters: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "scores.json"
    run = cli("capability", tiny_model, "--tasks", "copa", "--limit", "3", "--adapter", f"a0={tiny_adapters[0]}",
              "--dtype", "fp32", "--out", out)  # fmt: skip
    assert run.code == 0, run.err
    lines = [line.split("\t") for line in run.out.splitlines()]
    assert lines[0] == ["task", "metric", "items", "base", "a0"] and lines[1][:3] == ["copa", "acc", "3"]
    scores = json.loads(out.read_text())["scores"]
    assert {(s["variant"], s["task"]) for s in scores} == {("base", "copa"), ("a0", "copa")}
    bad = cli("capability", tiny_model, "--tasks", "copa,arc-esay")
    assert bad.code == 2 and "did you mean 'arc-easy'" in bad.err and len(bad.err.strip().splitlines()) == 1
