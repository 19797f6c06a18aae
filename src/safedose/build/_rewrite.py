"""Rewriting prompts with a model: the rewriting responder a spec names, its decoding, and a file converted
(`safedose data convert-format`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safedose.build._responders import make_responder
from safedose.data import REWRITE_VERSION, Responder, check_form, checks_settings, convert_format, read_prompt_records
from safedose.errors import SafedoseError
from safedose.files import sha256_file, write_json, write_jsonl

if TYPE_CHECKING:
    from safedose.generate import Decoding

REWRITE_MAX_NEW_TOKENS = 64  # the default decoding of a responder made from a spec: greedy, one line


def make_rewriter(
    spec: str,
    *,
    decoding: Decoding | None = None,
    cache: Path | None = None,
    base_url: str | None = None,
    concurrency: int = 4,
    progress: bool = False,
) -> Responder:
    """The responder a spec names, to rewrite prompts (default decoding: `rewrite_decoding()`); `preference:`
    responders give fixed replies and cannot rewrite."""
    if spec.startswith("preference:"):
        raise SafedoseError(f"responder {spec}: fixed replies cannot rewrite prompts; use openai:MODEL or hf:MODEL")
    return make_responder(spec, decoding=decoding or rewrite_decoding(), cache=cache, base_url=base_url,
                          concurrency=concurrency, progress=progress)  # fmt: skip


def rewrite_decoding(*, dtype: str = "auto", max_new_tokens: int = REWRITE_MAX_NEW_TOKENS) -> Decoding:
    """Greedy, stopping at the first line break: the default decoding of a rewriting responder."""
    from safedose.generate import parse_decoding  # torch: loaded only when a decoding is made

    return parse_decoding({"max_new_tokens": max_new_tokens, "stop": ("\n",), "dtype": dtype}, source="rewrite")


def datasheet_path(out: Path) -> Path:
    return out.with_name(out.name + ".datasheet.json")


def convert_file(
    source: str,
    *,
    to: str,
    responder: str | Responder,
    out: str | Path,
    cache: Path | None = None,
    decoding: Decoding | None = None,
    base_url: str | None = None,
    concurrency: int = 4,
    progress: bool = False,
) -> dict[str, Any]:
    """Write `out` (instruction JSONL: every converted or kept row, ids kept) and `<out>.datasheet.json`; returns the
    datasheet. `responder` is a spec (see `make_responder`; default decoding: greedy, one line) or a Responder.
    Answers are cached in `cache` (default `<out>.cache.sqlite`)."""
    start = time.monotonic()
    form = check_form(to)
    out = Path(out)
    records = read_prompt_records(source)
    if not records:
        raise SafedoseError(f"{source}: no usable prompts (read 0 records)")
    if isinstance(responder, str):
        cache = Path(cache) if cache is not None else out.with_name(out.name + ".cache.sqlite")
        responder = make_rewriter(responder, decoding=decoding, cache=cache, base_url=base_url,
                                  concurrency=concurrency, progress=progress)  # fmt: skip
    result = convert_format([r.instruction for r in records], to=form, responder=responder)
    kept = [r.model_copy(update={"instruction": c.text}) for r, c in zip(records, result.conversions, strict=True)
            if c.text is not None]  # fmt: skip
    if not kept:
        raise SafedoseError(f"{source}: no prompt could be converted to {form} form by {responder.spec} "
                            f"(dropped: {result.dropped})")  # fmt: skip
    write_jsonl(out, (r.model_dump() for r in kept))
    path = Path(source).expanduser()
    sheet = {
        "source": {"name": source, **({"sha256": sha256_file(path)} if path.is_file() else {})},
        "to": form,
        "rewrite_version": REWRITE_VERSION,
        "checks": checks_settings(),
        "counts": {**result.counts(), "written": len(kept)},
        "converted_at_attempt": result.converted_at_attempt,
        "dropped": result.dropped,
        "failed_attempts": result.failed_attempts,
        "responder": result.responder,
        "responder_errors": list(getattr(responder, "errors", []))[:5],
        "cache": None if cache is None else str(cache),
        "output": out.name,
        "output_sha256": sha256_file(out),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - start, 2),
    }
    write_json(datasheet_path(out), sheet)
    return sheet


__all__ = ["REWRITE_MAX_NEW_TOKENS", "convert_file", "datasheet_path", "make_rewriter", "rewrite_decoding"]
