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


ALPACA_ONE_TURN = "an Alpaca-tuned model takes one user message (and any system messages), then at most one reply"


def alpaca_chat_template(*, bos: bool = False) -> str:
    """A Jinja chat template that renders the Alpaca prompt exactly as training and generation do.

    The instruction is each non-blank system message's stripped text and a blank line, then the one user message (as
    `safedose serve` folds them); an assistant message after it is rendered as a training example (reply, then EOS).
    `bos`: start with the BOS token, for tokenizers that add it to every text (chat templates are tokenized without
    special tokens). Any other conversation raises an error, as the server answers it with a 400.
    """
    head, _, tail = ALPACA_NO_INPUT.partition("{instruction}")
    fail = "{{- raise_exception(" + _jinja_string(ALPACA_ONE_TURN) + ") -}}"
    return "\n".join([
        "{%- set ns = namespace(system='', user=none, reply=none) -%}",
        "{%- for message in messages -%}",
        "{%- if message['role'] == 'system' -%}",
        "{%- if message['content'] | trim -%}",
        "{%- set ns.system = ns.system + (message['content'] | trim) + '\\n\\n' -%}",
        "{%- endif -%}",
        "{%- elif message['role'] == 'user' and ns.user is none -%}{%- set ns.user = message['content'] -%}",
        "{%- elif message['role'] == 'assistant' and ns.user is not none and ns.reply is none -%}",
        "{%- set ns.reply = message['content'] -%}",
        f"{{%- else -%}}{fail}{{%- endif -%}}",
        "{%- endfor -%}",
        f"{{%- if ns.user is none -%}}{fail}{{%- endif -%}}",
        *(["{{- bos_token -}}"] if bos else []),
        "{{- " + _jinja_string(head) + " + ns.system + ns.user -}}",
        "{%- if add_generation_prompt or ns.reply is not none -%}{{- " + _jinja_string(tail) + " -}}{%- endif -%}",
        "{%- if ns.reply is not none -%}{{- ns.reply + eos_token -}}{%- endif -%}",
    ])  # fmt: skip


def _jinja_string(text: str) -> str:
    """`text` as a single-quoted Jinja string literal (backslash escapes, newlines as \\n)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def end_of_response(template: str, tokenizer: Any) -> str:
    """The text that ends a response in training data: the chat end-of-turn token, or the EOS token."""
    if template == "chat":
        eot = "<|im_end|>" if "<|im_end|>" in tokenizer.get_vocab() else tokenizer.eos_token
        return str(eot)
    return str(tokenizer.eos_token)
