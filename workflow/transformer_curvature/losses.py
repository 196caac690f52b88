"""Losses on the six answer positions of an addition sequence.

The logits at positions -7..-2 predict the answer tokens at -6..-1.
curvlinops reads the ``reduction`` attribute to weight several batches.
"""

from __future__ import annotations

import torch
from torch import nn

from .data import NUM_ANSWER_TOKENS, VOCAB_SIZE

LOSS_NAMES = ("ce", "mse")


def answer_logits_and_targets(
    logits: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select the predicting logits ``[batch, 6, vocab]`` and targets ``[batch, 6]``."""
    return logits[:, -NUM_ANSWER_TOKENS - 1 : -1], tokens[:, -NUM_ANSWER_TOKENS:]


class AnswerCrossEntropy(nn.Module):
    """Mean over batch and answer positions of ``-log_softmax(logits)[answer]``.

    The log-softmax runs in float64, so the loss is a float64 scalar.
    """

    reduction = "mean"

    def forward(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        answer_logits, targets = answer_logits_and_targets(logits, tokens)
        log_probs = torch.log_softmax(answer_logits.to(torch.float64), dim=-1)
        return -log_probs.gather(-1, targets.unsqueeze(-1)).mean()


class AnswerSquaredError(nn.Module):
    """Sum over batch, answer positions and vocabulary of ``(logits - one_hot)**2``."""

    reduction = "sum"

    def forward(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        answer_logits, targets = answer_logits_and_targets(logits, tokens)
        one_hot = nn.functional.one_hot(targets, VOCAB_SIZE).to(answer_logits.dtype)
        return ((answer_logits - one_hot) ** 2).sum()


def make_loss(name: str) -> nn.Module:
    """Return the loss module called `name` (``ce`` or ``mse``).

    Raises:
        ValueError: If `name` is not a known loss.
    """
    if name == "ce":
        return AnswerCrossEntropy()
    if name == "mse":
        return AnswerSquaredError()
    raise ValueError(f"Unknown loss {name!r}: use one of {list(LOSS_NAMES)}.")
