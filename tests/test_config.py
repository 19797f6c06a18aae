from pathlib import Path

import pytest

from safedose.config import read_config
from safedose.errors import SafedoseError

CONFIG = "lr: 0.0001\nlora:\n  r: 8\ndoses: [0, 50]\ntrain:\n  lr: 0.0002\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_overrides_set_nested_values_and_create_missing_mappings(config: Path) -> None:
    data = read_config(config, ["lr=0.001", "lora.r=16", "lora.alpha=32", "doses=[0,100]", "new.deep.key=yes"])
    assert data == {"lr": 0.001, "lora": {"r": 16, "alpha": 32}, "doses": [0, 100], "train": {"lr": 0.0002},
                    "new": {"deep": {"key": True}}}  # fmt: skip


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("lr.x=1", "override 'lr.x=1': lr is 0.0001 (float), not a mapping"),
        ("train.lr.foo=1", "override 'train.lr.foo=1': train.lr is 0.0002 (float), not a mapping"),
        ("doses.0=5", "doses is [0, 50] (list), not a mapping"),
        ("lora.r.x.y=2", "lora.r is 8 (int), not a mapping"),
        ("lr", "expected key=value"),
        ("=1", "expected key=value"),
        ("lora..r=1", "expected key=value"),
        ("lr=[1,", "override 'lr=[1,': malformed YAML value"),
    ],
)
def test_bad_overrides_are_one_line_errors_naming_the_override(config: Path, override: str, needle: str) -> None:
    with pytest.raises(SafedoseError) as err:
        read_config(config, [override])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_bad_override_through_the_cli_exits_2_without_a_traceback(cli, config: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("train", config, "lr.x=1")
    assert result.code == 2
    assert result.err.strip() == "error: override 'lr.x=1': lr is 0.0001 (float), not a mapping of settings"
