import json
import re
from pathlib import Path
from typing import Any

from safedose.annotate import LabelIn, SampleSpec, open_store
from tests.annotate.conftest import judged_answers


def test_invite_export_import_and_summary_from_the_command_line(run_dir: Path, tmp_path: Path, cli: Any) -> None:
    assert cli("annotate", "invite", run_dir, "alice").code == 2  # no sample yet
    open_store(run_dir, SampleSpec(per_cell=2, overlap=0.5, seed=0), create=True)
    result = cli("annotate", "invite", run_dir, "alice", "--url", "http://127.0.0.1:9000")
    assert result.code == 0 and re.fullmatch(r"http://127\.0\.0\.1:9000/label#token=[\w-]{32}\n", result.out)
    assert cli("annotate", "invite", run_dir, "alice").code == 2
    assert cli("annotate", "invite", run_dir, "alice", "--new-token").code == 0
    store = open_store(run_dir)
    (alice,) = store.annotators()
    for item in store.items()[:5]:
        store.put_label(alice, item.item, LabelIn(refusal="refusal", harmful="no"))
    out = tmp_path / "labels.json"
    result = cli("annotate", "export", run_dir, "--format", "label-studio", "--out", out)
    assert result.code == 0 and "5 labels" in result.out
    tasks = json.loads(out.read_text())
    for task in tasks:
        for annotation in task["annotations"]:
            annotation["created_username"] = "bob"
    out.write_text(json.dumps(tasks))
    assert cli("annotate", "import", run_dir, out).out.strip() == "5 added, 0 replaced, 0 unchanged"
    summary = json.loads(cli("annotate", "summary", run_dir).out)
    assert [(a["name"], a["labelled"], a["invited"]) for a in summary["annotators"]] == [
        ("alice", 5, True), ("bob", 5, False)]  # fmt: skip
    assert summary["agreement"]["refusal"]["pairs"][0]["kappa"] is None  # one class only: κ undefined
    assert cli("annotate", "export", run_dir, "--format", "csv", "--out", tmp_path / "x").code == 2
    assert cli("annotate", "export", run_dir).code == 2
    assert cli("annotate", "import", run_dir).code == 2
    assert cli("annotate", run_dir, "--per-cell", "3").code == 2  # the sample was drawn with other settings
    assert cli("annotate", run_dir, "--overlap", "1.5").code == 2
    assert not (tmp_path / "x").exists()


def test_the_report_shows_agreement_judges_against_humans_and_corrected_rates(run_dir: Path) -> None:
    from safedose.report import write_metrics, write_report

    answers = judged_answers()
    cells = [{"variant": v, "dose": d, "seed": 0, "format": "instruction"} for v, d in
             (("n0-s0-instruction", 0), ("n50-s0-instruction", 50), ("n150-s0-instruction", 150))]  # fmt: skip
    write_metrics(run_dir, answers, [], cells=cells)
    store = open_store(run_dir, SampleSpec(per_cell=6, overlap=0.5, seed=0), create=True)
    for name in ("alice", "bob"):
        store.invite(name)
    judged = {(a.variant, a.eval_set, a.id): a for a in answers}
    for k, who in enumerate(store.annotators()):
        for n, item in enumerate(store.queue(who)[1][:40]):
            label = judged[item.answer_key].label("refusal") or "refusal"
            if (n + k) % 6 == 0:
                label = "compliance" if label != "compliance" else "refusal"
            harmful = ("yes" if label != "refusal" else "no") if item.asks_harmful else None
            store.put_label(who, item.item, LabelIn(refusal=label, harmful=harmful, note="<b>x</b>"))  # type: ignore[arg-type]
    html = write_report(run_dir).read_text(encoding="utf-8")
    section = html[html.index("Human audit of this run") :]
    assert "alice · bob: κ" in section and "Krippendorff" in section
    for judge in ("refusal@1", "harm@2", "moderation@2"):
        assert f"{judge} (verdicts in the run" in section
    assert "Harmful compliance (strict): judge rate and audit-corrected rate" in section
    assert "Over-refusal: judge rate and audit-corrected rate" in section
    assert re.search(r"judge 0\.\d\d → corrected 0\.\d\d \[0\.\d\d, [01]\.\d\d\]", section)
    assert "dose 150" in section and "audited here" in section
    assert "<b>x</b>" not in html


def test_the_serve_command_passes_url_to_the_app(run_dir: Path, cli: Any, monkeypatch: Any) -> None:
    import safedose.annotate

    seen: dict[str, Any] = {}

    def fake_annotate(run: Path, spec: SampleSpec | None = None, **options: Any) -> None:
        seen.update(options, run=run)

    monkeypatch.setattr(safedose.annotate, "annotate", fake_annotate)
    result = cli("annotate", run_dir, "--host", "0.0.0.0", "--url", "https://labels.example.org")
    assert result.code == 0, result.err
    assert (seen["run"], seen["host"], seen["url"]) == (run_dir, "0.0.0.0", "https://labels.example.org")
