"""Responders: answer a list of prompts with an OpenAI-compatible endpoint, a local model, or the preferred replies
of a preference dataset.

Specs: `openai:MODEL` (endpoint from `base_url` or $OPENAI_BASE_URL, key from $OPENAI_API_KEY), `hf:MODEL` or
`hf:MODEL+ADAPTER_DIR` (an embedded name, local directory or HF id, resolved by `safedose.models`), and
`preference:hh-rlhf-harmless` (the chosen reply to the last human turn of each hh-rlhf harmless conversation).

`openai` and `hf` answers go through `safedose.generate.generate` and its SQLite cache, so a rerun with the same
cache asks nothing twice. An endpoint prompt that still fails after the backend's retries is answered None; when
every prompt fails (or the first `GIVE_UP_AFTER` prompts fail and none was answered) `respond` raises one
SafedoseError.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safedose.data import DATASETS, EvalPrompt, Responder, hh_pairs, normalize
from safedose.errors import SafedoseError
from safedose.models import model_hash, resolve_model

if TYPE_CHECKING:
    from safedose.generate import Decoding, Generation, OpenAISettings

HH_HARMLESS = "hh-rlhf-harmless"
DEFAULT_MAX_NEW_TOKENS = 512  # the default decoding: greedy, at most this many new tokens
SPECS = f"openai:MODEL, hf:MODEL[+ADAPTER_DIR] or preference:{HH_HARMLESS}"
GIVE_UP_AFTER = 16  # failed prompts with no answer at all: the endpoint is taken to be down


def make_responder(
    spec: str,
    *,
    system: str | None = None,
    decoding: Decoding | None = None,
    cache: Path | None = None,
    base_url: str | None = None,
    concurrency: int = 4,
    progress: bool = False,
) -> Responder:
    """The responder a spec names; `system` is its default system prompt, `cache` its SQLite generation cache."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest.strip():
        raise SafedoseError(f"responder {spec!r}: use {SPECS}")
    if base_url is not None and kind != "openai":
        raise SafedoseError(f"responder {spec}: a base URL is only for openai: responders")
    from safedose.generate import Decoding, OpenAISettings  # torch: loaded only when a responder is made

    decoding = decoding or Decoding(max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    if kind == "openai":
        if concurrency < 1:
            raise SafedoseError(f"responder {spec}: concurrency must be at least 1, got {concurrency}")
        settings = OpenAISettings(base_url=base_url, concurrency=concurrency)
        return OpenAIResponder(spec, rest, settings, decoding, system, cache, progress)
    if kind == "hf":
        model, adapter = _split_adapter(rest)
        return HFResponder(spec, model, adapter, decoding, system, cache, progress)
    if kind == "preference":
        if system is not None:
            raise SafedoseError(f"responder {spec}: a system prompt is not supported (answers are fixed)")
        if rest != HH_HARMLESS:
            raise SafedoseError(f"responder {spec}: only preference:{HH_HARMLESS} is available")
        return PreferenceResponder(spec, rest)
    raise SafedoseError(f"responder {spec!r}: unknown kind {kind!r}; use {SPECS}")


def _split_adapter(text: str) -> tuple[str, str | None]:
    """`MODEL+ADAPTER_DIR` -> (MODEL, ADAPTER_DIR); a model path that itself contains `+` is kept whole."""
    if Path(text).expanduser().exists():
        return text, None
    model, sep, adapter = text.partition("+")
    if sep and not (model and adapter):
        raise SafedoseError(f"responder hf:{text}: use hf:MODEL or hf:MODEL+ADAPTER_DIR")
    return model, adapter or None


@contextlib.contextmanager
def _cache_file(cache: Path | None) -> Iterator[Path]:
    """The cache to use: the given one, or a temporary one that lives for one `respond` call."""
    if cache is not None:
        yield Path(cache)
        return
    with tempfile.TemporaryDirectory(prefix="safedose-responder-") as tmp:
        yield Path(tmp) / "cache.sqlite"


def _eval_prompts(prompts: Sequence[str]) -> list[EvalPrompt]:
    return [EvalPrompt(id=f"prompt {i + 1}", prompt=str(p), eval_set="responder") for i, p in enumerate(prompts)]


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass
class OpenAIResponder:
    """An OpenAI-compatible endpoint in chat mode, `settings.concurrency` requests in flight, retried by the backend."""

    spec: str
    model: str
    settings: OpenAISettings
    decoding: Decoding
    system: str | None = None
    cache: Path | None = None
    progress: bool = False
    errors: list[str] = field(default_factory=list)  # the errors of the last `respond`, one per failed prompt

    def identity(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "backend": "openai",
            "model": self.model,
            "base_url": self.settings.url(),
            "mode": self.settings.mode,
            "system": self.system,
            "decoding": self.decoding.model_dump(exclude={"batch_size", "merge_adapters", "dtype"}),
            "max_retries": self.settings.max_retries,
        }

    def respond(self, prompts: Sequence[str], *, system: str | None = None) -> list[str | None]:
        """All prompts at once; if any fails, each prompt that has no cached answer is asked again on its own."""
        system = self.system if system is None else system
        self.errors = []
        if not prompts:
            return []
        with _cache_file(self.cache) as cache:
            try:
                return [g.response for g in self._ask(prompts, system, cache, self.settings, self.progress)]
            except SafedoseError:
                pass  # the answers that arrived are cached; find the prompts that fail, one at a time
            return self._one_by_one(prompts, system, cache)

    def _ask(
        self, prompts: Sequence[str], system: str | None, cache: Path, settings: OpenAISettings, progress: bool
    ) -> list[Generation]:
        from safedose.generate import generate  # torch: loaded only when a model is asked

        return generate(self.model, [], _eval_prompts(prompts), decoding=self.decoding, backend="openai",
                        cache=cache, openai=settings, progress=progress, system=system)  # fmt: skip

    def _one_by_one(self, prompts: Sequence[str], system: str | None, cache: Path) -> list[str | None]:
        single = self.settings.model_copy(update={"concurrency": 1})

        def one(i: int) -> tuple[str | None, str | None]:
            try:
                return self._ask([prompts[i]], system, cache, single, False)[0].response, None
            except SafedoseError as e:
                return None, _one_line(str(e))

        answers: list[str | None] = []
        step = self.settings.concurrency
        with ThreadPoolExecutor(step) as pool:
            for start in range(0, len(prompts), step):
                for answer, error in pool.map(one, range(start, min(start + step, len(prompts)))):
                    answers.append(answer)
                    if error is not None:
                        self.errors.append(error)
                if all(a is None for a in answers) and GIVE_UP_AFTER <= len(answers) < len(prompts):
                    raise SafedoseError(
                        f"responder {self.spec}: the first {len(answers)} prompts all failed, giving up (first error: "
                        f"{self.errors[0]})"
                    )
        if all(a is None for a in answers):
            first = self.errors[0]
            raise SafedoseError(f"responder {self.spec}: all {len(prompts)} prompts failed (first error: {first})")
        return answers


@dataclass
class HFResponder:
    """A local model, optionally with one LoRA adapter, in its own template (the adapter's, else the chat template).

    A system prompt goes into the chat template as a system turn; for a model without one (e.g. an Alpaca-tuned
    adapter) it is put before the instruction with a blank line, as `safedose serve` does."""

    spec: str
    model: str
    adapter: str | None
    decoding: Decoding
    system: str | None = None
    cache: Path | None = None
    progress: bool = False

    def identity(self) -> dict[str, Any]:
        from safedose.generate import load_adapter_info  # torch: loaded only when a model is named

        adapter = load_adapter_info(self.adapter) if self.adapter else None
        return {
            "spec": self.spec,
            "backend": "hf",
            "model": self.model,
            "model_hash": model_hash(resolve_model(self.model)),
            "adapter": str(adapter.path) if adapter else None,
            "adapter_hash": adapter.hash if adapter else None,
            "adapter_template": adapter.template if adapter else None,
            "system": self.system,
            "decoding": self.decoding.key(),
        }

    def respond(self, prompts: Sequence[str], *, system: str | None = None) -> list[str | None]:
        from safedose.generate import choose_template, generate, load_adapter_info, load_tokenizer  # torch

        system = self.system if system is None else system
        if not prompts:
            return []
        adapters = [load_adapter_info(self.adapter)] if self.adapter else []
        texts, template = [str(p) for p in prompts], None
        if system is not None:
            tokenizer = load_tokenizer(resolve_model(self.model))
            default = "chat" if getattr(tokenizer, "chat_template", None) else "alpaca"
            template = choose_template(adapters, None, allow_mismatch=False, default=default)
            if template == "chat":
                texts, template = [chat_text(tokenizer, system, t) for t in texts], "raw"
            else:
                texts = [f"{system.strip()}\n\n{t}" for t in texts]
        with _cache_file(self.cache) as cache:
            rows = generate(self.model, adapters, _eval_prompts(texts), template=template, decoding=self.decoding,
                            backend="hf", include_base=not adapters, cache=cache,
                            allow_template_mismatch=template == "raw", progress=self.progress)  # fmt: skip
        return [r.response for r in rows]


def chat_text(tokenizer: Any, system: str, prompt: str) -> str:
    """The chat template over a system and a user turn, ready for generation, without a BOS the tokenizer adds."""
    turns = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    text = str(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]:
        text = text[len(bos) :]
    return text


@dataclass
class PreferenceResponder:
    """The preferred reply of a preference dataset to each prompt (matched after normalisation); None if absent."""

    spec: str
    source: str = HH_HARMLESS
    _answers: dict[str, str] | None = field(default=None, repr=False)

    def identity(self) -> dict[str, Any]:
        files = DATASETS.get(self.source).files
        return {"spec": self.spec, "backend": "preference", "source": self.source,
                "files": [{"path": f.path, "sha256": f.sha256} for f in files]}  # fmt: skip

    def respond(self, prompts: Sequence[str], *, system: str | None = None) -> list[str | None]:
        if system is not None:
            raise SafedoseError(f"responder {self.spec}: a system prompt is not supported (answers are fixed)")
        if self._answers is None:
            self._answers = {}
            for prompt, chosen, _ in hh_pairs():
                self._answers.setdefault(normalize(prompt), chosen)
        return [self._answers.get(normalize(p)) for p in prompts]


__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "HH_HARMLESS",
    "HFResponder",
    "OpenAIResponder",
    "PreferenceResponder",
    "chat_text",
    "make_responder",
]
