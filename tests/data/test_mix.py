import json
from pathlib import Path

import pytest

from safedose.data import mix, train_file, val_file
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


def test_same_seed_is_byte_identical_and_other_seed_differs(registry_mix: Path, tmp_path: Path) -> None:
    mix(base="dolly-15k", base_size=2000, safety="saferpaca-safety", doses=[500, 0, 100], out=tmp_path / "a", seed=0)
    for name in ("mix-n0.train.jsonl", "mix-n500.train.jsonl", "mix-n100.val.jsonl", "datasheet.json"):
        assert (tmp_path / "a" / name).read_bytes() == (registry_mix / name).read_bytes()
    mix(base="dolly-15k", base_size=2000, safety="saferpaca-safety", doses=[100], out=tmp_path / "b", seed=1)
    assert ids(train_file(tmp_path / "b", 100)) != ids(train_file(registry_mix, 100))


def test_datasheet(registry_mix: Path) -> None:
    sheet = json.loads((registry_mix / "datasheet.json").read_text())
    assert sheet["per_dose"]["100"]["by_source"] == {"dolly-15k": 2000, "saferpaca-safety": 100}
    assert sheet["dropped"]["base"]["exact_duplicate"] == 15  # Dolly's 15 upstream repeats
    assert sheet["dropped"]["base"]["contamination"] > 0
    assert sheet["base"]["licence"] == "CC BY-SA 3.0" and sheet["safety"]["licence"] == "CC BY-NC 4.0"
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
    result = mix(base=str(b), base_size=20, safety=str(s), doses=[0, 10], out=tmp_path / "o", val_size=5)
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
    result = mix(base=str(b), base_size=15, safety=str(s), doses=[3], out=tmp_path / "o", val_size=5, max_tokens=64)
    assert result.datasheet["dropped"]["base"]["too_long"] == 5
    assert result.datasheet["tokenizer"] == "smollm2-135m-instruct"


def test_unknown_format_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SafedoseError, match="unknown format 'question'"):
        mix(base="alpaca-tiny", base_size=10, safety="saferpaca-safety", doses=[1], out=tmp_path, format="question")
