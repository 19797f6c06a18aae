"""The safety-source axis: settings and labels, fingerprints (unchanged with one source), the same base rows for every
source, built sources, and a tiny sweep comparing two sources on a random model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from safedose.data import load_instructions, test_file, train_file
from safedose.errors import SafedoseError
from safedose.sweep import SweepConfig, check_names, load_sweep_config, sweep
from safedose.sweep._fingerprints import cells_of, digest, mix_dir, mix_inputs, safety_file, source_id
from tests.sweep.test_formats import BASE_CONFIG, OLD_KEYS
from tests.sweep.test_sweep import write_config

EXAMPLE_SAFETY = Path(__file__).parents[2] / "examples" / "my_safety.jsonl"
BUILT = {"build": {"label": "hh", "prompts": ["hh-rlhf-harmless"], "responder": "preference:hh-rlhf-harmless"}}


def test_safety_sources_are_checked(tmp_path: Path) -> None:
    path = write_config(tmp_path, tmp_path / "nomodel", tmp_path / "run")
    for override, needle in [
        ("safety=[saferpaca-safety,saferpaca-safety]", "'saferpaca-safety' is listed twice"),
        ("safety=[a/x.jsonl,b/x.jsonl]", "both labelled 'x'"),
        ("safety=[]", "at least one safety source"),
        ("safety=[saferpaca-safety,{build: {label: b, prompts: [p], responder: nope}}]", "responder 'nope'"),
        ("safety=[saferpaca-safety,{build: {label: 'a b', prompts: [p], responder: 'hf:m'}}]", "label"),
    ]:
        with pytest.raises(SafedoseError, match=needle):
            load_sweep_config(path, [override])
    for override, needle in [
        (f"safety=[saferpaca-safety,{tmp_path / 'missing.jsonl'}]", "safety: "),
        (f"safety=[saferpaca-safety,{EXAMPLE_SAFETY}]",
         r"my_safety.jsonl: 36 rows, fewer than the largest dose \(50\)"),
        ("safety=[saferpaca-safety,{build: {label: b, prompts: [hh-rlhf-harmless], responder: 'hf:m', n: 20}}]",
         r"n 20 is fewer than the largest dose \(50\)"),
    ]:  # fmt: skip
        with pytest.raises(SafedoseError, match=needle):
            check_names(load_sweep_config(path, [override, "doses=[0,50]"]))
    assert not (tmp_path / "run").exists()


def test_one_source_keeps_its_fingerprints_and_names_and_two_add_a_label() -> None:
    one = SweepConfig.model_validate({**BASE_CONFIG, "safety": ["saferpaca-safety"]})
    assert one.safety_sources == {None: "saferpaca-safety"}
    assert sorted(mix_inputs(one, 0, "instruction")) == OLD_KEYS
    assert digest(mix_inputs(one, 0, "instruction")) == digest(mix_inputs(SweepConfig.model_validate(BASE_CONFIG), 0,
                                                                           "instruction"))  # fmt: skip
    assert [c.name for c in cells_of(one)] == ["n0-s0-instruction", "n50-s0-instruction"]

    two = SweepConfig.model_validate({**BASE_CONFIG, "safety": ["saferpaca-safety", str(EXAMPLE_SAFETY), BUILT]})
    assert list(two.safety_sources) == ["saferpaca-safety", "my_safety", "hh"]
    assert [c.name for c in cells_of(two)][:3] == ["n0-s0-instruction-saferpaca-safety",
                                                   "n50-s0-instruction-saferpaca-safety",
                                                   "n0-s0-instruction-my_safety"]  # fmt: skip
    inputs = {label: mix_inputs(two, 0, "instruction", label) for label in two.safety_sources}
    assert len({digest(i) for i in inputs.values()}) == 3
    assert inputs["hh"]["safety"]["build"]["responder"] == "preference:hh-rlhf-harmless"
    assert [e.get("name") for e in inputs["hh"]["base_excludes"]] == ["saferpaca-safety", None]
    run = Path("/run")
    assert mix_dir(run, two, 0, "instruction", "hh").parent.name == "seed0-instruction-hh"
    built = safety_file(two, run, two.safety_sources["hh"])
    assert built == f"/run/data/sources/hh-{digest(source_id(two.safety_sources['hh']))[:12]}.jsonl"
    changed = SweepConfig.model_validate({**BASE_CONFIG, "safety": ["saferpaca-safety", {"build": {
        **BUILT["build"], "system": "Refuse."}}]})  # fmt: skip
    assert safety_file(changed, run, changed.safety_sources["hh"]) != built


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_tiny_sweep_comparing_two_safety_sources(tiny_model: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = write_config(tmp_path, tiny_model, run)
    data = yaml.safe_load(path.read_text())
    data["safety"] = ["saferpaca-safety", str(EXAMPLE_SAFETY)]
    data["eval_sets"] = {"harm": ["I-MaliciousInstructions"], "over_refusal": ["xstest-v2-safe"], "limit": 6,
                         "capability": None}  # fmt: skip
    data["judges"] = {"refusal": "strmatch", "strmatch": None, "harm": None, "moderation": None}
    path.write_text(yaml.safe_dump(data))
    result = sweep(load_sweep_config(path))

    config = load_sweep_config(path)
    mixes = {label: mix_dir(run, config, 0, "instruction", label) for label in config.safety_sources}
    base = {label: [r for r in _rows(train_file(out, 8)) if r["source"] == "dolly-15k"] for label, out in mixes.items()}
    assert len(base["saferpaca-safety"]) == 16
    assert sorted(r["id"] for r in base["saferpaca-safety"]) == sorted(r["id"] for r in base["my_safety"])
    assert _rows(test_file(mixes["saferpaca-safety"])) == _rows(test_file(mixes["my_safety"]))
    mine = {r.id for r in load_instructions(str(EXAMPLE_SAFETY))}
    trained = [r for r in _rows(train_file(mixes["my_safety"], 8)) if r["source"] != "dolly-15k"]
    assert len(trained) == 8 and {r["id"] for r in trained} <= mine

    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["mixes"]) == {"seed0-instruction-saferpaca-safety", "seed0-instruction-my_safety"}
    assert {c["safety"] for c in manifest["cells"].values()} == {"saferpaca-safety", "my_safety"}
    adapters = {name: c["adapter"] for name, c in manifest["cells"].items()}
    # dose 0 holds the same base rows for both sources: one training run serves both cells
    assert adapters["n0-s0-instruction-my_safety"] == adapters["n0-s0-instruction-saferpaca-safety"]
    assert adapters["n8-s0-instruction-my_safety"] != adapters["n8-s0-instruction-saferpaca-safety"]
    assert len(list((run / "adapters").iterdir())) == 3
    judged = _rows(run / "results" / "judged.jsonl")
    assert {(r["variant"], r.get("safety")) for r in judged if r["dose"] is not None} == {
        (f"n{d}-s0-instruction-{s}", s) for d in (0, 8) for s in ("saferpaca-safety", "my_safety")}  # fmt: skip
    rows = result.metrics["cells"]
    assert {r.get("safety") for r in rows if r["dose"] is not None} == {"saferpaca-safety", "my_safety"}
    trend = {(t["eval_set"], t.get("safety")) for t in result.metrics["trend"]}
    assert {("I-MaliciousInstructions", "my_safety"), ("I-MaliciousInstructions", "saferpaca-safety")} <= trend
    compared = result.metrics["sources"]
    assert compared["sources"] == ["saferpaca-safety", "my_safety"] and compared["reference"] == "saferpaca-safety"
    assert {(d["dose"], d["from_safety"], d["to_safety"]) for d in compared["differences"]} == {
        (8, "saferpaca-safety", "my_safety")}  # dose 0 holds no safety rows  # fmt: skip
    rec = json.loads((run / "results" / "recommendation.json").read_text())
    assert rec["safety"] == "saferpaca-safety" and [r["safety"] for r in rec["other_sources"]] == ["my_safety"]
    assert "By safety source: with saferpaca-safety, " in rec["text"] and "; with my_safety, " in rec["text"]
    html = (run / "report" / "index.html").read_text()
    assert "Safety sources" in html and "my_safety" in html and (run / "report" / "sources.png").is_file()


def test_a_built_source_is_built_once_with_the_sweep_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safedose.sweep._recipe import _build_source

    config = SweepConfig.model_validate({**BASE_CONFIG, "safety": ["saferpaca-safety", BUILT],
                                         "judges": {"refusal": "strmatch", "harm": None}})  # fmt: skip
    calls: list[dict[str, Any]] = []

    def build_safety(**settings: Any) -> dict[str, Any]:
        calls.append(settings)
        rows = EXAMPLE_SAFETY.read_text().splitlines()[: settings["n"]]
        Path(settings["out"]).write_text("".join(line + "\n" for line in rows))
        return {}

    monkeypatch.setattr("safedose.build.build_safety", build_safety)
    source = config.safety_sources["hh"]
    out = Path(safety_file(config, tmp_path, source))
    for _ in range(2):
        _build_source(config, source, out)  # type: ignore[arg-type]
    assert len(calls) == 1 and out.parent == tmp_path / "data" / "sources"
    asked = (calls[0]["prompts"], calls[0]["responder"], calls[0]["n"])
    assert asked == (["hh-rlhf-harmless"], "preference:hh-rlhf-harmless", 50)
    assert (calls[0]["refusal_judge"], calls[0]["harm_judge"], calls[0]["prompt_judge"]) == ("refusal", "harm",
                                                                                            "prompt-harm")  # fmt: skip
    strict = SweepConfig.model_validate({**BASE_CONFIG, "safety": ["saferpaca-safety", {"build": {
        **BUILT["build"], "refusal_judge": "strmatch"}}]})  # fmt: skip
    assert safety_file(strict, tmp_path, strict.safety_sources["hh"]) != str(out)  # the judges name the source
    assert len(load_instructions(str(out))) == 36  # the example file has 36 rows: fewer than asked, as a stub
