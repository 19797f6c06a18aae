"""Memory per device of a sweep's training and generation, estimated from the model's shape and the settings.

Nothing is loaded or downloaded: the shape comes from `model_shape:` in the sweep config, else the model's
config.json where the model is already local, else a table of known architectures (`KNOWN_MODELS`). The layout is a
LLaMA-style decoder (embedding, per layer q/k/v/o attention projections with grouped KV heads, a gated MLP of
gate/up/down projections, two RMSNorms; an LM head unless tied); biases are not counted.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from safedose.errors import SafedoseError
from safedose.generate import resolve_dtype
from safedose.models import local_model_dir
from safedose.train import mixed_precision

if TYPE_CHECKING:
    from safedose.sweep._config import SweepConfig

GiB = 1024**3
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# CUDA context, kernels' workspaces and allocator slack: a fixed allowance per process.
RUNTIME_BYTES = 1 * GiB
# 4-bit NF4 with double quantisation: 4 bits per weight plus ~0.127 bits of block constants.
NF4_BYTES = (4 + 0.127) / 8

_LLAMA_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
             "intermediate_size": 11008, "vocab_size": 32000, "tie_word_embeddings": False,
             "max_position_embeddings": 2048}  # fmt: skip
_LLAMA_3_8B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
               "intermediate_size": 14336, "vocab_size": 128256, "tie_word_embeddings": False,
               "max_position_embeddings": 8192}  # fmt: skip
# The config.json fields of hub models a dry-run may meet before they are downloaded (copied from their configs).
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "huggyllama/llama-7b": _LLAMA_7B,
    "meta-llama/Llama-2-7b-hf": {**_LLAMA_7B, "max_position_embeddings": 4096},
    "meta-llama/Llama-2-7b-chat-hf": {**_LLAMA_7B, "max_position_embeddings": 4096},
    "meta-llama/Llama-2-13b-hf": {
        "hidden_size": 5120,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
        "intermediate_size": 13824,
        "vocab_size": 32000,
        "tie_word_embeddings": False,
        "max_position_embeddings": 4096,
    },
    "meta-llama/Meta-Llama-3-8B": _LLAMA_3_8B,
    "meta-llama/Meta-Llama-3-8B-Instruct": _LLAMA_3_8B,
    "meta-llama/Llama-3.1-8B": {**_LLAMA_3_8B, "max_position_embeddings": 131072},
    "meta-llama/Llama-3.1-8B-Instruct": {**_LLAMA_3_8B, "max_position_embeddings": 131072},
    "mistralai/Mistral-7B-v0.1": {**_LLAMA_3_8B, "vocab_size": 32000, "max_position_embeddings": 32768},
    "HuggingFaceTB/SmolLM2-135M-Instruct": {
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "max_position_embeddings": 8192,
    },
}
KNOWN_MODELS["smollm2-135m-instruct"] = KNOWN_MODELS["HuggingFaceTB/SmolLM2-135M-Instruct"]


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a LLaMA-style decoder that decide its memory."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int | None = None

    @classmethod
    def from_config(cls, data: Mapping[str, Any], *, source: str = "model config") -> ModelShape:
        """From config.json's fields (a multimodal config's `text_config` is used when present)."""
        data = data.get("text_config") or data
        needed = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
        missing = [k for k in needed if not isinstance(data.get(k), int)]
        if missing:
            raise SafedoseError(f"{source}: no {', '.join(missing)}: not a LLaMA-style decoder config")
        heads = int(data["num_attention_heads"])
        return cls(hidden_size=int(data["hidden_size"]), num_layers=int(data["num_hidden_layers"]), num_heads=heads,
                   num_kv_heads=int(data.get("num_key_value_heads") or heads),
                   head_dim=int(data.get("head_dim") or data["hidden_size"] // heads),
                   intermediate_size=int(data["intermediate_size"]), vocab_size=int(data["vocab_size"]),
                   tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
                   max_position_embeddings=data.get("max_position_embeddings"))  # fmt: skip

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer, by module name."""
        h, q, kv, i = (
            self.hidden_size,
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
            self.intermediate_size,
        )
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # fmt: skip

    def layer_linear_parameters(self) -> int:
        return sum(a * b for a, b in self.linear_shapes().values())

    def embedding_parameters(self) -> int:
        """Input embedding and LM head (one matrix when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def parameters(self) -> int:
        """All weights: embeddings, each layer's projections and two norms, the final norm, the LM head."""
        per_layer = self.layer_linear_parameters() + 2 * self.hidden_size
        return self.embedding_parameters() + self.num_layers * per_layer + self.hidden_size

    def lora_parameters(self, r: int, targets: Sequence[str]) -> int:
        """LoRA's A (r x in) and B (out x r) for every target module of every layer."""
        shapes = self.linear_shapes()
        unknown = [t for t in targets if t not in shapes]
        if unknown:
            raise SafedoseError(f"memory estimate: lora target {unknown[0]!r} is not one of {', '.join(shapes)}")
        return self.num_layers * sum(r * sum(shapes[t]) for t in targets)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of one step, by part; `total` is what must fit."""

    step: str
    parts: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def estimate_training(
    shape: ModelShape,
    *,
    mixed_precision: str,
    base_dtype: str | None = None,
    load_in_4bit: bool = False,
    lora_r: int,
    lora_targets: Sequence[str],
    lora_dropout: float = 0.05,
    micro_batch_size: int,
    max_length: int,
    gradient_checkpointing: bool = False,
) -> MemoryEstimate:
    """Peak memory of one LoRA training process (an upper bound for batches padded to `max_length`).

    Counts: the frozen base weights (`base_dtype`; when unset, the layers' linear weights in the half precision of
    `mixed_precision`, as training stores them, and the rest fp32; with `load_in_4bit` NF4 projections and fp32
    embeddings, head and norms, as PEFT's k-bit preparation leaves them); the LoRA weights, their gradients and
    AdamW's two moments (16 bytes per LoRA parameter, all fp32); the activations autograd keeps for the backward
    pass, per token and layer (norm outputs and fp32 norm inputs, SDPA's q/k/v/output, the o_proj input, the
    gated MLP's four intermediate tensors, each LoRA module's dropped input, mask and rank-r output), or with
    gradient checkpointing each layer's input plus one layer's activations recomputed; the logits of every token
    (in the activation dtype, their fp32 copy and log-softmax, and their gradient); the half-precision copies of
    fp32 base weights that autocast makes and autograd keeps with `base_dtype: fp32` (every layer's, or one layer's
    with gradient checkpointing); one layer's activations as backward workspace; and
    `RUNTIME_BYTES`. Not counted: fragmentation beyond that allowance, a second copy of
    the weights (none is made), attention score matrices (SDPA / flash attention does not keep them).
    """
    h, inter, layers = shape.hidden_size, shape.intermediate_size, shape.num_layers
    half = mixed_precision in ("bf16", "fp16") or load_in_4bit or base_dtype in ("bf16", "fp16")
    act = 2 if half else 4
    if load_in_4bit:
        quantized = layers * shape.layer_linear_parameters()
        weights = int(quantized * NF4_BYTES) + 4 * (shape.parameters() - quantized)
    elif base_dtype is None and mixed_precision in ("bf16", "fp16"):  # training stores frozen linears in half
        linear = layers * shape.layer_linear_parameters()
        weights = 2 * linear + 4 * (shape.parameters() - linear)
    else:
        weights = shape.parameters() * BYTES[base_dtype or "fp32"]
    n_lora = shape.lora_parameters(lora_r, lora_targets)
    tokens = micro_batch_size * max_length
    shapes = shape.linear_shapes()
    lora_per_token = sum(
        (shapes[t][0] + lora_r) * act + (shapes[t][0] if lora_dropout > 0 else 0) for t in lora_targets
    )
    attention = 4 * shape.num_heads * shape.head_dim
    layer_per_token = act * (3 * h + attention + 4 * inter) + 8 * h + lora_per_token
    if gradient_checkpointing:
        activations = tokens * (layers * act * h + layer_per_token)
    else:
        activations = tokens * layers * layer_per_token
    logits = tokens * shape.vocab_size * (2 * act + 12)
    casts = 0
    if mixed_precision in ("bf16", "fp16") and not load_in_4bit and base_dtype == "fp32":
        casts = 2 * shape.layer_linear_parameters() * (1 if gradient_checkpointing else layers)
    return MemoryEstimate(
        "train (each cell)",
        {"weights": weights, "lora, grads, adam": 16 * n_lora, "activations": activations, "logits": logits,
         "weight casts": casts, "workspace": tokens * layer_per_token, "runtime": RUNTIME_BYTES},
    )  # fmt: skip


def estimate_generation(
    shape: ModelShape,
    *,
    backend: str,
    dtype: str,
    batch_size: int,
    max_tokens: int,
    n_adapters: int,
    lora_r: int,
    lora_targets: Sequence[str],
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    max_loras: int | None = None,
    max_model_len: int | None = None,
    device_memory: int | None = None,
) -> MemoryEstimate:
    """Peak memory per device of generating with the base model and its adapters.

    `hf`: the weights in `dtype`, every adapter loaded beside them (fp32), the KV cache of a batch of
    `batch_size` sequences of `max_tokens` (prompt and answer), a prefill layer's activations as workspace, and
    `RUNTIME_BYTES` (the backend halves its batch when memory runs out). `vllm`: the weights split over
    `tensor_parallel_size` GPUs, `max_loras` LoRA slots (in `dtype`), and the KV cache: vLLM takes
    `gpu_memory_utilization` of the device and fills what the rest leaves with KV cache, so the total is that
    share when `device_memory` is known, and the KV cache counted is the least it needs (one sequence of
    `max_model_len`).
    """
    width = BYTES[dtype]
    n_lora = shape.lora_parameters(lora_r, lora_targets)
    weights = shape.parameters() * width
    if backend == "vllm":
        tp = max(1, tensor_parallel_size)
        length = max_model_len or shape.max_position_embeddings or max_tokens
        slots = max_loras or max(1, n_adapters)
        parts = {"weights": weights // tp, "adapters": slots * n_lora * width // tp,
                 "kv cache": shape.kv_bytes_per_token(width) * length // tp, "runtime": RUNTIME_BYTES}  # fmt: skip
        notes = [f"KV cache: the least vLLM needs (one sequence of {length} tokens)"]
        if device_memory:
            reserved = int(gpu_memory_utilization * device_memory)
            notes = [f"vLLM reserves gpu_memory_utilization {gpu_memory_utilization:g} of the device "
                     f"({reserved / GiB:.1f} GiB) and fills what is left with KV cache"]  # fmt: skip
            if sum(parts.values()) <= reserved:
                parts["kv cache"] = reserved - sum(v for k, v in parts.items() if k != "kv cache")
        return MemoryEstimate(f"generate (vllm, tp {tp})", parts, notes)
    tokens = batch_size * max_tokens
    workspace = tokens * BYTES[dtype] * (3 * shape.hidden_size + 2 * shape.intermediate_size)
    parts = {"weights": weights, "adapters": n_adapters * n_lora * 4,
             "kv cache": shape.kv_bytes_per_token(width) * tokens, "workspace": workspace,
             "runtime": RUNTIME_BYTES}  # fmt: skip
    return MemoryEstimate(
        f"generate (hf, batch {batch_size})", parts, ["the hf backend halves its batch when out of memory"]
    )


# -- the shape of a sweep's model, without loading or downloading it ----------------------------------------------


def model_shape(model: str, override: Mapping[str, Any] | None = None) -> tuple[ModelShape, str]:
    """The model's shape and where it came from: `override`, its local config.json, or `KNOWN_MODELS`."""
    if override:
        return ModelShape.from_config(override, source="model_shape"), "model_shape in the sweep config"
    local = local_model_dir(model)
    if local is not None and (local / "config.json").is_file():
        data = json.loads((local / "config.json").read_text(encoding="utf-8"))
        return ModelShape.from_config(data, source=str(local / "config.json")), str(local / "config.json")
    if model in KNOWN_MODELS:
        return ModelShape.from_config(KNOWN_MODELS[model]), "the table of known architectures"
    raise SafedoseError(
        f"memory estimate: {model} is not available locally and not a known architecture; set model_shape: "
        "{hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size, vocab_size} "
        "in the sweep config"
    )


def sweep_memory(config: SweepConfig, *, device_memory: int | None = None) -> tuple[list[MemoryEstimate], str]:
    """The training and generation estimates of a sweep (every cell trains with the same settings), and the
    shape's source and parameter count in words."""
    shape, source = model_shape(config.model, config.model_shape)
    train = config.cell_train_config("-", "-", None, 0)  # type: ignore[arg-type]
    r, targets = train.lora.r, train.lora.target_modules
    estimates = [
        estimate_training(
            shape,
            mixed_precision=mixed_precision(train.dtype),
            base_dtype=train.base_dtype,
            load_in_4bit=train.load_in_4bit,
            lora_dropout=train.lora.dropout,
            micro_batch_size=train.micro_batch_size,
            max_length=train.max_length,
            gradient_checkpointing=train.gradient_checkpointing,
            lora_r=r,
            lora_targets=targets,
        )
    ]
    if config.backend != "openai":
        vllm = config.vllm
        estimates.append(estimate_generation(
            shape, backend=config.backend, dtype=resolve_dtype(config.decoding.dtype),
            batch_size=config.decoding.batch_size, max_tokens=train.max_length + config.decoding.max_new_tokens,
            n_adapters=len(config.doses) * len(config.seeds) * len(config.formats),
            tensor_parallel_size=vllm.tensor_parallel_size, gpu_memory_utilization=vllm.gpu_memory_utilization,
            max_loras=vllm.max_loras, max_model_len=vllm.max_model_len, device_memory=device_memory, lora_r=r,
            lora_targets=targets,
        ))  # fmt: skip
    gpus = config.ray.train.num_gpus
    if config.executor == "ray" and 0 < gpus < 1:  # Ray places floor(1 / num_gpus) training cells on one GPU
        shared, one = math.floor(1 / gpus), estimates[0]
        estimates.insert(1, MemoryEstimate(f"train x{shared} (ray.train.num_gpus {gpus:g})",
                                           {k: v * shared for k, v in one.parts.items()},
                                           [f"{shared} training cells share each GPU"]))  # fmt: skip
    return estimates, f"{shape.parameters() / 1e9:.2f}B parameters (shape from {source})"


# -- device memory ------------------------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": GiB, "gb": 1000**3, "gib": GiB, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}  # fmt: skip


def parse_size(text: str) -> int:
    """`80GiB`, `80GB`, `80G` (binary), `81920MiB` or a number of bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise SafedoseError(f"--device-memory {text!r}: give a size such as 80GiB, 80GB or 24G")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def detect_device_memory() -> tuple[int, str]:
    """The first GPU's memory when torch sees one, else this machine's RAM."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return int(props.total_memory), f"GPU 0 ({props.name})"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's RAM (no GPU seen)"


def gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / 1024**2:.0f} MiB"


def print_memory(config: SweepConfig, console: Any, *, device_memory: str | None = None, strict: bool = False) -> None:
    """`sweep --dry-run`'s memory table, a warning for every step that may not fit the device, and with `strict`
    an error when one may not."""
    from rich.markup import escape
    from rich.table import Table

    size, device = (
        (parse_size(device_memory), f"--device-memory {device_memory}") if device_memory else detect_device_memory()
    )
    try:
        estimates, source = sweep_memory(config, device_memory=size)
    except SafedoseError as err:
        console.print(f"memory: not estimated ({escape(str(err))})", soft_wrap=True)
        return
    parts = list(dict.fromkeys(k for e in estimates for k in e.parts))
    table = Table(title=f"memory per device (estimate; {escape(device)}: {gib(size)})")
    table.add_column("part")
    for e in estimates:
        table.add_column(escape(e.step), justify="right")
    for part in parts:
        table.add_row(part, *(gib(e.parts[part]) if part in e.parts else "-" for e in estimates))
    table.add_row("[bold]total[/]", *(f"[bold]{gib(e.total)}[/]" for e in estimates))
    table.add_row("fits", *("yes" if e.total <= size else "[bold red]no[/]" for e in estimates))
    console.print(table)
    console.print(
        f"model: {escape(source)}" + "".join(f"; {escape(n)}" for e in estimates for n in e.notes), soft_wrap=True
    )
    if config.backend == "openai":
        console.print("generate: served by the openai endpoint; nothing is loaded here", soft_wrap=True)
    over = [e for e in estimates if e.total > size]
    for e in over:
        console.print(f"[bold yellow]warning:[/] {escape(e.step)} needs about {gib(e.total)}, more than the "
                      f"{gib(size)} of {escape(device)}", soft_wrap=True)  # fmt: skip
    if over and strict:
        raise SafedoseError(
            f"--strict: {len(over)} step(s) may not fit in {gib(size)} ({', '.join(e.step for e in over)})"
        )
