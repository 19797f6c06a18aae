"""Where safedose finds data and keeps its cache."""

from __future__ import annotations

import os
from pathlib import Path

from safedose.errors import SafedoseError

DATA_ENV = "SAFEDOSE_DATA"
CACHE_ENV = "SAFEDOSE_CACHE"
# How much the libraries may print (0: warnings and progress bars of model loads hidden; the CLI's `-v` count).
VERBOSITY = "SAFEDOSE_VERBOSITY"


def data_root(*, must_exist: bool = True) -> Path:
    """`$SAFEDOSE_DATA` if set, else the `shared/data` folder beside the checkout (or beside the working dir)."""
    env = os.environ.get(DATA_ENV)
    if env:
        root = Path(env).expanduser()
    else:
        beside_checkout = Path(__file__).resolve().parents[3] / "shared" / "data"
        beside_cwd = Path.cwd().parent / "shared" / "data"
        root = beside_checkout if beside_checkout.is_dir() or not beside_cwd.is_dir() else beside_cwd
    if not must_exist:
        return root
    if not root.is_dir():
        how = f"${DATA_ENV}" if env else "the default (../shared/data beside the checkout)"
        raise SafedoseError(f"{root}: data root from {how} is not a readable directory; set {DATA_ENV}")
    if not os.access(root, os.R_OK | os.X_OK):
        raise SafedoseError(f"{root}: data root is not readable; check its permissions or set {DATA_ENV}")
    return root


def cache_dir() -> Path:
    """`$SAFEDOSE_CACHE` if set, else `~/.cache/safedose`."""
    env = os.environ.get(CACHE_ENV)
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "safedose"
    root.mkdir(parents=True, exist_ok=True)
    return root
