"""Capability as the sweep's third axis: benchmark rows per cell with intervals, paired changes, the win-rate
through a judge endpoint, metrics.csv rows in the long format, the report's section, and a skip note without a
judge."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from rich.console import Console

from safedose.errors import SafedoseError
from safedose.sweep import load_sweep_config, sweep
from tests.capability.test_winrate import fake_judge
from tests.sweep.test_sweep import write_config


def test_sweep_measures_capability_and_reports_it(tiny_model: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_model, tmp_path / "run")
    with fake_judge(lambda user: "M") as (url, _):
        overrides = ["judges.refusal=strmatch", "eval_sets.capability_limit=null",
                     "eval_sets.capability={tasks: [copa, winogrande], limit: 4, batch_size: 4, references_limit: 4, "
                     f"win_rate: {{judge: 'llm:fake', base_url: '{url}', limit: 3, max_new_tokens: 8}}}}"]  # fmt: skip
        result = sweep(load_sweep_config(config, overrides), console=Console(quiet=True))
    bench = result.metrics["benchmarks"]
    assert bench["tasks"] == ["copa", "winogrande"] and not bench["notes"]
    scores = bench["scores"]
    assert {(s["variant"], s["task"]) for s in scores if s["metric"] == "acc"} == {
        (v, t) for v in ("base", "n0-s0-instruction", "n8-s0-instruction") for t in ("copa", "winogrande")}  # fmt: skip
    assert all(s["n"] == 4 and s["interval"] == "wilson" and s["lo"] <= s["value"] <= s["hi"] for s in scores)
    assert {s["dose"] for s in scores} == {None, 0, 8}
    steps = {(c["task"], c["from_dose"], c["to_dose"]) for c in bench["changes"]}
    assert {("mean", None, 0), ("mean", 0, 8), ("copa", 0, 8)} <= steps
    rates = {w["variant"]: w for w in bench["win_rates"]}
    assert set(rates) == {"n0-s0-instruction", "n8-s0-instruction"}
    assert all(w["n"] + w["parse_errors"] == 3 for w in rates.values())
    assert "mean benchmark accuracy (2 tasks) moved from" in result.metrics["headline"]
    rows = list(csv.DictReader((result.run_dir / "results" / "metrics.csv").open()))
    assert any(r["eval_set"] == "copa" and r["metric"] == "acc" and r["variant"] == "base" for r in rows)
    assert any(r["eval_set"] == "alpaca-eval" and r["metric"] == "lc_win_rate" for r in rows)
    assert (result.run_dir / "results" / "preferences.jsonl").is_file()
    html = result.report.read_text()
    assert "Capability: benchmarks and win-rate" in html and "capability_benchmarks.png" in html
    assert (result.report.parent / "capability_win_rate.png").is_file()


def test_without_a_judge_the_win_rate_is_skipped_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safedose.capability import WinRateSettings
    from safedose.sweep._capability_step import skip_note

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert "no judge configured" in str(skip_note(WinRateSettings()))
    assert "no endpoint" in str(skip_note(WinRateSettings(judge="llm:gpt-4o")))
    assert skip_note(WinRateSettings(judge="llm:gpt-4o", base_url="http://127.0.0.1:1/v1")) is None


def test_bad_capability_settings_fail_before_any_work(tmp_path: Path) -> None:
    from safedose.sweep import check_names

    config = write_config(tmp_path, tmp_path / "nomodel", tmp_path / "run")
    for override, needle in [
                             ("eval_sets.capability={win_rate: {judge: 'gpt-4'}}", "use llm:<model>"),
                             ("eval_sets.capability={tasks: [piqa], limit: 0}", "limit")]:  # fmt: skip
        with pytest.raises(SafedoseError, match=needle):
            check_names(load_sweep_config(config, [override]))
    assert not (tmp_path / "run").exists()
