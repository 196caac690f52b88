"""Losses on the answer positions, against sums written out by hand."""

import math

import numpy as np
import pytest
import torch

from transformer_curvature.data import make_addition_batches
from transformer_curvature.losses import AnswerCrossEntropy, AnswerSquaredError, make_loss


@pytest.fixture
def logits_and_tokens():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.as_tensor(make_addition_batches(3, 1, seed=2)[0])
    logits = torch.randn(3, 18, 12, generator=generator)
    return logits, tokens


def test_cross_entropy_matches_hand_sum(logits_and_tokens):
    logits, tokens = logits_and_tokens
    total, count = 0.0, 0
    for b in range(3):
        for position in range(11, 17):  # logits at 11..16 predict tokens 12..17
            row = logits[b, position].double().numpy()
            log_norm = math.log(np.exp(row - row.max()).sum()) + row.max()
            total += -(row[tokens[b, position + 1]] - log_norm)
            count += 1
    loss = AnswerCrossEntropy()(logits, tokens)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(total / count, rel=1e-12)


def test_squared_error_matches_hand_sum(logits_and_tokens):
    logits, tokens = logits_and_tokens
    total = 0.0
    for b in range(3):
        for position in range(11, 17):
            for token in range(12):
                target = 1.0 if tokens[b, position + 1] == token else 0.0
                total += (logits[b, position, token].item() - target) ** 2
    loss = AnswerSquaredError()(logits, tokens)
    assert loss.item() == pytest.approx(total, rel=1e-5)


def test_reductions_for_curvlinops():
    assert make_loss("ce").reduction == "mean"
    assert make_loss("mse").reduction == "sum"


def test_unknown_loss_rejected():
    with pytest.raises(ValueError, match="'nll'"):
        make_loss("nll")
