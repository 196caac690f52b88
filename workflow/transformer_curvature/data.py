"""Token batches for five-digit addition: ``XXXXX+YYYYY=ZZZZZZ``.

Tokens 0-9 are digits, 10 is ``+`` and 11 is ``=``. The six answer digits are
written most significant first, so the first one is the final carry.
"""

from __future__ import annotations

import numpy as np
import torch

NUM_DIGITS = 5
PLUS_TOKEN = 10
EQUALS_TOKEN = 11
VOCAB_SIZE = 12
SEQUENCE_LENGTH = 3 * NUM_DIGITS + 3  # 18 tokens
NUM_ANSWER_TOKENS = NUM_DIGITS + 1

# A batch is rewritten towards columns that sum to 9 with this probability, and
# then this share of its digit columns is rewritten.
SUM_NINE_BATCH_PROBABILITY = 0.2
SUM_NINE_COLUMN_SHARE = 0.2


def _draw_operands(
    batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw two operands of uniform digits, most significant digit first.

    With probability `SUM_NINE_BATCH_PROBABILITY`, a share of the digit columns
    (the same positions in both operands) is rewritten so that the column sums
    to 9, which makes a carry running through a 9 more frequent.
    """
    x = torch.randint(0, 10, (batch_size, NUM_DIGITS), generator=generator)
    y = torch.randint(0, 10, (batch_size, NUM_DIGITS), generator=generator)

    if torch.rand((), generator=generator).item() < SUM_NINE_BATCH_PROBABILITY:
        num_columns = batch_size * NUM_DIGITS
        num_rewritten = int(SUM_NINE_COLUMN_SHARE * num_columns)
        columns = torch.randperm(num_columns, generator=generator)[:num_rewritten]
        x_flat, y_flat = x.view(-1), y.view(-1)
        if torch.rand((), generator=generator).item() < 0.5:
            x_flat[columns] = 9 - y_flat[columns]
        else:
            y_flat[columns] = 9 - x_flat[columns]

    return x, y


def add_operands(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return the digits of ``x + y``: ``[batch, 6]``, most significant first."""
    answer = torch.zeros((x.shape[0], NUM_ANSWER_TOKENS), dtype=torch.int64)
    carry = torch.zeros(x.shape[0], dtype=torch.int64)
    for position in range(NUM_DIGITS - 1, -1, -1):
        column_sum = x[:, position] + y[:, position] + carry
        answer[:, position + 1] = column_sum % 10
        carry = column_sum // 10
    answer[:, 0] = carry
    return answer


def make_addition_batches(batch_size: int, num_batches: int, seed: int) -> np.ndarray:
    """Draw the token batches of one experiment.

    The draw happens on the CPU from a generator seeded with `seed`, so the
    batches are the same on every machine.

    Args:
        batch_size: Sequences per batch.
        num_batches: Number of batches.
        seed: Seed of the experiment.

    Returns:
        Tokens, ``int64`` of shape ``[num_batches, batch_size, 18]``.

    Raises:
        ValueError: If `batch_size` or `num_batches` is not positive.
    """
    if batch_size < 1 or num_batches < 1:
        raise ValueError(
            f"batch_size ({batch_size}) and num_batches ({num_batches}) must be "
            "positive."
        )
    generator = torch.Generator(device="cpu").manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        x, y = _draw_operands(batch_size, generator)
        tokens = torch.empty((batch_size, SEQUENCE_LENGTH), dtype=torch.int64)
        tokens[:, :NUM_DIGITS] = x
        tokens[:, NUM_DIGITS] = PLUS_TOKEN
        tokens[:, NUM_DIGITS + 1 : 2 * NUM_DIGITS + 1] = y
        tokens[:, 2 * NUM_DIGITS + 1] = EQUALS_TOKEN
        tokens[:, -NUM_ANSWER_TOKENS:] = add_operands(x, y)
        batches.append(tokens)
    return torch.stack(batches).numpy()


def as_curvlinops_data(tokens: np.ndarray, device: torch.device) -> list[tuple]:
    """Wrap token batches as the ``[(X, y), ...]`` list that curvlinops reads.

    Inputs and targets are the same tensor: the losses shift the targets by
    one position themselves.
    """
    batches = []
    for batch in tokens:
        batch_tensor = torch.as_tensor(batch, dtype=torch.int64, device=device)
        batches.append((batch_tensor, batch_tensor))
    return batches
