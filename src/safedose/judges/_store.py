"""Trained judges are built once from the data root and kept in the cache with their validation metrics."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from safedose.data import DATASETS
from safedose.files import atomic_open, sha256_file, sha256_text, write_json
from safedose.paths import cache_dir, data_root


def data_sha256(sources: Sequence[str]) -> str:
    """One hash over the sha256 of every file of the named datasets (what a trained judge was built from)."""
    root = data_root()
    digests = [f"{name}:{sha256_file(p)}" for name in sources for p in DATASETS.get(name).paths(root)]
    return sha256_text("\n".join(digests))


def built_path(name: str, revision: str, sources: Sequence[str]) -> Path:
    return cache_dir() / "judges" / f"{name}@{revision}-{data_sha256(sources)[:16]}.pkl"


def load_or_build(name: str, revision: str, sources: Sequence[str], build: Callable[[], Any]) -> Any:
    """The built object from the cache, or build it now (deterministic: BLAS on one thread, whatever the cores) and
    store it atomically."""
    from threadpoolctl import threadpool_limits

    path = built_path(name, revision, sources)
    if path.is_file():
        with open(path, "rb") as f:
            return pickle.load(f)  # written by this function only, into the user's own cache
    with threadpool_limits(1):
        obj = build()
    with atomic_open(path, "wb") as f:
        pickle.dump(obj, f)
    return obj


# Bumped when how validation is computed changes (e.g. κ intervals resampled by prompt), so old numbers are redone.
VALIDATION_VERSION = 2


def _metrics_path(name: str, revision: str, sources: Sequence[str]) -> Path:
    return built_path(name, revision, sources).with_suffix(f".validation-v{VALIDATION_VERSION}.json")


def save_metrics(name: str, revision: str, sources: Sequence[str], metrics: dict[str, Any]) -> Path:
    path = _metrics_path(name, revision, sources)
    write_json(path, metrics)
    return path


def load_metrics(name: str, revision: str, sources: Sequence[str]) -> dict[str, Any] | None:
    path = _metrics_path(name, revision, sources)
    return dict(json.loads(path.read_text())) if path.is_file() else None
