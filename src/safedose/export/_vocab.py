"""A HF byte-level BPE tokenizer as llama.cpp's `tokenizer.ggml.*` metadata (its `gpt2` tokenizer model)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from safedose.errors import SafedoseError

# llama.cpp's token types (gguf.TokenType)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# HF pre-tokenizers (reduced to what decides the split) -> the llama.cpp pre-tokenizer that splits the same way
_PRE_TOKENIZERS: dict[tuple[tuple[Any, ...], ...], str] = {
    (("ByteLevel", False, True),): "gpt-2",  # the GPT-2 regex
    (("Digits", True), ("ByteLevel", False, True)): "smollm",  # each digit alone, then the GPT-2 regex
    (("Split", _LLAMA3_SPLIT, "Isolated", False), ("ByteLevel", False, False)): "llama-bpe",  # LLaMA 3
}


@dataclass(frozen=True)
class Vocab:
    """What llama.cpp needs to tokenize exactly like the HF tokenizer."""

    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special_ids: dict[str, int]  # bos, eos, unk, pad
    add_bos: bool
    add_eos: bool
    chat_template: str | list[dict[str, str]] | None


def read_vocab(tokenizer: Any, vocab_size: int) -> Vocab:
    """The GGUF tokenizer metadata of a fast HF tokenizer; a one-line error for one llama.cpp would not match."""
    spec = _backend(tokenizer)
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise SafedoseError(
            "GGUF export supports byte-level BPE tokenizers (GPT-2 style: SmolLM2, LLaMA 3), not this "
            f"{model.get('type')} tokenizer; convert the merged directory with llama.cpp's convert_hf_to_gguf.py"
        )
    if spec.get("normalizer") is not None:
        raise SafedoseError("GGUF export: the tokenizer has a normalizer, which llama.cpp's BPE tokenizer lacks")
    tokens, types = _tokens(tokenizer, vocab_size)
    return Vocab(
        pre=_pre_tokenizer(spec.get("pre_tokenizer")),
        tokens=tokens,
        token_types=types,
        merges=_merges(model.get("merges") or []),
        special_ids=_special_ids(tokenizer),
        add_bos=adds_bos(tokenizer),
        add_eos=_adds(tokenizer, tokenizer.eos_token_id, first=False),
        chat_template=_chat_template(tokenizer),
    )


def _backend(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise SafedoseError("GGUF export needs a fast tokenizer (tokenizer.json); this model has none")
    spec: dict[str, Any] = json.loads(backend.to_str())
    return spec


def _pre_tokenizer(pre: dict[str, Any] | None) -> str:
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre] if pre else []
    key = tuple(_reduced(step) for step in steps)
    if key not in _PRE_TOKENIZERS:
        raise SafedoseError(
            f"GGUF export: no llama.cpp pre-tokenizer splits text like this tokenizer's ({json.dumps(pre)[:200]}); "
            f"supported: {', '.join(sorted(set(_PRE_TOKENIZERS.values())))}"
        )
    return _PRE_TOKENIZERS[key]


def _reduced(step: dict[str, Any]) -> tuple[Any, ...]:
    kind = step.get("type")
    if kind == "ByteLevel":
        return (kind, bool(step.get("add_prefix_space")), bool(step.get("use_regex", True)))
    if kind == "Digits":
        return (kind, bool(step.get("individual_digits")))
    if kind == "Split":
        pattern = step.get("pattern") or {}
        return (kind, pattern.get("Regex", pattern.get("String")), step.get("behavior"), bool(step.get("invert")))
    return (kind, json.dumps(step, sort_keys=True))


def _tokens(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id below `vocab_size`: its text and llama.cpp token type (ids the tokenizer lacks are UNUSED)."""
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if by_id and max(by_id) >= vocab_size:
        raise SafedoseError(f"GGUF export: the tokenizer has token id {max(by_id)}, the model only {vocab_size} rows")
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            tokens.append(text)
            special = added[i].special or (text.startswith("<|") and text.endswith("|>"))
            types.append(CONTROL if special else USER_DEFINED)
        else:
            tokens.append(text)
            types.append(NORMAL)
    return tokens, types


def _merges(merges: list[Any]) -> list[str]:
    """`"a b"` strings; a space inside a part is written as U+0120 + 256, as llama.cpp's converter does."""
    out = []
    for merge in merges:
        if isinstance(merge, str):
            out.append(merge)
        else:
            out.append(" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in merge))
    return out


def _special_ids(tokenizer: Any) -> dict[str, int]:
    ids = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    return {k: int(v) for k, v in ids.items() if v is not None}


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS token at the start of every text it encodes."""
    return _adds(tokenizer, tokenizer.bos_token_id, first=True)


def _adds(tokenizer: Any, token_id: int | None, *, first: bool) -> bool:
    """Whether the tokenizer puts this special token at the start (`first`) or end of every text it encodes."""
    if token_id is None:
        return False
    with_special = tokenizer("a")["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    if len(with_special) == len(without):
        return False
    return bool(with_special[0 if first else -1] == token_id)


def _chat_template(tokenizer: Any) -> str | list[dict[str, str]] | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return [{"name": name, "template": text} for name, text in template.items()]
    return template if isinstance(template, str) else None
