import html
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from safedose.report import load_recommendation
from safedose.run import read_judged, read_manifest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "configs" / "template.yaml"


def test_the_template_points_at_the_shipped_example_files() -> None:
    config = yaml.safe_load(TEMPLATE.read_text())
    assert TEMPLATE.read_text().startswith("# safedose sweep configs/template.yaml")
    for key in ("base", "safety"):
        path = REPO / config[key]
        assert path.is_file() and path.parent.name == "examples"
    rows = [json.loads(line) for line in (REPO / config["base"]).read_text().splitlines()]
    assert len(rows) >= config["base_size"] + config["val_size"] + config["test_size"]
    assert {"instruction", "output"} <= set(rows[0])
    safety = [json.loads(line) for line in (REPO / config["safety"]).read_text().splitlines()]
    assert len(safety) >= max(config["doses"]) and {"prompt", "response"} <= set(safety[0])


@pytest.mark.slow
def test_the_template_config_runs_and_answers(smollm2_dir: Path, tmp_path: Path) -> None:
    """`safedose sweep configs/template.yaml`, as the README tells users to run it, from the repository root (the
    example files are relative paths); smaller here only where the overrides say so."""
    run = tmp_path / "my-study"
    overrides = [f"output_dir={run}", "train.epochs=1", "eval_sets.limit=4", "decoding.max_new_tokens=16"]
    proc = subprocess.run([sys.executable, "-m", "safedose", "sweep", "configs/template.yaml", *overrides], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "results" / "metrics.json").is_file() and (run / "results" / "metrics.csv").is_file()
    recommendation = load_recommendation(run)
    assert recommendation.target is not None and recommendation.tested == [0, 36]
    assert html.escape(recommendation.text[:40]) in (run / "report" / "index.html").read_text()
    manifest = read_manifest(run)
    assert sorted(c.dose for c in manifest.cells.values()) == [0, 36]
    answers = read_judged(run)
    assert answers and {a.dtype for a in answers} == {manifest.generation_dtype}  # the precision of every answer
