"""The registry of named datasets, read from the declarative `catalog.yaml`."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast, get_args

import yaml

from safedose.data._records import Kind
from safedose.files import sha256_file
from safedose.registry import Registry


@dataclass(frozen=True)
class DataFile:
    path: str
    sha256: str
    url: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: where it lives under the data root, where it came from, what it holds."""

    name: str
    kind: Kind
    rows: int
    licence: str
    upstream: str
    description: str
    files: tuple[DataFile, ...]
    where: dict[str, str] = field(default_factory=dict)
    expected_label: str | None = None
    form: str | None = None  # eval sets: `instruction` or `question`, the form of its prompts

    def paths(self, root: Path) -> list[Path]:
        return [root / f.path for f in self.files]


@dataclass(frozen=True)
class Resolution:
    """Where a dataset resolved under a data root, or why it did not."""

    spec: DatasetSpec
    ok: bool
    status: str


DATASETS: Registry[DatasetSpec] = Registry("dataset")
CATALOG_VERSION: int


def _load_catalog() -> int:
    text = resources.files("safedose.data").joinpath("catalog.yaml").read_text(encoding="utf-8")
    catalog = yaml.safe_load(text)
    for name, entry in catalog["datasets"].items():
        DATASETS.add(name, _spec(name, entry))
    return int(catalog["version"])


def _spec(name: str, entry: dict[str, Any]) -> DatasetSpec:
    kind = entry["kind"]
    if kind not in get_args(Kind):
        raise ValueError(f"catalog.yaml: dataset {name!r} has unknown kind {kind!r}")
    form = entry.get("form")
    if form not in (None, "instruction", "question"):
        raise ValueError(f"catalog.yaml: dataset {name!r} has unknown form {form!r}")
    return DatasetSpec(
        name=name,
        kind=cast(Kind, kind),
        rows=int(entry["rows"]),
        licence=entry["licence"],
        upstream=entry["upstream"],
        description=entry["description"],
        files=tuple(DataFile(**f) for f in entry["files"]),
        where=dict(entry.get("where", {})),
        expected_label=entry.get("expected_label"),
        form=form,
    )


CATALOG_VERSION = _load_catalog()


def resolve(spec: DatasetSpec, root: Path, *, verify: bool = True) -> Resolution:
    """Check that every file of `spec` is present under `root` and, with `verify`, matches its sha256."""
    for f in spec.files:
        path = root / f.path
        if not path.is_file():
            return Resolution(spec, False, f"missing {path}")
        if verify and sha256_file(path) != f.sha256:
            return Resolution(spec, False, f"sha256 mismatch for {path}")
    return Resolution(spec, True, "ok")
