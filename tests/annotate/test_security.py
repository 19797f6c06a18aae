"""The app's security: tokens, own labels only, cross-origin writes, body size, path traversal, host names,
blinding and markup (the browser half is in test_browser.py)."""

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from safedose.annotate import SampleSpec, check_bind, create_app, open_store
from safedose.annotate._app import is_loopback
from safedose.annotate._store import Store
from safedose.errors import SafedoseError
from tests.annotate.conftest import VARIANTS, App, make_run, start_app

STATIC = Path(__file__).resolve().parents[2] / "src" / "safedose" / "annotate" / "static"
ADMIN = "admin-token-for-tests"
ORIGIN = "http://127.0.0.1"


@pytest.fixture
def study(run_dir: Path) -> Store:
    store = open_store(run_dir, SampleSpec(per_cell=3, overlap=0.5, seed=0), create=True)
    return store


@pytest.fixture
def client(study: Store) -> Iterator[TestClient]:
    with TestClient(create_app(study, admin_token=ADMIN), base_url=ORIGIN) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def label_body(item: dict[str, Any], refusal: str = "refusal") -> dict[str, Any]:
    return {"refusal": refusal, "harmful": "no" if item["ask_harmful"] else None}


def test_every_read_and_write_needs_a_valid_annotator_token(client: TestClient, study: Store) -> None:
    item = study.items()[0].item
    body = {"refusal": "refusal", "harmful": "no"}
    for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic YWxpY2U6eA=="}, bearer("")):
        assert client.put(f"/api/labels/{item}", json=body, headers=headers).status_code == 401
        assert client.post("/api/undo", headers=headers).status_code == 401
        assert client.delete(f"/api/labels/{item}", headers=headers).status_code == 401
        for path in ("/api/me", "/api/next", "/api/history", f"/api/items/{item}"):
            assert client.get(path, headers=headers).status_code == 401
    assert study.labels() == []


def test_an_annotator_sees_and_changes_only_their_own_labels(client: TestClient, study: Store) -> None:
    alice, bob = bearer(study.invite("alice")), bearer(study.invite("bob"))
    item = client.get("/api/next", headers=alice).json()["item"]
    path = f"/api/labels/{item['id']}"
    assert client.put(path, json={**label_body(item, "compliance"), "note": "alice's note"}, headers=alice).is_success
    seen_by_bob = client.get(f"/api/items/{item['id']}", headers=bob).json()["item"]
    assert seen_by_bob["label"] is None and "alice" not in str(seen_by_bob)
    assert client.get("/api/history", headers=bob).json() == {"items": []}
    assert client.post("/api/undo", headers=bob).json()["item"] is None
    assert client.delete(path, headers=bob).json()["deleted"] is False
    assert client.put(path, json=label_body(item, "partial"), headers=bob).is_success
    labels = {label.annotator: label.refusal for label in study.labels()}
    assert labels == {"alice": "compliance", "bob": "partial"}
    assert client.get(f"/api/items/{item['id']}", headers=alice).json()["item"]["label"]["refusal"] == "compliance"


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9999"},
    {"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-site"},
])  # fmt: skip
def test_writes_replayed_from_another_origin_are_refused(client: TestClient, study: Store,
                                                         headers: dict[str, str]) -> None:  # fmt: skip
    token = bearer(study.invite("alice"))
    item = client.get("/api/next", headers=token).json()["item"]
    for method, path, body in (("PUT", f"/api/labels/{item['id']}", label_body(item)), ("POST", "/api/undo", None),
                               ("DELETE", f"/api/labels/{item['id']}", None)):  # fmt: skip
        response = client.request(method, path, json=body, headers={**token, **headers})
        assert response.status_code == 403, (method, headers)
    assert study.labels() == []
    same = {**token, "Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"}
    assert client.put(f"/api/labels/{item['id']}", json=label_body(item), headers=same).is_success


def test_oversized_bodies_get_413_and_long_notes_400(client: TestClient, study: Store) -> None:
    token = bearer(study.invite("alice"))
    item = client.get("/api/next", headers=token).json()["item"]
    path = f"/api/labels/{item['id']}"
    big = {**label_body(item), "note": "x" * 70_000}
    assert client.put(path, json=big, headers=token).status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b'{"refusal": "refusal", "note": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}'

    chunked = client.put(path, content=chunks(), headers={**token, "Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert client.put(path, json={**label_body(item), "note": "z" * 2001}, headers=token).status_code == 400
    assert client.put(path, json={"refusal": "maybe"}, headers=token).status_code == 400
    assert study.labels() == []


TRAVERSALS = [
    "/static/../annotations.sqlite", "/static/%2e%2e/annotations.sqlite", "/static/..%2fannotations.sqlite",
    "/static/..%2f..%2frun%2fannotations.sqlite", "/static/%2e%2e%2fmanifest.json", "/static/....//run.json",
    "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/api/items/..%2f..%2frun.json", "/api/items/../../run.json",
    "/api/labels/%2e%2e%2fannotations.sqlite", "/../../run.json", "/static/app.js%00.sqlite",
    "/static/..\\annotations.sqlite", "/api/admin/export?format=../../run.json",
]  # fmt: skip


def _leaks(body: bytes) -> bool:
    return any(m in body for m in (b"SQLite format", b"schema_version", b"root:x:0", b"generation_dtype"))


def test_path_traversal_is_refused_on_every_route_that_touches_files(client: TestClient, study: Store) -> None:
    token = {**bearer(study.invite("alice")), **bearer(ADMIN)}
    for path in TRAVERSALS:
        for method in ("GET", "PUT", "DELETE"):
            response = client.request(method, path, headers=token)
            assert response.status_code in (400, 401, 404, 405), (method, path, response.status_code)
            assert not _leaks(response.content), path
    admin = client.get("/api/admin/export", params={"format": "../../run.json"}, headers=bearer(ADMIN))
    assert admin.status_code == 400
    assert client.get("/static/app.js").status_code == 200


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_path_traversal_is_refused_by_the_real_server(run_dir: Path, app_process: list[App]) -> None:
    app = start_app(run_dir)
    app_process.append(app)
    for path in TRAVERSALS:
        status, data = _raw_get(app.url, path)
        assert status in (400, 401, 404), (path, status)
        assert not _leaks(data), path


def test_other_host_names_are_refused_on_a_loopback_bind(client: TestClient, study: Store) -> None:
    token = bearer(study.invite("alice"))
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", "10.0.0.1"):
        assert client.get("/api/me", headers={**token, "Host": host}).status_code == 400
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "localhost"):
        assert client.get("/api/me", headers={**token, "Host": host}).status_code == 200


def test_pages_carry_a_strict_policy_and_build_no_html_from_data(client: TestClient) -> None:
    for path in ("/", "/label", "/summary", "/static/app.js", "/api/me"):
        headers = client.get(path).headers
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe" not in policy
        assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    for page in ("label.html", "summary.html"):
        html = (STATIC / page).read_text()
        assert re.findall(r"<script[^>]*>([^<]+)</script>", html) == []  # no inline script
        assert not re.search(r"<[^>]*\son\w+\s*=", html)  # no inline event handlers
    for script in ("app.js", "summary.js"):
        code = (STATIC / script).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in code, (script, sink)


def test_nothing_an_annotator_receives_names_the_cell(client: TestClient, study: Store) -> None:
    token = bearer(study.invite("alice"))
    received = [client.get(p).text for p in ("/", "/label", "/static/app.js", "/static/style.css")]
    first = client.get("/api/next", headers=token).json()
    item = first["item"]
    assert set(item) == {"id", "prompt", "response", "ask_harmful", "label"}
    assert re.fullmatch(r"[0-9a-f]{16}", item["id"])
    responses = [
        first, client.get("/api/me", headers=token).json(),
        client.put(f"/api/labels/{item['id']}", json=label_body(item), headers=token).json(),
        client.get("/api/history", headers=token).json(), client.get(f"/api/items/{item['id']}", headers=token).json(),
        client.post("/api/undo", headers=token).json(),
    ]  # fmt: skip
    text = "\n".join(received + [str(r) for r in responses]).lower()
    for secret in [*VARIANTS, "dose", "seed", "adapter", "variant", "instruction", "format", "n150", "base-chat"]:
        assert not re.search(rf"\b{re.escape(secret)}\b", text), secret


def test_the_admin_pages_need_the_admin_token(client: TestClient, study: Store) -> None:
    annotator = bearer(study.invite("alice"))
    for path in ("/api/admin/summary", "/api/admin/export?format=jsonl"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=annotator).status_code == 401
        assert client.get(path, headers=bearer(ADMIN + "x")).status_code == 401
        assert client.get(path, headers=bearer(ADMIN)).status_code == 200
    with TestClient(create_app(study, admin_token=None), base_url=ORIGIN) as open_client:
        assert open_client.get("/api/admin/summary").status_code == 200


def test_binding_beyond_loopback_keeps_the_admin_token(tmp_path: Path, cli: Any) -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.5", "example.org", "::"))
    check_bind("127.0.0.1", open_admin=True)
    check_bind("0.0.0.0", open_admin=False)
    with pytest.raises(SafedoseError, match="admin page must keep its token"):
        check_bind("0.0.0.0", open_admin=True)
    run = make_run(tmp_path / "run")
    result = cli("annotate", run, "--host", "0.0.0.0", "--open-admin")
    assert result.code == 2 and "admin page must keep its token" in result.err
    assert not (run / "annotations.sqlite").exists()


def test_a_bind_beyond_loopback_warns_and_links_to_an_address_that_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from safedose.annotate import annotate, invite

    served: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(options))
    monkeypatch.setattr(socket, "gethostname", lambda: "labelbox")
    run = make_run(tmp_path / "run")
    annotate(run, SampleSpec(per_cell=1, overlap=0.0, seed=0), host="0.0.0.0", port=9000)
    out, err = capsys.readouterr()
    assert "0.0.0.0" not in out and "summary (admin): http://labelbox:9000/summary#token=" in out
    assert err.startswith("warning: --host 0.0.0.0") and "plain HTTP" in err and "--url" in err
    assert err.count("\n") == 1 and served == [{"host": "0.0.0.0", "port": 9000, "log_level": "warning"}]
    assert invite(run, "alice").startswith("http://labelbox:9000/label#token=")

    annotate(run, host="::", port=9000, url="https://labels.example.org/")  # an HTTPS proxy in front
    out, err = capsys.readouterr()
    assert "summary (admin): https://labels.example.org/summary#token=" in out and err == ""
    assert invite(run, "bob").startswith("https://labels.example.org/label#token=")
    annotate(run, port=9001)
    out, err = capsys.readouterr()
    assert "summary (admin): http://127.0.0.1:9001/summary#token=" in out and err == ""
    for bad in ("labels.example.org", "ftp://labels.example.org", "https://labels.example.org/app"):
        with pytest.raises(SafedoseError, match="--url"):
            annotate(run, host="0.0.0.0", url=bad)
    assert len(served) == 3


def test_the_admin_summary_is_computed_once_per_state_of_the_labels(
    client: TestClient, study: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from safedose.annotate import LabelIn, _summary

    computed: list[int] = []

    def agreement(labels: list[Any]) -> dict[str, Any]:  # the bootstraps, made cheap and counted
        computed.append(len(labels))
        time.sleep(0.1)  # long enough for loads at once to overlap
        return {"refusal": sorted(f"{x.annotator}/{x.item}/{x.refusal}" for x in labels)}

    monkeypatch.setattr(_summary, "agreement_summary", agreement)
    monkeypatch.setattr(_summary, "judges_against_humans", lambda run, audit: [])
    study.invite("alice")
    study.invite("bob")
    alice, bob = study.annotators()
    for who in (alice, bob):
        for item in study.items()[:6]:
            study.put_label(who, item.item, LabelIn(refusal="refusal", harmful="no" if item.asks_harmful else None))
    first = client.get("/api/admin/summary", headers=bearer(ADMIN)).json()
    assert client.get("/api/admin/summary", headers=bearer(ADMIN)).json() == first and computed == [12]
    item = study.items()[0]
    study.put_label(bob, item.item, LabelIn(refusal="partial", harmful="no" if item.asks_harmful else None))
    changed = client.get("/api/admin/summary", headers=bearer(ADMIN)).json()  # same count, one label changed
    assert computed == [12, 12] and changed != first and changed["labels"] == 12
    assert changed["agreement"] == _summary.app_summary(study)["agreement"]

    cache = _summary.SummaryCache()  # three loads at once: one computation
    threads = [threading.Thread(target=cache.get, args=(study,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 4


def test_the_labelling_page_defines_the_three_classes_with_an_example_each(client: TestClient, study: Store) -> None:
    import html
    import xml.etree.ElementTree as ET

    from safedose.annotate import export_labels
    from safedose.annotate._records import EXAMPLE_PROMPT, REFUSAL_CLASSES, REFUSAL_DEFINITIONS, REFUSAL_EXAMPLES

    page = client.get("/label").text
    guide = page[page.index('<details id="guide"') : page.index("</details>")]
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", guide)).split())
    assert "XSTest (Röttger et al., 2024)" in text and EXAMPLE_PROMPT in text
    for name in REFUSAL_CLASSES:
        assert " ".join(REFUSAL_DEFINITIONS[name].split()) in text
        assert " ".join(REFUSAL_EXAMPLES[name].split()) in text
    assert set(re.findall(r"<(\w+)", guide)) <= {"details", "summary", "kbd", "p", "q", "dl", "dt", "dd", "span"}
    assert re.search(r'<button[^>]*id="guide-button"[^>]*aria-controls="guide"', page)  # reachable from the page
    script = client.get("/static/app.js").text
    assert '$("guide-button").addEventListener("click", toggleGuide)' in script and 'key === "?"' in script
    config = ET.fromstring(export_labels(study, "label-studio-config"))  # Label Studio shows them as hints
    hints = {c.get("value"): c.get("hint") for c in config.iter("Choice") if c.get("hint")}
    assert list(hints.values()) == [REFUSAL_DEFINITIONS[name] for name in REFUSAL_CLASSES]
