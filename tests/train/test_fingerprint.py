from pathlib import Path

import pytest

from safedose.errors import SafedoseError
from safedose.train import parse_config, train
from tests.train.test_train import config


def test_a_finished_dir_is_reused_only_under_the_same_settings(
    tiny_model: Path, tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    first = train(parse_config(config(tiny_model, tiny_data, out, max_steps=4)))
    stamp = (out / "safedose.json").stat().st_mtime_ns
    # settings that only say where or how often to write do not decide the adapter
    again = train(parse_config(config(tiny_model, tiny_data, out, max_steps=4, save_every=2, log_every=3)))
    assert again == first and (out / "safedose.json").stat().st_mtime_ns == stamp
    lora = {**config(tiny_model, tiny_data, out)["lora"], "r": 4}
    with pytest.raises(SafedoseError, match=r"\(lora\.r, lr differ\).*--force"):
        train(parse_config(config(tiny_model, tiny_data, out, max_steps=4, lr=1e-3, lora=lora)))
    assert (out / "safedose.json").stat().st_mtime_ns == stamp  # nothing was touched
    forced = train(parse_config(config(tiny_model, tiny_data, out, max_steps=4, lr=1e-3)), force=True)
    assert forced.steps == 4 and (out / "safedose.json").stat().st_mtime_ns != stamp
    assert train(parse_config(config(tiny_model, tiny_data, out, max_steps=4, lr=1e-3))) == forced


def test_a_partly_trained_dir_of_other_data_is_not_resumed(
    tiny_model: Path, tiny_data: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    (out / "checkpoints" / "step-2").mkdir(parents=True)  # a checkpoint from before fingerprints existed
    with pytest.raises(SafedoseError, match="other settings"):
        train(parse_config(config(tiny_model, tiny_data, out, max_steps=2)))
    other = tmp_path / "other.json"
    other.write_text(tiny_data[0].read_text().replace("three", "four"))
    fresh = tmp_path / "fresh"
    train(parse_config(config(tiny_model, tiny_data, fresh, max_steps=2)))
    with pytest.raises(SafedoseError, match="train_file_sha256 differ"):
        train(parse_config(config(tiny_model, (other, tiny_data[1]), fresh, max_steps=2)))


def test_train_cli_force_flag(cli, tiny_model: Path, tiny_data: tuple[Path, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    out = tmp_path / "run"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config(tiny_model, tiny_data, out, max_steps=2)))
    assert cli("train", path).code == 0
    result = cli("train", path, "lr=0.001")
    assert result.code == 2 and "lr differ" in result.err and "Traceback" not in result.err
    assert cli("train", path, "lr=0.001", "--force").code == 0
