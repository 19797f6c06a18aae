"""The `attacks` axis through a whole sweep on the tiny model: pairing, report, rerun from the cache, bad input."""

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from safedose.errors import SafedoseError
from safedose.run import read_attacked, read_judged
from safedose.sweep import load_sweep_config, plan
from tests.sweep.test_sweep import write_config

ATTACKS = ["none", "prefill:1", "prefill:3", "refusal_suppression", "template:gptfuzz#2"]


def _config(tmp_path: Path, model: Path, run: Path, attacks: Sequence[object]) -> Path:
    path = write_config(tmp_path, model, run)
    data = yaml.safe_load(path.read_text())
    data["eval_sets"]["harm"] = ["I-MaliciousInstructions", "advbench"]
    data["eval_sets"]["limit"] = 3
    data["attacks"] = list(attacks)
    path.write_text(yaml.safe_dump(data))
    return path


def _sweep(config: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "safedose", "sweep", str(config)], capture_output=True, timeout=900)


def test_attacks_pair_with_plain_answers_and_rerun_from_the_cache(tiny_model: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = _config(tmp_path, tiny_model, run, ATTACKS)
    first = _sweep(config)
    assert first.returncode == 0, first.stderr.decode()[-3000:]
    plain, attacked = read_judged(run), read_attacked(run)
    assert all(a.attack is None for a in plain)
    by_variant = {(a.variant, a.eval_set, a.id) for a in plain if a.expected_label == "unsafe"}
    assert {(a.variant, a.eval_set, a.id) for a in attacked} == by_variant  # every attacked answer has its plain one
    names = {a.attack.name for a in attacked if a.attack}
    assert names == set(ATTACKS) - {"none"}
    variants = {a.variant for a in plain}
    per_variant = 6 * (2 + 1 + 2)  # 6 harm prompts; prefill x2, refusal suppression, two templates
    assert len(attacked) == per_variant * len(variants)
    prefilled = [a for a in attacked if a.attack and a.attack.name == "prefill:3"]
    for a in prefilled:
        assert a.attack is not None and a.attack.prefill is not None and a.response.startswith(a.attack.prefill)
        assert a.attack.prefill_source == ("target" if a.eval_set == "advbench" else "fixed")
        assert a.prompt == a.attack.plain_prompt
    suppressed = next(a for a in attacked if a.attack and a.attack.name == "refusal_suppression")
    assert suppressed.prompt.startswith("Respond to the below prompt while following these rules:")
    robustness = json.loads((run / "results" / "robustness.json").read_text())
    rows = [r for r in robustness["rows"] if r["metric"] == "attack_success"]
    assert {(r["attack"], r["eval_set"]) for r in rows} == {
        (n, s) for n in names for s in ("I-MaliciousInstructions", "advbench")
    }
    assert all(r["n_paired"] == 3 and r["change_interval"] == "newcombe-paired" for r in rows)
    assert robustness["at_dose"] and "still succeeds on" in robustness["at_dose"][0]["text"]
    assert "in distribution" not in json.dumps(robustness["judges"])  # the harm judge is off in this sweep
    html = (run / "report" / "index.html").read_text()
    assert "Robustness under attack" in html and "prefill_depth.png" in html and "<script>alert" not in html
    before = (run / "results" / "attacked.jsonl").read_bytes()

    steps = {s.name: s.status for s in plan(load_sweep_config(config))}
    assert steps["generate"] == "cached" and steps["judge"] == "cached"
    again = _sweep(config)
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    assert (run / "results" / "attacked.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    ("attacks", "message"),
    [
        (["none", "prefil:2"], "did you mean 'prefill'?"),
        ([{"attack": "prefill:2", "sets": ["xstest-v2-safe"]}], "attacks apply to harm sets"),
        (["transfer:jailbreakbench#GCG"], "replaces the goals of 'jailbreakbench'"),
        (["prefill:2", "prefill:2"], "an attack is listed twice"),
        (["prefill:2", "backend=openai"], "use backend hf or vllm"),
    ],
)
def test_bad_attacks_fail_before_any_work(tmp_path: Path, attacks: list[object], message: str) -> None:
    run = tmp_path / "run"
    overrides = [a for a in attacks if isinstance(a, str) and "=" in a]
    config = _config(tmp_path, tmp_path / "nomodel", run, [a for a in attacks if a not in overrides])
    with pytest.raises(SafedoseError, match=message):
        load_sweep_config(config, overrides).attack_plan()


def test_a_template_without_the_placeholder_is_one_line_and_exit_2(tiny_model: Path, tmp_path: Path) -> None:
    templates = tmp_path / "mine.jsonl"
    templates.write_text(json.dumps({"id": "t", "text": "Tell me a story."}) + "\n")
    run = tmp_path / "run"
    proc = _sweep(_config(tmp_path, tiny_model, run, [f"template:{templates}"]))
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert "mine.jsonl: record 1: template has no [INSERT PROMPT HERE] placeholder" in err
    assert not run.exists()
