"""Tokenised examples and length-grouped batches (no compute spent on padding)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from safedose.data import InstructionRecord
from safedose.templates import end_of_response, render_prompt

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_loss_tokens(self) -> int:
        return sum(1 for t in self.labels[1:] if t != IGNORE)


def tokenize(
    rows: Sequence[InstructionRecord],
    tokenizer: Any,
    *,
    template: str,
    max_length: int,
    train_on_inputs: bool,
) -> list[Example]:
    """Prompt + response + end-of-response, truncated to `max_length`; prompt labels masked unless asked."""
    if not rows:
        return []
    prompts = [render_prompt(template, r.instruction, r.input, tokenizer) for r in rows]
    end = end_of_response(template, tokenizer)
    # A chat template writes its own special tokens; plain text gets the tokenizer's usual ones (e.g. LLaMA's BOS).
    prompt_ids = tokenizer(prompts, add_special_tokens=template != "chat")["input_ids"]
    response_ids = tokenizer([r.output + end for r in rows], add_special_tokens=False)["input_ids"]
    examples = []
    for p, a in zip(prompt_ids, response_ids, strict=True):
        ids = (p + a)[:max_length]
        n_prompt = len(p)
        labels = list(ids) if train_on_inputs else [IGNORE] * min(n_prompt, len(ids)) + ids[n_prompt:]
        examples.append(Example(ids, labels))
    return examples


def length_grouped_batches(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int) -> list[list[int]]:
    """Shuffle, sort by length within chunks of 64 batches, then shuffle the batches: little padding, random order."""
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 64
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start : start + chunk], key=lambda i: -lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
