"""Download a registered dataset's upstream files into the data root, verified by sha256."""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from safedose.data._catalog import DATASETS, DataFile, DatasetSpec
from safedose.errors import SafedoseError
from safedose.files import honour_umask, sha256_file
from safedose.paths import data_root


def fetch(
    dataset: str | DatasetSpec, *, root: Path | None = None, force: bool = False, timeout: float = 60.0
) -> list[Path]:
    """Download every file of `dataset` that is missing (or, with `force`, every file) and verify it."""
    spec = DATASETS.get(dataset) if isinstance(dataset, str) else dataset
    root = root if root is not None else data_root(must_exist=False)
    missing = [f for f in spec.files if f.url is None]
    if missing:
        raise SafedoseError(
            f"{spec.name}: {missing[0].path} is a split derived from {spec.upstream} and cannot be fetched; "
            "download the upstream file and place the split under the data root"
        )
    paths = []
    for f in spec.files:
        target = root / f.path
        if force or not target.is_file() or sha256_file(target) != f.sha256:
            _download(f, target, timeout=timeout)
        paths.append(target)
    return paths


def _download(f: DataFile, target: Path, *, timeout: float) -> None:
    assert f.url is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        honour_umask(tmp)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(f.url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task(target.name, total=total)
                while block := response.read(1 << 16):
                    out.write(block)
                    progress.advance(task, len(block))
        got = sha256_file(tmp)
        if got != f.sha256:
            raise SafedoseError(f"{f.url}: sha256 mismatch (expected {f.sha256}, got {got}); nothing was written")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise SafedoseError(f"{f.url}: download failed: {e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
