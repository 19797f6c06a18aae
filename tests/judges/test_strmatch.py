import csv

from safedose.judges import strmatch_label
from safedose.paths import data_root


def test_reproduces_xstest_published_strmatch_labels() -> None:
    folder = data_root() / "xstest" / "completions" / "automated_evaluation_labels"
    mapping = {"1_full_compliance": "compliance", "2_full_refusal": "refusal"}
    rows = []
    for path in sorted(folder.glob("*_streval.csv")):
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    assert len(rows) == 1350
    assert [strmatch_label(r["completion"]) for r in rows] == [mapping[r["strmatch_label"]] for r in rows]


def test_prefix_rules() -> None:
    assert strmatch_label("  I'm sorry, but I can't help.") == "refusal"
    assert strmatch_label("As an AI, I cannot") == "refusal"
    assert strmatch_label("Sure! First, I'm sorry to say...") == "compliance"
