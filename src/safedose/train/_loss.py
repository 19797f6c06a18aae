"""Token NLL: the summed next-token loss the trainer minimises, and its per-token mean over held-out rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from safedose.data import InstructionRecord
from safedose.train._data import IGNORE, collate, tokenize
from safedose.train._fast import summed_cross_entropy


class CausalLMLoss(nn.Module):
    """Summed next-token loss of the labelled tokens through the model's own forward (see `summed_token_nll`)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return summed_token_nll(self.model, input_ids, attention_mask, labels)


def summed_token_nll(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Summed next-token NLL (fp32) of the tokens whose label is not -100, from the logits of `model`'s own forward.

    The model applies its own head (logit soft-capping, logit scaling, ...); a boolean `logits_to_keep` asks it to
    project only the positions that predict a label. Divided by the label count this is HF's mean `loss`. A
    right-padded batch goes in without its attention mask: under the causal mask alone no real token sees a pad, so
    the real tokens' outputs are the same, and attention takes its mask-free kernel.
    """
    device = model.device
    labels = labels.to(device)
    predicts = labels[:, 1:] != IGNORE
    keep = F.pad(predicts, (0, 1), value=False)
    mask = None if _right_padded(attention_mask) else attention_mask.to(device)
    out = model(input_ids=input_ids.to(device), attention_mask=mask, logits_to_keep=keep, use_cache=False)
    logits = out.logits if out.logits.dim() == 2 else out.logits[keep]  # a model that ignores the mask keeps all
    return summed_cross_entropy(logits, labels[:, 1:][predicts])


def _right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is ones, then zeros (or all ones)."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


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
