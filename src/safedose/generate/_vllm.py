"""The `vllm` backend (GPU only, optional extra): one engine, every adapter as a LoRA request."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safedose.errors import SafedoseError
from safedose.generate._hf import Done, Job, truncate_at_stop
from safedose.generate._settings import Adapter, Decoding, resolve_dtype

VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def run_vllm(
    model_dir: str | Path, adapters: Sequence[Adapter], jobs: Sequence[Job], decoding: Decoding, on_done: Done
) -> None:
    """Generate with vLLM's multi-LoRA engine (raw prompts: the template is applied before)."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError:
        raise SafedoseError(
            "backend 'vllm' needs the vllm package on a CUDA machine: pip install 'safedose[vllm]'"
        ) from None
    if decoding.num_beams > 1:
        raise SafedoseError("backend 'vllm': use the hf backend for beam search")
    ranks = [_lora_rank(a) for a in adapters]
    llm: Any = LLM(
        model=str(model_dir), dtype=VLLM_DTYPES[resolve_dtype(decoding.dtype)], enable_lora=bool(adapters),
        max_loras=max(1, len(adapters)), max_lora_rank=max(ranks, default=8), seed=decoding.seed,
    )  # fmt: skip
    params = SamplingParams(
        max_tokens=decoding.max_new_tokens, temperature=decoding.temperature if decoding.do_sample else 0.0,
        top_p=decoding.top_p, seed=decoding.seed, stop=list(decoding.stop) or None,
    )  # fmt: skip
    requests = {a.name: LoRARequest(a.name, i + 1, str(a.path)) for i, a in enumerate(adapters)}
    for variant in dict.fromkeys(j.variant for j in jobs):
        todo = [j for j in jobs if j.variant == variant]
        lora = requests[variant] if variant is not None else None
        outputs = llm.generate([j.text for j in todo], params, lora_request=lora)
        results = {}
        for job, output in zip(todo, outputs, strict=True):
            text, ids = output.outputs[0].text, output.outputs[0].token_ids
            results[job.key] = {"response": truncate_at_stop(text, decoding.stop), "n_tokens": len(ids)}
        on_done(results)


def _lora_rank(adapter: Adapter) -> int:
    import json

    return int(json.loads((adapter.path / "adapter_config.json").read_text())["r"])
