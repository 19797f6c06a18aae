"""The `vllm` backend (GPU only, optional extra): one engine, every adapter as a LoRA request.

Unverified on a real GPU: the tests pin what is passed to vLLM through a stub module.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from safedose.errors import SafedoseError
from safedose.generate._jobs import Done, Job, load_tokenizer, truncate_at_stop
from safedose.generate._settings import Adapter, Decoding, resolve_dtype

VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# The LoRA ranks vLLM's engine accepts as max_lora_rank.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class VllmSettings(BaseModel):
    """How the vLLM engine is set up; none of it is part of the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensor_parallel_size: int = Field(1, gt=0, description="GPUs the model is split over")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of each GPU's memory vLLM takes")
    max_model_len: int | None = Field(None, gt=0, description="longest prompt + answer; null: the model's own")
    max_loras: int | None = Field(None, gt=0, description="LoRA slots on the GPU; null: one per adapter")


def run_vllm(
    model_dir: str | Path,
    adapters: Sequence[Adapter],
    jobs: Sequence[Job],
    decoding: Decoding,
    on_done: Done,
    *,
    settings: VllmSettings | None = None,
    add_special_tokens: bool = True,
) -> None:
    """Generate with vLLM's multi-LoRA engine from token ids (the template is applied before).

    The prompts are tokenized here as the hf backend tokenizes them (`add_special_tokens` is off for chat-template
    text), and never get a BOS token when their text already starts with one, so vLLM adds no second BOS. The
    engine's GPU memory is given back before returning.
    """
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError:
        raise SafedoseError(
            "backend 'vllm' needs the vllm package on a CUDA machine: pip install 'safedose[vllm]'"
        ) from None
    if decoding.num_beams > 1:
        raise SafedoseError("backend 'vllm': use the hf backend for beam search")
    settings = settings or VllmSettings()
    tokenizer = load_tokenizer(model_dir)
    rank = max((_lora_rank(a) for a in adapters), default=8)
    llm: Any = LLM(
        model=str(model_dir), tokenizer=str(model_dir), dtype=VLLM_DTYPES[resolve_dtype(decoding.dtype)],
        enable_lora=bool(adapters), max_loras=settings.max_loras or max(1, len(adapters)),
        max_lora_rank=next((r for r in VLLM_LORA_RANKS if r >= rank), rank), seed=decoding.seed,
        tensor_parallel_size=settings.tensor_parallel_size, gpu_memory_utilization=settings.gpu_memory_utilization,
        max_model_len=settings.max_model_len,
    )  # fmt: skip
    try:
        params = SamplingParams(
            max_tokens=decoding.max_new_tokens, temperature=decoding.temperature if decoding.do_sample else 0.0,
            top_p=decoding.top_p, seed=decoding.seed, stop=list(decoding.stop) or None,
        )  # fmt: skip
        requests = {a.name: LoRARequest(a.name, i + 1, str(a.path)) for i, a in enumerate(adapters)}
        for variant in dict.fromkeys(j.variant for j in jobs):
            todo = [j for j in jobs if j.variant == variant]
            lora = requests[variant] if variant is not None else None
            prompts = [{"prompt_token_ids": prompt_ids(tokenizer, j.text, add_special_tokens) + list(j.prefill)}
                       for j in todo]  # fmt: skip
            outputs = llm.generate(prompts, params, lora_request=lora)
            results = {}
            for job, output in zip(todo, outputs, strict=True):
                text, ids = output.outputs[0].text, output.outputs[0].token_ids
                if job.prefill:  # the answer is the prefill and its continuation, decoded together
                    text = tokenizer.decode(list(job.prefill) + list(ids), skip_special_tokens=True)
                results[job.key] = {"response": truncate_at_stop(text, decoding.stop), "n_tokens": len(ids)}
            on_done(results)
    finally:
        del llm
        release_gpu_memory()


def prompt_ids(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    """Token ids of a rendered prompt, with no BOS added to a text that begins with the BOS token already."""
    bos = getattr(tokenizer, "bos_token", None)
    add = add_special_tokens and not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add)["input_ids"])


def release_gpu_memory() -> None:
    """Tear down vLLM's parallel state (where this vLLM has it) and give cached GPU memory back."""
    import torch  # torch: loaded only when an engine is torn down

    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
    except ImportError:
        pass
    else:
        destroy_model_parallel()
        destroy_distributed_environment()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _lora_rank(adapter: Adapter) -> int:
    import json

    return int(json.loads((adapter.path / "adapter_config.json").read_text())["r"])
