import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from rich.console import Console

import safedose.cli._output
from safedose.data import DATASETS
from safedose.models import EMBEDDED


def test_data_list_piped_prints_whole_names_as_tab_separated_lines(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("data", "list", "--no-verify")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split("\t") == ["name", "kind", "rows", "licence", "resolved"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == list(DATASETS) and all(len(r) == 5 for r in rows)
    assert "…" not in result.out
    malicious = next(r for r in rows if r[0] == "I-MaliciousInstructions")
    assert malicious[:3] == ["I-MaliciousInstructions", "eval-unsafe", "100"]
    assert malicious[4].startswith("ok: ") and malicious[4].endswith("I-MaliciousInstructions.json")


def test_data_list_json(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("data", "list", "--no-verify", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [d["name"] for d in data["datasets"]] == list(DATASETS)
    first = data["datasets"][0]
    assert set(first) == {"name", "kind", "rows", "expected_rows", "licence", "ok", "resolved"}
    assert all(d["ok"] and d["rows"] == d["expected_rows"] for d in data["datasets"])


def test_models_list_piped_and_json(cli) -> None:  # type: ignore[no-untyped-def]
    piped = cli("models", "list")
    assert piped.code == 0, piped.err
    lines = piped.out.splitlines()
    assert lines[0] == "name\tdescription\tprepared"
    assert [line.split("\t")[:2] for line in lines[1:]] == [[n, EMBEDDED.get(n).description] for n in EMBEDDED]
    as_json = cli("models", "list", "--json")
    assert as_json.code == 0, as_json.err
    models = json.loads(as_json.out)["models"]
    assert [m["name"] for m in models] == list(EMBEDDED)
    assert all(m["prepared"] is None or isinstance(m["prepared"], str) for m in models)


def test_tables_on_a_narrow_terminal_fold_instead_of_cutting(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(safedose.cli._output, "console", Console(force_terminal=True, width=60, color_system=None))
    result = cli("data", "list", "--no-verify")
    assert result.code == 0, result.err
    assert "┃ name" in result.out and "…" not in result.out
    cells = "".join(line.split("│")[1].strip() for line in result.out.splitlines() if line.startswith("│"))
    assert "I-MaliciousInstructions" in cells


SAFEDOSE = str(Path(sys.executable).parent / "safedose")


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["sweep", "--bogus", "x"], "No such option: --bogus"), (["sweep"], "Missing argument"),
     (["nosuchcmd"], "No such command 'nosuchcmd'"), (["data", "mix", "--n", "0"], "Missing option")],
)  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(args: list[str], needle: str) -> None:
    proc = subprocess.run([SAFEDOSE, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and needle in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_version_names_the_package_and_the_recipe_and_schema_versions() -> None:
    from safedose.run import SCHEMA_VERSION
    from safedose.sweep import MIX_RECIPE_VERSION
    from safedose.train import RECIPE_VERSION

    proc = subprocess.run([SAFEDOSE, "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"safedose {version('safedose')} (") and proc.stdout.count("\n") == 1
    assert f"run schema {SCHEMA_VERSION}" in proc.stdout and f"training recipe {RECIPE_VERSION}" in proc.stdout
    assert f"mix recipe {MIX_RECIPE_VERSION}" in proc.stdout


def test_an_empty_input_file_is_one_line_and_writes_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    empty, out = tmp_path / "e.jsonl", tmp_path / "X"
    empty.write_text("")
    for extra in (["--max-tokens", "256"], []):
        result = cli("data", "mix", "--base", empty, "--base-size", "5", "--safety", "saferpaca-safety", "--n", "0",
                     "--out", out, *extra)  # fmt: skip
        assert result.code == 2
        assert result.err == f"error: {empty}: no records (the base pool is empty)\n"
        assert not out.exists() and list(tmp_path.iterdir()) == [empty]


def test_a_missing_data_file_is_no_such_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "x" / "nofile.csv"
    result = cli("data", "mix", "--base", missing, "--base-size", "5", "--n", "0", "--out", tmp_path / "X")
    assert (result.code, result.err) == (2, f"error: {missing}: no such file\n")
    shown = cli("data", "show", "nofile.jsonl")
    assert (shown.code, shown.err) == (2, "error: nofile.jsonl: no such file\n")
    typo = cli("data", "show", "dolly15k")
    assert typo.code == 2 and "unknown dataset 'dolly15k'; did you mean 'dolly-15k'?" in typo.err


def test_model_loads_are_quiet_by_default_and_verbose_with_v(tiny_model: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "p1", "prompt": "Explain the tides."}) + "\n")
    args = ["generate", "--model", str(tiny_model), "--eval-set", str(prompts), "--max-new-tokens", "2", "--dtype",
            "fp32"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_DISABLE", "TRANSFORMERS_", "PYTHONWARN"))}
    quiet = subprocess.run([SAFEDOSE, *args, "--out", str(tmp_path / "q.jsonl"), "--cache", str(tmp_path / "q.db")],
                           capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "Loading weights" not in quiet.stderr + quiet.stdout and "Warning" not in quiet.stderr
    assert quiet.stdout.strip().splitlines()[-1] == f"wrote 1 rows to {tmp_path / 'q.jsonl'}"
    loud = [SAFEDOSE, "-v", *args, "--out", str(tmp_path / "v.jsonl"), "--cache", str(tmp_path / "v.db")]
    verbose = subprocess.run(loud, capture_output=True, text=True, timeout=300, env=env)
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "Loading weights" in verbose.stderr + verbose.stdout


def test_serve_defaults_to_the_study_precision_and_export_prints_its_note(cli, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import safedose.export
    import safedose.serve
    from safedose.export import ExportResult

    seen: dict[str, object] = {}
    monkeypatch.setattr(safedose.serve, "serve", lambda model, adapters, **kw: seen.update(kw))
    assert cli("serve").code == 0 and seen["dtype"] is None  # None: the precision the study answered in
    assert cli("serve", "--dtype", "auto").code == 0 and seen["dtype"] == "auto"
    note = "the sweep answered in bf16: serve the adapter in bf16 to come closest to its answers"
    result = ExportResult(merged=tmp_path / "m", gguf=None, merged_dtype="fp32", gguf_type=None, note=note)
    monkeypatch.setattr(safedose.export, "export", lambda *a, **kw: result)
    out = cli("export", tmp_path, "--merged", tmp_path / "m")
    assert out.code == 0 and note in " ".join(out.out.split())
