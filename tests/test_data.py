"""Token batches for five-digit addition."""

import numpy as np
import pytest

from transformer_curvature.data import (
    EQUALS_TOKEN,
    PLUS_TOKEN,
    SEQUENCE_LENGTH,
    make_addition_batches,
)


def digits_to_int(digits: np.ndarray) -> int:
    return int("".join(str(int(d)) for d in digits))


def test_batches_shape_and_separators():
    tokens = make_addition_batches(batch_size=7, num_batches=3, seed=0)
    assert tokens.shape == (3, 7, SEQUENCE_LENGTH)
    assert tokens.dtype == np.int64
    assert (tokens[..., 5] == PLUS_TOKEN).all()
    assert (tokens[..., 11] == EQUALS_TOKEN).all()
    digit_positions = [i for i in range(SEQUENCE_LENGTH) if i not in (5, 11)]
    assert tokens[..., digit_positions].max() <= 9
    assert tokens[..., digit_positions].min() >= 0


def test_answers_equal_sum_of_operands():
    tokens = make_addition_batches(batch_size=64, num_batches=20, seed=3)
    for sequence in tokens.reshape(-1, SEQUENCE_LENGTH):
        x = digits_to_int(sequence[:5])
        y = digits_to_int(sequence[6:11])
        assert digits_to_int(sequence[12:]) == x + y, sequence


def test_nine_sum_column_share():
    # Expected share of columns summing to 9: 0.8 * 0.1 + 0.2 * 0.28 = 0.136.
    tokens = make_addition_batches(batch_size=16, num_batches=4000, seed=11)
    x, y = tokens[..., :5], tokens[..., 6:11]
    share = np.mean(x + y == 9)
    assert share == pytest.approx(0.136, abs=0.006)


def test_rewritten_batches_occur_at_one_in_five():
    tokens = make_addition_batches(batch_size=40, num_batches=2000, seed=5)
    x, y = tokens[..., :5], tokens[..., 6:11]
    # A rewritten batch has at least 20% of its 200 columns summing to 9; an
    # untouched one has about 10%.
    per_batch = np.mean(x + y == 9, axis=(1, 2))
    assert np.mean(per_batch > 0.2) == pytest.approx(0.2, abs=0.03)


def test_same_seed_gives_same_batches():
    first = make_addition_batches(batch_size=8, num_batches=4, seed=1234)
    second = make_addition_batches(batch_size=8, num_batches=4, seed=1234)
    np.testing.assert_array_equal(first, second)


def test_other_seed_gives_other_batches():
    first = make_addition_batches(batch_size=8, num_batches=4, seed=1234)
    other = make_addition_batches(batch_size=8, num_batches=4, seed=1235)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("batch_size, num_batches", [(0, 1), (1, 0), (-3, 2)])
def test_nonpositive_sizes_rejected(batch_size, num_batches):
    with pytest.raises(ValueError, match="must be positive"):
        make_addition_batches(batch_size, num_batches, seed=0)
