"""Build safety demonstrations: harmful prompts -> responder answers -> judge filter -> instruction JSONL.

Responders (`safedose.data._responders`): an OpenAI-compatible endpoint, a local model with an optional adapter,
or the preferred replies of hh-rlhf harmless (offline).

With a target form (`instruction` or `question`), every prompt left after de-duplication and decontamination is
converted to that form by a rewriter (`safedose.data._formats`) before it is asked; a failed conversion, a rewrite
that overlaps an eval prompt and a rewrite that repeats another prompt are counted drops. A `preference:` responder's
replies belong to the original prompts: they are looked up by the original, and the output row pairs the converted
prompt with that reply (the same request in the other form).

The English check is cheap: an answer counts as English when at least `MIN_ASCII_LETTER_SHARE` of its letters
are ASCII letters.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safedose.data._formats import (
    REWRITE_VERSION,
    Form,
    FormatResult,
    check_form,
    checks_settings,
    convert_format,
    make_rewriter,
    rewrite_decoding,
)
from safedose.data._mix import default_contamination_sets
from safedose.data._overlap import ContaminationIndex, ngrams, normalize
from safedose.data._responders import HH_HARMLESS, Responder, make_responder
from safedose.data._sources import load_eval_prompts
from safedose.errors import SafedoseError
from safedose.files import sha256_file, write_json, write_jsonl

if TYPE_CHECKING:
    from safedose.generate import Decoding

PREFERENCE_PREFIX = "preference:"
REWRITER_KINDS = ("openai:", "hf:")  # responders that can also rewrite prompts
MIN_ASCII_LETTER_SHARE = 0.8
NEAR_DUPLICATE_THRESHOLD = 0.6  # the contamination rule's share of shared word 5-grams


def datasheet_path(out: Path) -> Path:
    return out.with_name(out.name + ".datasheet.json")


def rewrites_cache_path(out: Path) -> Path:
    return out.with_name(out.name + ".rewrites.sqlite")


def prompt_id(prompt: str) -> str:
    """A row's id: from its original prompt after normalisation, so builds in different forms share ids."""
    return "prompt-" + hashlib.sha256(normalize(prompt).encode("utf-8")).hexdigest()[:16]


def is_english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) / len(letters) >= MIN_ASCII_LETTER_SHARE


def _read_prompts(source: str) -> list[str]:
    if source == HH_HARMLESS:
        from safedose.judges._data import hh_pairs

        return [p for p, _, _ in hh_pairs()]
    return [p.prompt for p in load_eval_prompts(source)]


def _source_info(source: str) -> dict[str, Any]:
    path = Path(source).expanduser()
    if path.is_file():
        return {"name": path.name, "sha256": sha256_file(path)}
    return {"name": source}


def _dedup(prompts: list[str]) -> tuple[list[str], Counter[str]]:
    """Exact (normalised) and near-duplicate removal; near = the contamination check's 5-gram share rule."""
    kept: list[str] = []
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    by_gram: dict[tuple[str, ...], set[int]] = {}
    sizes: list[int] = []
    for p in prompts:
        words = normalize(p).split()
        key = " ".join(words)
        if not key:
            dropped["empty_prompt"] += 1
            continue
        if key in seen:
            dropped["exact_duplicate"] += 1
            continue
        grams = ngrams(words)
        shared: Counter[int] = Counter()
        for g in grams:
            shared.update(by_gram.get(g, ()))
        if any(n / sizes[i] >= NEAR_DUPLICATE_THRESHOLD for i, n in shared.items()):
            dropped["near_duplicate"] += 1
            continue
        seen.add(key)
        if grams:
            idx = len(sizes)
            sizes.append(len(grams))
            for g in grams:
                by_gram.setdefault(g, set()).add(idx)
        kept.append(p)
    return kept, dropped


def _rewriter(
    rewriter: str | Responder | None,
    responder: str | Responder,
    *,
    decoding: Decoding | None,
    cache: Path,
    base_url: str | None,
    concurrency: int,
    progress: bool,
) -> Responder:
    """The responder that converts prompts: `rewriter`, else the answering responder's `openai:` / `hf:` spec."""
    if rewriter is None:
        if not isinstance(responder, str):
            raise SafedoseError("build-safety: a target format needs a rewriter (a spec or a Responder)")
        if not responder.startswith(REWRITER_KINDS):
            raise SafedoseError(f"build-safety: responder {responder} cannot rewrite prompts; give a rewriter "
                                "(--rewriter openai:MODEL or hf:MODEL) for --format")  # fmt: skip
        rewriter = responder
    if not isinstance(rewriter, str):
        return rewriter
    return make_rewriter(rewriter, decoding=rewrite_decoding(dtype=decoding.dtype if decoding else "auto"),
                         cache=cache, base_url=base_url if rewriter.startswith("openai:") else None,
                         concurrency=concurrency, progress=progress)  # fmt: skip


def _to_form(
    prompts: list[str], form: Form, rewriter: Responder, index: ContaminationIndex
) -> tuple[list[tuple[str, str]], FormatResult, Counter[str], Counter[str]]:
    """(original, converted) pairs that passed the checks, the conversion result, and the drops: by reason
    (`format:<reason>`, `duplicate_after_rewrite`) and, for rewrites that overlap an eval prompt, by eval set."""
    result = convert_format(prompts, to=form, responder=rewriter)
    pairs: list[tuple[str, str]] = []
    drops: Counter[str] = Counter()
    contaminated: Counter[str] = Counter()
    seen: set[str] = set()
    for c in result.conversions:
        if c.text is None:
            drops[f"format:{c.reason}"] += 1
        elif (hit := index.match(c.text)) is not None:
            contaminated[hit] += 1
        elif normalize(c.text) in seen:
            drops["duplicate_after_rewrite"] += 1
        else:
            seen.add(normalize(c.text))
            pairs.append((c.original, c.text))
    return pairs, result, drops, contaminated


def build_safety(
    *,
    prompts: list[str],
    responder: str | Responder,
    out: Path,
    n: int | None = None,
    min_chars: int = 20,
    max_chars: int = 2000,
    allow_partial: bool = False,
    max_harm: float = 0.5,
    system: str | None = None,
    eval_sets: list[str] | None = None,
    refusal_judge: str = "refusal",
    harm_judge: str = "harm",
    cache: Path | None = None,
    decoding: Decoding | None = None,
    base_url: str | None = None,
    concurrency: int = 4,
    progress: bool = False,
    format: Form | None = None,
    rewriter: str | Responder | None = None,
    rewrite_cache: Path | None = None,
) -> dict[str, Any]:
    """Build the JSONL at `out` and its datasheet beside it; returns the datasheet.

    `responder` is a spec (`openai:MODEL`, `hf:MODEL[+ADAPTER_DIR]`, `preference:hh-rlhf-harmless`; see
    `make_responder`) or a Responder. Generations and verdicts are cached in `cache` (default `<out>.cache.sqlite`),
    so a rerun asks and judges nothing twice. With `format` (`instruction` or `question`) every prompt is converted
    to that form by `rewriter` (a spec or a Responder; default: the responder's `openai:` / `hf:` spec), whose
    answers are cached in `rewrite_cache` (default `<out>.rewrites.sqlite`)."""
    from safedose.cache import Cache
    from safedose.judges import get_judge, judge_id, judge_rows

    start = time.monotonic()
    out = Path(out)
    cache = Path(cache) if cache is not None else out.with_name(out.name + ".cache.sqlite")
    form = None if format is None else check_form(format)
    if form is None and rewriter is not None:
        raise SafedoseError("build-safety: a rewriter is only used with a target format (--format)")
    rewrites = Path(rewrite_cache) if rewrite_cache is not None else rewrites_cache_path(out)
    rewrites_used = form is not None and (rewriter is None or isinstance(rewriter, str))
    converter = None
    if form is not None:
        converter = _rewriter(rewriter, responder, decoding=decoding, cache=rewrites, base_url=base_url,
                              concurrency=concurrency, progress=progress)  # fmt: skip
    if isinstance(responder, str):
        # the base URL is for the openai: specs: the rewriter's alone when the answering responder is not one
        url_for_rewriter = isinstance(rewriter, str) and rewriter.startswith("openai:")
        answer_url = None if url_for_rewriter and not responder.startswith("openai:") else base_url
        responder = make_responder(responder, system=system, decoding=decoding, cache=cache, base_url=answer_url,
                                   concurrency=concurrency, progress=progress)  # fmt: skip
        system = None  # the responder's own default now
    spec = responder.spec
    preference = spec.startswith(PREFERENCE_PREFIX)
    read: list[str] = []
    per_source: list[dict[str, Any]] = []
    for source in prompts:
        got = _read_prompts(source)
        if not any(p.strip() for p in got):
            raise SafedoseError(f"{source}: no usable prompts (read {len(got)} records, none with text)")
        read.extend(got)
        per_source.append({**_source_info(source), "prompts": len(got)})
    unique, dup_drops = _dedup(read)
    eval_sets = eval_sets or default_contamination_sets()
    index = ContaminationIndex(p for name in eval_sets for p in load_eval_prompts(name))
    clean: list[str] = []
    contaminated: Counter[str] = Counter()
    for p in unique:
        hit = index.match(p)
        if hit is None:
            clean.append(p)
        else:
            contaminated[hit] += 1
    after_decontamination = len(clean)
    if n is not None:
        clean = clean[:n]
    if not clean:
        raise SafedoseError(
            f"{', '.join(prompts)}: no prompts left after de-duplication ({dict(dup_drops)}) and decontamination "
            f"({dict(contaminated)})"
        )
    limited = len(clean)

    format_sheet: dict[str, Any] | None = None
    format_drops: Counter[str] = Counter()
    rewrite_contaminated: Counter[str] = Counter()
    pairs = [(p, p) for p in clean]  # (original, the prompt as written to the output)
    if form is not None and converter is not None:
        pairs, converted, format_drops, rewrite_contaminated = _to_form(clean, form, converter, index)
        if not pairs:
            raise SafedoseError(
                f"build-safety: no prompt left after conversion to {form} form by {converter.spec} "
                f"({dict(format_drops)}; contamination after rewrite: {dict(rewrite_contaminated)})"
            )
        format_sheet = {
            "to": form,
            "rewrite_version": REWRITE_VERSION,
            "checks": checks_settings(),
            "rewriter": converted.responder,
            "rewriter_errors": list(getattr(converter, "errors", []))[:5],
            "cache": str(rewrites) if rewrites_used else None,
            "conversion": converted.counts(),
            "converted_at_attempt": converted.converted_at_attempt,
            "failed_attempts": converted.failed_attempts,
            "answers_to": "the original prompts" if preference else "the converted prompts",
        }
    originals = [o for o, _ in pairs]
    clean = [t for _, t in pairs]

    query = originals if preference else clean  # preferred replies belong to the original prompts
    answers = responder.respond(query, system=system) if system is not None else responder.respond(query)
    if len(answers) != len(clean):
        raise SafedoseError(f"responder {spec}: {len(answers)} answers to {len(clean)} prompts")
    missing = "no_answer" if preference else "responder_error"
    drops: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    row_originals: list[str] = []
    for p, original, reply in zip(clean, originals, answers, strict=True):
        answer = (reply or "").strip()
        if reply is None:
            drops[missing] += 1
        elif not answer:
            drops["empty"] += 1
        elif len(answer) < min_chars:
            drops["too_short"] += 1
        elif len(answer) > max_chars:
            drops["too_long"] += 1
        elif not is_english(answer):
            drops["not_english"] += 1
        else:
            rows.append({"prompt": p, "response": answer})
            row_originals.append(original)
    answered = len(clean) - drops[missing]
    if not rows:
        raise SafedoseError(f"build-safety: responder {spec} gave no usable answers to {len(clean)} prompts "
                            f"({dict(drops)})")  # fmt: skip

    refusal, harm = get_judge(refusal_judge), get_judge(harm_judge)
    allowed = {"refusal", "partial"} if allow_partial else {"refusal"}
    kept: list[dict[str, str]] = []
    refusals = 0
    with Cache(cache) as store:
        labelled = judge_rows(refusal, rows, cache=store)
        scored = judge_rows(harm, rows, cache=store)
    for row, original, lab, sc in zip(rows, row_originals, labelled, scored, strict=True):
        if lab.get("label") not in allowed:
            drops[f"judged_{lab.get('label')}"] += 1
            continue
        refusals += 1
        if sc.get("score") is None or float(sc["score"]) >= max_harm:
            drops["harmful"] += 1
        else:
            kept.append({"id": prompt_id(original), "instruction": row["prompt"], "input": "",
                         "output": row["response"], **({"original_prompt": original} if form else {})})  # fmt: skip
    if not kept:
        raise SafedoseError(f"build-safety: the filter kept nothing of {len(rows)} answers ({dict(drops)})")

    write_jsonl(out, kept)
    counts = {
        "prompts_read": len(read),
        "after_dedup": len(unique),
        "after_decontamination": after_decontamination,
        **({"after_format": len(clean)} if form else {}),
        "asked": len(clean),
        "answered": answered,
        "passed_checks": len(rows),
        "refusals": refusals,
        "kept": len(kept),
    }
    dropped: dict[str, Any] = {
        "dedup": dict(dup_drops),
        "contamination": dict(contaminated),
        "limit_n": after_decontamination - limited,
    }
    if form:
        dropped["format"] = dict(sorted(format_drops.items()))
        dropped["contamination_after_rewrite"] = dict(sorted(rewrite_contaminated.items()))
    dropped["filter"] = dict(drops)
    sheet = {
        "sources": per_source,
        "counts": counts,
        "dropped": dropped,
        "format": format_sheet,
        "responder": responder.identity(),
        "responder_errors": list(getattr(responder, "errors", []))[:5],
        "judges": {"refusal": judge_id(refusal), "harm": judge_id(harm)},
        "filter": {
            "allowed_labels": sorted(allowed),
            "max_harm": max_harm,
            "min_chars": min_chars,
            "max_chars": max_chars,
            "min_ascii_letter_share": MIN_ASCII_LETTER_SHARE,
        },
        "eval_sets": eval_sets,
        "cache": str(cache),
        "output": out.name,
        "output_sha256": sha256_file(out),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - start, 2),
    }
    write_json(datasheet_path(out), sheet)
    return sheet


__all__ = ["build_safety", "datasheet_path", "is_english", "prompt_id"]
