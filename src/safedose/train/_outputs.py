"""What a training `output_dir` holds: the names of its files, the result its manifest records, and whether it
holds (part of) a run of other settings."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safedose.errors import SafedoseError
from safedose.files import atomic_open
from safedose.train._fingerprint import FINGERPRINT_FILE, differing_keys

CHECKPOINTS = "checkpoints"
MANIFEST = "safedose.json"
LOG = "train_log.jsonl"
TRACKERS = "trackers"


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    best_step: int | None
    best_val_loss: float | None
    final_train_loss: float
    steps: int


def read_result(out: Path) -> TrainResult:
    """The result recorded in a finished `out`'s manifest."""
    done = json.loads((out / MANIFEST).read_text())
    return TrainResult(out, done["best_step"], done["best_val_loss"], done["final_train_loss"], done["steps"])


def holds_other_run(out: Path, inputs: dict[str, Any], digest: str, *, force: bool) -> bool:
    """True when `out` holds (part of) a run of another config and `force` says to start afresh; else an error."""
    recorded = next((out / f for f in (MANIFEST, FINGERPRINT_FILE) if (out / f).is_file()), None)
    if recorded is None:
        if latest_checkpoint(out) is None:
            return False
        theirs: dict[str, Any] = {"fingerprint": None, "fingerprint_inputs": {}}
    else:
        theirs = json.loads(recorded.read_text())
    their_inputs = theirs.get("fingerprint_inputs", theirs.get("inputs", {}))
    if theirs.get("fingerprint") == digest:
        return False
    if force:
        return True
    keys = differing_keys(their_inputs, inputs) or ["fingerprint (written by an older safedose)"]
    shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
    raise SafedoseError(
        f"{out}: holds an adapter trained with other settings ({shown} differ); choose another output_dir, "
        "or pass --force to train it again"
    )


def clear(out: Path) -> None:
    """Remove what `train` writes into `out` (and nothing else)."""
    for name in (MANIFEST, FINGERPRINT_FILE, LOG, CHECKPOINTS, "last", TRACKERS, "README.md"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for target in (*out.glob("adapter_model.*"), out / "adapter_config.json"):
        target.unlink(missing_ok=True)


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint we resume from, so a resumed log has no duplicates."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    with atomic_open(path) as f:
        f.write("".join(r + "\n" for r in rows))
