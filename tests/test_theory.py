"""Theoretical growth exponents and zero blocks, against a table written out by hand."""

import re

import pytest

from transformer_curvature.theory import is_zero_block, theoretical_exponent

# (model, block, matrix, norm, linear_attention, num_layers, layer, exponent, zero)
CASES = [
    # MLP baseline: sigma**2 in every layer.
    ("mlp", "mlp", "H", "none", False, 1, 0, 2, False),
    ("mlp", "mlp", "H", "none", False, 5, 3, 2, False),
    # Softmax attention, no layer norm, one layer.
    ("transformer", "query", "H_o", "none", False, 1, 0, 6, False),
    ("transformer", "query", "H_f", "none", False, 1, 0, 5, False),
    ("transformer", "query", "H", "none", False, 1, 0, 5, False),
    ("transformer", "value", "H_o", "none", False, 1, 0, 2, False),
    ("transformer", "value", "H_f", "none", False, 1, 0, None, True),
    ("transformer", "value", "H", "none", False, 1, 0, 2, False),
    ("transformer", "key", "H", "none", False, 1, 0, None, False),
    ("transformer", "output", "H_f", "none", False, 2, 1, None, True),
    ("transformer", "output", "H_f", "none", False, 2, 0, None, False),
    ("transformer", "output", "H_o", "none", False, 1, 0, None, False),
    # Softmax attention, three layers: value H_f is zero only in the last layer.
    ("transformer", "value", "H_f", "none", False, 3, 0, None, False),
    ("transformer", "value", "H_f", "none", False, 3, 1, None, False),
    ("transformer", "value", "H_f", "none", False, 3, 2, None, True),
    ("transformer", "query", "H_o", "none", False, 3, 1, 6, False),
    ("transformer", "value", "H", "none", False, 3, 2, 2, False),
    # Pre-layer-norm: no exponent, nothing zero.
    ("transformer", "query", "H_o", "pre", False, 1, 0, None, False),
    ("transformer", "value", "H_f", "pre", False, 1, 0, None, False),
    ("transformer", "value", "H_f", "pre", True, 2, 1, None, False),
    # Linear attention, one layer: 2 * 3 = 6 for H_o, and query and value H_f are zero.
    ("transformer", "query", "H_o", "none", True, 1, 0, 6, False),
    ("transformer", "query", "H_f", "none", True, 1, 0, None, True),
    ("transformer", "query", "H", "none", True, 1, 0, 6, False),
    ("transformer", "value", "H_o", "none", True, 1, 0, 6, False),
    ("transformer", "value", "H_f", "none", True, 1, 0, None, True),
    ("transformer", "value", "H", "none", True, 1, 0, 6, False),
    ("transformer", "key", "H_o", "none", True, 1, 0, 6, False),
    ("transformer", "key", "H_f", "none", True, 1, 0, None, True),
    ("transformer", "key", "H", "none", True, 1, 0, 6, False),
    # Linear attention, two layers: 3**2 = 9 in the first layer, 2 * 9 = 18 for H_o.
    ("transformer", "query", "H_o", "none", True, 2, 0, 18, False),
    ("transformer", "query", "H_f", "none", True, 2, 0, 9, False),
    ("transformer", "query", "H", "none", True, 2, 0, 9, False),
    ("transformer", "query", "H_f", "none", True, 2, 1, None, True),
    ("transformer", "query", "H", "none", True, 2, 1, 18, False),
    ("transformer", "value", "H_f", "none", True, 2, 0, 9, False),
    ("transformer", "value", "H_f", "none", True, 2, 1, None, True),
    ("transformer", "value", "H", "none", True, 2, 1, 18, False),
    # Linear attention, three layers: 3**3 = 27, 2 * 27 = 54.
    ("transformer", "value", "H_o", "none", True, 3, 2, 54, False),
    ("transformer", "value", "H", "none", True, 3, 1, 27, False),
    ("transformer", "value", "H", "none", True, 3, 2, 54, False),
    ("transformer", "query", "H_f", "none", True, 3, 0, 27, False),
    ("transformer", "query", "H_f", "none", True, 3, 2, None, True),
]


@pytest.mark.parametrize(
    "model, block, matrix, norm, linear_attention, num_layers, layer, exponent, zero", CASES
)
def test_exponent_and_zero_table(
    model, block, matrix, norm, linear_attention, num_layers, layer, exponent, zero
):
    arguments = (model, block, matrix, norm, linear_attention, num_layers, layer)
    assert theoretical_exponent(*arguments) == exponent
    assert is_zero_block(*arguments) == zero


def test_exponent_is_float():
    exponent = theoretical_exponent("transformer", "query", "H_o", "none", False, 1, 0)
    assert isinstance(exponent, float)


def test_zero_blocks_have_no_exponent():
    for case in CASES:
        arguments, zero = case[:7], case[8]
        if zero:
            assert theoretical_exponent(*arguments) is None, arguments


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("cnn", "query", "H", "none", False, 1, 0), "model 'cnn'"),
        (("transformer", "mlp", "H", "none", False, 1, 0), "block 'mlp'"),
        (("mlp", "query", "H", "none", False, 1, 0), "block 'query'"),
        (("transformer", "query", "G", "none", False, 1, 0), "matrix 'G'"),
        (("transformer", "query", "H", "post", False, 1, 0), "norm 'post'"),
        (("transformer", "query", "H", "none", False, 0, 0), "num_layers (0)"),
        (("transformer", "query", "H", "none", False, 2, 2), "layer (2)"),
        (("transformer", "query", "H", "none", False, 2, -1), "layer (-1)"),
    ],
)
def test_invalid_arguments_raise(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        theoretical_exponent(*arguments)
    with pytest.raises(ValueError):
        is_zero_block(*arguments)
