"""What decides an adapter: a fingerprint of the base model, the data, every setting and the recipe version."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safedose.files import sha256_file
from safedose.train._config import TrainConfig

# Bumped when what training does changes (loss, batching, schedule, checkpoint choice), not on every release.
# 3: on CPU the LoRA dropout masks come from another random stream (`LoraDropout`), attention runs in fp32 under bf16
# autocast and right-padded batches go without their padding mask.
RECIPE_VERSION = 3
# Settings that decide where or how often things are written, never the adapter's weights.
NOT_DECISIVE = frozenset({"model", "output_dir", "train_file", "val_file", "save_every", "log_every", "log_with"})
# Settings added after fingerprints existed: in the fingerprint only when they differ from these defaults, so that
# every fingerprint made before them stays the same. The accelerate config enters by its content's sha256.
ONLY_WHEN_SET: dict[str, Any] = {"base_dtype": None, "load_in_4bit": False, "gradient_checkpointing": False,
                                 "accelerate_config": None}  # fmt: skip
FINGERPRINT_FILE = "fingerprint.json"


def fingerprint_inputs(config: TrainConfig, *, base_model_hash: str, mixed_precision: str) -> dict[str, Any]:
    """Everything that decides the adapter `config` trains, as a flat JSON-able mapping."""
    settings = config.model_dump(mode="json", exclude=set(NOT_DECISIVE))
    settings["dtype"] = mixed_precision  # `auto` resolves per machine; what ran is what counts
    for key, default in ONLY_WHEN_SET.items():
        if settings[key] == default:
            del settings[key]
    if "accelerate_config" in settings:
        settings["accelerate_config_sha256"] = sha256_file(Path(settings.pop("accelerate_config")).expanduser())
    return {
        "recipe_version": RECIPE_VERSION,
        "base_model_hash": base_model_hash,
        "train_file_sha256": _sha_or_none(config.train_file),
        "val_file_sha256": _sha_or_none(config.val_file),
        **_flatten(settings),
    }


def fingerprint(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys whose values differ (or exist on one side only), sorted."""
    return sorted(k for k in set(old) | set(new) if old.get(k, _MISSING) != new.get(k, _MISSING))


_MISSING = object()


def _sha_or_none(path: str | None) -> str | None:
    return sha256_file(path) if path and Path(path).is_file() else None


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
