from pathlib import Path

import pytest

from safedose.data import DATASETS, load_any, load_eval_prompts, resolve
from safedose.paths import data_root

EXPECTED_ROWS = {
    "dolly-15k": 15011, "alpaca-gpt4-demo": 999, "alpaca-tiny": 100, "saferpaca-safety": 2483,
    "I-MaliciousInstructions": 100, "I-CoNa": 178, "I-Controversial": 40, "Q-Harm": 100,
    "I-PhysicalSafetyUnsafe": 100, "I-PhysicalSafetySafe": 100, "I-Alpaca": 50,
    "xstest-v2-safe": 250, "xstest-v2-unsafe": 200, "xstest-v1": 200, "xstest-completions": 1350,
    "xstest-gpt4-labels": 1350,
    "advbench": 520, "harmbench": 400, "strongreject": 313, "malicious-instruct": 100, "jailbreakbench": 100,
    "tdc2023": 100, "hh-rlhf-harmless": 1800, "openai-moderation": 1300, "gptfuzz-responses": 7800, "alpaca-eval": 805,
    "gptfuzz-templates": 77, "jailbreakbench-attacks": 637,
}  # fmt: skip


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_resolves_with_its_row_count(name: str) -> None:
    spec = DATASETS.get(name)
    assert resolve(spec, data_root()).ok
    assert len(load_any(spec)) == spec.rows
    if name in EXPECTED_ROWS:
        assert spec.rows == EXPECTED_ROWS[name]


def test_catalog_covers_every_expected_row_count() -> None:
    assert set(EXPECTED_ROWS) <= set(DATASETS)
    for name in DATASETS:
        spec = DATASETS.get(name)
        assert spec.licence and spec.upstream and spec.description
        assert all(len(f.sha256) == 64 for f in spec.files)


def test_eval_sets_carry_labels_and_categories() -> None:
    xs = load_eval_prompts("xstest-v2-unsafe")
    assert {p.expected_label for p in xs} == {"unsafe"}
    assert all(p.category and p.category.startswith("contrast_") for p in xs)
    mal = load_eval_prompts("I-MaliciousInstructions")
    assert mal[0].category == "crime" and mal[0].expected_label == "unsafe"
    contextual = [p for p in load_eval_prompts("harmbench") if "\n\n---\n\n" in p.prompt]
    assert len(contextual) > 0
    ref = load_eval_prompts("alpaca-eval")[0]
    assert ref.reference and ref.expected_label == "safe"
    mmlu = load_eval_prompts("mmlu")[0]
    assert mmlu.choices is not None and len(mmlu.choices) == 4 and mmlu.gold in range(4)


def test_data_list_cli(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = cli("data", "list")
    assert res.code == 0, res.err
    for name in ("dolly-15k", "saferpaca-safety", "xstest-v2-safe", "advbench"):
        assert name in res.out
    assert "expected" not in res.out and "missing" not in res.out


def test_data_list_reports_missing_files(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SAFEDOSE_DATA", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "300")
    res = cli("data", "list")
    assert res.code == 0
    assert "missing" in res.out


def test_data_show_cli(cli) -> None:  # type: ignore[no-untyped-def]
    res = cli("data", "show", "saferpaca-safety", "--n", "2")
    assert res.code == 0, res.err
    assert "Holocaust" in res.out and "CC BY-NC 4.0" in res.out
