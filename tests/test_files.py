"""Outputs get the modes a plain `open` / `mkdir` would give under the user's umask (not mkstemp's / safetensors' 0600),
whether written atomically, saved by safetensors, published from a staging directory or exported."""

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from safedose.files import atomic_open, honour_umask, write_jsonl


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield int(request.param)
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): _mode(p) for p in [root, *root.rglob("*")]}


def test_atomic_writes_honour_the_umask(tmp_path: Path, umask: int) -> None:
    write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}])
    with atomic_open(tmp_path / "sub" / "image.png", "wb") as f:
        f.write(b"png")
    assert _mode(tmp_path / "rows.jsonl") == _mode(tmp_path / "sub" / "image.png") == 0o666 & ~umask
    assert _mode(tmp_path / "sub") == 0o777 & ~umask


def test_honour_umask_resets_a_staged_tree(tmp_path: Path, umask: int) -> None:
    staged = tmp_path / "staged"
    (staged / "inner").mkdir(parents=True, mode=0o700)
    (staged / "inner" / "model.safetensors").write_bytes(b"x")
    os.chmod(staged / "inner" / "model.safetensors", 0o600)
    os.chmod(staged, 0o700)
    honour_umask(staged)
    assert _modes(staged) == {".": 0o777 & ~umask, "inner": 0o777 & ~umask, "inner/model.safetensors": 0o666 & ~umask}


def test_mixes_adapters_and_exports_are_readable_as_the_umask_says(  # type: ignore[no-untyped-def]
    cli, tiny_model: Path, tmp_path: Path
) -> None:
    from safedose.export import export
    from safedose.train import parse_config, train

    old = os.umask(0o022)
    try:
        mixed = cli("data", "mix", "--base", "dolly-15k", "--base-size", "16", "--n", "0,8", "--val-size", "8",
                    "--test-size", "8", "--out", tmp_path / "mix")  # fmt: skip
        assert mixed.code == 0, mixed.err
        assert set(_modes(tmp_path / "mix").values()) == {0o755, 0o644}
        rows = [{"instruction": f"Say {w}.", "input": "", "output": w} for w in ("a", "b", "c", "d")]
        (tmp_path / "train.json").write_text(json.dumps(rows))
        adapter = tmp_path / "adapter"
        train(parse_config({"model": str(tiny_model), "train_file": str(tmp_path / "train.json"),
                            "val_file": str(tmp_path / "train.json"), "output_dir": str(adapter), "max_steps": 1,
                            "micro_batch_size": 4, "max_length": 32, "dtype": "fp32"}))  # fmt: skip
        assert _mode(adapter / "adapter_model.safetensors") == 0o644
        assert {m for name, m in _modes(adapter).items() if "checkpoints" not in name} <= {0o755, 0o644}
        export(adapter, merged=tmp_path / "merged", gguf=tmp_path / "model.gguf", dtype="fp32")
        assert set(_modes(tmp_path / "merged").values()) == {0o755, 0o644}
        assert _mode(tmp_path / "model.gguf") == 0o644
    finally:
        os.umask(old)


def test_the_prepared_embedded_model_honours_the_umask(smollm2_dir: Path) -> None:
    from safedose.files import current_umask

    mask = current_umask()  # the umask the session's `models prepare` processes ran under
    modes = _modes(smollm2_dir)
    assert {m for name, m in modes.items() if (smollm2_dir / name).is_file()} == {0o666 & ~mask}
    assert {m for name, m in modes.items() if (smollm2_dir / name).is_dir()} == {0o777 & ~mask}
