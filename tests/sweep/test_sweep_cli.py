"""`safedose sweep` as a user meets it: one-line errors, Ctrl-C, nothing half-written, the dry run's plan and estimates,
`--json`, and Ray resources checked before anything is submitted."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.sweep.test_sweep import write_config

DEMO = Path(__file__).parents[2] / "configs" / "demo.yaml"
SAFEDOSE = str(Path(sys.executable).parent / "safedose")


def _stub_model(tmp_path: Path) -> Path:
    """A model directory that check_names accepts (config.json only): enough for steps before training."""
    model = tmp_path / "stub-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return model


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lrr=1e-4", "error: override 'train.lrr=1e-4': train.lrr: unknown key; did you mean train.lr?"),
        ("train.lora.rr=4", "error: override 'train.lora.rr=4': train.lora.rr: unknown key; did you mean "
                            "train.lora.r?"),
        ("eval_sets.limt=4", "error: override 'eval_sets.limt=4': eval_sets.limt: unknown key; did you mean "
                             "eval_sets.limit?"),
        ("doses=0,10", "error: override 'doses=0,10': doses: expects a list, got '0,10'; write a list as [0,10]"),
        ("base_size=many", "error: override 'base_size=many': base_size: expects an integer, got 'many'"),
    ],
)  # fmt: skip
def test_override_errors_name_the_override_the_nearest_key_and_the_form(cli, override: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("sweep", DEMO, override, "--dry-run")
    assert result.code == 2
    assert result.err.strip() == expected and result.out == ""


def test_a_key_mistyped_in_the_file_blames_the_file_with_did_you_mean(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = yaml.safe_load(DEMO.read_text())
    config["train"]["lrr"] = config["train"].pop("lr")
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(config))
    result = cli("sweep", path, "--dry-run")
    assert result.code == 2
    assert result.err.strip() == f"error: {path}: train.lrr: unknown key; did you mean train.lr?"


def test_a_missing_file_is_no_such_file_not_an_unknown_dataset(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "x" / "nofile.csv"
    result = cli("sweep", DEMO, f"base={missing}", "--dry-run")
    assert result.code == 2
    assert result.err.strip() == f"error: base: {missing}: no such file"
    typo = cli("sweep", DEMO, "base=dolly15k", "--dry-run")
    assert typo.code == 2 and "unknown dataset 'dolly15k'; did you mean 'dolly-15k'?" in typo.err


def test_a_sweep_that_fails_at_the_mix_leaves_nothing_behind(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "run"
    path = write_config(tmp_path, _stub_model(tmp_path), run)
    result = cli("sweep", path, "base_size=100000", "max_tokens=null")
    assert result.code == 2
    assert "larger than the base pool" in result.err and result.err.count("\n") == 1
    assert not run.exists()


def test_ctrl_c_during_a_sweep_exits_130_and_says_how_to_resume(tiny_model: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # the default SIGINT disposition: an ignored SIGINT (which a test run's earlier servers may leave behind) would
    # be inherited by the child, as a background job's is
    proc = subprocess.Popen([SAFEDOSE, "sweep", str(write_config(tmp_path, tiny_model, run))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 600
    while not any(run.glob("adapters/*/checkpoints/step-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before the first checkpoint"
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "aborted; rerun to resume"
    assert "Traceback" not in err
    assert not list(run.rglob(".*.tmp"))  # atomic writes cleaned up on the way out
    assert json.loads((run / "run.json").read_text())["schema_version"] > 0  # started work is kept to resume


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network and an empty HF cache: nothing of a hub model is on this machine."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_a_dry_run_plans_a_hub_model_offline_without_weights_with_max_tokens(  # type: ignore[no-untyped-def]
    cli, offline_hub: None, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = cli("sweep", DEMO, "model=meta-llama/Llama-2-7b-hf", f"output_dir={run}", "max_tokens=256", "--dry-run",
                 "--json")  # fmt: skip
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    steps = {s["name"]: s for s in plan["steps"]}
    assert steps["mix seed 0 instruction"]["status"] == "run"
    assert "once the model is on this machine" in steps["mix seed 0 instruction"]["detail"]
    assert all(s["status"] == "run" and "FLOP" in s["detail"] for n, s in steps.items() if n.startswith("train "))
    # never measured here: the headline says unknown rather than a small sum of the few guessed steps
    assert plan["estimate"]["seconds"] is None
    assert plan["estimate"]["headline"].startswith("estimated time: unknown: ")
    assert "6.74B parameters" in plan["memory"]["model"]
    assert not run.exists()


def _finished_copy(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a finished run and its config (the manifest's, pointing at the copy)."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    config = json.loads((copy / "manifest.json").read_text())["config"]
    config["output_dir"] = str(copy)
    path = tmp_path / "finished.yaml"
    path.write_text(yaml.safe_dump(config))
    return copy, path


def test_a_dry_run_after_a_finished_sweep_marks_every_step_cached(  # type: ignore[no-untyped-def]
    cli, clean_tiny_run: Path, tmp_path: Path
) -> None:
    _, config = _finished_copy(clean_tiny_run, tmp_path)
    result = cli("sweep", config, "--dry-run", "--json")
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert {s["name"]: s["status"] for s in plan["steps"] if s["status"] != "cached"} == {}
    assert plan["estimate"]["seconds"] == 0.0 and "every step is finished" in plan["estimate"]["headline"]
    table = cli("sweep", config, "--dry-run")
    assert table.code == 0 and "estimated time: 0 s: every step is finished" in " ".join(table.out.split())
    # a new dose: only its cell is new; the finished cells' answers are reused
    grown = json.loads(cli("sweep", config, "doses=[0,4,8]", "--dry-run", "--json").out)
    status = {s["name"]: s["status"] for s in grown["steps"]}
    assert status["train n4-s0-instruction"] == "run" and status["train n8-s0-instruction"] == "cached"
    assert status["generate"] == "run" and "4 of 5 variants finished" in grown["steps"][4]["detail"]
    assert status["metrics and report"] == "run"
    # another judge: everything after training runs again
    judged = json.loads(cli("sweep", config, "judges.guard=null", "--dry-run", "--json").out)
    assert {s["name"]: s["status"] for s in judged["steps"]}["judge"] == "run"


def test_sweep_and_recommend_print_json(cli, clean_tiny_run: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    copy, config = _finished_copy(clean_tiny_run, tmp_path)
    proc = subprocess.run([SAFEDOSE, "sweep", str(config), "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # progress went to stderr
    assert result["run_dir"] == str(copy) and result["report"] == str(copy / "report" / "index.html")
    assert result["metrics"] == json.loads((copy / "results" / "metrics.json").read_text())
    assert result["headline"] == result["metrics"]["headline"] and "[1/" in proc.stderr
    assert "ETA" not in proc.stderr  # no extrapolated ETA; the dry run estimates from measured timings
    rec = cli("recommend", copy, "--target", "{harmful_compliance: {max: 0.5}}", "--json")
    assert rec.code == 0, rec.err
    data = json.loads(rec.out)
    assert data["recommendation"] == json.loads((copy / "results" / "recommendation.json").read_text())
    assert data["file"] == str(copy / "results" / "recommendation.json") and data["report"].endswith("index.html")
