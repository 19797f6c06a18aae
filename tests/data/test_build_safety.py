"""`safedose data build-safety`: the offline preference path, counts, mixing, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safedose.cli import main
from safedose.data import build_safety, mix, train_file
from safedose.data._build_safety import datasheet_path, is_english
from safedose.errors import SafedoseError

PREF = "preference:hh-rlhf-harmless"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build") / "safety.jsonl"
    assert main(["data", "build-safety", "--prompts", "hh-rlhf-harmless", "--responder", PREF, "--out", str(out)]) == 0
    return out


def test_preference_counts_add_up(built: Path) -> None:
    sheet = json.loads(datasheet_path(built).read_text())
    c, d = sheet["counts"], sheet["dropped"]
    assert c["prompts_read"] == c["after_dedup"] + sum(d["dedup"].values())
    assert c["after_dedup"] == c["after_decontamination"] + sum(d["contamination"].values())
    assert c["after_decontamination"] == c["asked"] + d["limit_n"]
    assert c["asked"] == c["kept"] + sum(d["filter"].values())
    assert c["prompts_read"] == c["kept"] + sum(d["dedup"].values()) + sum(d["contamination"].values()) + d[
        "limit_n"
    ] + sum(d["filter"].values())
    rows = [json.loads(line) for line in built.read_text().splitlines()]
    assert len(rows) == c["kept"] > 0
    assert all(r["input"] == "" and r["instruction"] and r["output"] for r in rows)
    assert set(sheet["judges"]) == {"refusal", "harm"} and all("@" in j for j in sheet["judges"].values())
    assert len(sheet["output_sha256"]) == 64


def test_output_mixes(built: Path, tmp_path: Path) -> None:
    kept = json.loads(datasheet_path(built).read_text())["counts"]["kept"]
    dose = min(10, kept)
    mix(base="dolly-15k", base_size=50, safety=str(built), doses=[0, dose], out=tmp_path / "m", val_size=5,
        test_size=5)  # fmt: skip
    rows = [json.loads(line) for line in train_file(tmp_path / "m", dose).read_text().splitlines()]
    assert len(rows) == 50 + dose


def test_rerun_uses_judge_cache(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safedose.judges

    before = json.loads(datasheet_path(built).read_text())
    real = safedose.judges.get_judge

    def no_judging(name: str) -> object:
        judge = real(name)

        def fail(rows: object) -> object:
            raise AssertionError(f"judge {name} asked again")

        judge.judge = fail  # type: ignore[method-assign]
        return judge

    monkeypatch.setattr(safedose.judges, "get_judge", no_judging)
    after = build_safety(prompts=["hh-rlhf-harmless"], responder=PREF, out=built)
    assert after["counts"] == before["counts"] and after["output_sha256"] == before["output_sha256"]


def test_is_english() -> None:
    assert is_english("I can't help with that.")
    assert not is_english("\u6211\u4e0d\u80fd\u5e2e\u52a9\u4f60\u3002")
    assert not is_english("1234 !!")


def test_bad_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n")
    with pytest.raises(SafedoseError):
        build_safety(prompts=[str(empty)], responder=PREF, out=tmp_path / "o.jsonl")
    assert main(["data", "build-safety", "--prompts", str(empty), "--responder", PREF,
                 "--out", str(tmp_path / "o.jsonl")]) == 2  # fmt: skip
    with pytest.raises(SafedoseError, match="only preference"):
        build_safety(prompts=["hh-rlhf-harmless"], responder="vllm:gpt-x", out=tmp_path / "o.jsonl")
    with pytest.raises(SafedoseError, match="kept nothing"):
        build_safety(prompts=["hh-rlhf-harmless"], responder=PREF, out=tmp_path / "o.jsonl", n=30, max_harm=0.0)
    with pytest.raises(SafedoseError, match="no usable answers"):
        prompts = tmp_path / "p.txt"
        prompts.write_text("Tell me something entirely unrelated to any conversation please\n")
        build_safety(prompts=[str(prompts)], responder=PREF, out=tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()
