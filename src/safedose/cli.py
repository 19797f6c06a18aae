"""The `safedose` command: a thin typer layer over the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from safedose.capability._cli import capability_command
from safedose.errors import SafedoseError

app = typer.Typer(help="Safety-tune instruction-following LLMs and measure the price.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: list, show, fetch and mix.", no_args_is_help=True)
models_app = typer.Typer(help="Models: the embedded default and its preparation.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

console = Console()


@data_app.command("list")
def data_list(
    verify: bool = typer.Option(True, help="Check every file's sha256."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of a table."),
) -> None:
    """Every registered dataset: kind, rows, licence, and where it resolved (or why not)."""
    from safedose.data import DATASETS, load_any, resolve
    from safedose.paths import data_root

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
        _print_json({"data_root": str(root), "datasets": entries})
        return
    shown = [
        [str(e["name"]), str(e["kind"]), _rows_cell(e["rows"], e["expected_rows"]), str(e["licence"]),
         str(e["resolved"])]
        for e in entries
    ]  # fmt: skip
    _print_table(["name", "kind", "rows", "licence", "resolved"], shown, title=f"datasets under {root}")


def _rows_cell(rows: object, expected: object) -> str:
    if rows is None or rows == expected:
        return str(expected)
    return f"{rows} (expected {expected})"


def _print_table(columns: list[str], rows: list[list[str]], *, title: str | None = None) -> None:
    """A table on a terminal; when stdout is not a terminal, tab-separated lines (header first) with whole values."""
    if not console.is_terminal:
        for values in [columns, *rows]:
            print("\t".join(" ".join(v.split()) for v in values))
        return
    table = Table(title=escape(title) if title else None)
    for column in columns:
        table.add_column(column, overflow="fold")
    for values in rows:
        table.add_row(*(escape(v) for v in values))
    console.print(table)


def _print_json(data: object) -> None:
    """Machine-readable output: plain JSON on stdout, never wrapped or coloured."""
    print(json.dumps(data, ensure_ascii=False, indent=2))


@data_app.command("show")
def data_show(name: str, n: int = typer.Option(3, "--n", help="How many records to print.")) -> None:
    """The definition of a dataset and its first records (a registered name, a file or hf:<id>)."""
    from safedose.data import DATASETS, load_any, load_raw

    if name in DATASETS:
        spec = DATASETS.get(name)
        console.print(
            f"[bold]{escape(name)}[/] ({spec.kind}, {spec.rows} rows, {escape(spec.licence)})", soft_wrap=True
        )
        console.print(escape(spec.description), soft_wrap=True)
        console.print(f"upstream: {escape(spec.upstream)}", soft_wrap=True)
        for f in spec.files[:5]:
            console.print(f"  {escape(f.path)}  sha256 {f.sha256[:16]}…", soft_wrap=True)
        if len(spec.files) > 5:
            console.print(f"  … and {len(spec.files) - 5} more files")
        records = load_any(spec)
    else:
        records = load_raw(name)
    for record in records[:n]:
        row = record if isinstance(record, dict) else record.model_dump(exclude_none=True)
        console.print_json(json.dumps(row, ensure_ascii=False))


@data_app.command("fetch")
def data_fetch(name: str, force: bool = typer.Option(False, help="Download even if present.")) -> None:
    """Download a dataset's upstream files into the data root and verify their sha256."""
    from safedose.data import fetch

    for path in fetch(name, force=force):
        console.print(f"ok {escape(str(path))}")


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
    n: int | None = typer.Option(None, "--n", help="Ask at most this many prompts."),
    min_chars: int = typer.Option(20, help="Drop shorter answers."),
    max_chars: int = typer.Option(2000, help="Drop longer answers."),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", "--keep-partial", help="Also keep answers the refusal judge labels partial."
    ),
    max_harm: float = typer.Option(0.5, help="Keep answers whose harm score is below this."),
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
    """Build safety demonstrations from harmful prompts, a responder and a judge filter; a rerun asks nothing twice."""
    from safedose.data import build_safety
    from safedose.data._build_safety import datasheet_path
    from safedose.data._formats import check_form
    from safedose.generate import parse_decoding

    decoding = parse_decoding({"max_new_tokens": max_new_tokens, "dtype": dtype}, source="build-safety")
    sheet = build_safety(
        prompts=prompts, responder=responder, out=out, n=n, min_chars=min_chars, max_chars=max_chars,
        allow_partial=allow_partial, max_harm=max_harm, system=system, eval_sets=eval_set or None, cache=cache,
        decoding=decoding, base_url=base_url, concurrency=concurrency, progress=True,
        format=None if format is None else check_form(format), rewriter=rewriter,
    )  # fmt: skip
    console.print(f"wrote {escape(str(out))}: {escape(json.dumps(sheet['counts']))}", soft_wrap=True)
    console.print(f"dropped: {escape(json.dumps(sheet['dropped']))}; datasheet: {escape(str(datasheet_path(out)))}",
                  soft_wrap=True)  # fmt: skip


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
    from safedose.data import convert_file
    from safedose.data._formats import datasheet_path, rewrite_decoding

    sheet = convert_file(source, to=to, responder=responder, out=out, cache=cache, base_url=base_url,
                         concurrency=concurrency, decoding=rewrite_decoding(dtype=dtype), progress=True)  # fmt: skip
    console.print(f"wrote {escape(str(out))}: {escape(json.dumps(sheet['counts']))}", soft_wrap=True)
    console.print(f"dropped: {escape(json.dumps(sheet['dropped']))}; datasheet: {escape(str(datasheet_path(out)))}",
                  soft_wrap=True)  # fmt: skip


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
    from safedose.data import FormSource, mix

    forms = None
    if questions is not None and format_responder is not None:
        raise SafedoseError("give --questions or --format-responder, not both")
    if questions is not None:
        forms = FormSource.from_file(questions)
    elif format_responder is not None:
        from safedose.data._formats import make_rewriter

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
        console.print(f"wrote {escape(str(result.out / name))}")
    dropped = result.datasheet["dropped"]
    console.print(f"dropped: {escape(json.dumps(dropped))}; datasheet: {escape(str(result.out / 'datasheet.json'))}")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of a table.")) -> None:
    """The embedded models and whether they are prepared."""
    from safedose.models import EMBEDDED, is_prepared, prepared_dir

    entries, shown = [], []
    for name in EMBEDDED:
        description, path = EMBEDDED.get(name).description, str(prepared_dir(name)) if is_prepared(name) else None
        entries.append({"name": name, "description": description, "prepared": path})
        shown.append([name, description, path or "no (run `safedose models prepare`)"])
    if as_json:
        _print_json({"models": entries})
        return
    _print_table(["name", "description", "prepared"], shown)


@models_app.command("prepare")
def models_prepare(name: str, force: bool = typer.Option(False, help="Convert again.")) -> None:
    """Convert an embedded model into a local HF model directory in the cache."""
    from safedose.models import model_hash, prepare

    with console.status(f"preparing {name}"):
        path = prepare(name, force=force)
    console.print(f"{escape(name)}: {escape(str(path))} (content hash {model_hash(path)[:16]})")


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="YAML training config."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. lr=1e-4 lora.r=16"),
    force: bool = typer.Option(False, help="Train again when output_dir holds an adapter of other settings."),
) -> None:
    """LoRA-tune a model on an instruction file; rerun the same command to resume."""
    from safedose.train import load_config, train

    result = train(load_config(config, overrides), force=force)
    best = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.4f} at step {result.best_step}"
    console.print(
        f"adapter: {escape(str(result.output_dir))} ({result.steps} steps, final train loss "
        f"{result.final_train_loss:.4f}, best val loss {best})"
    )


@app.command("generate")
def generate_command(
    out: Path = typer.Option(..., "--out", help="Output JSONL (written atomically at the end)."),
    eval_set: list[str] = typer.Option(..., "--eval-set", help="Registered eval set, file or hf:<id>; repeatable."),
    model: str = typer.Option("smollm2-135m-instruct", help="Embedded name, local dir, HF id (or served name)."),
    adapter: list[str] | None = typer.Option(None, "--adapter", help="Adapter dir or NAME=DIR; repeatable."),
    base: bool = typer.Option(True, "--base/--no-base", help="Also generate with the untouched base model."),
    limit: int | None = typer.Option(None, min=1, help="A seeded sample of N prompts per eval set, by category."),
    limit_seed: int = typer.Option(0, help="Seed of the --limit sample."),
    backend: str = typer.Option("hf", help="hf, vllm or openai."),
    template: str | None = typer.Option(None, help="Prompt template (default: the adapters' own)."),
    allow_template_mismatch: bool = typer.Option(False, help="Allow a template other than the adapters'."),
    allow_base_mismatch: bool = typer.Option(False, help="Allow adapters trained on another base model."),
    max_new_tokens: int = typer.Option(128),
    num_beams: int = typer.Option(1),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy / beam search."),
    temperature: float = typer.Option(1.0),
    top_p: float = typer.Option(1.0),
    seed: int = typer.Option(0),
    stop: list[str] | None = typer.Option(None, "--stop", help="Stop string; repeatable."),
    dtype: str = typer.Option("auto", help="auto, fp32, bf16 or fp16."),
    batch_size: int = typer.Option(64, help="First batch size tried (halved when memory runs out)."),
    merge_adapters: str = typer.Option("auto", help="hf: merge adapters in the weights: auto (fp32), always, never."),
    cache: Path | None = typer.Option(None, help="SQLite cache (default: cache.sqlite beside --out)."),
    base_url: str | None = typer.Option(None, help="openai backend: endpoint (default $OPENAI_BASE_URL)."),
    mode: str = typer.Option("chat", help="openai backend: chat or completions."),
    concurrency: int = typer.Option(8, help="openai backend: requests in flight."),
) -> None:
    """Complete eval prompts with a model and its adapters; a rerun reuses every finished row."""
    from safedose.data import load_eval_prompts, sample_prompts
    from safedose.files import write_jsonl
    from safedose.generate import OpenAISettings, generate, parse_decoding

    decoding = parse_decoding(
        {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": sample, "temperature": temperature,
         "top_p": top_p, "seed": seed, "stop": tuple(stop or ()), "dtype": dtype, "batch_size": batch_size,
         "merge_adapters": merge_adapters},
    )  # fmt: skip
    prompts = [p for name in eval_set for p in sample_prompts(load_eval_prompts(name), limit, seed=limit_seed)]
    if mode not in ("chat", "completions"):
        raise SafedoseError(f"--mode {mode!r}: choose chat or completions")
    settings = OpenAISettings(base_url=base_url, mode=mode, concurrency=concurrency)
    if backend not in ("hf", "vllm", "openai"):
        raise SafedoseError(f"--backend {backend!r}: choose hf, vllm or openai")
    rows = generate(
        model, adapter or [], prompts, template=template, decoding=decoding, backend=backend,  # type: ignore[arg-type]
        include_base=base, cache=cache or out.parent / "cache.sqlite", allow_template_mismatch=allow_template_mismatch,
        allow_base_mismatch=allow_base_mismatch, openai=settings,
    )  # fmt: skip
    write_jsonl(out, (r.model_dump() for r in rows))
    console.print(f"wrote {len(rows)} rows to {escape(str(out))}", soft_wrap=True)


@app.command("judge")
def judge_command(
    name: str = typer.Argument(..., help="Judge name, `list`, or `build` / `validate` followed by a judge name."),
    target: str | None = typer.Argument(None, help="The judge name after `build` or `validate`."),
    input: Path | None = typer.Option(None, "--input", help="JSONL rows with prompt and response."),
    output: Path | None = typer.Option(None, "--output", help="JSONL rows with the verdict fields added."),
    cache: Path | None = typer.Option(None, help="SQLite verdict cache (default: cache.sqlite beside --output)."),
    human: Path | None = typer.Option(None, "--human", help="validate: against the labels of this run's annotators."),
    limit: int | None = typer.Option(None, min=1, help="validate a pairwise judge: a seeded sample of N pairs."),
    extra_labels: Path | None = typer.Option(
        None, "--extra-labels", help="build refusal: also train on this run's human labels (`safedose annotate`)."
    ),
    as_json: bool = typer.Option(False, "--json", help="list: print a JSON object instead of a table."),
) -> None:
    """Judge rows (`judge NAME --input F --output G`), list the judges, build one, or validate it against humans."""
    from safedose.cache import Cache
    from safedose.files import write_json, write_jsonl
    from safedose.judges import build, get_judge, judge_id, judge_rows, list_judges, read_rows, validate

    if name == "list":
        judges = list_judges()
        if as_json:
            _print_json({"judges": judges})
            return
        yes_no = {True: "yes", False: "no (built on first use)", None: "-"}
        shown = [[j["name"], j["kind"], j["revision"] or "-", yes_no[j["built"]],
                  j["validation"] or ("not validated" if j["built"] is not None else "-")] for j in judges]  # fmt: skip
        _print_table(["name", "kind", "revision", "built", "last validation"], shown)
        return
    if name in ("build", "validate"):
        if not target:
            raise SafedoseError(f"judge {name}: give a judge name, e.g. `safedose judge {name} refusal`")
        if name == "build":
            built = build(target, extra_labels=extra_labels)
            count = getattr(built, "human_labels", 0)
            trained = f" (trained with {count} human labels from {extra_labels})" if extra_labels else ""
            console.print(f"{escape(judge_id(built))} is ready{escape(trained)}", soft_wrap=True)
            return
        if human is not None:
            from safedose.annotate import judge_against_humans

            metrics = judge_against_humans(human, target)
        else:
            metrics = validate(target, limit=limit)
        console.print_json(json.dumps(metrics))
        if output:
            write_json(output, metrics)
        return
    if input is None or output is None:
        raise SafedoseError("judge NAME: give --input and --output")
    rows = read_rows(input)
    judge = get_judge(name)
    with Cache(cache or output.parent / "cache.sqlite") as store:
        judged = judge_rows(judge, rows, cache=store)
    write_jsonl(output, judged)
    errors = sum(1 for r in judged if r["parse_error"])
    console.print(
        f"{escape(judge_id(judge))}: wrote {len(judged)} rows to {escape(str(output))} ({errors} parse errors)",
        soft_wrap=True,
    )


@app.command("sweep")
def sweep_command(
    config: Path = typer.Argument(..., help="YAML sweep config."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. doses=[0,100] train.lr=1e-4"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every step, cached or to run, with time estimates."),
    adaptive: bool = typer.Option(False, "--search", help="Choose the doses adaptively to answer the config's target."),
    device_memory: str | None = typer.Option(
        None, "--device-memory", help="--dry-run: memory per device, e.g. 80GiB (default: GPU 0's, else the RAM)."
    ),
    strict: bool = typer.Option(False, "--strict", help="--dry-run: exit with code 2 when a step may not fit."),
    executor: str | None = typer.Option(None, "--executor", help="local (this process) or ray (Ray tasks)."),
    address: str | None = typer.Option(
        None, "--address", help="--executor ray: the cluster (auto, ray://HOST:10001); default: Ray on this machine."
    ),
) -> None:
    """Run the whole dose-response study; rerun the same command to finish an interrupted one."""
    from safedose.sweep import load_sweep_config, plan, search, start_config, sweep
    from safedose.sweep._memory import print_memory

    extra = [f"executor={executor}"] if executor else []
    extra += [f"ray.address={address}"] if address else []
    settings = load_sweep_config(config, [*(overrides or []), *extra])
    if adaptive and not dry_run:
        search(settings, console=console)
        return
    if adaptive:
        settings = start_config(settings)
        console.print("search: the plan of its first round (smallest and largest dose); the results choose the rest")
    if not dry_run:
        sweep(settings, console=console)
        return
    steps = plan(settings)
    table = Table(title=f"plan for {escape(str(settings.run_dir))}")
    for column in ("step", "status", "estimate", "detail"):
        table.add_column(column, overflow="fold")
    for step in steps:
        estimate = "-" if step.status == "cached" else _duration(step.seconds)
        table.add_row(escape(step.name), step.status, estimate, escape(step.detail))
    console.print(table)
    known = [s.seconds for s in steps if s.status != "cached" and s.seconds is not None]
    unknown = sum(1 for s in steps if s.status != "cached" and s.seconds is None)
    rest = f" (+ {unknown} steps not yet measured on this machine)" if unknown else ""
    console.print(f"estimated time: {_duration(sum(known))}{rest}")
    if settings.executor == "ray":
        ray, where = settings.ray, settings.ray.address or "Ray started on this machine"
        console.print(f"executor: ray ({escape(where)}); a training task asks {ray.train.num_cpus:g} CPUs and "
                      f"{ray.train.num_gpus:g} GPUs, generation, judging and capability {ray.adapters_per_task} cells "
                      "per task; the estimate above is for one cell after another", soft_wrap=True)  # fmt: skip
    print_memory(settings, console, device_memory=device_memory, strict=strict)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not measured"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


@app.command("report")
def report_command(run_dir: Path = typer.Argument(..., help="A sweep's run directory.")) -> None:
    """Re-render a sweep's report/index.html from its results."""
    from safedose.report import write_report
    from safedose.run import open_run, read_metrics

    read_metrics(open_run(run_dir))
    console.print(f"report: {escape(str(write_report(run_dir)))}")


@app.command("recommend")
def recommend_command(
    run_dir: Path = typer.Argument(..., help="A sweep's run directory."),
    target: str | None = typer.Option(
        None,
        "--target",
        help="YAML or JSON target, inline or a file (default: the config's), e.g. '{harmful_compliance: {max: 0.05}}'",
    ),
) -> None:
    """The smallest dose that meets a target, from a finished run: writes results/recommendation.json and the report."""
    from safedose.recommend import parse_target
    from safedose.report import load_recommendation, write_report
    from safedose.run import open_run, read_metrics, recommendation_path

    goal = parse_target(target) if target is not None else None
    read_metrics(open_run(run_dir))
    report = write_report(run_dir, target=goal)
    console.print(escape(load_recommendation(run_dir).text), soft_wrap=True)
    console.print(f"wrote {escape(str(recommendation_path(run_dir)))} and {escape(str(report))}", soft_wrap=True)


ANNOTATE_ACTIONS = {"invite": ("RUN_DIR", "NAME"), "export": ("RUN_DIR",), "import": ("RUN_DIR", "FILE"),
                    "summary": ("RUN_DIR",)}  # fmt: skip


@app.command("annotate")
def annotate_command(
    first: str = typer.Argument(..., metavar="RUN_DIR | invite | export | import | summary"),
    rest: list[str] | None = typer.Argument(
        None, metavar="[ARGS]", help="invite RUN_DIR NAME; export RUN_DIR; import RUN_DIR FILE; summary RUN_DIR."
    ),
    per_cell: int | None = typer.Option(None, "--per-cell", help="Answers drawn per cell and eval set (default 10)."),
    overlap: float | None = typer.Option(None, help="Share of the items every annotator labels (default 0.25)."),
    seed: int | None = typer.Option(None, help="Seed of the sample and of each annotator's order (default 0)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; another one exposes the app to the network."),
    port: int = typer.Option(8765),
    open_admin: bool = typer.Option(False, "--open-admin", help="Summary page without a token (loopback only)."),
    url: str | None = typer.Option(None, help="invite: the app's address (default: where it last ran)."),
    new_token: bool = typer.Option(False, "--new-token", help="invite: a new link for someone already invited."),
    format: str = typer.Option("jsonl", "--format", help="export: jsonl, label-studio or label-studio-config."),
    out: Path | None = typer.Option(None, "--out", help="export: the file to write."),
) -> None:
    """Serve a blinded labelling app over a run's answers (`annotate RUN_DIR`), invite annotators, export or
    import labels, or print the agreement summary."""
    from safedose import annotate as ann

    if first not in ANNOTATE_ACTIONS:
        if rest:
            raise SafedoseError(f"annotate: unexpected {' '.join(rest)!r}; actions: {', '.join(ANNOTATE_ACTIONS)}")
        ann.annotate(Path(first), ann.sample_spec(per_cell, overlap, seed), host=host, port=port,
                     open_admin=open_admin)  # fmt: skip
        return
    wanted = ANNOTATE_ACTIONS[first]
    if len(rest or []) != len(wanted):
        raise SafedoseError(f"annotate {first}: give {' '.join(wanted)}")
    args = list(rest or [])
    run = Path(args[0])
    if first == "invite":
        print(ann.invite(run, args[1], url=url, new_token=new_token))
    elif first == "export":
        if out is None:
            raise SafedoseError("annotate export: give --out FILE")
        n = ann.export(run, format, out)
        console.print(f"wrote {escape(str(out))} ({format}; {n} labels)", soft_wrap=True)
    elif first == "import":
        counts = ann.import_file(run, Path(args[1]))
        console.print(", ".join(f"{v} {k}" for k, v in counts.items()), soft_wrap=True)
    else:
        _print_json(ann.app_summary(ann.open_store(run)))


@app.command("serve")
def serve_command(
    model: str = typer.Option("smollm2-135m-instruct", help="Embedded name, local dir or HF id."),
    adapter: list[str] | None = typer.Option(None, "--adapter", help="NAME=DIR (or DIR); repeatable."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the server to the network."),
    port: int = typer.Option(8000),
    template: str | None = typer.Option(None, help="Chat template of the base model (adapters keep their own)."),
    dtype: str = typer.Option("auto", help="auto, fp32, bf16 or fp16."),
    max_batch_size: int = typer.Option(16, help="Requests generated together at most."),
    max_tokens: int = typer.Option(256, help="Default max_tokens when a request gives none."),
) -> None:
    """Serve the model and adapters through OpenAI-compatible endpoints (/v1/chat/completions, ...)."""
    from safedose.serve import serve

    serve(model, adapter or [], host=host, port=port, template=template, dtype=dtype, max_batch_size=max_batch_size,
          max_tokens=max_tokens)  # fmt: skip


@app.command("export")
def export_command(
    adapter: Path = typer.Argument(..., help="Adapter directory (or, with --gguf alone, a merged model directory)."),
    merged: Path | None = typer.Option(None, "--merged", help="Write merged HF weights (no PEFT needed) here."),
    gguf: Path | None = typer.Option(None, "--gguf", help="Write a GGUF file for llama.cpp / Ollama (LLaMA models)."),
    dtype: str = typer.Option("auto", help="auto, fp32, bf16 or fp16 (auto: the base's dtype; GGUF f16 or bf16)."),
    base: str | None = typer.Option(None, help="Base model (default: the one the adapter records)."),
    allow_base_mismatch: bool = typer.Option(False, help="Allow a base other than the one the adapter was trained on."),
    force: bool = typer.Option(False, help="Replace existing outputs."),
) -> None:
    """Merge an adapter into its base model and write HF weights (--merged DIR) and / or a GGUF file (--gguf FILE)."""
    from safedose.export import export

    result = export(adapter, merged=merged, gguf=gguf, dtype=dtype, base=base, allow_base_mismatch=allow_base_mismatch,
                    force=force)  # fmt: skip
    if result.merged is not None:
        console.print(f"merged ({result.merged_dtype}): {escape(str(result.merged))}", soft_wrap=True)
    if result.gguf is not None:
        console.print(f"gguf ({result.gguf_type}): {escape(str(result.gguf))}", soft_wrap=True)


app.command("capability")(capability_command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0 on success, 2 on bad input."""
    try:
        app(args=argv, prog_name="safedose", standalone_mode=False)
    except SafedoseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    sys.exit(main())
