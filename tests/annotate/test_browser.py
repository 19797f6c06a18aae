"""The app in a real headless Chromium: hostile text stays text, and the keyboard flow of two annotators at once.

Set SAFEDOSE_SCREENSHOTS=DIR to keep the screenshots (otherwise they go to the test's temporary directory)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from safedose.annotate import SampleSpec, invite, open_store
from tests.annotate.conftest import HOSTILE, App, make_run, start_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
CLASS_KEYS = {"1": "compliance", "2": "refusal", "3": "partial"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` runs the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the Playwright driver is not installed (dev extra)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


def _shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("SAFEDOSE_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def _watch(page: Any) -> list[str]:
    """Every dialog, console error and page error of `page` (a script that ran would show up here)."""
    seen: list[str] = []
    page.on("dialog", lambda d: (seen.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: seen.append(f"page error: {e}"))
    page.on("console", lambda m: seen.append(f"console: {m.text}") if m.type == "error" else None)
    return seen


def _count(page: Any, done: int) -> None:
    page.wait_for_function("n => document.getElementById('count').textContent.startsWith(n + ' of')", arg=done)


def test_hostile_prompts_and_answers_show_as_text_and_run_nothing(browser: Any, tmp_path: Path,
                                                                 app_process: list[App]) -> None:  # fmt: skip
    run = make_run(tmp_path / "run", n_prompts=len(HOSTILE), hostile=True)
    open_store(run, SampleSpec(per_cell=len(HOSTILE), overlap=1.0, seed=0), create=True)
    app = start_app(run)
    app_process.append(app)
    link = invite(run, "alice", url=app.url)
    headers = {"Authorization": "Bearer " + link.split("token=")[1]}
    page = browser.new_page()
    seen = _watch(page)
    page.goto(link)
    shown = []
    for k in range(8):
        _count(page, k)
        item = httpx.get(f"{app.url}/api/next", headers=headers).json()["item"]
        assert page.text_content("#prompt") == item["prompt"]  # the markup, literally
        assert page.text_content("#response") == item["response"]
        assert page.is_visible("#harmful-row") == item["ask_harmful"]  # asked on unsafe prompts only
        tags = page.eval_on_selector_all("#prompt *, #response *", "nodes => nodes.map(n => n.tagName)")
        assert tags == []
        shown += [item["prompt"], item["response"]]
        if k == 0:
            page.screenshot(path=str(_shots(tmp_path) / "annotate-hostile.png"))
        page.keyboard.press("2")
        if item["ask_harmful"]:
            page.keyboard.press("n")
    assert all(any(h in text for text in shown) for h in HOSTILE)  # every payload was on screen
    page.fill("#note", HOSTILE[1])
    page.keyboard.press("Escape")  # out of the note: the keys act again
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => document.getElementById('position').textContent.startsWith('Your label')")
    page.click("#note")
    page.fill("#note", HOSTILE[0] + HOSTILE[1])
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('status').textContent === 'Saved'")
    page.reload()
    _count(page, 8)
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => document.getElementById('note').value !== ''")
    assert page.input_value("#note") == HOSTILE[0] + HOSTILE[1]
    assert page.evaluate("() => window.__pwned === undefined")
    assert page.evaluate("() => document.querySelectorAll('img, svg, a[href], iframe').length") == 0
    assert seen == []


def _label_with_keys(page: Any, count: int, start: int, *, contrary: int) -> None:
    """Label `count` items from the keyboard as the answer reads (1 / 2 / 3; y / n where the harmful question shows),
    taking the other view on every `contrary`-th item."""
    for k in range(count):
        _count(page, start + k)
        answer = page.text_content("#response")
        key = "2" if answer.startswith("I'm sorry") else "3" if answer.startswith("I can't") else "1"
        if (start + k) % contrary == contrary - 1:
            key = {"1": "3", "2": "3", "3": "2"}[key]
        asks_harmful = page.is_visible("#harmful-row")  # before the key: a saved label brings the next item
        page.keyboard.press(key)
        if asks_harmful:
            page.keyboard.press("n" if key == "2" else "y")
    _count(page, start + count)


def test_two_annotators_label_with_the_keyboard_reload_undo_and_export(browser: Any, tmp_path: Path,
                                                                      app_process: list[App]) -> None:  # fmt: skip
    run = make_run(tmp_path / "run")
    open_store(run, SampleSpec(per_cell=4, overlap=0.5, seed=0), create=True)
    app = start_app(run)
    app_process.append(app)
    alice, bob = (browser.new_context(viewport={"width": 1100, "height": 820}) for _ in range(2))
    pages = [ctx.new_page() for ctx in (alice, bob)]
    seen = [_watch(p) for p in pages]
    writes: list[tuple[str, str, dict[str, Any] | None]] = []

    def record(response: Any) -> None:
        if response.request.method in ("PUT", "POST") and response.ok:
            writes.append((response.request.method, response.url, response.json()))

    pages[0].on("response", record)
    for page, name in zip(pages, ("alice", "bob"), strict=True):
        page.goto(invite(run, name, url=app.url))
        page.wait_for_function("() => !document.getElementById('main').hidden")
        assert "token" not in page.url  # the token left the address bar
    for step in range(2):  # both label at once, in turns of five
        for k, page in enumerate(pages):
            _label_with_keys(page, 5, 5 * step, contrary=7 if k else 9)
    pages[0].keyboard.press("ArrowLeft")
    pages[0].keyboard.press("ArrowLeft")
    pages[0].wait_for_function("() => document.getElementById('position').textContent.startsWith('Your label 9')")
    pages[0].keyboard.press("3")  # an edit of an earlier label
    pages[0].wait_for_function("() => document.getElementById('status').textContent === 'Saved'")
    pages[0].screenshot(path=str(_shots(tmp_path) / "annotate-label.png"))
    pages[0].keyboard.press("ArrowRight")
    pages[0].keyboard.press("ArrowRight")
    pages[0].wait_for_function("() => document.getElementById('position').textContent === 'New item'")

    pages[0].reload()
    _count(pages[0], 10)  # progress kept
    pages[0].keyboard.press("u")  # takes back the edit: label 9 has its first value again
    pages[0].wait_for_function("() => document.getElementById('status').textContent.startsWith('Undone: your')")
    assert pages[0].text_content("#position").startswith("Your label 9 of 10")
    pages[0].keyboard.press("u")  # takes back the tenth label
    _count(pages[0], 9)
    assert pages[0].text_content("#position") == "New item"

    stacks: dict[str, list[tuple[str, str | None]]] = {}
    for method, url, body in writes:
        assert body is not None
        if method == "PUT":
            stacks.setdefault(url.rsplit("/", 1)[1], []).append((body["label"]["refusal"], body["label"]["harmful"]))
        else:
            stacks[body["item"]["id"]].pop()
    expected = {item: values[-1] for item, values in stacks.items() if values}
    assert len(expected) == 9 and sum(len(v) for v in stacks.values()) == 9
    out = tmp_path / "labels.jsonl"
    from safedose.annotate import export

    export(run, "jsonl", out)
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    mine = {r["item"]: (r["refusal"], r["harmful"]) for r in exported if r["annotator"] == "alice"}
    assert mine == expected
    assert len([r for r in exported if r["annotator"] == "bob"]) == 10

    summary = browser.new_page(viewport={"width": 1100, "height": 900})
    seen.append(_watch(summary))
    summary.goto(app.admin_url)
    summary.wait_for_function("() => !document.getElementById('main').hidden")
    text = summary.text_content("body")
    assert "alice · bob" in text and "Krippendorff" in text and "refusal@1" in text
    summary.screenshot(path=str(_shots(tmp_path) / "annotate-summary.png"), full_page=True)
    assert seen == [[], [], []]


def test_the_class_definitions_open_from_the_labelling_page(browser: Any, tmp_path: Path,
                                                            app_process: list[App]) -> None:  # fmt: skip
    run = make_run(tmp_path / "run")
    open_store(run, SampleSpec(per_cell=1, overlap=1.0, seed=0), create=True)
    app = start_app(run)
    app_process.append(app)
    page = browser.new_page()
    seen = _watch(page)
    page.goto(invite(run, "alice", url=app.url))
    page.wait_for_function("() => !document.getElementById('main').hidden")
    assert not page.is_visible("#guide dl")
    page.keyboard.press("?")
    page.wait_for_function("() => document.getElementById('guide').open")
    assert page.is_visible("#guide dl") and "Partial refusal" in (page.text_content("#guide dl") or "")
    page.click("#guide-button")
    page.wait_for_function("() => !document.getElementById('guide').open")
    _count(page, 0)  # the key labelled nothing
    assert seen == []
