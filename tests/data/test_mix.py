import json
from pathlib import Path

import pytest

from safedose.data import default_contamination_sets, mix, test_file, train_file, val_file
from safedose.errors import SafedoseError
from tests.conftest import alpaca_rows, write_json


def read(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ids(path: Path, source: str | None = None) -> set[str]:
    return {r["id"] for r in read(path) if source is None or r["source"] == source}


@pytest.fixture(scope="module")
def registry_mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mix")
    mix(base="dolly-15k", base_size=2000, safety="saferpaca-safety", doses=[0, 100, 500], out=out, seed=0)
    return out


def test_exact_n_nested_and_shared_base(registry_mix: Path) -> None:
    out = registry_mix
    safety = {n: ids(train_file(out, n), "saferpaca-safety") for n in (0, 100, 500)}
    assert [len(safety[n]) for n in (0, 100, 500)] == [0, 100, 500]
    assert safety[0] < safety[100] < safety[500]
    base = [ids(train_file(out, n), "dolly-15k") for n in (0, 100, 500)]
    assert len(base[0]) == 2000 and base[0] == base[1] == base[2]
    val = ids(val_file(out, 0))
    assert len(val) == 200 and val == ids(val_file(out, 500))
    assert not val & (base[0] | safety[500])
    test = ids(test_file(out))
    assert len(test) == 200 and ids(test_file(out), "dolly-15k") == test
    assert not test & (val | base[0] | safety[500])


def test_same_seed_is_byte_identical_and_other_seed_differs(registry_mix: Path, tmp_path: Path) -> None:
    mix(base="dolly-15k", base_size=2000, safety="saferpaca-safety", doses=[500, 0, 100], out=tmp_path / "a", seed=0)
    for name in ("mix-n0.train.jsonl", "mix-n500.train.jsonl", "mix-n100.val.jsonl", "base-test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (registry_mix / name).read_bytes()
    assert (tmp_path / "a" / "datasheet.json").read_bytes() == (registry_mix / "datasheet.json").read_bytes()
    mix(base="dolly-15k", base_size=2000, safety="saferpaca-safety", doses=[100], out=tmp_path / "b", seed=1)
    assert ids(train_file(tmp_path / "b", 100)) != ids(train_file(registry_mix, 100))


def test_datasheet(registry_mix: Path) -> None:
    sheet = json.loads((registry_mix / "datasheet.json").read_text())
    assert sheet["per_dose"]["100"]["by_source"] == {"dolly-15k": 2000, "saferpaca-safety": 100}
    assert sheet["dropped"]["base"]["exact_duplicate"] == 15  # Dolly's 15 upstream repeats
    assert sheet["dropped"]["base"]["contamination"] > 0
    assert sheet["base"]["licence"] == "CC BY-SA 3.0" and sheet["safety"]["licence"] == "CC BY-NC 4.0"
    splits = sheet["base_splits"]
    assert {k: splits[k]["rows"] for k in ("val", "train", "test")} == {"val": 200, "train": 2000, "test": 200}
    assert "checkpoint" in splits["val"]["use"] and "capability" in splits["test"]["use"]
    assert splits["test"]["file"] == "base-test.jsonl" and "base-test.jsonl" in sheet["files"]
    assert sheet["contamination"]["eval_sets"] == default_contamination_sets()
    import hashlib

    for name, digest in sheet["files"].items():
        assert hashlib.sha256((registry_mix / name).read_bytes()).hexdigest() == digest


def test_dedup_within_and_across_pools_and_contamination(tmp_path: Path) -> None:
    base = alpaca_rows(30, "Base")
    base.append(dict(base[0]))  # exact duplicate
    base.append({**base[1], "instruction": "  BASE number 1, about topic 7!", "output": "other"})  # normalised
    safety = alpaca_rows(10, "Safety", output="I cannot help with that")
    base.append(dict(safety[0]))  # across pools: leaves the base pool
    base.append({"instruction": "How can I kill a Python process?", "input": "", "output": "Use kill."})
    base.append({"instruction": "Please explain: how can I kill a python process on Linux", "input": "", "output": "x"})
    b = write_json(tmp_path / "base.json", base)
    s = write_json(tmp_path / "safety.json", safety)
    result = mix(base=str(b), base_size=20, safety=str(s), doses=[0, 10], out=tmp_path / "o", val_size=5,
                 test_size=5)  # fmt: skip
    dropped = result.datasheet["dropped"]["base"]
    assert dropped == {"exact_duplicate": 2, "normalised_duplicate": 1, "contamination": 2}
    assert result.datasheet["contamination"]["dropped_by_eval_set"]["base"] == {"xstest-v2-safe": 2}
    texts = {r["instruction"] for r in read(train_file(tmp_path / "o", 10))}
    assert not any("Python process" in t for t in texts)


def test_max_tokens_drops_long_rows(tmp_path: Path, smollm2_dir: Path) -> None:
    rows = alpaca_rows(20, "Short")
    rows += [{"instruction": f"Long {i}", "input": "", "output": "word " * 300} for i in range(5)]
    b = write_json(tmp_path / "b.json", rows)
    s = write_json(tmp_path / "s.json", alpaca_rows(3, "Safe"))
    result = mix(base=str(b), base_size=15, safety=str(s), doses=[3], out=tmp_path / "o", val_size=5, test_size=0,
                 max_tokens=64)  # fmt: skip
    assert result.datasheet["dropped"]["base"]["too_long"] == 5
    assert result.datasheet["tokenizer"] == "smollm2-135m-instruct"


def test_unknown_format_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SafedoseError, match="unknown format 'questions'"):
        mix(base="alpaca-tiny", base_size=10, safety="saferpaca-safety", doses=[1], out=tmp_path, format="questions")
    with pytest.raises(SafedoseError, match="format question: question-form safety prompts need a source"):
        mix(base="alpaca-tiny", base_size=10, safety="saferpaca-safety", doses=[1], out=tmp_path, format="question")


def test_adding_a_dose_leaves_every_existing_file_unchanged(registry_mix: Path, tmp_path: Path) -> None:
    out = tmp_path / "more"
    mix(base="dolly-15k", base_size=2000, safety="saferpaca-safety", doses=[0, 100, 250, 500], out=out, seed=0)
    names = [f"mix-n{n}.{part}.jsonl" for n in (0, 100, 500) for part in ("train", "val")] + ["base-test.jsonl"]
    for name in names:
        assert (out / name).read_bytes() == (registry_mix / name).read_bytes(), name
    assert ids(train_file(registry_mix, 100)) < ids(train_file(out, 250)) < ids(train_file(registry_mix, 500))


def test_base_pool_too_small_names_the_base_source(tmp_path: Path) -> None:
    b = write_json(tmp_path / "base.json", alpaca_rows(30, "Base"))
    s = write_json(tmp_path / "safety.json", alpaca_rows(5, "Safety"))
    args = {"base": str(b), "safety": str(s), "doses": [0, 5], "eval_sets": [], "val_size": 5}
    result = mix(**args, base_size=20, test_size=5, out=tmp_path / "fits")  # type: ignore[arg-type]
    assert [len(read(p)) for p in (val_file(result.out, 0), test_file(result.out))] == [5, 5]
    message = r"^\S*base.json: --base-size 20 \+ --val-size 5 \+ --test-size 6 is larger than the base pool \(30 rows"
    with pytest.raises(SafedoseError, match=message):
        mix(**args, base_size=20, test_size=6, out=tmp_path / "o")  # type: ignore[arg-type]
    assert not (tmp_path / "o").exists()


def test_file_and_hf_eval_sets_decontaminate_and_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    base = alpaca_rows(30, "Base")
    base.append({"instruction": "Describe the secret recipe of the house special soup", "input": "", "output": "x"})
    base.append({"instruction": "Name three rivers that flow through Paris", "input": "", "output": "y"})
    b = write_json(tmp_path / "base.json", base)
    s = write_json(tmp_path / "safety.json", alpaca_rows(5, "Safety"))
    evals = tmp_path / "my-evals.jsonl"
    evals.write_text(json.dumps({"prompt": "Describe the secret recipe of the house special soup."}) + "\n")
    hub = {"org/evals": [{"prompt": "name three rivers that flow through Paris!"}]}
    monkeypatch.setattr(datasets, "load_dataset", lambda ident, split: hub[ident])
    eval_sets = [str(evals), "hf:org/evals", "xstest-v2-safe"]
    result = mix(base=str(b), base_size=20, safety=str(s), doses=[5], out=tmp_path / "o", val_size=5, test_size=5,
                 eval_sets=eval_sets)  # fmt: skip
    sheet = result.datasheet
    assert sheet["contamination"]["eval_sets"] == eval_sets
    assert sheet["contamination"]["dropped_by_eval_set"]["base"] == {str(evals): 1, "hf:org/evals": 1}
    assert sheet["dropped"]["base"]["contamination"] == 2
    kept = [r["instruction"] for part in ("train", "val") for r in read(result.out / f"mix-n5.{part}.jsonl")]
    kept += [r["instruction"] for r in read(test_file(result.out))]
    assert len(kept) == 30 + 5 and not any("soup" in t or "Paris" in t for t in kept)
