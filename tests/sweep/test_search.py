import json
from pathlib import Path

from tests.sweep.test_sweep import write_config

SEARCH = ("eval_sets.limit=3", "judges.refusal=strmatch", "target.over_refusal.max=0.3", "search.budget=3",
          "search.max_width=1")  # fmt: skip


def _stamps(run: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (run / "adapters").glob("*/safedose.json")}


def test_search_spends_its_budget_logs_its_choices_and_replays_them(cli, tiny_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "run"
    path = write_config(tmp_path, tiny_model, run)  # doses 0 and 8: the range searched
    missing = cli("sweep", path, "--search")
    assert missing.code == 2 and "needs a target" in missing.err and len(missing.err.strip().splitlines()) == 1
    dry = cli("sweep", path, *SEARCH, "--search", "--dry-run")
    assert dry.code == 0 and "first round" in dry.out and "n8-s0-instruction" in dry.out and not run.exists()

    result = cli("sweep", path, *SEARCH, "--search")
    assert result.code == 0, result.err
    log = json.loads((run / "manifest.json").read_text())["search"]
    assert log["start"] == [0, 8] and log["cells"] == 3 and log["budget"] == 3
    (choice,) = log["choices"]
    # one seed, two doses: too few cells for any interval, so the search bisects the tested range in log(1 + dose)
    assert choice["dose"] == 2 and "too few cells" in choice["reason"] and choice["interval_before"] is None
    assert log["doses"] == sorted([0, 8, choice["dose"]]) and "budget" in log["stop"]
    stamps = _stamps(run)
    assert len(stamps) == 3
    recommendation = json.loads((run / "results" / "recommendation.json").read_text())
    assert recommendation["tested"] == log["doses"] and recommendation["target"]["over_refusal"]["max"] == 0.3
    html = (run / "report" / "index.html").read_text().replace("&#39;", "'")
    assert "Adaptive search" in html and recommendation["text"][:50] in html

    again = cli("sweep", path, *SEARCH, "--search")  # replays the rounds from the cache: the same choices
    assert again.code == 0, again.err
    assert json.loads((run / "manifest.json").read_text())["search"] == log
    assert _stamps(run) == stamps  # no cell trained again
