"""Every kind of bad input: exit code 2, one line naming the file and the record, no output left behind."""

import gzip
import json
from pathlib import Path

import pytest

from tests.conftest import alpaca_rows, write_json


def run_mix(cli, tmp_path: Path, base: Path | str, safety: Path | str = "saferpaca-safety", n: str = "0,5"):  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    res = cli("data", "mix", "--base", base, "--base-size", "10", "--safety", safety, "--n", n,
              "--val-size", "5", "--test-size", "5", "--out", out)  # fmt: skip
    assert res.code == 2, res.out + res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not out.exists(), "a failed mix must leave nothing behind"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "no staging leftovers"
    return lines[0]


def test_malformed_json(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "b.json"
    f.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": ]')
    msg = run_mix(cli, tmp_path, f)
    assert f"{f}: line 2: malformed JSON" in msg


def test_malformed_jsonl(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "b.jsonl"
    f.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n{not json}\n")
    assert f"{f}: line 2: malformed JSON" in run_mix(cli, tmp_path, f)


def test_malformed_csv(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "b.csv"
    f.write_text('instruction,output\n"a,b\n')
    assert f"{f}: line" in run_mix(cli, tmp_path, f) and "malformed CSV" in run_mix(cli, tmp_path, f)


def test_csv_row_with_extra_columns(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "b.csv"
    f.write_text("instruction,output\na,b\nc,d,e\n")
    assert f"{f}: row 2: expected 2 columns" in run_mix(cli, tmp_path, f)


def test_missing_field(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = write_json(tmp_path / "b.json", [*alpaca_rows(3), {"instruction": "no answer"}])
    assert f"{f}: record 4: missing field 'output' / 'response'" in run_mix(cli, tmp_path, f)


def test_empty_instruction(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = write_json(tmp_path / "b.json", [*alpaca_rows(2), {"instruction": "  ", "output": "x"}])
    assert f"{f}: record 3: empty instruction" in run_mix(cli, tmp_path, f)


def test_wrong_type(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = write_json(tmp_path / "b.json", [*alpaca_rows(2), {"instruction": "x", "output": 42}])
    assert f"{f}: record 3: field 'output' must be a string, got int" in run_mix(cli, tmp_path, f)


def test_invalid_utf8(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "b.jsonl.gz"
    good = json.dumps({"instruction": "a", "output": "b"}).encode()
    with gzip.open(f, "wb") as g:
        g.write(good + b"\n" + good.replace(b'"b"', b'"\xff\xfe"') + b"\n")
    assert f"{f}: line 2: invalid UTF-8" in run_mix(cli, tmp_path, f)


def test_duplicate_ids(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = [{**r, "id": f"r{i}"} for i, r in enumerate(alpaca_rows(4))]
    rows[3]["id"] = "r1"
    f = write_json(tmp_path / "b.json", rows)
    assert f"{f}: record 4: duplicate id 'r1'" in run_mix(cli, tmp_path, f)


def test_dose_larger_than_pool(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    b = write_json(tmp_path / "b.json", alpaca_rows(40))
    s = write_json(tmp_path / "s.json", alpaca_rows(8, "Safety"))
    msg = run_mix(cli, tmp_path, b, s, n="0,5,50")
    assert f"{s}: dose 50 is larger than the safety pool (8 rows after filtering)" in msg


def test_unknown_dataset_name_suggests(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    msg = run_mix(cli, tmp_path, "dolly15k")
    assert "unknown dataset 'dolly15k'; did you mean 'dolly-15k'?" in msg


def test_unreadable_data_root(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SAFEDOSE_DATA", str(tmp_path / "nope"))
    msg = run_mix(cli, tmp_path, "dolly-15k")
    assert f"{tmp_path / 'nope'}: data root from $SAFEDOSE_DATA is not a readable directory" in msg


def test_bad_dose_list(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert "--n expects comma-separated integers" in run_mix(cli, tmp_path, "alpaca-tiny", n="0,ten")
