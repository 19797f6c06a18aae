import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from safedose.annotate import (
    DB_NAME,
    LabelIn,
    SampleSpec,
    export_labels,
    import_file,
    open_store,
    read_labels,
)
from safedose.annotate._store import Store, token_hash
from safedose.errors import SafedoseError
from tests.annotate.conftest import VARIANTS, make_run


def test_the_sample_is_stratified_by_cell_and_eval_set_seeded_and_blinded(run_dir: Path) -> None:
    store = open_store(run_dir, SampleSpec(per_cell=4, overlap=0.5, seed=3), create=True)
    items = store.items()
    strata = Counter((i.variant, i.eval_set) for i in items)
    assert set(strata.values()) == {4} and len(strata) == len(VARIANTS) * 2
    assert Counter((i.variant, i.eval_set) for i in items if i.overlap) == Counter({k: 2 for k in strata})
    assert all(len(i.item) == 16 and int(i.item, 16) >= 0 for i in items)  # opaque ids
    assert len({i.variant for i in items[:10]}) > 1  # shuffled across cells
    again = open_store(run_dir)
    assert [i.item for i in again.items()] == [i.item for i in items]


def test_the_same_seed_draws_the_same_answers_in_the_same_order(tmp_path: Path) -> None:
    spec = SampleSpec(per_cell=3, overlap=0.25, seed=1)
    first = [i.answer_key for i in open_store(make_run(tmp_path / "a"), spec, create=True).items()]
    second = [i.answer_key for i in open_store(make_run(tmp_path / "b"), spec, create=True).items()]
    assert first == second


def test_a_sample_drawn_with_other_settings_is_refused(run_dir: Path) -> None:
    open_store(run_dir, SampleSpec(per_cell=3, overlap=0.25, seed=0), create=True)
    with pytest.raises(SafedoseError, match=r"--per-cell 3 --overlap 0\.25 --seed 0"):
        open_store(run_dir, SampleSpec(per_cell=5, overlap=0.25, seed=0), create=True)
    assert open_store(run_dir).spec() == SampleSpec(per_cell=3, overlap=0.25, seed=0)


def test_a_database_drawn_before_the_safety_axis_gets_its_column(run_dir: Path) -> None:
    items = open_store(run_dir, SampleSpec(per_cell=2, overlap=0.5, seed=0), create=True).items()
    with sqlite3.connect(run_dir / DB_NAME) as db:
        db.execute("ALTER TABLE items DROP COLUMN safety")
    again = Store(run_dir / DB_NAME)
    assert [(i.item, i.cell) for i in again.items()] == [(i.item, i.cell) for i in items]
    assert all(i.safety is None for i in again.items())


def test_no_store_without_a_sample_and_no_half_written_file(tmp_path: Path) -> None:
    from safedose.run import open_run

    run = open_run(tmp_path / "empty", create=True)
    with pytest.raises(SafedoseError, match="start `safedose annotate"):
        open_store(run)
    with pytest.raises(SafedoseError, match=r"judged\.jsonl"):
        open_store(run, create=True)
    assert not (run / DB_NAME).exists()


def test_tokens_are_kept_as_hashes_and_one_label_per_annotator_and_item(run_dir: Path) -> None:
    store = open_store(run_dir, SampleSpec(per_cell=2, overlap=1.0, seed=0), create=True)
    token = store.invite("alice")
    raw = b"".join(p.read_bytes() for p in run_dir.glob(f"{DB_NAME}*"))
    assert token.encode() not in raw and token_hash(token).encode() in raw
    with pytest.raises(SafedoseError, match="already invited"):
        store.invite("alice")
    assert store.annotator(store.invite("alice", new_token=True)) is not None
    assert store.annotator(token) is None  # the old link stops working
    with pytest.raises(SafedoseError, match="annotator name"):
        store.invite("<b>eve</b>")
    who = store.annotators()[0]
    item = store.items()[0].item
    for refusal in ("compliance", "refusal", "partial"):
        store.put_label(who, item, LabelIn(refusal=refusal, harmful="no"))  # type: ignore[arg-type]
    assert [(label.item, label.refusal) for label in store.labels(who)] == [(item, "partial")]
    db = sqlite3.connect(run_dir / DB_NAME)
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO labels (annotator_id, item, refusal, created_at, updated_at) "
                   "VALUES (?, ?, 'refusal', 0, 0)", (who.id, item))  # fmt: skip


def test_unshared_items_go_to_one_annotator_and_shared_ones_to_all(run_dir: Path) -> None:
    store = open_store(run_dir, SampleSpec(per_cell=2, overlap=0.5, seed=0), create=True)
    store.invite("alice")
    store.invite("bob")
    alice, bob = store.annotators()
    _, open_to_alice = store.queue(alice)
    assert [i.overlap for i in open_to_alice[:10]] == [True] * 10  # shared items come first
    single = next(i for i in open_to_alice if not i.overlap)
    shared = open_to_alice[0]
    for item in (single, shared):
        store.put_label(alice, item.item, LabelIn(refusal="refusal", harmful="no"))
    _, open_to_bob = store.queue(bob)
    ids = {i.item for i in open_to_bob}
    assert shared.item in ids and single.item not in ids
    assert [i.item for i in store.queue(bob)[1]] != [i.item for i in store.queue(alice)[1]]  # own orders


def test_undo_takes_back_that_annotator_s_changes_one_at_a_time(run_dir: Path) -> None:
    store = open_store(run_dir, SampleSpec(per_cell=2, overlap=1.0, seed=0), create=True)
    store.invite("alice")
    store.invite("bob")
    alice, bob = store.annotators()
    a, b, c = (i.item for i in store.items()[:3])
    store.put_label(alice, a, LabelIn(refusal="refusal", harmful="no", note="first"))
    store.put_label(alice, b, LabelIn(refusal="refusal", harmful="no"))
    store.put_label(bob, c, LabelIn(refusal="refusal", harmful="no"))
    store.put_label(alice, a, LabelIn(refusal="compliance", harmful="yes"))  # an edit is the latest change
    assert store.delete_label(alice, b) and not store.delete_label(alice, b)

    def mine() -> list[tuple[str, str, str]]:
        return sorted((x.item, x.refusal, x.note) for x in store.labels(alice))

    assert mine() == [(a, "compliance", "")]
    assert store.undo(alice) == b and mine() == sorted([(a, "compliance", ""), (b, "refusal", "")])
    assert store.undo(alice) == a and mine() == sorted([(a, "refusal", "first"), (b, "refusal", "")])
    assert store.undo(alice) == b and store.undo(alice) == a and store.undo(alice) is None and mine() == []
    assert [x.item for x in store.labels(bob)] == [c]


def _labelled_store(run_dir: Path) -> Store:
    store = open_store(run_dir, SampleSpec(per_cell=2, overlap=0.5, seed=0), create=True)
    for name in ("alice", "bob"):
        store.invite(name)
    alice, bob = store.annotators()
    for k, item in enumerate(store.items()[:8]):
        harmful = ("yes" if k % 2 else "no") if item.asks_harmful else None
        note = 'says "<b>no</b>"\nsecond line' if k == 1 else ""
        store.put_label(alice, item.item, LabelIn(refusal="refusal", harmful=harmful, note=note))
        if k < 4:
            store.put_label(bob, item.item, LabelIn(refusal="compliance", harmful=harmful))
    return store


def _as_set(labels: list) -> set:  # type: ignore[type-arg]
    return {(x.item, x.annotator, x.refusal, x.harmful, x.note, round(x.created_at, 3)) for x in labels}


@pytest.mark.parametrize("fmt", ["jsonl", "label-studio"])
def test_export_then_import_into_a_fresh_sample_gives_the_same_labels(run_dir: Path, tmp_path: Path, fmt: str) -> None:
    store = _labelled_store(run_dir)
    exported = tmp_path / f"labels.{fmt}"
    exported.write_text(export_labels(store, fmt), encoding="utf-8")
    assert _as_set(read_labels(exported)) == _as_set(store.labels())
    text = exported.read_text(encoding="utf-8")
    for variant in VARIANTS:
        assert variant not in text  # exports are blinded too
    other = make_run(tmp_path / "other")  # a fresh study of the same sample, without labels
    fresh = Store(other / DB_NAME)
    fresh.create_sample(store.items(), SampleSpec(per_cell=2, overlap=0.5, seed=0))
    assert import_file(other, exported) == {"added": 12, "replaced": 0, "unchanged": 0}
    assert _as_set(fresh.labels()) == _as_set(store.labels())
    assert import_file(other, exported) == {"added": 0, "replaced": 0, "unchanged": 12}


def test_label_studio_tasks_have_its_shape(run_dir: Path) -> None:
    store = _labelled_store(run_dir)
    tasks = json.loads(export_labels(store, "label-studio"))
    labelled = [t for t in tasks if t["annotations"]]
    annotation = labelled[0]["annotations"][0]
    assert set(labelled[0]["data"]) == {"item", "prompt", "response", "ask_harmful"}
    assert annotation["result"][0] == {"from_name": "refusal", "to_name": "response", "type": "choices",
                                       "value": {"choices": ["Full refusal"]}}  # fmt: skip
    assert isinstance(annotation["completed_by"], int) and annotation["was_cancelled"] is False
    config = export_labels(store, "label-studio-config")
    assert '<Choices name="refusal" toName="response"' in config and "$response" in config


def test_a_bad_import_stores_nothing(run_dir: Path, tmp_path: Path) -> None:
    store = _labelled_store(run_dir)
    rows = [json.loads(line) for line in export_labels(store, "jsonl").splitlines()]
    rows = [{**r, "annotator": "carol"} for r in rows]
    rows[-1]["item"] = "0" * 16
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(SafedoseError, match="not in this sample"):
        import_file(run_dir, path)
    path.write_text('{"item": "x"}\n', encoding="utf-8")
    with pytest.raises(SafedoseError, match="line 1: not a label"):
        import_file(run_dir, path)
    path.write_text(json.dumps({**rows[0], "annotator": "car\u2028ol"}) + "\n", encoding="utf-8")
    with pytest.raises(SafedoseError, match=r"bad\.jsonl: line 1: annotator name 'car\\u2028ol': control"):
        import_file(run_dir, path)
    assert {label.annotator for label in store.labels()} == {"alice", "bob"}
    assert [a.name for a in store.annotators()] == ["alice", "bob"]


def test_annotator_names_are_normalised_validated_and_unique_whatever_their_case(run_dir: Path) -> None:
    store = open_store(run_dir, SampleSpec(per_cell=2, overlap=1.0, seed=0), create=True)
    store.invite("  alice \n")
    store.invite("José   Núñez")
    assert [a.name for a in store.annotators()] == ["alice", "José Núñez"]
    for twin in ("Alice", "ALICE ", "alice\t", "\u00a0alice"):
        with pytest.raises(SafedoseError, match="'alice' is already invited"):
            store.invite(twin)
    for bad in ("al\nice", "car\u2028ol", "bob\x00", "eve\u200b", "x" * 65, "   ", "<b>eve</b>"):
        with pytest.raises(SafedoseError, match="annotator name") as e:
            store.invite(bad)
        assert "\n" not in str(e.value)
    assert store.annotator(store.invite("ALICE", new_token=True)) == store.annotators()[0]
    assert len(store.annotators()) == 2


def test_reimporting_the_app_s_own_export_makes_no_shadow_annotators(run_dir: Path, tmp_path: Path) -> None:
    store = open_store(run_dir, SampleSpec(per_cell=2, overlap=1.0, seed=0), create=True)
    for name in ("alice ", "bob\n"):  # were stored as typed, and the Label Studio export strips them
        store.invite(name)
    alice, bob = store.annotators()
    items = store.items()[:6]
    for k, item in enumerate(items):
        harmful = "no" if item.asks_harmful else None
        store.put_label(alice, item.item, LabelIn(refusal="refusal", harmful=harmful))
        store.put_label(bob, item.item, LabelIn(refusal=("compliance", "refusal")[k % 2], harmful=harmful))  # type: ignore[arg-type]
    exported = tmp_path / "tasks.json"
    exported.write_text(export_labels(store, "label-studio"), encoding="utf-8")
    assert import_file(run_dir, exported) == {"added": 0, "replaced": 0, "unchanged": 12}
    db = sqlite3.connect(run_dir / DB_NAME)  # a name stored before names were normalised
    with db:
        db.execute("UPDATE annotators SET name = 'bob ' || char(10) WHERE id = ?", (bob.id,))
    db.close()
    tasks = json.loads(exported.read_text(encoding="utf-8"))
    for task in tasks:
        for annotation in task["annotations"]:
            annotation["created_username"] = annotation["created_username"].upper()
    exported.write_text(json.dumps(tasks), encoding="utf-8")
    assert import_file(run_dir, exported) == {"added": 0, "replaced": 0, "unchanged": 12}
    assert [a.id for a in store.annotators()] == [alice.id, bob.id]
    from safedose.annotate import agreement_summary

    assert agreement_summary(store.labels())["refusal"]["krippendorff"]["n_annotators"] == 2


def test_label_studio_users_are_matched_to_the_study_s_annotators(run_dir: Path, tmp_path: Path) -> None:
    store = _labelled_store(run_dir)
    tasks = json.loads(export_labels(store, "label-studio"))
    users = {"alice": ("Alice Smith alice@lab.example, 3", 3), "bob": ("bob@lab.example, 4", 4)}  # Label Studio's
    for task in tasks:
        for annotation in task["annotations"]:
            annotation["created_username"], annotation["completed_by"] = users[annotation["created_username"]]
    carol = {**tasks[0]["annotations"][0], "created_username": "Carol  White carol@lab.example, 5", "completed_by": 5}
    tasks[0]["annotations"].append(carol)
    path = tmp_path / "project.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    assert import_file(run_dir, path) == {"added": 1, "replaced": 0, "unchanged": 12}
    assert [a.name for a in store.annotators()] == ["alice", "bob", "carol@lab.example"]
    tasks[1]["annotations"].append({**carol, "created_username": "Al Smith alice@elsewhere.example, 9"})
    path.write_text(json.dumps(tasks), encoding="utf-8")
    with pytest.raises(SafedoseError, match=r"both match annotator 'alice'"):
        import_file(run_dir, path)
    assert len(store.labels()) == 13


@pytest.mark.parametrize(("place", "value", "message"), [
    ((0, "annotations", 1, "result", 0, "value"), "Full refusal", "result 1: value is a string, not an object"),
    ((0, "annotations", 1, "result", 0, "value"), ["Full refusal"], "result 1: value is a list, not an object"),
    ((0, "annotations", 1, "result", 0, "value", "choices"), "Full refusal", "value.choices is a string"),
    ((0, "annotations", 1, "result", 0), "refusal", "result 1: the region is a string, not an object"),
    ((0, "annotations", 1, "result"), {"refusal": 1}, "annotation 2: result is an object, not a list"),
    ((0, "annotations", 1), "Full refusal", "annotation 2: the annotation is a string, not an object"),
    ((0, "annotations"), {"result": []}, "task 1: annotations is an object, not a list"),
    ((0, "data"), ["item", "prompt"], "task 1: data is a list, not an object"),
    ((1,), "task", "task 2: the task is a string, not an object"),
])  # fmt: skip
def test_a_malformed_label_studio_file_is_a_one_line_error_and_imports_nothing(
    run_dir: Path, tmp_path: Path, cli: Any, place: tuple[Any, ...], value: Any, message: str
) -> None:
    store = _labelled_store(run_dir)
    before = store.labels()
    tasks = json.loads(export_labels(store, "label-studio"))
    carol = {**json.loads(json.dumps(tasks[0]["annotations"][0])), "created_username": "carol"}  # a good label first
    tasks[0]["annotations"].insert(0, carol)
    target: Any = tasks
    for key in place[:-1]:
        target = target[key]
    target[place[-1]] = value
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    with pytest.raises(SafedoseError) as e:
        import_file(run_dir, path)
    assert str(e.value).startswith(f"{path}: task {place[0] + 1}") and message in str(e.value)
    result = cli("annotate", "import", run_dir, path)
    assert result.code == 2 and message in result.err and result.err.strip().count("\n") == 0
    assert store.labels() == before and [a.name for a in store.annotators()] == ["alice", "bob"]


def test_the_undo_history_is_capped_per_annotator(run_dir: Path) -> None:
    from safedose.annotate._store import UNDO_LIMIT

    store = open_store(run_dir, SampleSpec(per_cell=2, overlap=1.0, seed=0), create=True)
    store.invite("alice")
    store.invite("bob")
    alice, bob = store.annotators()
    a, b = (i.item for i in store.items()[:2])
    classes = ("compliance", "refusal", "partial")
    store.put_label(bob, a, LabelIn(refusal="refusal", harmful="no"))
    for k in range(3 * UNDO_LIMIT):  # alternate items, cycle the classes
        store.put_label(alice, (b, a)[k % 2], LabelIn(refusal=classes[k % 3], harmful="no"))  # type: ignore[arg-type]
    db = sqlite3.connect(run_dir / DB_NAME)
    rows = dict(db.execute("SELECT annotator_id, count(*) FROM undo GROUP BY annotator_id").fetchall())
    assert rows == {alice.id: UNDO_LIMIT, bob.id: 1}
    for _ in range(UNDO_LIMIT):
        assert store.undo(alice) in (a, b)
    assert store.undo(alice) is None
    k = 2 * UNDO_LIMIT  # back to the state after the first 2 * UNDO_LIMIT changes
    assert sorted((x.item, x.refusal) for x in store.labels(alice)) == sorted(
        [((b, a)[(k - 2) % 2], classes[(k - 2) % 3]), ((b, a)[(k - 1) % 2], classes[(k - 1) % 3])]
    )
    assert store.undo(bob) == a and store.labels(bob) == []


def test_an_unshared_item_is_handed_to_one_annotator_until_its_lease_ends(run_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from safedose.annotate import create_app
    from safedose.annotate._store import LEASE_S

    store = open_store(run_dir, SampleSpec(per_cell=1, overlap=0.0, seed=0), create=True)
    assert len(store.items()) == 10 and not any(i.overlap for i in store.items())
    tokens = [store.invite(f"annotator{k}") for k in range(11)]
    with TestClient(create_app(store, admin_token=None), base_url="http://127.0.0.1") as client:
        handed = [client.get("/api/next", headers={"Authorization": f"Bearer {t}"}).json() for t in tokens]
    ids = [h["item"]["id"] for h in handed[:10]]
    assert len(set(ids)) == 10  # ten annotators at once get ten different items
    assert handed[10]["item"] is None and handed[10]["held_by_others"] == 10
    people = store.annotators()
    now = time.time()
    assert store.claim_next(people[0], now)[1][0].item == ids[0]  # the same item again, its lease renewed
    item = store.item(ids[1])
    assert item is not None
    store.put_label(people[1], ids[1], LabelIn(refusal="refusal", harmful="no" if item.asks_harmful else None))
    later = now + LEASE_S + 1  # every lease has ended: the items are open again, but not the labelled one
    freed = {store.claim_next(p, later)[1][0].item for p in people[2:]}
    assert freed == set(ids) - {ids[1]}
    store.undo(people[1])  # a label taken back: the item is leased to its annotator again
    assert ids[1] not in {i.item for i in store.queue(people[0], now)[1]}
    assert store.claim_next(people[1], now)[1][0].item == ids[1]


def test_twenty_annotators_at_once_never_label_an_unshared_item_twice(tmp_path: Path) -> None:
    import threading

    run = make_run(tmp_path / "run", n_prompts=14)
    store = open_store(run, SampleSpec(per_cell=14, overlap=0.0, seed=0), create=True)
    assert len(store.items()) == 140
    for k in range(20):
        store.invite(f"annotator{k:02d}")
    errors: list[BaseException] = []

    def work(who: Any) -> None:
        try:
            while open_items := store.claim_next(who)[1]:
                item = open_items[0]
                store.put_label(who, item.item, LabelIn(refusal="refusal", harmful="no" if item.asks_harmful else None))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(who,)) for who in store.annotators()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    labelled = Counter(label.item for label in store.labels())
    assert errors == [] and len(labelled) == 140 and set(labelled.values()) == {1}
    assert len({label.annotator for label in store.labels()}) > 1
