import subprocess
import sys
from pathlib import Path

import pytest

from tests.sweep.test_sweep import write_config


@pytest.fixture(scope="session")
def clean_tiny_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny sweep (`write_config`) run once from start to end without interruption, locally; its run dir."""
    tmp = tmp_path_factory.mktemp("clean")
    run = tmp / "clean"
    proc = subprocess.run([sys.executable, "-m", "safedose", "sweep", str(write_config(tmp, tiny_model, run))],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return run
