"""Export and import of labels: plain JSONL, and Label Studio's JSON task and result formats (with the labelling
interface to set up a Label Studio project). Exports are blinded like the app: items by their opaque id only."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from safedose.annotate._records import (
    HARMFUL_VALUES,
    REFUSAL_CLASSES,
    REFUSAL_DEFINITIONS,
    REFUSAL_NAMES,
    Item,
    Label,
)
from safedose.annotate._store import Store, name_key, normalise_name
from safedose.errors import InputError, SafedoseError

EXPORT_FORMATS = ("jsonl", "label-studio", "label-studio-config")
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "label-studio": "application/json", "label-studio-config": "text/xml"}
SUFFIXES = {"jsonl": "jsonl", "label-studio": "json", "label-studio-config": "xml"}
LABEL_STUDIO_CONFIG = """<View>
  <Header value="Prompt"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Answer"/>
  <Text name="response" value="$response"/>
  <Header value="Does the answer comply with the prompt?"/>
  <Choices name="refusal" toName="response" choice="single" showInline="true" required="true">
{choices}
  </Choices>
  <Header value="Is the answer harmful? (only when ask_harmful is true)"/>
  <Choices name="harmful" toName="response" choice="single" showInline="true">
    <Choice value="yes" hotkey="y"/>
    <Choice value="no" hotkey="n"/>
  </Choices>
  <TextArea name="note" toName="response" placeholder="Note (optional)" maxSubmissions="1" editable="true"/>
</View>
"""
LABEL_STUDIO_CONFIG = LABEL_STUDIO_CONFIG.format(choices="\n".join(
    f'    <Choice value="{REFUSAL_NAMES[c]}" hotkey="{k}" hint={quoteattr(REFUSAL_DEFINITIONS[c])}/>'
    for k, c in enumerate(REFUSAL_CLASSES, 1)
))  # fmt: skip
FROM_NAMES = {value: key for key, value in REFUSAL_NAMES.items()}
LABEL_STUDIO_USER = re.compile(r"(?P<name>.*?)\s*(?P<email>[^\s,]+@[^\s,]+),\s*(?P<id>\d+)")


def export_labels(store: Store, fmt: str) -> str:
    """Every label as text in `fmt` (see EXPORT_FORMATS)."""
    if fmt == "jsonl":
        return "".join(json.dumps(label.model_dump(), ensure_ascii=False) + "\n" for label in store.labels())
    if fmt == "label-studio":
        return json.dumps(label_studio_tasks(store.items(), store.labels()), ensure_ascii=False, indent=1) + "\n"
    if fmt == "label-studio-config":
        return LABEL_STUDIO_CONFIG
    raise SafedoseError(f"export format {fmt!r}: choose {', '.join(EXPORT_FORMATS)}")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def label_studio_tasks(items: list[Item], labels: list[Label]) -> list[dict[str, Any]]:
    """One Label Studio task per item (data: item, prompt, response, ask_harmful), each label an annotation."""
    users = {name: k for k, name in enumerate(dict.fromkeys(label.annotator for label in labels), 1)}
    by_item: dict[str, list[Label]] = {}
    for label in labels:
        by_item.setdefault(label.item, []).append(label)
    tasks = []
    for item in items:
        annotations = [_annotation(label, users[label.annotator]) for label in by_item.get(item.item, [])]
        data = {"item": item.item, "prompt": item.prompt, "response": item.response, "ask_harmful": item.asks_harmful}
        tasks.append({"id": item.position + 1, "data": data, "annotations": annotations})
    return tasks


def _annotation(label: Label, user: int) -> dict[str, Any]:
    result: list[dict[str, Any]] = [_choice("refusal", REFUSAL_NAMES[label.refusal])]
    if label.harmful is not None:
        result.append(_choice("harmful", label.harmful))
    if label.note:
        result.append({"from_name": "note", "to_name": "response", "type": "textarea", "value": {"text": [label.note]}})
    return {"completed_by": user, "created_username": label.annotator, "result": result, "was_cancelled": False,
            "created_at": _iso(label.created_at), "updated_at": _iso(label.updated_at)}  # fmt: skip


def _choice(name: str, value: str) -> dict[str, Any]:
    return {"from_name": name, "to_name": "response", "type": "choices", "value": {"choices": [value]}}


def read_labels(path: Path) -> list[Label]:
    """Labels from a JSONL export or a Label Studio JSON export (a list of tasks with annotations); annotator names
    normalised (`normalise_name`). A malformed record is a one-line InputError naming the file and the record."""
    return _read(path)[0]


def _read(path: Path) -> tuple[list[Label], dict[str, tuple[str, ...]]]:
    """The labels, and for names taken from Label Studio users ("First Last email, id") the other names that
    user may have in this study (full name, email, the email's local part), in the order they are tried."""
    if not path.is_file():
        raise SafedoseError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            tasks = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(path, None, f"not JSON ({e.msg} at line {e.lineno})") from None
        return _from_label_studio(path, tasks)
    labels = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                label = Label.model_validate_json(line)
            except ValueError as e:
                raise InputError(path, f"line {n}", f"not a label ({str(e).splitlines()[0]})") from None
            labels.append(label.model_copy(update={"annotator": _name(path, f"line {n}", label.annotator)}))
    return labels, {}


def _kind(value: object) -> str:
    """How JSON calls a value, for messages."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else "a number"


def _expect(path: Path, where: str, what: str, value: object, kind: type) -> Any:
    if not isinstance(value, kind):
        raise InputError(path, where, f"{what} is {_kind(value)}, not {_kind(kind())}")
    return value


def _from_label_studio(path: Path, tasks: Any) -> tuple[list[Label], dict[str, tuple[str, ...]]]:
    if not isinstance(tasks, list):
        raise InputError(path, None, "a Label Studio export is a list of tasks")
    labels, aliases = [], {}
    for t, task in enumerate(tasks, 1):
        where = f"task {t}"
        _expect(path, where, "the task", task, dict)
        item = _expect(path, where, "data", task.get("data"), dict).get("item")
        if not isinstance(item, str):
            raise InputError(path, where, "no data.item (export the tasks from `safedose annotate export`)")
        annotations = _expect(path, where, "annotations", task.get("annotations") or [], list)
        for a, annotation in enumerate(annotations, 1):
            here = f"{where}, annotation {a}"
            if _expect(path, here, "the annotation", annotation, dict).get("was_cancelled"):
                continue
            name, others = _user(path, here, annotation)
            aliases[name] = others
            labels.append(_label(path, here, item, name, annotation))
    return labels, aliases


def _label(path: Path, where: str, item: str, annotator: str, annotation: dict[str, Any]) -> Label:
    values: dict[str, str] = {}
    for r, region in enumerate(_expect(path, where, "result", annotation.get("result") or [], list), 1):
        here = f"{where}, result {r}"
        value = _expect(path, here, "value", _expect(path, here, "the region", region, dict).get("value", {}), dict)
        field = "choices" if "choices" in value else "text"
        picked = _expect(path, here, f"value.{field}", value.get(field) or [], list)
        if picked:
            values[str(region.get("from_name"))] = _expect(path, here, "the choice", picked[0], str)
    refusal = FROM_NAMES.get(values.get("refusal", ""), values.get("refusal"))
    if refusal not in REFUSAL_CLASSES:
        raise InputError(path, where, f"refusal choice {values.get('refusal')!r}: choose {', '.join(FROM_NAMES)}")
    harmful = values.get("harmful", "").lower() or None
    if harmful is not None and harmful not in HARMFUL_VALUES:
        raise InputError(path, where, f"harmful choice {harmful!r}: choose yes or no")
    created = _time(path, where, annotation.get("created_at"))
    updated = _time(path, where, annotation.get("updated_at")) or created
    return Label(item=item, annotator=annotator, refusal=refusal, harmful=harmful, note=values.get("note", ""),
                 created_at=created, updated_at=updated)  # fmt: skip


def _name(path: Path, where: str, name: str) -> str:
    try:
        return normalise_name(name)
    except SafedoseError as e:
        raise InputError(path, where, str(e)) from None


def _user(path: Path, where: str, annotation: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """The annotator's name and the other names to try: `created_username` (the name itself in this app's
    exports; "First Last email, id" in Label Studio's), else `completed_by` (an id, or a user with an email)."""
    raw = annotation.get("created_username")
    if isinstance(raw, str) and raw.strip():
        user = LABEL_STUDIO_USER.fullmatch(raw.strip())
        if user is None:
            return _name(path, where, raw), ()
        full, email = " ".join(user["name"].split()), user["email"]
        names = [full, email, email.partition("@")[0]] if full else [email, email.partition("@")[0]]
        # the email names the user uniquely in Label Studio; the others only find an annotator of this study
        return _name(path, where, email), tuple(n for n in names if n != email)
    who = annotation.get("completed_by")
    if isinstance(who, dict) and isinstance(who.get("email"), str):
        return _name(path, where, who["email"]), (who["email"].partition("@")[0],)
    if isinstance(who, dict):
        who = who.get("id")
    if isinstance(who, bool) or not isinstance(who, int | str):
        raise InputError(path, where, "no annotator: neither created_username nor completed_by names one")
    return _name(path, where, f"label-studio-user-{who}"), ()


def _time(path: Path, where: str, value: Any) -> float:
    if value is None:
        return 0.0
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InputError(path, where, f"time {value!r} is not ISO 8601") from None


def import_labels(store: Store, path: Path) -> dict[str, int]:
    """Read labels from `path` and store them all in one transaction (nothing is stored when any is bad). A name
    is matched to the study's annotators case-insensitively; a Label Studio user ("First Last email, id") to the
    annotator named by their full name, email or the email's local part, else added under their email."""
    labels, aliases = _read(path)
    known = {i.item: i for i in store.items()}
    existing = {name_key(a.name): a.name for a in store.annotators()}
    resolved: dict[str, str] = {}
    claimed: dict[str, str] = {}  # annotator's key -> the Label Studio user matched to them
    for name, others in aliases.items():
        match = next((existing[name_key(n)] for n in (name, *others) if name_key(n) in existing), name)
        resolved[name] = match
        first = claimed.setdefault(name_key(match), name) if others else name
        if name_key(first) != name_key(name):
            raise SafedoseError(f"{path}: Label Studio users {first!r} and {name!r} both match annotator "
                                f"{match!r}; give one of them another name in the file")  # fmt: skip
    labels = [label.model_copy(update={"annotator": resolved.get(label.annotator, label.annotator)})
              for label in labels]  # fmt: skip
    for label in labels:
        item = known.get(label.item)
        if item is None:
            raise SafedoseError(f"{path}: label of {label.annotator!r}: item {label.item!r} is not in this sample")
        if label.harmful is not None and not item.asks_harmful:
            raise SafedoseError(f"{path}: label of {label.annotator!r} on {label.item}: `harmful` is only asked "
                                "for unsafe prompts")  # fmt: skip
    return store.import_labels(labels)
