"""`generate()`: prompts times (base + adapters) → rows, through the cache, with the backend of choice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from safedose.attacks import AttackedPrompt, AttackInfo
from safedose.cache import Cache, cache_key
from safedose.data import EvalPrompt
from safedose.errors import SafedoseError
from safedose.generate._hf import run_hf
from safedose.generate._jobs import Backend, Job, load_tokenizer
from safedose.generate._openai import OpenAISettings, run_openai
from safedose.generate._settings import Adapter, Decoding, choose_template, load_adapter_info
from safedose.generate._vllm import VllmSettings, run_vllm
from safedose.models import model_hash, resolve_model
from safedose.templates import render_prompt

TABLE = "generations"


class Generation(BaseModel):
    """One answer of one variant (`adapter` None: the base model) to one eval prompt."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    eval_set: str
    category: str | None
    expected_label: Literal["safe", "unsafe"] | None
    prompt: str
    response: str
    model: str
    adapter: str | None
    template: str
    backend: str
    n_tokens: int | None
    dtype: str | None = Field(None, description="the precision it was generated in (hf, vllm); None for an endpoint")
    key: str = Field(description="the cache key of this answer")
    attack: AttackInfo | None = Field(None, description="the attack behind an attacked prompt (None: the plain one)")


def generate(
    model: str,
    adapters: Sequence[str | Path | Adapter],
    prompts: Sequence[EvalPrompt],
    *,
    template: str | None = None,
    decoding: Decoding | None = None,
    backend: Backend = "hf",
    include_base: bool = True,
    cache: Cache | str | Path | None = None,
    allow_template_mismatch: bool = False,
    allow_base_mismatch: bool = False,
    openai: OpenAISettings | None = None,
    progress: bool = True,
    system: str | None = None,
    vllm: VllmSettings | None = None,
) -> list[Generation]:
    """One row per (variant, prompt), variants in order (base first), prompts in input order.

    Finished rows are read from `cache` and new ones written to it batch by batch, so an interrupted call
    repeated with the same arguments generates only what is missing. An adapter whose manifest names another
    template or base model than the one used is an error unless `allow_template_mismatch` / `allow_base_mismatch`.
    `system` is a system message for the `openai` backend in chat mode (local backends: render it into the text).
    `vllm` sets up the vLLM engine (backend `vllm`); `openai.names` maps variants to the endpoint's model names.
    """
    decoding = decoding or Decoding()
    if system is not None and (backend != "openai" or (openai or OpenAISettings()).mode != "chat"):
        raise SafedoseError("a system message needs the openai backend in chat mode; render it into the prompt text")
    infos = [a if isinstance(a, Adapter) else _adapter(a, served=backend == "openai") for a in adapters]
    names = [a.name for a in infos]
    if len(set(names)) != len(names):
        raise SafedoseError(f"adapter names must be unique, got {names}; name them NAME=PATH")
    variants: list[str | None] = ([None] if include_base else []) + names
    if not variants:
        raise SafedoseError("nothing to generate: no adapters and include_base is off")
    if backend == "openai":
        settings = openai or OpenAISettings()
        base_id, tokenizer, model_dir = f"openai:{settings.url()}:{model}", None, None
        chosen = choose_template(infos, template, allow_mismatch=allow_template_mismatch, default="alpaca")
        chosen = "server" if settings.mode == "chat" else chosen  # chat: the server applies the model's template
    else:
        model_dir = resolve_model(model)
        base_id = model_hash(model_dir)
        if not allow_base_mismatch:
            check_base_model(infos, base_id, model)
        tokenizer = load_tokenizer(model_dir)
        default = "chat" if getattr(tokenizer, "chat_template", None) else "alpaca"
        chosen = choose_template(infos, template, allow_mismatch=allow_template_mismatch, default=default)
    hashes = {a.name: a.hash for a in infos}
    texts = [p.prompt if chosen == "server" else render_prompt(chosen, p.prompt, "", tokenizer) for p in prompts]
    if backend == "openai" and any(isinstance(p, AttackedPrompt) and p.attack.prefill_target for p in prompts):
        raise SafedoseError("a prefilled answer needs token-level control of the prompt: use the hf or vllm backend")
    prefills = [prefill_ids(p, tokenizer) for p in prompts]
    attacks = [_attack_parts(p, ids) for p, ids in zip(prompts, prefills, strict=True)]
    key_of = decoding.key()
    dtype = None if backend == "openai" else str(key_of["dtype"])
    parts = {"model": base_id, "template": chosen, "decoding": key_of, "backend": backend}
    if system is not None:
        parts["system"] = system
    jobs = [Job(cache_key(**parts, **extra, adapter=hashes.get(v or ""), prompt=t), v, t, ids)
            for v in variants for t, extra, ids in zip(texts, attacks, prefills, strict=True)]  # fmt: skip
    store = cache if isinstance(cache, Cache) else Cache(cache) if cache else None
    done: dict[str, dict[str, Any]] = store.get_many(TABLE, [j.key for j in jobs]) if store else {}
    todo = list({j.key: j for j in jobs if j.key not in done}.values())

    def on_done(results: dict[str, dict[str, Any]]) -> None:
        done.update(results)
        if store:
            store.put_many(TABLE, results)

    try:
        if todo and backend == "hf":
            assert model_dir is not None
            run_hf(model_dir, infos, todo, decoding, on_done, add_special_tokens=chosen != "chat", progress=progress)
        elif todo and backend == "vllm":
            assert model_dir is not None
            run_vllm(model_dir, infos, todo, decoding, on_done, settings=vllm, add_special_tokens=chosen != "chat")
        elif todo and backend == "openai":
            labels = {j.key: _label(j.variant, p.id) for j, p in zip(jobs, list(prompts) * len(variants), strict=True)}
            run_openai(openai or OpenAISettings(), model, todo, decoding, on_done, progress=progress, labels=labels,
                       system=system)  # fmt: skip
        elif todo:
            raise SafedoseError(f"unknown backend {backend!r}; choose hf, vllm or openai")
    finally:
        if store is not None and not isinstance(cache, Cache):
            store.close()
    return [
        Generation(id=prompt.id, eval_set=prompt.eval_set, category=prompt.category,
                   expected_label=prompt.expected_label, prompt=prompt.prompt, response=done[job.key]["response"],
                   model=model, adapter=job.variant, template=chosen, backend=backend,
                   n_tokens=done[job.key].get("n_tokens"), dtype=dtype, key=job.key,
                   attack=_attack_info(prompt, job.prefill, tokenizer))
        for job, prompt in zip(jobs, list(prompts) * len(variants), strict=True)
    ]  # fmt: skip


def prefill_ids(prompt: EvalPrompt, tokenizer: Any) -> tuple[int, ...]:
    """The token ids a prefilled answer starts with: the attack's target tokenised as a trained answer is (no special
    tokens), cut to its first k tokens; () for any other prompt."""
    info = prompt.attack if isinstance(prompt, AttackedPrompt) else None
    if info is None or info.prefill_target is None:
        return ()
    ids = tokenizer(info.prefill_target, add_special_tokens=False)["input_ids"]
    return tuple(ids[: info.prefill_tokens] if info.prefill_tokens else ids)


def _attack_parts(prompt: EvalPrompt, prefill: tuple[int, ...]) -> dict[str, Any]:
    """What an attack adds to a cache key (nothing for a plain prompt, so plain keys never change)."""
    if not isinstance(prompt, AttackedPrompt):
        return {}
    return {"attack": prompt.attack.id, **({"prefill": list(prefill)} if prefill else {})}


def _attack_info(prompt: EvalPrompt, prefill: tuple[int, ...], tokenizer: Any) -> AttackInfo | None:
    if not isinstance(prompt, AttackedPrompt):
        return None
    if not prefill:
        return prompt.attack
    return prompt.attack.model_copy(update={"prefill": tokenizer.decode(list(prefill), skip_special_tokens=True)})


def check_base_model(adapters: Sequence[Adapter], base_id: str, model: str) -> None:
    """Every adapter whose manifest records a base model hash was trained on `model` (hash `base_id`)."""
    for a in adapters:
        if a.base_model_hash and a.base_model_hash != base_id:
            raise SafedoseError(
                f"adapter {a.name!r} was trained on another base model than {model!r} (recorded hash "
                f"{a.base_model_hash[:16]}, this one {base_id[:16]}); pass --allow-base-mismatch to do it anyway"
            )


def _label(variant: str | None, prompt_id: str) -> str:
    """A job as users know it: the prompt id, and the adapter unless it is the base model."""
    return prompt_id if variant is None else f"{variant}/{prompt_id}"


def _adapter(spec: str | Path, *, served: bool) -> Adapter:
    """An adapter directory; for a served model, a name the endpoint knows is enough."""
    if served and not Path(str(spec).partition("=")[2] or spec).is_dir():
        return Adapter(name=str(spec), path=Path(str(spec)), hash=f"served:{spec}", template=None, base_model_hash=None)
    return load_adapter_info(spec)
