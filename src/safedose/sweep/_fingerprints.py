"""Where the sweep keeps its work: every mix and adapter directory is named by the fingerprint of what decides it.

A mix is addressed by the fingerprint of everything that decides its files (sources and their hashes, sizes,
seed, format, contamination sets, mixing version); doses are not in it, because adding a dose leaves the files of
the other doses byte-identical. A cell is addressed by its training fingerprint (base model hash, data file
hashes, every training setting, recipe version). Changing a setting therefore makes new directories beside the
old ones, and switching back finds the old ones again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safedose.build import make_rewriter, rewrite_decoding
from safedose.data import (
    CATALOG_VERSION,
    DATASETS,
    FormSource,
    default_contamination_sets,
    test_file,
    train_file,
    val_file,
)
from safedose.files import sha256_file
from safedose.models import model_hash, resolve_model
from safedose.run import CellKey
from safedose.sweep._config import SweepConfig
from safedose.sweep._safety import BUILD_VERSION, BuiltSource, SafetySource
from safedose.train import fingerprint, fingerprint_inputs, mixed_precision

# Bumped when what mixing does changes (sampling, dedup, contamination rule), not on every release.
MIX_RECIPE_VERSION = 2
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class Cell:
    """One training run of the sweep: a point of its axes (`safedose.run.CellKey`) with every axis set."""

    dose: int
    seed: int
    format: str
    safety: str | None = None

    @property
    def key(self) -> CellKey:
        return CellKey.of(self)

    @property
    def name(self) -> str:
        return self.key.name


def cells_of(config: SweepConfig) -> list[Cell]:
    return [Cell(d, s, f, label) for label in config.safety_sources for s in config.seeds for f in config.formats
            for d in config.doses]  # fmt: skip


def mix_step_name(seed: int, fmt: str, safety: str | None) -> str:
    return f"mix seed {seed} {fmt}" + (f" {safety}" if safety else "")


def mix_groups(config: SweepConfig) -> list[tuple[int, str, str | None]]:
    """One mix per seed, format and safety source (by label): it holds every dose's nested training rows."""
    return [(s, f, label) for label in config.safety_sources for s in config.seeds for f in config.formats]


def source_id(name: SafetySource) -> dict[str, Any]:
    """What identifies a source's content: catalogue hashes, a file's sha256, the hub id, or a built source's
    settings and its prompt sources' hashes."""
    if isinstance(name, BuiltSource):
        return {"build": name.build.model_dump(mode="json"), "build_version": BUILD_VERSION,
                "prompts": [source_id(p) for p in name.build.prompts]}  # fmt: skip
    if name in DATASETS:
        return {"name": name, "sha256": [f.sha256 for f in DATASETS.get(name).files]}
    if name.startswith(HF_PREFIX):
        return {"name": name}
    return {"file": str(Path(name).expanduser().resolve()), "sha256": sha256_file(Path(name).expanduser())}


def contamination_sets(config: SweepConfig) -> list[str]:
    """Every registered eval set, plus the files and hub sets this config evaluates on."""
    registered = default_contamination_sets()
    return registered + [s for s in config.eval_sets.all_sets() if s not in registered]


def form_source(config: SweepConfig, run: Path | None = None) -> FormSource | None:
    """Where the safety prompts' question forms come from (None: instruction form only, not paired); a responder
    caches its rewrites in the run's `data/formats.sqlite`."""
    if config.safety_questions is not None:
        return FormSource.from_file(config.safety_questions)
    if config.format_responder is None:
        return None
    cache = run / "data" / "formats.sqlite" if run is not None else None
    decoding = rewrite_decoding(dtype=config.decoding.dtype)
    return FormSource(responder=make_rewriter(config.format_responder, decoding=decoding, cache=cache))


def mix_inputs(config: SweepConfig, seed: int, fmt: str, safety: str | None = None) -> dict[str, Any]:
    """What decides a mix's files. With paired forms, where the forms come from (rewriting version, checks, responder
    identity or file hash) is part of it; without, the inputs are what they were before formats existed. With several
    safety sources, the others' rows leave the base pool too (every source trains on the same base rows), so they
    are part of it."""
    tokenizer = model_hash(resolve_model(config.model)) if config.max_tokens is not None else None
    inputs = {
        "mix_recipe_version": MIX_RECIPE_VERSION,
        "catalog_version": CATALOG_VERSION,
        "base": source_id(config.base),
        "safety": source_id(config.safety_sources[safety]),
        "base_size": config.base_size,
        "val_size": config.val_size,
        "test_size": config.test_size,
        "max_tokens": config.max_tokens,
        "tokenizer": tokenizer,
        "seed": seed,
        "format": fmt,
        "contamination": [source_id(s) for s in contamination_sets(config)],
    }
    forms = form_source(config)
    if forms is not None:
        inputs["forms"] = forms.identity()
    if safety is not None:
        inputs["base_excludes"] = [source_id(s) for s in base_excludes(config, safety)]
    return inputs


def base_excludes(config: SweepConfig, safety: str | None) -> list[SafetySource]:
    """The other safety sources, whose rows also leave the base pool of `safety`'s mix."""
    return [source for label, source in config.safety_sources.items() if label != safety]


def safety_file(config: SweepConfig, run: Path, source: SafetySource) -> str:
    """What `mix` reads for a source: its name, or the file a built source is (to be) written to."""
    if not isinstance(source, BuiltSource):
        return source
    name = f"{source.build.label}-{digest(source_id(source))[:12]}.jsonl"
    return str(run / "data" / "sources" / name)


def digest(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def mix_dir(run: Path, config: SweepConfig, seed: int, fmt: str, safety: str | None = None) -> Path:
    return run / "data" / mix_group_name(seed, fmt, safety) / digest(mix_inputs(config, seed, fmt, safety))[:12]


def mix_group_name(seed: int, fmt: str, safety: str | None) -> str:
    return f"seed{seed}-{fmt}" + (f"-{safety}" if safety else "")


def mix_complete(out: Path, doses: list[int]) -> bool:
    needed = [train_file(out, d) for d in doses] + [val_file(out, d) for d in doses] + [test_file(out)]
    return (out / "datasheet.json").is_file() and all(p.is_file() for p in needed)


def cell_fingerprint(config: SweepConfig, run: Path, cell: Cell) -> tuple[str, dict[str, Any]]:
    """The training fingerprint of a cell whose mix exists."""
    data = mix_dir(run, config, cell.seed, cell.format, cell.safety)
    train_config = config.cell_train_config("-", str(train_file(data, cell.dose)), str(val_file(data, cell.dose)),
                                            cell.seed)  # fmt: skip
    inputs = fingerprint_inputs(train_config, base_model_hash=model_hash(resolve_model(config.model)),
                                mixed_precision=mixed_precision(train_config.dtype))  # fmt: skip
    return fingerprint(inputs), inputs


def adapter_dir(run: Path, cell: Cell, fingerprint: str) -> Path:
    return run / "adapters" / f"{cell.name}-{fingerprint[:12]}"
