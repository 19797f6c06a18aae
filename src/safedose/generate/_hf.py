"""The `hf` backend: batched transformers generation, all adapters on one loaded base."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from safedose.generate._jobs import Done, Job, load_tokenizer, prompt_token_ids, truncate_at_stop
from safedose.generate._settings import Adapter, Decoding, merges_adapters, resolve_dtype
from safedose.models import torch_dtype


def load_model(model_dir: str | Path, adapters: Sequence[Adapter], dtype: str) -> Any:
    """The base model once, with every adapter loaded under its name (PEFT multi-adapter)."""
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype_of_weights = torch_dtype(resolve_dtype(dtype))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype_of_weights).to(device)
    if adapters:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapters[0].path, adapter_name=adapters[0].name)
        for a in adapters[1:]:
            model.load_adapter(a.path, adapter_name=a.name)
    head = model.get_output_embeddings()
    if device == "cpu" and dtype_of_weights == torch.bfloat16 and head is not None:
        head.register_forward_pre_hook(_contiguous_input)
    return model.eval()


def _contiguous_input(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The LM head's input made contiguous. At prefill it gets the last position of every row, a strided view; with
    a frozen weight (PEFT freezes the base) `torch.matmul` then runs it as a batched matmul over a copy of the weight
    expanded to the batch (64 x 576 x 49152 bf16 values for SmolLM2: ~3.5 s per batch on 2 CPU cores, 25-30% of a
    64-token batch). Contiguous, it is one matmul. In bf16 on CPU both give bit-identical logits; fp32 is not slowed
    down, and there the two differ in the last bits, so the hook is only installed for bf16 on CPU."""
    return (args[0].contiguous(), *args[1:]) if args and isinstance(args[0], torch.Tensor) else args


@contextlib.contextmanager
def use_variant(model: Any, variant: str | None) -> Iterator[None]:
    """Activate one adapter, or none (the untouched base) for `variant=None`."""
    if not hasattr(model, "peft_config"):
        if variant is not None:
            raise ValueError(f"adapter {variant!r} is not loaded")
        yield
    elif variant is None:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(variant)
        yield


# the original base weights of a model's LoRA-wrapped modules, copied once, the first time an adapter is merged
_BASE_WEIGHTS: weakref.WeakKeyDictionary[Any, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()


def _mergeable_layers(model: Any, variant: str) -> list[tuple[str, Any]] | None:
    """The LoRA layers of `variant` as (module name, layer), or None when its delta cannot simply be added to the base
    weights: anything but plain LoRA on `nn.Linear` (DoRA and other variants, LoRA bias, embeddings, convolutions),
    trained biases or whole modules, a weight shared with another module (tied embeddings) or a quantized one."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.tuners_utils import BaseTunerLayer

    config = model.peft_config[variant]
    if getattr(config, "bias", "none") != "none" or getattr(config, "modules_to_save", None):
        return None
    if getattr(config, "trainable_token_indices", None):
        return None
    uses: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        uses[param.data_ptr()] = uses.get(param.data_ptr(), 0) + 1
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        has_variant = any(variant in getattr(module, attr, {}) for attr in module.adapter_layer_names)
        if not has_variant:
            continue
        if type(module) is not LoraLinear or variant not in module.lora_A or variant in module.lora_variant:
            return None
        weight = module.get_base_layer().weight
        if module.lora_bias[variant] or not weight.is_floating_point() or uses[weight.data_ptr()] > 1:
            return None
        layers.append((name, module))
    return layers


def _delta(layer: Any, variant: str) -> torch.Tensor:
    """scale·B·A in fp32, shaped like the base weight."""
    a: torch.Tensor = layer.lora_A[variant].weight.float()
    b: torch.Tensor = layer.lora_B[variant].weight.float()
    delta = (b @ a) * float(layer.scaling[variant])
    return delta.T if layer.fan_in_fan_out else delta


@contextlib.contextmanager
def merged_variant(model: Any, variant: str | None) -> Iterator[None]:
    """Like `use_variant`, but with the adapter's delta written into the base weights and PEFT's layers bypassed:
    the LoRA matmuls and PEFT's per-module work disappear (SmolLM2, fp32, 2 CPU cores: 91% -> 97% of the base model's
    speed, docs/performance.md).

    Each LoRA-wrapped weight becomes `to_dtype(W.float() + scale·B·A)`, with `W` the weight as loaded and `B·A` from
    the adapter's fp32 matrices. The weights as loaded are copied once per model and written back (`copy_`) when the
    block ends, also on errors: nothing is ever subtracted, so no rounding error builds up across adapters and the
    base model sees bit-identical weights. Adapters that are not plain LoRA on linear layers run unmerged.
    """
    layers = None if variant is None or not hasattr(model, "peft_config") else _mergeable_layers(model, variant)
    if variant is None or not layers:
        with use_variant(model, variant):
            yield
        return
    saved = _BASE_WEIGHTS.setdefault(model, {})
    try:
        with torch.no_grad():
            for name, layer in layers:
                weight = layer.get_base_layer().weight
                if name not in saved:
                    saved[name] = weight.detach().clone()
                weight.copy_((saved[name].float() + _delta(layer, variant)).to(weight.dtype))
        with model.disable_adapter():
            yield
    finally:
        with torch.no_grad():
            for name, layer in layers:
                if name in saved:
                    layer.get_base_layer().weight.copy_(saved[name])


def stop_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """EOS, the chat end-of-turn token and whatever the generation config calls EOS."""
    ids = {tokenizer.eos_token_id}
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in vocab:
        ids.add(vocab["<|im_end|>"])
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def generation_kwargs(model: Any, tokenizer: Any, decoding: Decoding) -> dict[str, Any]:
    """`model.generate` keyword arguments for these decoding settings (seeds torch when sampling)."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": decoding.max_new_tokens,
        "num_beams": decoding.num_beams,
        "do_sample": decoding.do_sample,
        "eos_token_id": stop_token_ids(tokenizer, model),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if decoding.do_sample:
        kwargs.update(temperature=decoding.temperature, top_p=decoding.top_p)
        torch.manual_seed(decoding.seed)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if decoding.num_beams > 1:
        kwargs["early_stopping"] = True
    if decoding.stop:
        kwargs.update(stop_strings=list(decoding.stop), tokenizer=tokenizer)
    return kwargs


def generate_batch(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    decoding: Decoding,
    *,
    add_special_tokens: bool,
    prefills: Sequence[Sequence[int]] | None = None,
) -> list[dict[str, Any]]:
    """Complete a batch of already-templated prompts (left-padded). With `prefills`, each answer starts with its
    prefill's ids (`prompt_token_ids`); the response is the prefill and the continuation decoded together, and
    `n_tokens` counts the continuation only."""
    starts = [list(p) for p in prefills] if prefills is not None else [[] for _ in texts]
    if any(starts):
        ids = [prompt_token_ids(tokenizer, t, s, add_special_tokens=add_special_tokens)
               for t, s in zip(texts, starts, strict=True)]  # fmt: skip
        enc = tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
    else:
        enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    enc = enc.to(model.device)
    with torch.inference_mode():
        out = model.generate(**enc, **generation_kwargs(model, tokenizer, decoding))
    new = out[:, enc["input_ids"].shape[1] :]
    results = []
    for row, start in zip(new.tolist(), starts, strict=True):
        n = len(row)
        while n and row[n - 1] == tokenizer.pad_token_id:
            n -= 1
        text = tokenizer.decode(start + row[:n], skip_special_tokens=True)
        results.append({"response": truncate_at_stop(text, decoding.stop), "n_tokens": n})
    return results


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def run_hf(
    model_dir: str | Path,
    adapters: Sequence[Adapter],
    jobs: Sequence[Job],
    decoding: Decoding,
    on_done: Done,
    *,
    add_special_tokens: bool,
    progress: bool = True,
) -> None:
    """Generate every job, longest prompts first, calling `on_done` after each batch.

    `add_special_tokens` must match training: plain-text templates get the tokenizer's usual BOS, chat templates
    write their own special tokens.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, adapters, decoding.dtype)
    lengths = {j.key: len(tokenizer(j.text, add_special_tokens=add_special_tokens)["input_ids"]) + len(j.prefill)
               for j in jobs}  # fmt: skip
    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(TextColumn("generate"), *columns, disable=not progress) as bar:
        task = bar.add_task("generate", total=len(jobs), info="")
        started, tokens = time.perf_counter(), 0
        variants = list(dict.fromkeys(j.variant for j in jobs))
        merge = merges_adapters(decoding)
        for variant in variants:
            todo = sorted((j for j in jobs if j.variant == variant), key=lambda j: -lengths[j.key])
            batch_size, i = decoding.batch_size, 0
            with merged_variant(model, variant) if merge else use_variant(model, variant):
                while i < len(todo):
                    chunk = todo[i : i + batch_size]
                    try:
                        texts = [j.text for j in chunk]
                        prefills = [j.prefill for j in chunk] if any(j.prefill for j in chunk) else None
                        results = generate_batch(
                            model, tokenizer, texts, decoding, add_special_tokens=add_special_tokens, prefills=prefills
                        )
                    except (RuntimeError, torch.OutOfMemoryError) as e:
                        if not _is_oom(e) or batch_size == 1:
                            raise
                        batch_size //= 2
                        if torch.cuda.is_available():
                            torch.cuda.empty_cache()
                        continue
                    on_done({j.key: r for j, r in zip(chunk, results, strict=True)})
                    i += len(chunk)
                    tokens += sum(r["n_tokens"] for r in results)
                    rate = tokens / (time.perf_counter() - started)
                    bar.update(task, advance=len(chunk), info=f"{variant or 'base'} {rate:.0f} tok/s bs {batch_size}")
