from pathlib import Path

import pytest

from tests.conftest import write_json


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small, learnable instruction set: the answer repeats a word from the instruction."""
    out = tmp_path_factory.mktemp("tiny-data")
    words = ["apple", "river", "stone", "cloud", "maple", "tiger", "piano", "ocean"]
    rows = [
        {"id": f"r{i}", "instruction": f"Repeat the word {w} three times.", "input": "", "output": f"{w} {w} {w}"}
        for i, w in enumerate(words * 12)
    ]
    return write_json(out / "train.json", rows[:80]), write_json(out / "val.json", rows[80:])
