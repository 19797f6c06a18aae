"""Measured speed on this machine, for the dry run's estimates: seconds per unit of work, by kind of work."""

from __future__ import annotations

import json
import time
from pathlib import Path

from safedose.files import write_json
from safedose.generate import resolve_dtype
from safedose.paths import cache_dir
from safedose.sweep._config import SweepConfig


def _timings_path() -> Path:
    return cache_dir() / "timings.json"


def record_timing(key: str, seconds: float, units: float) -> None:
    """Remember how long `units` of work of kind `key` took on this machine (seconds per unit, last value wins)."""
    if units <= 0:
        return
    path = _timings_path()
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        data = {}
    data[key] = {"seconds_per_unit": seconds / units, "measured": time.strftime("%Y-%m-%d")}
    write_json(path, data)


def measured(key: str) -> float | None:
    """Seconds per unit of work of kind `key` measured on this machine, or None."""
    path = _timings_path()
    try:
        value = json.loads(path.read_text()).get(key) if path.is_file() else None
    except json.JSONDecodeError:
        return None
    return float(value["seconds_per_unit"]) if value else None


def timing_key(kind: str, config: SweepConfig) -> str:
    """Timings are per kind of work, model and settings that set its speed on this machine."""
    if kind == "train":
        settings = config.cell_train_config("-", "-", None, 0)  # type: ignore[arg-type]
        return f"train:{config.model}:{resolve_dtype(settings.dtype)}:{settings.max_length}:{settings.micro_batch_size}"
    return f"{kind}:{config.model}:{config.backend}:{config.decoding.key()['dtype']}:{config.decoding.max_new_tokens}"
