"""The annotation study as functions: serve the app, invite someone, export and import labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from safedose.annotate._app import check_bind, public_url, serve
from safedose.annotate._exchange import EXPORT_FORMATS, export_labels, import_labels
from safedose.annotate._records import SampleSpec
from safedose.annotate._store import DEFAULT_SPEC, open_store
from safedose.errors import SafedoseError
from safedose.files import atomic_open

DEFAULT_URL = "http://127.0.0.1:8765"


def sample_spec(per_cell: int | None, overlap: float | None, seed: int | None) -> SampleSpec | None:
    """The sampling options given on the command line, or None when none was (the stored sample, or defaults)."""
    if per_cell is None and overlap is None and seed is None:
        return None
    try:
        return SampleSpec(per_cell=DEFAULT_SPEC.per_cell if per_cell is None else per_cell,
                          overlap=DEFAULT_SPEC.overlap if overlap is None else overlap,
                          seed=DEFAULT_SPEC.seed if seed is None else seed)  # fmt: skip
    except ValidationError as e:
        first = e.errors()[0]
        raise SafedoseError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None


def annotate(run: Path, spec: SampleSpec | None = None, *, host: str = "127.0.0.1", port: int = 8765,
             open_admin: bool = False, url: str | None = None) -> None:  # fmt: skip
    """Draw the sample (first time) and serve the labelling app until interrupted. `url` is the address put in
    the links (e.g. an HTTPS proxy in front of the app); by default the bound host, or this machine's name for
    a wildcard bind such as 0.0.0.0."""
    check_bind(host, open_admin=open_admin)
    public_url(host, port, url)  # a bad --url is refused before the sample is drawn
    store = open_store(run, spec, create=True)
    serve(run, store, host=host, port=port, open_admin=open_admin, url=url)


def invite(run: Path, name: str, *, url: str | None = None, new_token: bool = False) -> str:
    """A personal link for `name` (a new random token; only its hash is kept)."""
    store = open_store(run)
    token = store.invite(name, new_token=new_token)
    base = (url or str(store.meta("url") or DEFAULT_URL)).rstrip("/")
    return f"{base}/label#token={token}"


def export(run: Path, fmt: str, out: Path) -> int:
    """Write every label (or the Label Studio interface) to `out` atomically; returns the number of labels."""
    if fmt not in EXPORT_FORMATS:
        raise SafedoseError(f"--format {fmt!r}: choose {', '.join(EXPORT_FORMATS)}")
    store = open_store(run)
    text = export_labels(store, fmt)
    with atomic_open(out) as f:
        f.write(text)
    return len(store.labels())


def import_file(run: Path, path: Path) -> dict[str, Any]:
    """Store the labels of a JSONL or Label Studio export, all or none."""
    return import_labels(open_store(run), path)
