"""Build safety demonstrations: harmful prompts -> responder answers -> judge filter -> instruction JSONL.

A prompt enters only if it is a harmful request on its own: a later turn of a conversation (hh-rlhf) must not lean
on the turns before it (`context_reason`), and the `prompt-harm` judge scores the prompt alone. Prompts are taken
in batches until `n` rows pass every filter or the pool runs out.

Responders (`safedose.build._responders`): an OpenAI-compatible endpoint, a local model with an optional adapter,
or the preferred replies of hh-rlhf harmless (offline).

With a target form (`instruction` or `question`), every prompt left after de-duplication and decontamination is
converted to that form by a rewriter (`safedose.build._rewrite`) before it is asked; a failed conversion, a rewrite
that overlaps an eval prompt and a rewrite that repeats another prompt are counted drops. A `preference:` responder's
replies belong to the original prompts: they are looked up by the original, and the output row pairs the converted
prompt with that reply (the same request in the other form).

The English check is cheap: an answer counts as English when at least `MIN_ASCII_LETTER_SHARE` of its letters
are ASCII letters.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safedose.build._prompts import (
    MIN_ASCII_LETTER_SHARE,
    MIN_LATER_TURN_WORDS,
    Prompt,
    context_reason,
    dedup,
    is_english,
    prompt_id,
    read_prompts,
    source_info,
)
from safedose.build._responders import make_responder
from safedose.build._rewrite import datasheet_path, make_rewriter, rewrite_decoding
from safedose.cache import Cache
from safedose.data import (
    REWRITE_VERSION,
    ContaminationIndex,
    Form,
    FormatResult,
    Responder,
    check_form,
    checks_settings,
    convert_format,
    default_contamination_sets,
    load_eval_prompts,
    normalize,
)
from safedose.errors import SafedoseError
from safedose.files import sha256_file, write_json, write_jsonl

if TYPE_CHECKING:
    from safedose.generate import Decoding

PREFERENCE_PREFIX = "preference:"
REWRITER_KINDS = ("openai:", "hf:")  # responders that can also rewrite prompts
MIN_PROMPT_HARM = 0.5  # the prompt-harm judge's threshold (chosen on its training sets, docs/data.md)
MIN_BATCH = 8
SAMPLES = 5  # kept rows and dropped rows per reason shown in the datasheet


def rewrites_cache_path(out: Path) -> Path:
    return out.with_name(out.name + ".rewrites.sqlite")


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
    prompts: list[str], form: Form, rewriter: Responder, index: ContaminationIndex, seen: set[str]
) -> tuple[FormatResult, list[tuple[str, str]]]:
    """The conversion result and, per prompt, `("ok", converted)` or the drop: `("format", reason)` (`format:<reason>`,
    `duplicate_after_rewrite`) or `("contamination_after_rewrite", eval set)`. `seen` holds the normalised rewrites of
    earlier batches."""
    result = convert_format(prompts, to=form, responder=rewriter)
    outcomes: list[tuple[str, str]] = []
    for c in result.conversions:
        if c.text is None:
            outcomes.append(("format", f"format:{c.reason}"))
        elif (hit := index.match(c.text)) is not None:
            outcomes.append(("contamination_after_rewrite", hit))
        elif normalize(c.text) in seen:
            outcomes.append(("format", "duplicate_after_rewrite"))
        else:
            seen.add(normalize(c.text))
            outcomes.append(("ok", c.text))
    return result, outcomes


@dataclass
class _Outcome:
    """What became of one prompt of the pool: the stage that dropped it (or `kept`), why, and what it was shown."""

    stage: str
    reason: str
    shown: dict[str, Any]


def _drop_key(stage: str, reason: str) -> str:
    """`stage:reason`, once (`format:<reason>` drops already carry their stage)."""
    return reason if reason.startswith(f"{stage}:") else f"{stage}:{reason}"


def _batch_size(n: int | None, kept: int, taken: int, left: int) -> int:
    """How many prompts to take next: all without `n`; else enough for the rows still needed at the yield so far."""
    if n is None:
        return left
    need = n - kept
    if kept:
        size = math.ceil(need * taken / kept * 1.2)
    elif taken:
        size = 2 * taken
    else:
        size = need
    return min(left, max(MIN_BATCH, size))


def build_safety(
    *,
    prompts: list[str],
    responder: str | Responder,
    out: Path,
    n: int | None = None,
    allow_fewer: bool = False,
    min_chars: int = 20,
    max_chars: int = 2000,
    allow_partial: bool = False,
    max_harm: float = 0.5,
    min_prompt_harm: float = MIN_PROMPT_HARM,
    system: str | None = None,
    eval_sets: list[str] | None = None,
    refusal_judge: str = "refusal",
    harm_judge: str = "harm",
    prompt_judge: str = "prompt-harm",
    cache: Path | None = None,
    decoding: Decoding | None = None,
    base_url: str | None = None,
    concurrency: int = 4,
    progress: bool = False,
    format: Form | None = None,
    rewriter: str | Responder | None = None,
    rewrite_cache: Path | None = None,
) -> dict[str, Any]:
    """Build the JSONL at `out` (`n` rows, or every row that passes without `n`) and its datasheet beside it; returns
    the datasheet.

    A prompt enters only if it stands alone (a later conversation turn passes `context_reason`) and `prompt_judge`
    scores it alone at least `min_prompt_harm` (or calls it a harmful request); an answer is kept when it passes the
    checks, `refusal_judge` labels it a refusal (or partial, `allow_partial`) and `harm_judge` scores it below
    `max_harm`. Prompts are taken in batches until `n` rows are kept or the pool runs out; fewer than `n` rows (or
    none) is an error naming the drops, after the datasheet is written, unless `allow_fewer` (and some were kept).

    `responder` is a spec (`openai:MODEL`, `hf:MODEL[+ADAPTER_DIR]`, `preference:hh-rlhf-harmless`; see
    `make_responder`) or a Responder. Generations and verdicts are cached in `cache` (default `<out>.cache.sqlite`),
    so a rerun asks and judges nothing twice. With `format` (`instruction` or `question`) every prompt is converted
    to that form by `rewriter` (a spec or a Responder; default: the responder's `openai:` / `hf:` spec), whose
    answers are cached in `rewrite_cache` (default `<out>.rewrites.sqlite`)."""
    from safedose.annotate import judge_labels  # fastapi: the annotation app is loaded only when a build runs
    from safedose.judges import get_judge, judge_id, judge_rows  # torch: loaded only when a build runs

    start = time.monotonic()
    out = Path(out)
    if n is not None and n < 1:
        raise SafedoseError(f"build-safety: --n must be at least 1, got {n}")
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
    read: list[Prompt] = []
    per_source: list[dict[str, Any]] = []
    for source in prompts:
        got = read_prompts(source)
        if not any(p.text.strip() for p in got):
            raise SafedoseError(f"{source}: no usable prompts (read {len(got)} records, none with text)")
        read.extend(got)
        per_source.append({**source_info(source), "prompts": len(got)})
    unique, dup_drops = dedup(read)
    eval_sets = eval_sets or default_contamination_sets()
    index = ContaminationIndex(p for name in eval_sets for p in load_eval_prompts(name))
    pool: list[Prompt] = []
    contaminated: Counter[str] = Counter()
    for p in unique:
        hit = index.match(p.text)
        if hit is None:
            pool.append(p)
        else:
            contaminated[hit] += 1
    if not pool:
        raise SafedoseError(
            f"{', '.join(prompts)}: no prompts left after de-duplication ({dict(dup_drops)}) and decontamination "
            f"({dict(contaminated)})"
        )

    refusal = get_judge(refusal_judge, human_labels=judge_labels(refusal_judge))
    judges = {"prompt": get_judge(prompt_judge), "refusal": refusal, "harm": get_judge(harm_judge)}
    allowed = {"refusal", "partial"} if allow_partial else {"refusal"}
    missing = "no_answer" if preference else "responder_error"
    outcomes: dict[int, _Outcome] = {}
    conversions: list[tuple[int, Any]] = []
    seen_rewrites: set[str] = set()
    kept_at: list[int] = []
    taken = batches = answers_asked = 0

    def drop(i: int, stage: str, reason: str, **shown: Any) -> None:
        outcomes[i] = _Outcome(stage, reason, {"prompt": pool[i].text, **shown})

    while taken < len(pool) and (n is None or len(kept_at) < n):
        size = _batch_size(n, len(kept_at), taken, len(pool) - taken)
        batch = list(range(taken, taken + size))
        taken += size
        batches += 1
        alone = []
        for i in batch:
            why = context_reason(pool[i].text) if pool[i].turns > 1 else None
            if why is None:
                alone.append(i)
            else:
                drop(i, "context", why, turns=pool[i].turns)
        with Cache(cache) as store:
            verdicts = judge_rows(judges["prompt"], [{"prompt": pool[i].text, "response": ""} for i in alone],
                                  cache=store)  # fmt: skip
        harmful: list[int] = []
        for i, v in zip(alone, verdicts, strict=True):
            score = v.get("score")
            request = v.get("harmful_request")
            if request is not None and not isinstance(request, str):
                is_harmful = bool(request)
            else:
                is_harmful = score is not None and float(score) >= min_prompt_harm
            if is_harmful:
                harmful.append(i)
            else:
                drop(i, "prompt", "not_harmful", prompt_harm=score)
        asked_as = {i: pool[i].text for i in harmful}
        if form is not None and converter is not None and harmful:
            result, converted = _to_form([pool[i].text for i in harmful], form, converter, index, seen_rewrites)
            conversions.extend(zip(harmful, result.conversions, strict=True))
            for i, (status, value) in zip(list(harmful), converted, strict=True):
                if status == "ok":
                    asked_as[i] = value
                else:
                    drop(i, status, value)
                    harmful.remove(i)
        if not harmful:
            continue
        query = [pool[i].text if preference else asked_as[i] for i in harmful]
        answers = responder.respond(query, system=system) if system is not None else responder.respond(query)
        answers_asked += len(query)
        if len(answers) != len(query):
            raise SafedoseError(f"responder {spec}: {len(answers)} answers to {len(query)} prompts")
        usable: list[tuple[int, str]] = []
        for i, reply in zip(harmful, answers, strict=True):
            answer = (reply or "").strip()
            reason = None
            if reply is None:
                reason = missing
            elif not answer:
                reason = "empty"
            elif len(answer) < min_chars:
                reason = "too_short"
            elif len(answer) > max_chars:
                reason = "too_long"
            elif not is_english(answer):
                reason = "not_english"
            if reason is None:
                usable.append((i, answer))
            else:
                drop(i, "filter", reason, response=reply)
        rows = [{"prompt": asked_as[i], "response": a} for i, a in usable]
        with Cache(cache) as store:
            labelled = judge_rows(judges["refusal"], rows, cache=store)
            scored = judge_rows(judges["harm"], rows, cache=store)
        for (i, answer), lab, sc in zip(usable, labelled, scored, strict=True):
            shown = {"response": answer, "refusal": lab.get("label"), "harm": sc.get("score")}
            if lab.get("label") not in allowed:
                drop(i, "filter", f"judged_{lab.get('label')}", **shown)
            elif sc.get("score") is None or float(sc["score"]) >= max_harm:
                drop(i, "filter", "harmful", **shown)
            else:
                outcomes[i] = _Outcome("kept", "", {"prompt": asked_as[i], **shown})
                kept_at.append(i)
                if asked_as[i] != pool[i].text:
                    outcomes[i].shown["original_prompt"] = pool[i].text

    kept_at = sorted(kept_at)[:n] if n is not None else sorted(kept_at)
    # the datasheet covers the prompts up to the one that gave the last row kept (all examined ones if short)
    cut = kept_at[-1] + 1 if n is not None and len(kept_at) == n else taken
    used = [outcomes[i] for i in range(cut)]
    kept = [{"id": prompt_id(pool[i].text), "instruction": outcomes[i].shown["prompt"], "input": "",
             "output": outcomes[i].shown["response"], **({"original_prompt": pool[i].text} if form else {})}
            for i in kept_at]  # fmt: skip
    by_stage: dict[str, Counter[str]] = {}
    for o in used:
        by_stage.setdefault(o.stage, Counter())[o.reason] += 1
    stage = {name: dict(sorted(by_stage.get(name, Counter()).items())) for name in
             ("context", "prompt", "format", "contamination_after_rewrite", "filter")}  # fmt: skip
    filter_drops = stage["filter"]
    asked = sum(filter_drops.values()) + len(kept)
    answered = asked - filter_drops.get(missing, 0)
    checks = sum(filter_drops.get(r, 0) for r in (missing, "empty", "too_short", "too_long", "not_english"))
    judged_out = sum(v for r, v in filter_drops.items() if r.startswith("judged_"))
    self_contained = cut - sum(stage["context"].values())
    harmful_prompts = self_contained - sum(stage["prompt"].values())
    counts = {
        "prompts_read": len(read),
        "after_dedup": len(unique),
        "after_decontamination": len(pool),
        "examined": cut,
        "self_contained": self_contained,
        "harmful_prompts": harmful_prompts,
        **({"after_format": asked} if form else {}),
        "asked": asked,
        "answered": answered,
        "passed_checks": asked - checks,
        "refusals": asked - checks - judged_out,
        "kept": len(kept),
    }
    dropped: dict[str, Any] = {
        "dedup": dict(dup_drops),
        "contamination": dict(contaminated),
        "limit_n": len(pool) - cut,
        "context": stage["context"],
        "prompt": stage["prompt"],
    }
    if form:
        dropped["format"] = stage["format"]
        dropped["contamination_after_rewrite"] = stage["contamination_after_rewrite"]
    dropped["filter"] = filter_drops
    samples: dict[str, Any] = {"kept": [outcomes[i].shown for i in kept_at[:SAMPLES]], "dropped": {}}
    for o in used:
        if o.stage != "kept":
            shown = samples["dropped"].setdefault(_drop_key(o.stage, o.reason), [])
            if len(shown) < SAMPLES:
                shown.append(o.shown)
    format_sheet: dict[str, Any] | None = None
    if form is not None and converter is not None:
        done = FormatResult(to=form, conversions=[c for i, c in conversions if i < cut])
        format_sheet = {
            "to": form,
            "rewrite_version": REWRITE_VERSION,
            "checks": checks_settings(),
            "rewriter": converter.identity(),
            "rewriter_errors": list(getattr(converter, "errors", []))[:5],
            "cache": str(rewrites) if rewrites_used else None,
            "conversion": done.counts(),
            "converted_at_attempt": done.converted_at_attempt,
            "failed_attempts": done.failed_attempts,
            "answers_to": "the original prompts" if preference else "the converted prompts",
        }

    drops = {_drop_key(name, r): v for name, reasons in stage.items() for r, v in reasons.items()}
    drops = dict(sorted(drops.items(), key=lambda kv: (-kv[1], kv[0])))
    sheet_path = datasheet_path(out)
    error = None
    if asked and asked == checks:
        error = f"build-safety: responder {spec} gave no usable answers to {asked} prompts ({filter_drops})"
    elif not asked and converter is not None and (stage["format"] or stage["contamination_after_rewrite"]):
        error = (f"build-safety: no prompt left after conversion to {form} form by {converter.spec} "
                 f"({drops})")  # fmt: skip
    elif not kept:
        error = f"build-safety: {out}: the filter kept nothing of {len(pool)} prompts (dropped: {drops})"
    elif n is not None and len(kept) < n and not allow_fewer:
        error = (f"build-safety: {out}: kept {len(kept)} of the {n} rows asked for; the {len(pool)} prompts ran out "
                 f"(dropped: {drops}); --allow-fewer writes the {len(kept)}")  # fmt: skip
    if error is None:
        write_jsonl(out, kept)
    sheet = {
        "sources": per_source,
        "rows_asked_for": n,
        "counts": counts,
        "dropped": dropped,
        "batches": {"count": batches, "prompts_taken": taken, "answers_asked": answers_asked},
        "samples": samples,
        "format": format_sheet,
        "responder": responder.identity(),
        "responder_errors": list(getattr(responder, "errors", []))[:5],
        "judges": {name: judge_id(j) for name, j in judges.items()},
        "filter": {
            "self_contained_later_turns": {"min_words": MIN_LATER_TURN_WORDS},
            "min_prompt_harm": min_prompt_harm,
            "allowed_labels": sorted(allowed),
            "max_harm": max_harm,
            "min_chars": min_chars,
            "max_chars": max_chars,
            "min_ascii_letter_share": MIN_ASCII_LETTER_SHARE,
        },
        "eval_sets": eval_sets,
        "cache": str(cache),
        "output": None if error else out.name,
        "output_sha256": None if error else sha256_file(out),
        "error": error,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - start, 2),
    }
    write_json(sheet_path, sheet)
    if error is not None:
        raise SafedoseError(f"{error}; datasheet {sheet_path}")
    return sheet


__all__ = ["build_safety", "rewrites_cache_path"]
