"""Capability that needs no judge: held-out base-data loss and log-likelihood of AlpacaEval reference answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from safedose.data import InstructionRecord
from safedose.train._data import collate, tokenize


def mean_token_nll(model: Any, tokenizer: Any, rows: Sequence[InstructionRecord], *, template: str,
                   max_length: int = 512, batch_size: int = 8) -> float:  # fmt: skip
    """Mean negative log-likelihood per response token (the loss the trainer reports) of `rows` under `model`."""
    examples = tokenize(rows, tokenizer, template=template, max_length=max_length, train_on_inputs=False)
    examples = sorted(examples, key=lambda e: len(e.input_ids))
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(core, core.base_model_prefix)
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = {k: v.to(core.device) for k, v in collate(chunk, tokenizer.pad_token_id).items()}
            hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            targets = batch["labels"][:, 1:]
            keep = targets != -100
            logits = core.get_output_embeddings()(hidden[:, :-1][keep]).float()
            total += float(F.cross_entropy(logits, targets[keep], reduction="sum"))
            count += int(keep.sum())
    return total / max(count, 1)
