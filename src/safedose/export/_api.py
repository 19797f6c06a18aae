"""`export()`: an adapter merged into its base, as HF weights and / or a GGUF file, published only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safedose.errors import SafedoseError
from safedose.export._gguf import GgufType, check_supported, tensors_of_dir, tensors_of_model, write_gguf
from safedose.export._merge import (
    ExportDtype,
    ResolvedBase,
    config_dtype,
    load_adapter,
    merge,
    parse_dtype,
    resolve_base,
)
from safedose.export._vocab import adds_bos, read_vocab
from safedose.files import honour_umask, write_json
from safedose.generate import Adapter, evaluated_dtype
from safedose.models import torch_dtype
from safedose.templates import alpaca_chat_template

RECORD = "safedose-export.json"


@dataclass(frozen=True)
class ExportResult:
    """What was written: the merged directory and / or the GGUF file, and their precision."""

    merged: Path | None
    gguf: Path | None
    merged_dtype: str | None
    gguf_type: GgufType | None
    evaluated_dtype: str | None = None
    note: str | None = None


def export(
    source: str | Path,
    *,
    merged: str | Path | None = None,
    gguf: str | Path | None = None,
    dtype: ExportDtype | str = "auto",
    base: str | None = None,
    allow_base_mismatch: bool = False,
    force: bool = False,
) -> ExportResult:
    """Merge the adapter `source` into its base and write `merged` (a HF model directory) and / or `gguf` (a file).

    `dtype` auto: the merged weights keep the base's dtype; the GGUF is bf16 for a bf16 base, else f16.
    `source` may also be a HF model directory (a merged export) when only `gguf` is asked for.
    Nothing appears at either path unless both were written.
    """
    if merged is None and gguf is None:
        raise SafedoseError("export: give --merged DIR, --gguf FILE or both")
    chosen = parse_dtype(str(dtype))
    merged_path = _target(merged, force=force) if merged is not None else None
    gguf_path = _target(gguf, force=force) if gguf is not None else None
    src = Path(source).expanduser()
    if gguf_path is not None and merged_path is None and _is_model_dir(src):
        return ExportResult(None, _convert_dir(src, gguf_path, chosen), None, _gguf_type(chosen, src))
    adapter = load_adapter(src)
    resolved = resolve_base(adapter, base=base, allow_base_mismatch=allow_base_mismatch)
    tokenizer = with_learnt_template(_tokenizer(resolved.path), adapter.template)
    gguf_type = _gguf_type(chosen, resolved.path) if gguf_path is not None else None
    if gguf_path is not None:  # fail on an unsupported model before merging anything
        _check_gguf(resolved.path, tokenizer)
    merged_dtype = (config_dtype(resolved.path) if chosen == "auto" else chosen) if merged_path is not None else None
    evaluated = evaluated_dtype(adapter)
    model = merge(adapter, resolved)
    with _staging(merged_path, gguf_path) as (merged_tmp, gguf_tmp):
        if gguf_tmp is not None and gguf_type is not None:
            extra = _gguf_record(adapter, resolved, evaluated)
            write_gguf(gguf_tmp, config=model.config, tokenizer=tokenizer, tensors=tensors_of_model(model),
                       out=gguf_type, name=adapter.name, extra=extra)  # fmt: skip
        if merged_tmp is not None and merged_dtype is not None:
            _save_merged(model, tokenizer, merged_tmp, dtype=merged_dtype, adapter=adapter, base=resolved,
                         evaluated=evaluated)  # fmt: skip
    note = reproduction_note(adapter, resolved.spec, evaluated, merged_dtype)
    return ExportResult(merged_path, gguf_path, merged_dtype, gguf_type, evaluated, note)


def export_merged(
    adapter: str | Path,
    out_dir: str | Path,
    *,
    dtype: ExportDtype | str = "auto",
    base: str | None = None,
    allow_base_mismatch: bool = False,
    force: bool = False,
) -> Path:
    """The adapter merged into its base, saved as a HF model directory (see `export()`)."""
    result = export(adapter, merged=out_dir, dtype=dtype, base=base, allow_base_mismatch=allow_base_mismatch,
                    force=force)  # fmt: skip
    assert result.merged is not None
    return result.merged


def export_gguf(
    source: str | Path,
    out_file: str | Path,
    *,
    dtype: ExportDtype | str = "auto",
    base: str | None = None,
    allow_base_mismatch: bool = False,
    force: bool = False,
) -> Path:
    """An adapter (merged into its base) or a HF model directory as a GGUF file (see `export()`)."""
    result = export(source, gguf=out_file, dtype=dtype, base=base, allow_base_mismatch=allow_base_mismatch,
                    force=force)  # fmt: skip
    assert result.gguf is not None
    return result.gguf


def _target(path: str | Path, *, force: bool) -> Path:
    target = Path(path).expanduser().absolute()
    if target.is_dir() and any(target.iterdir()) and not force:
        raise SafedoseError(f"{target}: exists and is not empty; pass --force to replace it")
    if target.is_file() and not force:
        raise SafedoseError(f"{target}: exists; pass --force to replace it")
    return target


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and not (path / "adapter_config.json").is_file()


def _tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def with_learnt_template(tokenizer: Any, template: str | None) -> Any:
    """The tokenizer with the chat template the adapter learnt: the Alpaca prompt for an `alpaca` adapter (the base's
    own template, e.g. ChatML, would prompt it wrongly); the base's for a `chat` adapter or an unknown template."""
    if template == "alpaca":
        tokenizer.chat_template = alpaca_chat_template(bos=adds_bos(tokenizer))
    return tokenizer


def _check_gguf(model_dir: Path, tokenizer: Any) -> Any:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    check_supported(config)
    read_vocab(tokenizer, int(config.vocab_size))
    return config


def _gguf_type(dtype: ExportDtype, model_dir: Path) -> GgufType:
    if dtype == "auto":
        return "bf16" if config_dtype(model_dir) == "bf16" else "f16"
    return {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}[dtype]  # type: ignore[return-value]


def _convert_dir(model_dir: Path, out: Path, dtype: ExportDtype) -> Path:
    """A HF model directory (e.g. a merged export) as a GGUF file."""
    tokenizer = _tokenizer(model_dir)
    config = _check_gguf(model_dir, tokenizer)
    with _staging(None, out) as (_, tmp):
        assert tmp is not None
        write_gguf(tmp, config=config, tokenizer=tokenizer, tensors=tensors_of_dir(model_dir),
                   out=_gguf_type(dtype, model_dir), name=model_dir.name)  # fmt: skip
    return out


def reproduction_note(adapter: Adapter, base: str, evaluated: str | None, merged_dtype: str | None) -> str | None:
    """Which way of running the adapter gives the answers its study reported (None: no study records them)."""
    if evaluated is None:
        return None
    if evaluated == "fp32":
        which = "this merged model" if merged_dtype == "fp32" else "a merged model exported with --dtype fp32"
        return (f"the study answered in fp32, where greedy answers do not depend on the batch: {which} and "
                f"`safedose serve --model {base} --adapter {adapter.path} --dtype fp32` give its answers")  # fmt: skip
    return (
        f"the study answered in {evaluated}, batched, with the adapter unmerged; {evaluated} answers depend on the "
        "batch, so no merged or served model repeats them all (docs/export.md); a study with `decoding.dtype: fp32` "
        "is repeated by an fp32 export"
    )


def _gguf_record(adapter: Adapter, base: ResolvedBase, evaluated: str | None) -> dict[str, str]:
    record = {"safedose.adapter_hash": adapter.hash, "safedose.base_model_hash": base.hash}
    if adapter.template:
        record["safedose.template"] = adapter.template
    if evaluated:
        record["safedose.evaluated_dtype"] = evaluated
    return record


def _save_merged(model: Any, tokenizer: Any, out: Path, *, dtype: str, adapter: Adapter, base: ResolvedBase,
                 evaluated: str | None) -> None:  # fmt: skip
    import peft
    import torch
    import transformers

    model.to(torch_dtype(dtype))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {
        "adapter": {"name": adapter.name, "path": str(adapter.path.absolute()), "hash": adapter.hash},
        "template": adapter.template,
        "base_model": {"spec": base.spec, "path": str(base.path), "hash": base.hash},
        "recorded_base_model_hash": adapter.base_model_hash,
        "dtype": dtype,
        "evaluated_dtype": evaluated,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }
    write_json(out / RECORD, record)


@contextlib.contextmanager
def _staging(merged: Path | None, gguf: Path | None) -> Iterator[tuple[Path | None, Path | None]]:
    """Temporary paths beside the targets; renamed over them only when the block succeeds, else removed.

    A GGUF inside the merged directory is written inside its staging copy and published with it.
    """
    made: list[Path] = []
    try:
        merged_tmp = gguf_tmp = None
        if merged is not None:
            merged.parent.mkdir(parents=True, exist_ok=True)
            merged_tmp = Path(tempfile.mkdtemp(prefix=f".{merged.name}.", suffix=".tmp", dir=merged.parent))
            made.append(merged_tmp)
        inside = merged is not None and gguf is not None and gguf.is_relative_to(merged)
        if gguf is not None and merged is not None and merged_tmp is not None and inside:
            gguf_tmp = merged_tmp / gguf.relative_to(merged)
            gguf_tmp.parent.mkdir(parents=True, exist_ok=True)
        elif gguf is not None:
            gguf.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{gguf.name}.", suffix=".tmp", dir=gguf.parent)
            os.close(fd)
            gguf_tmp = Path(name)
            made.append(gguf_tmp)
        yield merged_tmp, gguf_tmp
        if merged is not None and merged_tmp is not None:
            honour_umask(merged_tmp)  # mkdtemp and safetensors make 0700 / 0600
            _replace_dir(merged_tmp, merged)
        if gguf is not None and gguf_tmp is not None and not inside:
            honour_umask(gguf_tmp)
            os.replace(gguf_tmp, gguf)
    finally:
        for path in made:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _replace_dir(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`; an existing `target` is moved aside first and removed after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
