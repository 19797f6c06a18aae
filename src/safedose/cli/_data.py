"""`safedose data ...`: list, show, fetch, mix, build-safety and convert-format datasets."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from safedose.cli import _output
from safedose.errors import SafedoseError
from safedose.paths import data_root

data_app = typer.Typer(help="Datasets: list, show, fetch and mix.", no_args_is_help=True)


@data_app.command("list")
def data_list(
    verify: bool = typer.Option(True, help="Check every file's sha256."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of a table."),
) -> None:
    """Every registered dataset: kind, rows, licence, and where it resolved (or why not)."""
    from safedose.data import DATASETS, load_any, resolve  # pydantic: --help stays light

    root = data_root()
    entries = []
    for name in DATASETS:
        spec = DATASETS.get(name)
        res = resolve(spec, root, verify=verify)
        rows, status = None, res.status
        if res.ok:
            rows = len(load_any(spec))
            status = f"ok: {spec.files[0].path if len(spec.files) == 1 else f'{len(spec.files)} files'}"
        entries.append({"name": name, "kind": spec.kind, "rows": rows, "expected_rows": spec.rows,
                        "licence": spec.licence, "ok": res.ok, "resolved": status})  # fmt: skip
    if as_json:
        _output.print_json({"data_root": str(root), "datasets": entries})
        return
    shown = [
        [str(e["name"]), str(e["kind"]), _rows_cell(e["rows"], e["expected_rows"]), str(e["licence"]),
         str(e["resolved"])]
        for e in entries
    ]  # fmt: skip
    _output.print_table(["name", "kind", "rows", "licence", "resolved"], shown, title=f"datasets under {root}")


def _rows_cell(rows: object, expected: object) -> str:
    if rows is None or rows == expected:
        return str(expected)
    return f"{rows} (expected {expected})"


@data_app.command("show")
def data_show(name: str, n: int = typer.Option(3, "--n", help="How many records to print.")) -> None:
    """The definition of a dataset and its first records (a registered name, a file or hf:<id>)."""
    from safedose.data import DATASETS, load_any, load_raw  # pydantic: --help stays light

    if name in DATASETS:
        spec = DATASETS.get(name)
        _output.console.print(
            f"[bold]{escape(name)}[/] ({spec.kind}, {spec.rows} rows, {escape(spec.licence)})", soft_wrap=True
        )
        _output.console.print(escape(spec.description), soft_wrap=True)
        _output.console.print(f"upstream: {escape(spec.upstream)}", soft_wrap=True)
        for f in spec.files[:5]:
            _output.console.print(f"  {escape(f.path)}  sha256 {f.sha256[:16]}…", soft_wrap=True)
        if len(spec.files) > 5:
            _output.console.print(f"  … and {len(spec.files) - 5} more files")
        records = load_any(spec)
    else:
        records = load_raw(name)
    for record in records[:n]:
        row = record if isinstance(record, dict) else record.model_dump(exclude_none=True)
        _output.console.print_json(json.dumps(row, ensure_ascii=False))


@data_app.command("fetch")
def data_fetch(name: str, force: bool = typer.Option(False, help="Download even if present.")) -> None:
    """Download a dataset's upstream files into the data root and verify their sha256."""
    from safedose.data import fetch  # pydantic: --help stays light

    for path in fetch(name, force=force):
        _output.console.print(f"ok {escape(str(path))}")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SafedoseError(f"--n expects comma-separated integers, got {text!r}") from None


@data_app.command("build-safety")
def data_build_safety(
    prompts: list[str] = typer.Option(..., help="Prompt sources: registered sets, files, hf:<id>, hh-rlhf-harmless."),
    responder: str = typer.Option(..., help="openai:MODEL, hf:MODEL[+ADAPTER_DIR] or preference:hh-rlhf-harmless."),
    out: Path = typer.Option(..., help="Output JSONL (instruction/input/output)."),
    n: int | None = typer.Option(
        None, "--n", help="Write this many rows: prompts are asked in batches until N pass every filter."
    ),
    allow_fewer: bool = typer.Option(
        False, "--allow-fewer", help="When the prompts run out before N rows, write the rows kept (else exit 2)."
    ),
    min_chars: int = typer.Option(20, help="Drop shorter answers."),
    max_chars: int = typer.Option(2000, help="Drop longer answers."),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", "--keep-partial", help="Also keep answers the refusal judge labels partial."
    ),
    max_harm: float = typer.Option(0.5, help="Keep answers whose harm score is below this."),
    min_prompt_harm: float = typer.Option(
        0.5, help="Ask only prompts the prompt-harm judge scores, alone, at least this (0: every prompt)."
    ),
    system: str | None = typer.Option(None, help="System prompt for openai: and hf: responders."),
    base_url: str | None = typer.Option(None, help="openai: endpoint (default $OPENAI_BASE_URL)."),
    concurrency: int = typer.Option(4, help="openai: requests in flight."),
    cache: Path | None = typer.Option(None, help="SQLite cache of answers and verdicts (default OUT.cache.sqlite)."),
    max_new_tokens: int = typer.Option(512, help="openai: and hf: longest answer in tokens."),
    dtype: str = typer.Option("auto", help="hf: auto, fp32, bf16 or fp16."),
    eval_set: list[str] | None = typer.Option(None, help="Eval sets for the contamination check (default: all)."),
    format: str | None = typer.Option(None, help="Convert every prompt to this form first: instruction or question."),
    rewriter: str | None = typer.Option(
        None, help="openai:MODEL or hf:MODEL[+ADAPTER_DIR] that converts prompts (default: --responder)."
    ),
) -> None:
    """Build safety demonstrations: harmful prompts (each harmful on its own), a responder's answers, kept when they
    refuse; a rerun asks nothing twice."""
    from safedose.build import build_safety, datasheet_path  # pydantic: --help stays light
    from safedose.data import check_form  # pydantic: --help stays light
    from safedose.generate import parse_decoding  # pydantic: --help stays light

    decoding = parse_decoding({"max_new_tokens": max_new_tokens, "dtype": dtype}, source="build-safety")
    sheet = build_safety(
        prompts=prompts, responder=responder, out=out, n=n, allow_fewer=allow_fewer, min_chars=min_chars,
        max_chars=max_chars, allow_partial=allow_partial, max_harm=max_harm, min_prompt_harm=min_prompt_harm,
        system=system, eval_sets=eval_set or None, cache=cache,
        decoding=decoding, base_url=base_url, concurrency=concurrency, progress=True,
        format=None if format is None else check_form(format), rewriter=rewriter,
    )  # fmt: skip
    _output.say(f"wrote {out}: {json.dumps(sheet['counts'])}")
    _output.say(f"dropped: {json.dumps(sheet['dropped'])}; datasheet: {datasheet_path(out)}")


@data_app.command("convert-format")
def data_convert_format(
    source: str = typer.Argument(..., help="Prompts or instruction rows: a registered set, a file or hf:<id>."),
    to: str = typer.Option(..., help="Target form: question or instruction."),
    responder: str = typer.Option(..., help="openai:MODEL or hf:MODEL[+ADAPTER_DIR]: the model that rewrites."),
    out: Path = typer.Option(..., help="Output JSONL (instruction/input/output, ids kept)."),
    base_url: str | None = typer.Option(None, help="openai: endpoint (default $OPENAI_BASE_URL)."),
    concurrency: int = typer.Option(4, help="openai: requests in flight."),
    cache: Path | None = typer.Option(None, help="SQLite cache of the rewrites (default OUT.cache.sqlite)."),
    dtype: str = typer.Option("auto", help="hf: auto, fp32, bf16 or fp16."),
) -> None:
    """Rewrite prompts between instruction and question form; every rewrite is checked, failures retried or dropped."""
    from safedose.build import convert_file, datasheet_path, rewrite_decoding  # pydantic: --help stays light

    sheet = convert_file(source, to=to, responder=responder, out=out, cache=cache, base_url=base_url,
                         concurrency=concurrency, decoding=rewrite_decoding(dtype=dtype), progress=True)  # fmt: skip
    _output.say(f"wrote {out}: {json.dumps(sheet['counts'])}")
    _output.say(f"dropped: {json.dumps(sheet['dropped'])}; datasheet: {datasheet_path(out)}")


@data_app.command("mix")
def data_mix(
    base: str = typer.Option(..., help="Base pool: a registered name, a file, or hf:<id>."),
    base_size: int = typer.Option(..., help="Base rows in every dose."),
    safety: str = typer.Option("saferpaca-safety", help="Safety pool: a registered name, a file, or hf:<id>."),
    n: str = typer.Option(..., "--n", help="Doses, comma-separated, e.g. 0,100,500."),
    out: Path = typer.Option(..., help="Output directory."),
    format: str = typer.Option("instruction", help="Safety data format: instruction, question or mixed."),
    questions: str | None = typer.Option(None, help="Question-form safety prompts by id (from data convert-format)."),
    format_responder: str | None = typer.Option(None, help="Or a responder that rewrites them (openai:, hf:)."),
    seed: int = typer.Option(0),
    val_size: int = typer.Option(200, help="Validation rows (checkpoint selection), drawn once from the base pool."),
    test_size: int = typer.Option(200, help="Held-out test rows (capability only), drawn once from the base pool."),
    max_tokens: int | None = typer.Option(None, help="Drop rows longer than this under the model's tokenizer."),
    model: str = typer.Option("smollm2-135m-instruct", help="Tokenizer for --max-tokens."),
    eval_set: list[str] | None = typer.Option(None, help="Eval sets for the contamination check (default: all)."),
) -> None:
    """Mix exactly N safety rows into the same base sample for each dose N."""
    from safedose.data import FormSource, mix  # pydantic: --help stays light

    forms = None
    if questions is not None and format_responder is not None:
        raise SafedoseError("give --questions or --format-responder, not both")
    if questions is not None:
        forms = FormSource.from_file(questions)
    elif format_responder is not None:
        from safedose.build import make_rewriter  # pydantic: --help stays light

        forms = FormSource(responder=make_rewriter(format_responder, cache=out.with_name(out.name + ".formats.sqlite")))
    result = mix(
        base=base,
        base_size=base_size,
        safety=safety,
        doses=_ints(n),
        out=out,
        seed=seed,
        val_size=val_size,
        test_size=test_size,
        format=format,
        max_tokens=max_tokens,
        tokenizer=model,
        eval_sets=eval_set or None,
        forms=forms,
    )
    for name in result.files:
        _output.console.print(f"wrote {escape(str(result.out / name))}")
    dropped = result.datasheet["dropped"]
    _output.console.print(
        f"dropped: {escape(json.dumps(dropped))}; datasheet: {escape(str(result.out / 'datasheet.json'))}"
    )
