"""A LLaMA-architecture HF model as a GGUF file for llama.cpp: the inverse of the GGUF reading in `safedose.models`.

Names come from gguf's own tensor map, q_proj / k_proj are permuted into llama.cpp's rotary layout (transformers'
GGUF loader undoes exactly this permutation), a tied lm_head is left out (llama.cpp reuses token_embd), and 1-D
tensors stay f32 in f16 / bf16 files, as llama.cpp's convert_hf_to_gguf.py writes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from safedose.errors import SafedoseError
from safedose.export._vocab import Vocab, read_vocab

GgufType = Literal["f32", "f16", "bf16"]
ARCHITECTURE = "LlamaForCausalLM"


@dataclass(frozen=True)
class LazyTensor:
    """A tensor's shape, and how to load it."""

    shape: tuple[int, ...]
    load: Callable[[], torch.Tensor]


@dataclass(frozen=True)
class _Planned:
    name: str  # llama.cpp's name
    shape: tuple[int, ...]
    out: GgufType
    load: Callable[[], torch.Tensor]


def check_supported(config: Any) -> None:
    """A one-line error unless `config` is a LLaMA-architecture causal LM."""
    architectures = list(getattr(config, "architectures", None) or [])
    model_type = getattr(config, "model_type", None)
    if model_type != "llama" or architectures not in ([], [ARCHITECTURE]):
        found = architectures[0] if architectures else model_type
        raise SafedoseError(
            f"GGUF export supports the LLaMA architecture ({ARCHITECTURE}: SmolLM2, LLaMA 2 / 3), not {found!r}; "
            "export --merged and convert it with llama.cpp's convert_hf_to_gguf.py"
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise SafedoseError("GGUF export: LLaMA models with attention or MLP biases are not supported")
    _rope(config)


def write_gguf(
    path: Path,
    *,
    config: Any,
    tokenizer: Any,
    tensors: Mapping[str, LazyTensor],
    out: GgufType,
    name: str,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Write the GGUF of a LLaMA model (HF tensor names in `tensors`) to `path`, tensor by tensor."""
    import gguf

    check_supported(config)
    vocab = read_vocab(tokenizer, int(config.vocab_size))
    planned = _plan(config, tensors, out)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_type("model")
        writer.add_name(name)
        for key, value in (extra or {}).items():
            writer.add_string(key, value)
        _add_hparams(writer, config, out)
        _add_vocab(writer, vocab)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for t in planned:
            dtype, nbytes = _storage(t.shape, t.out)
            writer.add_tensor_info(t.name, t.shape, dtype, nbytes, raw_dtype=_ggml_type(t.out))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in planned:
            writer.write_tensor_data(_to_numpy(t.load(), t.out))
    finally:
        writer.close()


def permute_qk(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF's rotary layout (halves) -> llama.cpp's (interleaved pairs), per head; rows of q_proj / k_proj."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def rope_factors(config: Any) -> torch.Tensor | None:
    """The per-frequency divisors of LLaMA 3's rope scaling (llama.cpp's `rope_freqs` tensor), else None."""
    params = _rope(config)
    if params.get("rope_type") != "llama3":
        return None
    dim = _head_dim(config)
    freqs = 1.0 / (float(params["rope_theta"]) ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    factor = float(params.get("factor", 8.0))
    low, high = float(params.get("low_freq_factor", 1.0)), float(params.get("high_freq_factor", 4.0))
    old_context = float(params.get("original_max_position_embeddings", 8192))
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            out.append(1.0)
        elif wavelen > old_context / low:
            out.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32)


def _rope(config: Any) -> dict[str, Any]:
    params = dict(getattr(config, "rope_parameters", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    kind = params.get("rope_type") or "default"
    if kind not in ("default", "linear", "llama3"):
        raise SafedoseError(f"GGUF export: rope scaling {kind!r} is not supported (default, linear and llama3 are)")
    return params


def _head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _plan(config: Any, tensors: Mapping[str, LazyTensor], out: GgufType) -> list[_Planned]:
    """Every tensor llama.cpp gets: its name, shape, type and loader (q / k permuted)."""
    import gguf

    n_layers = int(config.num_hidden_layers)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    n_head = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_head)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    planned = []
    for hf_name, t in tensors.items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise SafedoseError(f"GGUF export: tensor {hf_name!r} has no llama.cpp name for the LLaMA architecture")
        load = t.load
        if ".self_attn.q_proj." in hf_name:
            load = _permuted(t.load, n_head)
        elif ".self_attn.k_proj." in hf_name:
            load = _permuted(t.load, n_kv)
        planned.append(_Planned(name, t.shape, out if len(t.shape) > 1 else "f32", load))
    factors = rope_factors(config)
    if factors is not None:
        rope = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        planned.append(_Planned(rope, tuple(factors.shape), "f32", lambda: factors))
    _check_complete(planned, n_layers, tied)
    return planned


def _permuted(load: Callable[[], torch.Tensor], n_head: int) -> Callable[[], torch.Tensor]:
    return lambda: permute_qk(load(), n_head)


def _check_complete(planned: list[_Planned], n_layers: int, tied: bool) -> None:
    present = {t.name for t in planned}
    wanted = ["token_embd.weight", "output_norm.weight", *([] if tied else ["output.weight"])]
    per_layer = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
    wanted += [f"blk.{i}.{part}.weight" for i in range(n_layers) for part in per_layer]
    missing = [n for n in wanted if n not in present]
    if missing:
        raise SafedoseError(f"GGUF export: the model lacks {len(missing)} tensors llama.cpp needs, e.g. {missing[0]}")


def _add_hparams(writer: Any, config: Any, out: GgufType) -> None:
    import gguf

    n_head = int(config.num_attention_heads)
    head_dim = _head_dim(config)
    rope = _rope(config)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or n_head))
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "bf16": gguf.LlamaFileType.MOSTLY_BF16}  # fmt: skip
    writer.add_file_type(int(file_types[out]))


def _add_vocab(writer: Any, vocab: Vocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id, "unk": writer.add_unk_token_id,
              "pad": writer.add_pad_token_id}  # fmt: skip
    for kind, token_id in vocab.special_ids.items():
        adders[kind](token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template is not None:
        writer.add_chat_template(vocab.chat_template)


def _ggml_type(out: GgufType) -> Any:
    import gguf

    return {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
            "bf16": gguf.GGMLQuantizationType.BF16}[out]  # fmt: skip


def _storage(shape: tuple[int, ...], out: GgufType) -> tuple[np.dtype[Any], int]:
    """The numpy dtype written for this type (bf16 as its 16 raw bits) and the tensor's size in bytes."""
    dtypes: dict[str, np.dtype[Any]] = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16),
                                        "bf16": np.dtype(np.int16)}  # fmt: skip
    dtype = dtypes[out]
    return dtype, math.prod(shape) * dtype.itemsize


def _to_numpy(tensor: torch.Tensor, out: GgufType) -> np.ndarray[Any, Any]:
    t = tensor.detach().cpu()
    if out == "bf16":
        return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy()
    return t.to(torch.float32 if out == "f32" else torch.float16).contiguous().numpy()


def tensors_of_model(model: Any) -> dict[str, LazyTensor]:
    """The tensors of a loaded model, by HF name."""
    return {k: LazyTensor(tuple(v.shape), _constant(v)) for k, v in model.state_dict().items()}


def _constant(value: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: value


def tensors_of_dir(model_dir: Path) -> dict[str, LazyTensor]:
    """The tensors of a model directory's safetensors files, by HF name, loaded one at a time."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise SafedoseError(f"{model_dir}: no *.safetensors weights to convert")
    out = {}
    for f in files:
        with safe_open(f, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                out[key] = LazyTensor(tuple(handle.get_slice(key).get_shape()), _loader(f, key))
    return out


def _loader(path: Path, key: str) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            tensor: torch.Tensor = handle.get_tensor(key)
        return tensor

    return load
