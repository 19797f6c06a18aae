"""Build safety demonstrations: harmful prompts -> responder answers -> judge filter -> instruction JSONL.

A prompt enters only if it is a harmful request on its own: a later turn of a conversation (hh-rlhf) must not lean
on the turns before it (`context_reason`), and the `prompt-harm` judge scores the prompt alone. Prompts are taken
in batches until `n` rows pass every filter or the pool runs out.

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
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
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
MIN_PROMPT_HARM = 0.5  # the prompt-harm judge's threshold (chosen on its training sets, docs/data.md)
MIN_BATCH = 8
SAMPLES = 5  # kept rows and dropped rows per reason shown in the datasheet
MIN_LATER_TURN_WORDS = 4


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


FOLLOW_UP_OPENINGS = _word_set(
    "and but so or also then ok okay yes yeah yep yup no nope nah sure well oh right thanks thank lol haha hmm great "
    "good cool fine alright exactly really wow"
)
FOLLOW_UP_PHRASES = ("what about", "how about", "what if", "why not", "what else", "anything else", "i mean")
PERSONAL_PRONOUNS = _word_set("he she him her his hers himself herself it its itself they them their theirs themselves")
DEMONSTRATIVES = _word_set("this that these those")
# a demonstrative followed by one of these (or by nothing) stands for a thing, not before a noun
PRONOUN_FOLLOWERS = _word_set(
    "is was are were 's would will can could should does do did one ones means sounds work works"
)
DETERMINERS = _word_set("a an the my your our their his her some any every each another")
PEOPLE = _word_set(
    "someone somebody anyone anybody everyone everybody people person man woman men women guy guys girl girls boy "
    "boys kid kids child children"
)
BE = _word_set("is was 's would will be")


@dataclass(frozen=True)
class Prompt:
    """A prompt and how many human turns its conversation had (1: it was asked on its own)."""

    text: str
    turns: int = 1


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+|'[a-z]+|[.!?]", text.replace("\u2019", "'"))


def context_reason(text: str) -> str | None:
    """Why the last human turn of a longer conversation cannot stand alone, or None if it can.

    `follow_up_opening`: it opens like a reply ("Yes, ...", "What about ...", "And ..."); `too_short`: fewer than
    `MIN_LATER_TURN_WORDS` words; `unresolved_reference`: a third-person or demonstrative pronoun with no possible
    antecedent before it in the turn (a noun after a determiner, a word for people, a capitalised name). "it" before
    "to", "if" or "that" in "is it ... to ..." / "it is ... to ..." is the dummy subject, not a reference."""
    words = _words(text)
    tokens = [w for w in words if w not in ".!?"]
    lower = [w.lower() for w in tokens]
    if not lower:
        return "too_short"
    opening = " ".join(lower[:2])
    if lower[0] in FOLLOW_UP_OPENINGS or any(opening.startswith(p) for p in FOLLOW_UP_PHRASES):
        return "follow_up_opening"
    if len(lower) < MIN_LATER_TURN_WORDS:
        return "too_short"
    sentence_start = {0}
    k = 0
    for w in words:
        if w in ".!?":
            sentence_start.add(k)
        else:
            k += 1
    antecedent = False
    for i, w in enumerate(lower):
        nxt = lower[i + 1] if i + 1 < len(lower) else ""
        reference = w in PERSONAL_PRONOUNS or (w in DEMONSTRATIVES and (not nxt or nxt in PRONOUN_FOLLOWERS))
        if w == "it" and _dummy_it(lower, i):
            reference = False
        if reference and not antecedent:
            return "unresolved_reference"
        if w in PEOPLE or (w in DETERMINERS and nxt and nxt not in PERSONAL_PRONOUNS):
            antecedent = True
        if tokens[i][0].isupper() and i not in sentence_start and w != "i":
            antecedent = True
    return None


def _dummy_it(lower: list[str], i: int) -> bool:
    """`it` in "is it legal to ...", "it's easy to ...", "would it be ok if ...": the subject of what follows."""
    near = {lower[i - 1] if i else "", lower[i + 1] if i + 1 < len(lower) else ""}
    return bool(near & BE) and any(w in ("to", "if", "that") for w in lower[i + 1 :])


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


def _read_prompts(source: str) -> list[Prompt]:
    if source == HH_HARMLESS:
        from safedose.data._sources import load_raw
        from safedose.judges._data import last_exchange

        rows = load_raw(HH_HARMLESS)
        return [Prompt(last_exchange(str(r["chosen"]))[0], str(r["chosen"]).count("\n\nHuman:")) for r in rows]
    return [Prompt(p.prompt) for p in load_eval_prompts(source)]


def _source_info(source: str) -> dict[str, Any]:
    path = Path(source).expanduser()
    if path.is_file():
        return {"name": path.name, "sha256": sha256_file(path)}
    return {"name": source}


def _dedup(prompts: list[Prompt]) -> tuple[list[Prompt], Counter[str]]:
    """Exact (normalised) and near-duplicate removal; near = the contamination check's 5-gram share rule."""
    kept: list[Prompt] = []
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    by_gram: dict[tuple[str, ...], set[int]] = {}
    sizes: list[int] = []
    for p in prompts:
        words = normalize(p.text).split()
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
    from safedose.cache import Cache
    from safedose.judges import get_judge, judge_id, judge_rows

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
        got = _read_prompts(source)
        if not any(p.text.strip() for p in got):
            raise SafedoseError(f"{source}: no usable prompts (read {len(got)} records, none with text)")
        read.extend(got)
        per_source.append({**_source_info(source), "prompts": len(got)})
    unique, dup_drops = _dedup(read)
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

    judges = {"prompt": get_judge(prompt_judge), "refusal": get_judge(refusal_judge), "harm": get_judge(harm_judge)}
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


__all__ = ["Prompt", "build_safety", "context_reason", "datasheet_path", "is_english", "prompt_id"]
