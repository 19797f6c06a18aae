"""Many annotators at once against the real app on loopback, and a `kill -9` in the middle of it."""

import hashlib
import os
import signal
import sqlite3
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest

from safedose.annotate import DB_NAME, invite
from tests.annotate.conftest import App, free_port, make_run, start_app

ANNOTATORS, LABELS_EACH, DEADLINE_S = 20, 200, 150
CLASSES = ("compliance", "refusal", "partial")


def _choice(name: str, item: str) -> str:
    return CLASSES[hashlib.sha256(f"{name}/{item}".encode()).digest()[0] % 3]


class Load:
    """Annotator threads that each take the next item and label it, up to `labels` times; every success is kept."""

    def __init__(self, url: str, tokens: dict[str, str], labels: int) -> None:
        self.url, self.tokens, self.labels = url, tokens, labels
        self.ok: list[tuple[str, str, str]] = []
        self.latency: list[float] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def annotator(self, name: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        headers = {"Authorization": f"Bearer {self.tokens[name]}", "Origin": self.url}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            for _ in range(self.labels):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    start = time.perf_counter()
                    item = client.get("/api/next").raise_for_status().json()["item"]
                    middle = time.perf_counter()
                    if item is None:
                        return
                    refusal = _choice(name, item["id"])
                    body = {"refusal": refusal, "harmful": "no" if item["ask_harmful"] else None}
                    client.put(f"/api/labels/{item['id']}", json=body).raise_for_status()
                    end = time.perf_counter()
                except httpx.HTTPError as e:
                    with self.lock:
                        self.errors.append(f"{name}: {type(e).__name__}")
                    return
                with self.lock:
                    self.ok.append((name, item["id"], refusal))
                    self.latency += [middle - start, end - middle]

    def run(self) -> None:
        threads = [threading.Thread(target=self.annotator, args=(name,)) for name in self.tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_S + 30)

    def report(self, what: str) -> str:
        ms = sorted(x * 1000 for x in self.latency)
        p50, p95 = statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]
        return f"{what}: {len(self.ok)} labels, {len(ms)} requests, p50 {p50:.1f} ms, p95 {p95:.1f} ms"


def _stored(run: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(run / DB_NAME)
    rows = db.execute("SELECT a.name, l.item, l.refusal FROM labels l JOIN annotators a ON a.id = l.annotator_id")
    return list(rows)


def _study(tmp_path: Path, port: int) -> tuple[Path, dict[str, str]]:
    run = make_run(tmp_path / "run", n_prompts=20)  # 5 variants x 2 sets x 20 prompts = 200 answers
    from safedose.annotate import SampleSpec, open_store

    open_store(run, SampleSpec(per_cell=20, overlap=1.0, seed=0), create=True)  # every item to everyone
    url = f"http://127.0.0.1:{port}"
    tokens = {f"annotator{k:02d}": invite(run, f"annotator{k:02d}", url=url).split("token=")[1]
              for k in range(ANNOTATORS)}  # fmt: skip
    return run, tokens


def test_twenty_annotators_at_once_lose_and_duplicate_nothing(
    tmp_path: Path, app_process: list[App], capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    run, tokens = _study(tmp_path, port)
    app = start_app(run, port=port)
    app_process.append(app)
    load = Load(app.url, tokens, LABELS_EACH)
    started = time.monotonic()
    load.run()
    with capsys.disabled():
        print(
            "\n" + load.report(f"{ANNOTATORS} annotators x {LABELS_EACH} labels in {time.monotonic() - started:.1f} s")
        )
    assert load.errors == []
    assert len(load.ok) == ANNOTATORS * LABELS_EACH
    stored = _stored(run)
    assert len(stored) == len(set((n, i) for n, i, _ in stored)) == ANNOTATORS * LABELS_EACH  # none duplicated
    assert set(stored) == set(load.ok)  # none lost, each as sent


def test_kill_9_in_the_middle_keeps_every_label_that_was_answered(
    tmp_path: Path, app_process: list[App], capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    run, tokens = _study(tmp_path, port)
    app = start_app(run, port=port)
    app_process.append(app)
    load = Load(app.url, tokens, 60)

    def kill_when_busy() -> None:
        deadline = time.monotonic() + DEADLINE_S
        while len(load.ok) < 300 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(app.proc.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    load.run()
    killer.join()
    app.proc.wait(timeout=10)
    assert app.proc.returncode == -signal.SIGKILL
    answered = list(load.ok)
    with capsys.disabled():
        print("\n" + load.report(f"killed after {len(answered)} answered labels ({len(load.errors)} cut off)"))
    assert 300 <= len(answered) < ANNOTATORS * 60 and load.errors

    again = start_app(run, port=port)
    app_process.append(again)
    stored = set(_stored(run))
    assert set(answered) <= stored  # every label answered with success is there
    assert len(stored) - len(answered) <= ANNOTATORS  # at most the requests in flight at the kill
    for name, item, refusal in answered[:: max(1, len(answered) // 40)]:  # and the restarted app serves them
        headers = {"Authorization": f"Bearer {tokens[name]}"}
        label = httpx.get(f"{again.url}/api/items/{item}", headers=headers).json()["item"]["label"]
        assert label["refusal"] == refusal
