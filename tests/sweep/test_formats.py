"""The sweep's format axis: settings, fingerprints (unchanged without formats), and a tiny sweep over instruction and
question form on a random model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from safedose.data import load_instructions, train_file
from safedose.errors import SafedoseError
from safedose.files import sha256_file
from safedose.sweep import SweepConfig, check_names, load_sweep_config, sweep
from safedose.sweep._fingerprints import digest, mix_dir, mix_inputs
from tests.sweep.test_sweep import write_config

BASE_CONFIG: dict[str, Any] = {
    "name": "fp", "base_size": 100, "doses": [0, 50], "train": {"template": "alpaca"},
    "eval_sets": {"harm": ["I-MaliciousInstructions"], "over_refusal": ["xstest-v2-safe"]},
}  # fmt: skip
OLD_KEYS = ["base", "base_size", "catalog_version", "contamination", "format", "max_tokens", "mix_recipe_version",
            "safety", "seed", "test_size", "tokenizer", "val_size"]  # fmt: skip


def questions_file(path: Path) -> Path:
    """Question forms of every saferpaca-safety row by id ("How can I <instruction>?")."""
    rows = [{"id": r.id, "question": f"How can I {r.instruction[0].lower()}{r.instruction[1:].rstrip('. ')}?"}
            for r in load_instructions("saferpaca-safety")]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_format_settings_are_checked(tmp_path: Path) -> None:
    path = write_config(tmp_path, tmp_path / "nomodel", tmp_path / "run")
    questions = questions_file(tmp_path / "q.jsonl")
    for overrides, needle in [
        (["formats=[instruction,question]"], "need question-form safety prompts: set format_responder"),
        (["formats=[instruction,instruction]"], "listed twice"),
        (["formats=[questions]"], "formats.0"),
        ([f"safety_questions={questions}", "format_responder=hf:m"], "not both"),
    ]:
        with pytest.raises(SafedoseError, match=needle):
            load_sweep_config(path, overrides)
    config = load_sweep_config(path, ["formats=[instruction,question,mixed]", f"safety_questions={questions}"])
    assert config.formats == ["instruction", "question", "mixed"] and config.pairs_forms
    for overrides, needle in [
        (["formats=[question]", "format_responder=nope:x"], "format_responder: responder 'nope:x'"),
        (["formats=[question]", "format_responder=preference:hh-rlhf-harmless"], "fixed replies cannot rewrite"),
        (["formats=[question]", f"safety_questions={tmp_path / 'missing.jsonl'}"], "safety_questions: "),
    ]:
        with pytest.raises(SafedoseError, match=needle):
            check_names(load_sweep_config(path, overrides))


def test_fingerprints_without_formats_are_those_of_earlier_runs() -> None:
    """A config that does not pair forms keeps the mix fingerprints it had before the format axis existed."""
    config = SweepConfig.model_validate(BASE_CONFIG)
    assert sorted(mix_inputs(config, 0, "instruction")) == OLD_KEYS
    assert digest(mix_inputs(config, 0, "instruction")) == (
        "808f5d211aa1d1f92b2881937ddb380720f9c654a395409e3f20ce7e650937af"
    )
    assert digest(mix_inputs(config, 1, "instruction")) == (
        "04bf60fdd9076bff7efd79c0734c4d121a1704adbe0196e9e322f9ff5247e16c"
    )


def test_paired_fingerprints_name_the_source_of_the_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = SweepConfig.model_validate(BASE_CONFIG)
    questions = questions_file(tmp_path / "q.jsonl")
    paired = SweepConfig.model_validate({**BASE_CONFIG, "formats": ["instruction", "question"],
                                         "safety_questions": str(questions)})  # fmt: skip
    inputs = {f: mix_inputs(paired, 0, f) for f in paired.formats}
    forms = inputs["question"]["forms"]
    assert forms["rewrite_version"] == 1 and forms["questions_file"]["sha256"] == sha256_file(questions)
    digests = {digest(mix_inputs(plain, 0, "instruction")), *(digest(i) for i in inputs.values())}
    assert len(digests) == 3  # the paired instruction mix is another mix than the unpaired one
    run = tmp_path / "run"
    assert mix_dir(run, paired, 0, "question").parent.name == "seed0-question"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    rewriter = SweepConfig.model_validate({**BASE_CONFIG, "formats": ["question"], "format_responder": "openai:m"})
    ident = mix_inputs(rewriter, 0, "question")["forms"]
    assert ident["responder"]["spec"] == "openai:m" and ident["responder"]["base_url"] == "http://127.0.0.1:9/v1"
    assert list(ident["responder"]["decoding"]["stop"]) == ["\n"] and ident["attempts"] == 3


def test_a_tiny_sweep_over_instruction_and_question_form(tiny_model: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = write_config(tmp_path, tiny_model, run)
    data = yaml.safe_load(path.read_text())
    data["formats"] = ["instruction", "question"]
    data["safety_questions"] = str(questions_file(tmp_path / "q.jsonl"))
    data["eval_sets"] = {"harm": ["I-MaliciousInstructions", "Q-Harm"], "over_refusal": ["xstest-v2-safe"],
                         "limit": 6, "capability": None}  # fmt: skip
    data["judges"] = {"refusal": "strmatch", "strmatch": None, "harm": None, "moderation": None}
    path.write_text(yaml.safe_dump(data))
    result = sweep(load_sweep_config(path))

    config = load_sweep_config(path)
    mixes = {f: mix_dir(run, config, 0, f) for f in config.formats}
    lines = Path(data["safety_questions"]).read_text().splitlines()
    questions = {json.loads(line)["id"]: json.loads(line)["question"] for line in lines}
    safety = {}
    for fmt, out in mixes.items():
        rows = [json.loads(line) for line in train_file(out, 8).read_text().splitlines()]
        safety[fmt] = {r["id"]: r["instruction"] for r in rows if r["source"] == "saferpaca-safety"}
    assert len(safety["instruction"]) == 8 and set(safety["instruction"]) == set(safety["question"])
    assert all(safety["question"][i] == questions[i] for i in safety["question"])
    assert not any(t.endswith("?") for t in safety["instruction"].values())

    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["mixes"]) == {"seed0-instruction", "seed0-question"}
    assert all(m["fingerprint_inputs"]["forms"]["questions_file"] for m in manifest["mixes"].values())
    assert {c["format"] for c in manifest["cells"].values()} == {"instruction", "question"}

    cross = result.metrics["cross_format"]
    assert cross["forms"] == {"I-MaliciousInstructions": "instruction", "Q-Harm": "question"}
    assert cross["reference_format"] == "instruction"
    cells = {(r["variant"], r["eval_set"]) for r in cross["rows"]}
    for variant in ("base", "n0-s0-instruction", "n8-s0-instruction", "n0-s0-question", "n8-s0-question"):
        assert {(variant, "I-MaliciousInstructions"), (variant, "Q-Harm")} <= cells
    steps = {(d["dose"], d["eval_set"], d["from_format"], d["to_format"], d["n"]) for d in cross["differences"]}
    assert steps == {(dose, s, "instruction", "question", 6) for dose in (0, 8) for s in ("I-MaliciousInstructions",
                                                                                          "Q-Harm")}  # fmt: skip
    html = (run / "report" / "index.html").read_text()
    assert "Cross-format: harmful compliance by training format and prompt form" in html
    assert "instruction → question" in html
