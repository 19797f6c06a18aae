"""Manifests for tests: the keys a one-source sweep writes, in its order, with small values."""

from __future__ import annotations

from typing import Any


def cell_entry(dose: int, *, seed: int = 0, fmt: str = "instruction", adapter: str | None = None) -> dict[str, Any]:
    """A cell of a one-source sweep (no `safety` key)."""
    name = f"n{dose}-s{seed}-{fmt}"
    return {"dose": dose, "seed": seed, "format": fmt, "fingerprint": f"fp-{name}",
            "adapter": adapter or f"adapters/{name}-fp"}  # fmt: skip


def manifest_dict(**fields: Any) -> dict[str, Any]:
    """A manifest as a one-source sweep writes it, with `fields` in place of the defaults."""
    manifest: dict[str, Any] = {
        "schema_version": 2,
        "config": {"name": "fixture", "model": "tiny", "doses": [0, 50], "seeds": [0], "train": {"template": "alpaca"}},
        "model_hash": "0" * 64,
        "generation_dtype": "fp32",
        "train_recipe_version": 3,
        "mixes": {"seed0-instruction": {"dir": "data/seed0-instruction/fp",
                                        "fingerprint_inputs": {"seed": 0, "format": "instruction"}}},
        "cells": {"n0-s0-instruction": cell_entry(0), "n50-s0-instruction": cell_entry(50)},
        "sampling": {"limit": None, "seed": 0, "sets": {}, "attacks": {}},
        "contamination_sets": ["advbench", "xstest-v2-safe"],
        "data_root": "/data",
        "data_sha256": {"dolly-15k": ["1" * 64]},
        "judges": {"refusal": "refusal@1"},
        "versions": {"safedose": "0.1.0"},
        "git_commit": None,
    }  # fmt: skip
    unknown = set(fields) - set(manifest) - {"search"}
    assert not unknown, f"not a manifest key: {unknown}"
    return {**manifest, **fields}
