"""Where everything lives in a run directory, its schema version, and the readers every stage shares.

Layout of RUN/:

- run.json: the schema version (written first; an old or foreign layout is refused)
- manifest.json: the config, fingerprints, sampled prompts, judges, versions (`Manifest`, `read_manifest`)
- data/seed{S}-{format}/{fingerprint}/: one nested mix per seed and format, named by its fingerprint
- adapters/{cell}-{fingerprint}/: one LoRA adapter per cell, named by its fingerprint
- cache.sqlite: finished generations, verdicts and capability values
- results/judged.jsonl: every answer with every verdict (`JudgedAnswer` rows)
- results/attacked.jsonl: every answer to an attacked prompt, the same rows with `attack` set (the `attacks` axis)
- results/robustness.json: attack success by dose, paired with the plain answers
- results/metrics.{json,csv}, results/recommendation.json, report/index.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safedose.errors import SafedoseError
from safedose.files import write_json, write_jsonl
from safedose.run._records import JudgedAnswer

SCHEMA_VERSION = 2
RUN_FILE = "run.json"


def results_dir(run: Path) -> Path:
    return run / "results"


def report_dir(run: Path) -> Path:
    return run / "report"


def manifest_path(run: Path) -> Path:
    return run / "manifest.json"


def judged_path(run: Path) -> Path:
    return results_dir(run) / "judged.jsonl"


def attacked_path(run: Path) -> Path:
    return results_dir(run) / "attacked.jsonl"


def robustness_path(run: Path) -> Path:
    return results_dir(run) / "robustness.json"


def metrics_path(run: Path) -> Path:
    return results_dir(run) / "metrics.json"


def recommendation_path(run: Path) -> Path:
    return results_dir(run) / "recommendation.json"


def open_run(run: Path, *, create: bool = False) -> Path:
    """Check (or, with `create`, start) a run directory of this schema; anything else is a one-line error."""
    marker = run / RUN_FILE
    if marker.is_file():
        try:
            version = json.loads(marker.read_text(encoding="utf-8")).get("schema_version")
        except (json.JSONDecodeError, AttributeError):
            raise SafedoseError(f"{marker}: not a safedose run file") from None
        if version != SCHEMA_VERSION:
            raise SafedoseError(
                f"{run}: run directory schema {version}, this safedose reads schema {SCHEMA_VERSION}; "
                "use a new output_dir (or the safedose version that wrote it)"
            )
        return run
    if run.is_dir() and any(run.iterdir()):
        raise SafedoseError(
            f"{run}: a run directory from an older safedose (no {RUN_FILE}); use a new output_dir or delete it"
        )
    if not create:
        raise SafedoseError(f"{run}: not a safedose run directory (no {RUN_FILE})")
    run.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"schema_version": SCHEMA_VERSION})
    return run


def write_judged(run: Path, rows: list[JudgedAnswer]) -> None:
    write_jsonl(judged_path(run), (r.model_dump(mode="json") for r in rows))


def write_attacked(run: Path, rows: list[JudgedAnswer]) -> None:
    write_jsonl(attacked_path(run), (r.model_dump(mode="json") for r in rows))


def read_attacked(run: Path) -> list[JudgedAnswer]:
    """The attacked answers of a run (none for a run without attacks)."""
    return read_judged(run, attacked=True) if attacked_path(run).is_file() else []


def read_judged(run: Path, *, attacked: bool = False) -> list[JudgedAnswer]:
    path = attacked_path(run) if attacked else judged_path(run)
    if not path.is_file():
        raise SafedoseError(f"{run}: no {path.relative_to(run)}; run `safedose sweep` first")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(JudgedAnswer.model_validate_json(line))
            except ValueError as e:
                raise SafedoseError(f"{path}:{n}: not a judged answer ({str(e).splitlines()[0]})") from None
    return rows


def read_metrics(run: Path) -> dict[str, Any]:
    return read_result(run, metrics_path(run))


def read_result(run: Path, path: Path) -> dict[str, Any]:
    """A JSON file a finished sweep writes in `run`; a missing or malformed one is a one-line error."""
    if not path.is_file():
        raise SafedoseError(f"{run}: no {path.relative_to(run)}; run `safedose sweep` first")
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SafedoseError(f"{path}: malformed JSON ({e})") from None
    return data
