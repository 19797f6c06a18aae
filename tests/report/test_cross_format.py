"""The cross-format table on synthetic answers: harmful compliance per training format, dose and prompt form, with
the report's intervals, the paired change between formats, and metrics.json's `cross_format` section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safedose.evaluate import CrossFormat, cross_format
from safedose.files import write_json
from safedose.report import write_metrics, write_report
from safedose.run import JudgedAnswer, manifest_path, open_run, write_judged
from safedose.stats import wilson
from tests.evaluate.answers import answer, cell
from tests.run.manifests import manifest_dict

FORMATS = ("instruction", "question")
# complying answers out of 10 per (dose, training format, eval set); the same for seeds 0 and 1
SETS = ("I-MaliciousInstructions", "Q-Harm", "advbench")
COUNTS = {(0, "instruction"): (9, 9, 8), (0, "question"): (9, 9, 8), (50, "instruction"): (2, 6, 1),
          (50, "question"): (4, 2, 3)}  # fmt: skip
COMPLY = {(dose, fmt, s): k for (dose, fmt), ks in COUNTS.items() for s, k in zip(SETS, ks, strict=True)}


def _answers(seeds: tuple[int, ...] = (0, 1)) -> list[JudgedAnswer]:
    rows = []
    for s in SETS:
        for i in range(10):
            rows.append(answer("base", f"{s}-{i}", refusal="compliance", eval_set=s))
    for (dose, fmt, s), k in COMPLY.items():
        for seed in seeds:
            for i in range(10):
                label = "compliance" if i < k else "refusal"
                rows.append(answer(f"n{dose}-s{seed}-{fmt}", f"{s}-{i}", refusal=label, eval_set=s, dose=dose,
                                   seed=seed, fmt=fmt))  # fmt: skip
    return rows


def _cells(seeds: tuple[int, ...] = (0, 1)) -> list[dict[str, object]]:
    return [cell(d, s, f) for d in (0, 50) for s in seeds for f in FORMATS]


def _table(seeds: tuple[int, ...] = (0, 1)) -> CrossFormat:
    table = cross_format(_answers(seeds), cells=_cells(seeds))
    assert table is not None
    return table


def test_rows_per_cell_set_and_form_with_wilson_intervals() -> None:
    table = _table()
    assert table.forms == {"I-MaliciousInstructions": "instruction", "Q-Harm": "question", "advbench": "instruction"}
    assert set(table.form_source.values()) == {"catalog"} and table.reference_format == "instruction"
    rows = {(r.variant, r.eval_set): r for r in table.rows}
    r = rows[("n50-s0-question", "Q-Harm")]
    assert (r.value, r.n, r.interval, r.form, r.format, r.dose, r.seed) == (0.2, 10, "wilson", "question", "question",
                                                                            50, 0)  # fmt: skip
    assert (r.lo, r.hi) == pytest.approx(wilson(2, 10))
    both = rows[("n50-s1-instruction", "all instruction-form sets")]  # I-MaliciousInstructions and advbench together
    assert both.value == pytest.approx(3 / 20) and (both.n, both.sets) == (20, ["I-MaliciousInstructions", "advbench"])
    assert ("n50-s0-instruction", "all question-form sets") not in rows  # one question-form set: no pooled column
    assert rows[("base", "Q-Harm")].format is None and rows[("base", "Q-Harm")].value == 1.0


def test_pooled_over_seeds_and_paired_format_changes() -> None:
    table = _table()
    pooled = {(r.variant, r.eval_set): r for r in table.rows if r.seed is None and r.dose is not None}
    p = pooled[("pooled-n50-instruction", "Q-Harm")]
    assert p.value == pytest.approx(0.6) and (p.seeds, p.interval) == ([0, 1], "hierarchical-bootstrap")
    lo, hi = wilson(6, 10)
    assert p.lo is not None and p.hi is not None and p.lo <= lo and p.hi >= hi  # at least the Wilson interval
    changes = {(d.dose, d.eval_set, d.pooled, tuple(d.seeds)): d for d in table.differences}
    one = changes[(50, "Q-Harm", False, (0,))]
    assert one.value == pytest.approx(-0.4) and one.interval == "newcombe-paired"
    assert (one.from_format, one.to_format, one.n) == ("instruction", "question", 10)
    assert one.lo is not None and one.hi is not None and one.lo < -0.4 < one.hi < 0
    both = changes[(50, "Q-Harm", True, (0, 1))]
    assert both.value == pytest.approx(-0.4) and both.interval == "hierarchical-bootstrap" and both.n == 20
    assert changes[(0, "I-MaliciousInstructions", False, (1,))].value == 0.0
    assert {d.to_format for d in table.differences} == {"question"}


def test_forms_of_unregistered_sets_are_inferred_from_their_prompts() -> None:
    extra = [answer("base", f"q{i}", eval_set="my-questions.jsonl", prompt=f"How can I do thing {i}?")
             for i in range(10)]  # fmt: skip
    mixed = [f"How can I do thing {i}?" if i % 2 else f"Write about thing {i}." for i in range(10)]
    extra += [answer("base", f"m{i}", eval_set="my-mixed.jsonl", prompt=p) for i, p in enumerate(mixed)]
    table = cross_format(_answers((0,)) + extra, cells=_cells((0,)))
    assert table is not None
    assert table.forms["my-questions.jsonl"] == "question" and table.form_source["my-questions.jsonl"] == "inferred"
    assert "my-mixed.jsonl" not in table.forms
    assert cross_format([answer("base", "a", eval_set="xstest-v2-safe", expected="safe")]) is None


def test_metrics_json_and_report_carry_the_table(tmp_path: Path) -> None:
    run = open_run(tmp_path / "run", create=True)
    judged = _answers()
    write_judged(run, judged)
    write_json(manifest_path(run), manifest_dict(
        config={"name": "formats", "model": "tiny", "base": "dolly-15k", "base_size": 100, "safety": "saferpaca",
                "doses": [0, 50], "seeds": [0, 1], "formats": list(FORMATS), "train": {"template": "alpaca"}},
        generation_dtype="fp32", judges={"refusal": "refusal@1"},
    ))  # fmt: skip
    data = write_metrics(run, judged, [], cells=_cells())
    section = data["cross_format"]
    assert set(section) == set(CrossFormat.model_fields) and section["metric"] == "harmful_compliance"
    html = write_report(run).read_text().replace("&#39;", "'")
    for text in ("Cross-format: harmful compliance by training format and prompt form", "Q-Harm (question)",
                 "I-MaliciousInstructions (instruction)", "all instruction-form sets", "dose 50 · question (mean of 2 "
                 "seeds)", "instruction → question", "pooled over seeds 0, 1", "-0.40 [", "format is the only thing "
                 "that differs", "Q-Harm: question (catalog)"):  # fmt: skip
        assert text in html, text
    del data["cross_format"]  # a metrics.json written before the table existed still renders
    write_json(run / "results" / "metrics.json", data)
    assert "Cross-format" not in write_report(run).read_text()
    assert json.loads((run / "results" / "metrics.json").read_text()).get("cross_format") is None
