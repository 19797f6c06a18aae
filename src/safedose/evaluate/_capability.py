"""Capability that needs no judge: held-out base-data loss and log-likelihood of AlpacaEval reference answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from safedose.data import InstructionRecord
from safedose.train._data import collate, tokenize
from safedose.train._recipe import summed_token_nll


def mean_token_nll(model: Any, tokenizer: Any, rows: Sequence[InstructionRecord], *, template: str, max_length: int,
                   batch_size: int = 8) -> float:  # fmt: skip
    """Mean negative log-likelihood per response token of `rows` under `model` (the loss the trainer reports).

    Rows are tokenised as in training (pass the training `max_length`); the loss goes through the model's own
    forward, and the mean is exact over all response tokens whatever the batching.
    """
    examples = tokenize(rows, tokenizer, template=template, max_length=max_length, train_on_inputs=False)
    examples = sorted(examples, key=lambda e: len(e.input_ids))
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            total += float(summed_token_nll(model, **collate(chunk, tokenizer.pad_token_id)))
            count += sum(e.n_loss_tokens for e in chunk)
    return total / max(count, 1)
