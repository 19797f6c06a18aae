"""Prompt templates shared by training and generation (a model must be evaluated with the template it learnt)."""

from __future__ import annotations

from typing import Any, Protocol

from safedose.errors import SafedoseError
from safedose.registry import Registry

ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


class Template(Protocol):
    """Renders the prompt part of an example; the response follows it verbatim, then EOS."""

    def __call__(self, instruction: str, input: str, tokenizer: Any) -> str: ...


TEMPLATES: Registry[Template] = Registry("template")


@TEMPLATES.register("alpaca")
def alpaca(instruction: str, input: str, tokenizer: Any) -> str:
    """The exact Stanford Alpaca prompt strings used by the Safety-Tuned LLaMAs code."""
    if input:
        return ALPACA_INPUT.format(instruction=instruction, input=input)
    return ALPACA_NO_INPUT.format(instruction=instruction)


@TEMPLATES.register("chat")
def chat(instruction: str, input: str, tokenizer: Any) -> str:
    """The model's own chat template, one user turn, with the generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise SafedoseError(f"template 'chat': tokenizer {tokenizer.name_or_path!r} has no chat template; use 'alpaca'")
    content = f"{instruction}\n\n{input}" if input else instruction
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return str(text)


@TEMPLATES.register("raw")
def raw(instruction: str, input: str, tokenizer: Any) -> str:
    """Already-formatted text, unchanged; tokenization adds the tokenizer's special tokens (e.g. BOS) once."""
    if input:
        raise SafedoseError("template 'raw': the instruction is the whole prompt; input must be empty")
    return instruction


def render_prompt(template: str, instruction: str, input: str, tokenizer: Any) -> str:
    return TEMPLATES.get(template)(instruction, input, tokenizer)


def end_of_response(template: str, tokenizer: Any) -> str:
    """The text that ends a response in training data: the chat end-of-turn token, or the EOS token."""
    if template == "chat":
        eot = "<|im_end|>" if "<|im_end|>" in tokenizer.get_vocab() else tokenizer.eos_token
        return str(eot)
    return str(tokenizer.eos_token)
