"""The report's import stays light: no torch (or transformers) until a model is run."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["safedose.report", "safedose.recommend", "safedose.evaluate", "safedose.judges"])
def test_importing_leaves_torch_unloaded(package: str) -> None:
    code = f"import {package}, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
