"""Mix exactly N safety demonstrations into a fixed base sample, for every dose N."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safedose.data._catalog import CATALOG_VERSION, DATASETS
from safedose.data._overlap import (
    CONTAMINATION_THRESHOLD,
    NGRAM,
    ContaminationIndex,
    dedup,
    normalize,
    prompt_text,
)
from safedose.data._records import EvalPrompt, InstructionRecord
from safedose.data._sources import load_eval_prompts, load_instructions
from safedose.errors import InputError, SafedoseError
from safedose.files import publish_dir, sha256_file, write_json, write_jsonl
from safedose.models import resolve_model

if TYPE_CHECKING:
    from safedose.data._formats import FormSource

FORMATS = ("instruction", "question", "mixed")
DEFAULT_CONTAMINATION_SETS = "all registered eval-unsafe and eval-safe sets"
MIXED_ASSIGNMENT = "each consecutive pair of safety rows: one in instruction form, one in question form (seeded)"


@dataclass(frozen=True)
class MixResult:
    out: Path
    files: dict[str, str]
    datasheet: dict[str, Any]


def train_file(out: Path, dose: int) -> Path:
    return out / f"mix-n{dose}.train.jsonl"


def val_file(out: Path, dose: int) -> Path:
    """Base rows for checkpoint selection (the same rows for every dose)."""
    return out / f"mix-n{dose}.val.jsonl"


def test_file(out: Path) -> Path:
    """Held-out base rows, used only to measure capability: never trained on, never used to pick a checkpoint."""
    return out / "base-test.jsonl"


test_file.__test__ = False  # type: ignore[attr-defined]  # a path helper, not a test for pytest to collect


def default_contamination_sets() -> list[str]:
    """Every registered `eval-unsafe` and `eval-safe` set: what a mix is decontaminated against by default."""
    return [n for n in DATASETS if DATASETS.get(n).kind in ("eval-unsafe", "eval-safe")]


def mix(
    *,
    base: str,
    base_size: int,
    safety: str,
    doses: Sequence[int],
    out: str | Path,
    seed: int = 0,
    val_size: int = 200,
    test_size: int = 200,
    format: str = "instruction",
    max_tokens: int | None = None,
    tokenizer: str = "smollm2-135m-instruct",
    eval_sets: Sequence[str] | None = None,
    forms: FormSource | None = None,
    base_excludes: Sequence[str] = (),
) -> MixResult:
    """Write `mix-n{N}.train.jsonl` / `.val.jsonl` for every dose N, `base-test.jsonl` and `datasheet.json` to `out`.

    The shuffled base pool is cut into three disjoint parts: `val_size` selection rows (checkpoint choice), the
    `base_size` training rows of every dose and `test_size` test rows (capability only). Safety rows are nested
    across doses, and the same arguments give byte-identical files; adding a dose leaves the others' files as they
    were. `eval_sets` (registered names, files or `hf:` ids) replaces the default contamination sets.

    With `forms` (where question-form prompts come from), the safety rows are the items that have both an instruction
    and a question form, in the same order for every `format`: `instruction` and `question` use one form throughout,
    `mixed` half and half (which one, by the seed). Items without a pair are dropped from every format.

    `base_excludes` are other safety sources whose rows leave the base pool as this one's do: mixes of several
    sources with the same seed then train on the same base rows.
    """
    doses = _check_doses(doses)
    if format not in FORMATS:
        raise SafedoseError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    if format != "instruction" and forms is None:
        raise SafedoseError(f"format {format}: question-form safety prompts need a source (a responder or a file)")
    if base_size < 1 or val_size < 0 or test_size < 0:
        raise SafedoseError("--base-size must be at least 1, --val-size and --test-size at least 0")
    if max_tokens is not None and max_tokens < 1:
        raise SafedoseError("--max-tokens must be at least 1")

    pools = {"safety": load_instructions(safety), "base": load_instructions(base)}
    for name, source in (("base", base), ("safety", safety)):
        if not pools[name] and (name == "base" or doses[-1] > 0):
            raise InputError(source, None, f"no records (the {name} pool is empty)")
    dropped: dict[str, Counter[str]] = {name: Counter() for name in pools}

    seen_exact: set[tuple[str, str, str]] = set()
    seen_prompt: set[str] = set()
    for name in ("safety", "base"):  # safety first: a base row that repeats a safety row leaves the base pool
        if name == "base":
            for other in base_excludes:  # seen, not kept: only the base pool is filtered by them
                dedup(load_instructions(other), seen_exact=seen_exact, seen_prompt=seen_prompt)
        pools[name], counts = dedup(pools[name], seen_exact=seen_exact, seen_prompt=seen_prompt)
        dropped[name].update(counts)

    contamination_sets = list(eval_sets) if eval_sets is not None else default_contamination_sets()
    index = ContaminationIndex(_named(p, s) for s in contamination_sets for p in load_eval_prompts(s))
    contaminated: dict[str, dict[str, int]] = {}
    for name in pools:
        pools[name], by_set = index.filter(pools[name])
        dropped[name]["contamination"] += sum(by_set.values())
        contaminated[name] = dict(sorted(by_set.items()))

    if max_tokens is not None:
        for name in pools:
            pools[name], n_long = _drop_long(pools[name], max_tokens, tokenizer)
            dropped[name]["too_long"] += n_long

    base_rows = _shuffled(pools["base"], seed, "base")
    safety_rows = _shuffled(pools["safety"], seed, "safety")
    if val_size + base_size + test_size > len(base_rows):
        raise SafedoseError(
            f"{base}: --base-size {base_size} + --val-size {val_size} + --test-size {test_size} is larger than "
            f"the base pool ({len(base_rows)} rows after filtering)"
        )
    forms_sheet: dict[str, Any] | None = None
    if forms is not None:
        safety_rows, forms_sheet = _paired(safety_rows, forms, doses[-1], index, seen_prompt, format, seed)
        dropped["safety"]["no_form_pair"] += sum(forms_sheet["dropped"].values())
    if doses[-1] > len(safety_rows):
        paired = " with an instruction and a question form" if forms is not None else ""
        raise SafedoseError(
            f"{safety}: dose {doses[-1]} is larger than the safety pool ({len(safety_rows)} rows{paired} after "
            "filtering)"
        )
    val_rows = base_rows[:val_size]
    train_base = base_rows[val_size : val_size + base_size]
    test_rows = base_rows[val_size + base_size : val_size + base_size + test_size]

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_jsonl(test_file(staging), (r.model_dump() for r in test_rows))
        per_dose: dict[str, Any] = {}
        for dose in doses:
            rows = _shuffled(train_base + safety_rows[:dose], seed, f"dose-{dose}")
            write_jsonl(train_file(staging, dose), (r.model_dump() for r in rows))
            write_jsonl(val_file(staging, dose), (r.model_dump() for r in val_rows))
            per_dose[str(dose)] = {
                "train_rows": len(rows),
                "val_rows": len(val_rows),
                "by_source": dict(sorted(Counter(r.source for r in rows).items())),
            }
            if forms_sheet is not None:
                per_dose[str(dose)]["safety_by_form"] = dict(sorted(Counter(forms_sheet["forms"][:dose]).items()))
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir())}
        datasheet = {
            "catalog_version": CATALOG_VERSION,
            "format": format,
            "seed": seed,
            "doses": doses,
            "base": {"source": base, "size": base_size, "licence": _licence(base)},
            "safety": {"source": safety, "licence": _licence(safety)},
            "base_splits": {
                "drawn_from": "the filtered base pool, shuffled once with the seed and cut into val, train, test",
                "val": {"rows": val_size, "file": "mix-n{N}.val.jsonl", "use": "checkpoint selection only"},
                "train": {"rows": base_size, "file": "mix-n{N}.train.jsonl", "use": "training, in every dose"},
                "test": {"rows": test_size, "file": test_file(Path()).name, "use": "held-out capability loss only"},
            },
            "pool_rows_after_filtering": {name: len(rows) for name, rows in pools.items()},
            "dropped": {name: dict(sorted(c.items())) for name, c in dropped.items()},
            "contamination": {
                "method": f"normalised exact match, or >= {CONTAMINATION_THRESHOLD:.0%} of the eval prompt's "
                f"word {NGRAM}-grams in the training instruction + input",
                "eval_sets": contamination_sets,
                "dropped_by_eval_set": contaminated,
            },
            "max_tokens": max_tokens,
            "tokenizer": tokenizer if max_tokens is not None else None,
            "per_dose": per_dose,
            "files": files,
        }
        if base_excludes:
            datasheet["base_excludes"] = {
                "sources": list(base_excludes),
                "why": "rows of the other safety sources compared also leave the base pool",
            }
        if forms_sheet is not None:
            datasheet["formats"] = {k: v for k, v in forms_sheet.items() if k != "forms"}
        write_json(staging / "datasheet.json", datasheet)
        publish_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return MixResult(out=out, files=files, datasheet=datasheet)


def _check_doses(doses: Sequence[int]) -> list[int]:
    if not doses:
        raise SafedoseError("give at least one dose with --n")
    if any(d < 0 for d in doses):
        raise SafedoseError(f"doses must be non-negative, got {list(doses)}")
    return sorted(set(doses))


def _named(prompt: EvalPrompt, eval_set: str) -> EvalPrompt:
    """The prompt under the name its set was given by (a file's path rather than its file name)."""
    return prompt if prompt.eval_set == eval_set else prompt.model_copy(update={"eval_set": eval_set})


def _licence(source: str) -> str:
    return DATASETS.get(source).licence if source in DATASETS else "user-provided"


def _shuffled(rows: Sequence[InstructionRecord], seed: int, salt: str) -> list[InstructionRecord]:
    out = list(rows)
    random.Random(f"{seed}:{salt}").shuffle(out)
    return out


def _paired(
    rows: list[InstructionRecord],
    forms: FormSource,
    need: int,
    index: ContaminationIndex,
    seen: set[str],
    format: str,
    seed: int,
) -> tuple[list[InstructionRecord], dict[str, Any]]:
    """The first `need` rows (in order) that have both forms, each in the form `format` gives it; and what happened.

    Rows are paired in rounds of about what is still needed, so only as many are converted as the doses use; each
    row's result is its own (and cached), so the rows kept for a dose do not depend on the others asked. A rewrite
    that overlaps an eval prompt or repeats another training prompt drops its row from every format."""
    kept: list[tuple[InstructionRecord, str, str]] = []
    dropped: Counter[str] = Counter()
    contaminated: Counter[str] = Counter()
    seen_rewrites: set[str] = set()
    asked = examined = 0
    while len(kept) < need and asked < len(rows):
        remaining = need - len(kept)
        chunk = rows[asked : asked + remaining + remaining // 4 + 4]
        asked += len(chunk)
        for record, pair in zip(chunk, forms.pairs(chunk), strict=True):
            if len(kept) == need:
                break
            examined += 1
            if isinstance(pair, str):
                dropped[pair] += 1
                continue
            new = [prompt_text(record.model_copy(update={"instruction": t})) for t in pair
                   if normalize(t) != normalize(record.instruction)]  # fmt: skip
            hit = next((h for t in new if (h := index.match(t))), None)
            if hit is not None:
                dropped["contamination_after_rewrite"] += 1
                contaminated[hit] += 1
            elif any(normalize(t) in seen or normalize(t) in seen_rewrites for t in new):
                dropped["duplicate_after_rewrite"] += 1
            else:
                seen_rewrites.update(normalize(t) for t in new)
                kept.append((record, *pair))
    chosen = [_form_of(format, k, seed) for k in range(len(kept))]
    out = [r.model_copy(update={"instruction": question if form == "question" else instruction})
           for (r, instruction, question), form in zip(kept, chosen, strict=True)]  # fmt: skip
    sheet = {
        "source": forms.identity(),
        "asked": min(asked, len(rows)),
        "examined": examined,
        "paired": len(kept),
        "kept_as_is": {
            "instruction": sum(i == r.instruction.strip() for r, i, _ in kept),
            "question": sum(q == r.instruction.strip() for r, _, q in kept),
        },
        "dropped": dict(sorted(dropped.items())),
        "contamination_after_rewrite": dict(sorted(contaminated.items())),
        "mixed_assignment": MIXED_ASSIGNMENT if format == "mixed" else None,
        "forms": chosen,
    }
    return out, sheet


def _form_of(format: str, position: int, seed: int) -> str:
    """The form of the safety row at `position`: `mixed` alternates within each pair of rows, seeded."""
    if format != "mixed":
        return format
    question_first = random.Random(f"{seed}:mixed:{position // 2}").random() < 0.5
    return "question" if (position % 2 == 0) == question_first else "instruction"


def _drop_long(rows: list[InstructionRecord], max_tokens: int, tokenizer: str) -> tuple[list[InstructionRecord], int]:
    from transformers import AutoTokenizer

    if not rows:
        return rows, 0
    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer))
    texts = ["\n".join(t for t in (r.instruction, r.input, r.output) if t) for r in rows]
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    kept = [r for r, n in zip(rows, lengths, strict=True) if n <= max_tokens]
    return kept, len(rows) - len(kept)
