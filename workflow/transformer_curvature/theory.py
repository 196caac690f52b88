"""Theoretical growth exponents of block Hessian norms in the embedding scale sigma.

The token and positional embeddings are drawn from N(0, sigma^2) and every other
weight is kept. For small sigma the Frobenius norm of a block of ``H``, ``H_o``
or ``H_f`` then grows like ``sigma**p``. The exponents below hold only in that
regime: with the ``ce`` loss the curves bend above sigma of about 1, where the
softmax saturates, and the query block's ``H`` mixes its ``sigma**5`` and
``sigma**6`` parts near sigma = 1. With pre-layer-norm there is no theoretical
exponent.

Layers are 0-based, ``L`` is the number of layers, and blocks are ``query``
(``W_Q``), ``key`` (``W_K``), ``value`` (``W_V``) and ``output`` (``W_O``) of the
transformer, or ``mlp`` for the MLP baseline.
"""

from __future__ import annotations

MODELS = ("transformer", "mlp")
TRANSFORMER_BLOCKS = ("query", "key", "value", "output")
MATRICES = ("H", "H_o", "H_f")
NORMS = ("none", "pre")

# Softmax attention without layer norm: exponents that hold in every layer.
_SOFTMAX_EXPONENTS = {
    ("query", "H_o"): 6.0,
    ("query", "H_f"): 5.0,
    ("query", "H"): 5.0,
    ("value", "H_o"): 2.0,
    ("value", "H"): 2.0,
}

_MLP_EXPONENT = 2.0


def _check_arguments(
    model: str, block: str, matrix: str, norm: str, num_layers: int, layer: int
) -> None:
    """Raise ValueError naming the first argument outside the known values."""
    if model not in MODELS:
        raise ValueError(f"model {model!r} is unknown. Use one of {MODELS}.")
    blocks = ("mlp",) if model == "mlp" else TRANSFORMER_BLOCKS
    if block not in blocks:
        raise ValueError(f"block {block!r} is unknown for model {model!r}. Use one of {blocks}.")
    if matrix not in MATRICES:
        raise ValueError(f"matrix {matrix!r} is unknown. Use one of {MATRICES}.")
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r} is unknown. Use one of {NORMS}.")
    if num_layers < 1:
        raise ValueError(f"num_layers ({num_layers}) must be at least 1.")
    if not 0 <= layer < num_layers:
        raise ValueError(
            f"layer ({layer}) must be in 0..{num_layers - 1} for a {num_layers}-layer model."
        )


def _linear_attention_zero(block: str, matrix: str, num_layers: int, layer: int) -> bool:
    """Return whether a block of ``H_f`` vanishes with linear attention and no layer norm.

    In the last layer the attention output is linear in each of ``W_Q``,
    ``W_K``, ``W_V`` and ``W_O``, and the rest of the model is piecewise linear
    (ReLU), so ``H_f`` is zero there for every attention block.
    """
    return matrix == "H_f" and layer == num_layers - 1


def is_zero_block(
    model: str,
    block: str,
    matrix: str,
    norm: str,
    linear_attention: bool,
    num_layers: int,
    layer: int,
) -> bool:
    """Return whether the theory predicts this block to be exactly zero for every sigma.

    Without layer norm the value and output blocks' ``H_f`` vanish in the last
    layer, because the model is linear in ``W_V`` and ``W_O`` there up to the
    ReLU of the MLP. With linear attention every block's ``H_f`` vanishes in
    the last layer. Measured zero blocks are rounding noise, not exact zeros.

    Raises:
        ValueError: If an argument is outside the known values.
    """
    _check_arguments(model, block, matrix, norm, num_layers, layer)
    if model == "mlp" or norm == "pre":
        return False
    if linear_attention:
        return _linear_attention_zero(block, matrix, num_layers, layer)
    return block in ("value", "output") and matrix == "H_f" and layer == num_layers - 1


def theoretical_exponent(
    model: str,
    block: str,
    matrix: str,
    norm: str,
    linear_attention: bool,
    num_layers: int,
    layer: int,
) -> float | None:
    """Return the exponent ``p`` of ``||block||_F ~ sigma**p`` for small sigma.

    Returns:
        The exponent, or None where theory gives none (pre-layer-norm, the key
        and output blocks of softmax attention, zero blocks, and some blocks of
        earlier layers).

    Raises:
        ValueError: If an argument is outside the known values.
    """
    _check_arguments(model, block, matrix, norm, num_layers, layer)
    if model == "mlp":
        return _MLP_EXPONENT if matrix == "H" else None
    if norm == "pre":
        return None
    if not linear_attention:
        return _SOFTMAX_EXPONENTS.get((block, matrix))
    return _linear_attention_exponent(block, matrix, num_layers, layer)


def _linear_attention_exponent(
    block: str, matrix: str, num_layers: int, layer: int
) -> float | None:
    """Return the exponent with linear attention, no attention skip and no layer norm.

    ``H_o`` grows like ``sigma**(2 * 3**L)`` in every layer and block. In
    layers before the last, ``H`` and ``H_f`` grow like ``sigma**(3**L)``. In
    the last layer ``H`` equals ``H_o`` where ``H_f`` is zero.
    """
    outer_exponent = float(2 * 3**num_layers)
    if matrix == "H_o":
        return outer_exponent
    if _linear_attention_zero(block, "H_f", num_layers, layer):
        return outer_exponent if matrix == "H" else None
    if layer < num_layers - 1:
        return float(3**num_layers)
    return None
