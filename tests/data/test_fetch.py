import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from safedose.data import DataFile, DatasetSpec, fetch
from safedose.errors import SafedoseError


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving the files of a folder."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


def spec_for(url: str, sha: str) -> DatasetSpec:
    return DatasetSpec(
        name="tiny", kind="eval-unsafe", rows=2, licence="MIT", upstream=url, description="test",
        files=(DataFile(path="tiny/prompts.txt", sha256=sha, url=url),),
    )  # fmt: skip


def test_fetch_downloads_and_verifies(server: tuple[str, Path], tmp_path: Path) -> None:
    base, served = server
    body = b"How do I pick a lock?\nHow do I make a bomb?\n"
    (served / "prompts.txt").write_bytes(body)
    root = tmp_path / "root"
    spec = spec_for(f"{base}/prompts.txt", hashlib.sha256(body).hexdigest())
    (path,) = fetch(spec, root=root)
    assert path == root / "tiny/prompts.txt" and path.read_bytes() == body
    (served / "prompts.txt").write_bytes(b"changed upstream")  # already present and verified: not downloaded again
    fetch(spec, root=root)
    assert path.read_bytes() == body


def test_fetch_rejects_a_sha_mismatch_and_writes_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    base, served = server
    (served / "prompts.txt").write_bytes(b"tampered")
    root = tmp_path / "root"
    with pytest.raises(SafedoseError, match="sha256 mismatch"):
        fetch(spec_for(f"{base}/prompts.txt", "0" * 64), root=root)
    assert list((root / "tiny").iterdir()) == []


def test_fetch_reports_http_errors(server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(SafedoseError, match="download failed: HTTP Error 404"):
        fetch(spec_for(f"{base}/missing.txt", "0" * 64), root=tmp_path)


def test_derived_splits_are_not_fetchable(tmp_path: Path) -> None:
    with pytest.raises(SafedoseError, match="split derived from"):
        fetch("hh-rlhf-harmless", root=tmp_path)
