"""RUN/manifest.json: one typed reader, and a writer that keeps the file's text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from safedose.errors import SafedoseError
from safedose.files import write_json
from safedose.run import CellKey, Choice, Manifest, SearchLog, manifest_path, read_manifest, write_manifest
from tests.run.manifests import cell_entry, manifest_dict


def one_source_manifest() -> dict[str, Any]:
    """What a one-source sweep with an attack and a sample wrote, every key in its order."""
    return {
        "schema_version": 2,
        "config": {"name": "demo", "model": "tiny", "base": "dolly-15k", "doses": [0, 30], "seeds": [0, 1],
                   "formats": ["instruction"], "decoding": {"temperature": 0.0, "dtype": "auto"},
                   "target": {"harmful_compliance": {"max": 0.05}}},
        "model_hash": "a" * 64,
        "generation_dtype": "bf16",
        "train_recipe_version": 3,
        "mixes": {
            "seed0-instruction": {"dir": "data/seed0-instruction/abc", "fingerprint_inputs": {
                "mix_recipe_version": 2, "seed": 0, "format": "instruction", "max_tokens": None,
                "contamination": ["advbench"], "forms": {"questions_file": "q.jsonl"}}},
            "seed1-instruction": {"dir": "data/seed1-instruction/def",
                                  "fingerprint_inputs": {"mix_recipe_version": 2, "seed": 1}},
        },
        "cells": {"n0-s0-instruction": cell_entry(0), "n30-s0-instruction": cell_entry(30),
                  "n30-s1-instruction": cell_entry(30, seed=1)},
        "sampling": {
            "limit": 20, "seed": 0,
            "sets": {"advbench": {"pool": 520, "n": 20, "by_category": {"(none)": 20}, "ids": ["a1", "a2"]}},
            "attacks": {"prefill": {"family": "prefill", "version": 1,
                                    "sets": {"advbench": {"prompts": 20, "attacked": 20, "asked": 40}}}},
        },
        "contamination_sets": ["advbench", "xstest-v2-safe", "my-set.jsonl"],
        "data_root": "/home/me/.cache/safedose/data",
        "data_sha256": {"advbench": ["b" * 64], "dolly-15k": ["c" * 64, "d" * 64]},
        "judges": {"refusal": "refusal@2", "strmatch": "strmatch@1", "harm": "harm@3"},
        "versions": {"safedose": "0.4.0", "torch": "2.5.1", "lm_eval": "0.4.5"},
        "git_commit": "0123abcd",
    }  # fmt: skip


def write(run: Path, data: Any) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    write_json(manifest_path(run), data)
    return run


def test_a_manifest_read_and_written_back_keeps_its_text(tmp_path: Path) -> None:
    run = write(tmp_path / "run", one_source_manifest())
    before = manifest_path(run).read_text(encoding="utf-8")
    manifest = read_manifest(run)
    write_manifest(run, manifest)
    assert manifest_path(run).read_text(encoding="utf-8") == before
    assert list(json.loads(before)) == list(Manifest.model_fields)[:-1]  # every field but `search`, in order


def test_fields_read_typed(tmp_path: Path) -> None:
    manifest = read_manifest(write(tmp_path / "run", one_source_manifest()))
    cell = manifest.cells["n30-s1-instruction"]
    assert cell.key == CellKey(dose=30, seed=1, format="instruction") and cell.key.name == "n30-s1-instruction"
    assert cell.adapter == "adapters/n30-s1-instruction-fp" and cell.safety is None
    assert manifest.mixes["seed0-instruction"].fingerprint_inputs["forms"] == {"questions_file": "q.jsonl"}
    assert manifest.sampling.sets["advbench"].ids == ["a1", "a2"]
    assert manifest.sampling.attacks["prefill"].sets["advbench"].asked == 40
    assert manifest.config["target"] == {"harmful_compliance": {"max": 0.05}}
    assert manifest.generation_dtype == "bf16" and manifest.judges["harm"] == "harm@3" and manifest.search is None


def test_cells_of_several_safety_sources_keep_their_source(tmp_path: Path) -> None:
    cell = {"dose": 30, "seed": 0, "format": "instruction", "safety": "hh", "fingerprint": "fp",
            "adapter": "adapters/n30-s0-instruction-hh-fp"}  # fmt: skip
    cells = {"n30-s0-instruction-hh": cell}
    run = write(tmp_path / "run", manifest_dict(cells=cells))
    before = manifest_path(run).read_text(encoding="utf-8")
    manifest = read_manifest(run)
    assert manifest.cells["n30-s0-instruction-hh"].key.name == "n30-s0-instruction-hh"
    write_manifest(run, manifest)
    assert manifest_path(run).read_text(encoding="utf-8") == before


def test_the_search_log_round_trips(tmp_path: Path) -> None:
    run = write(tmp_path / "run", manifest_dict())
    log = SearchLog(start=[0, 200], budget=5, max_width=50, cells_per_dose=1, doses=[0, 40, 200], cells=3,
                    choices=[Choice(dose=40, reason="bisects", interval_before=[10, None], estimate_before=None)],
                    stop=None, estimate=40, interval=[20, 90])  # fmt: skip
    write_manifest(run, read_manifest(run).model_copy(update={"search": log}))
    data = json.loads(manifest_path(run).read_text(encoding="utf-8"))
    assert list(data)[-1] == "search" and data["search"]["max_width"] == 50.0
    assert read_manifest(run).search == log


def test_a_manifest_from_before_the_attacks_axis_reads(tmp_path: Path) -> None:
    old = manifest_dict(sampling={"limit": None, "seed": 0, "sets": {}})
    assert read_manifest(write(tmp_path / "run", old)).sampling.attacks == {}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (manifest_dict(cells={"n0-s0-instruction": {"dose": 0, "seed": 0, "format": "instruction", "adapter": "a"}}),
         "cells.n0-s0-instruction.fingerprint: Field required"),
        ({**manifest_dict(), "notes": "hand-edited"}, "notes: Extra inputs are not permitted"),
        (manifest_dict(generation_dtype=None), "generation_dtype: Input should be a valid string"),
        ([1, 2], "(top level): Input should be a valid dictionary or instance of Manifest"),
    ],
)  # fmt: skip
def test_a_manifest_that_does_not_validate_is_a_one_line_error(tmp_path: Path, data: Any, problem: str) -> None:
    run = write(tmp_path / "run", data)
    with pytest.raises(SafedoseError) as caught:
        read_manifest(run)
    message = str(caught.value)
    assert message == f"{manifest_path(run)}: not a safedose manifest ({problem})"


def test_a_missing_or_malformed_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(SafedoseError, match=r"no manifest\.json; run `safedose sweep` first"):
        read_manifest(run)
    manifest_path(run).write_text("{", encoding="utf-8")
    with pytest.raises(SafedoseError, match=r"manifest\.json: malformed JSON"):
        read_manifest(run)
