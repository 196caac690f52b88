"""Dense Hessians of a small transformer for the heterogeneity and histogram figures."""

from __future__ import annotations

import numpy as np
import torch

from .curvature import dense_hessian_of, dense_matrix
from .models import TransformerSettings
from .split_forward import SplitTransformer, check_against_model, full_length_logits

# Parameter order of the full heterogeneity Hessian (biases of the attention
# projections excluded); layer-norm weights join where the model has them.
TRANSFORMER_PARAMETERS = (
    "embed.W_E",
    "pos_embed.W_pos",
    "blocks.0.ln1.w",
    "blocks.0.ln1.b",
    "blocks.0.attn.W_Q",
    "blocks.0.attn.W_K",
    "blocks.0.attn.W_V",
    "blocks.0.attn.W_O",
    "blocks.0.ln2.w",
    "blocks.0.ln2.b",
    "blocks.0.mlp.W_in",
    "blocks.0.mlp.b_in",
    "blocks.0.mlp.W_out",
    "blocks.0.mlp.b_out",
    "ln_final.w",
    "ln_final.b",
    "unembed.W_U",
    "unembed.b_U",
)
ATTENTION_PARAMETERS = (
    "blocks.0.attn.W_Q",
    "blocks.0.attn.W_K",
    "blocks.0.attn.W_V",
    "blocks.0.attn.W_O",
)


def dense_hessian(
    model: torch.nn.Module,
    loss_func: torch.nn.Module,
    parameter_names: tuple[str, ...],
    data: list[tuple[torch.Tensor, torch.Tensor]],
    chunk_size: int,
    settings: TransformerSettings | None = None,
) -> tuple[np.ndarray, list[str], list[int]]:
    """Compute the dense loss Hessian over the named parameters that the model has.

    Args:
        model: The transformer.
        loss_func: Loss on the model's logits and tokens.
        parameter_names: Parameters in axis order; names the model lacks are skipped.
        data: Token batches as ``[(tokens, tokens), ...]``.
        chunk_size: Identity columns per vectorized product; bounds memory.
        settings: The architecture the model was built with. When given, the
            products run through `split_forward`, which computes only the
            positions the loss reads and calls no hooks, after a check of its
            logits against the model's. Without it, they run through a
            curvlinops operator on the model.

    Returns:
        ``(matrix [n, n], names, sizes)``: the Hessian in float64, and the names
        and entry counts of the parameter groups along its axes, in order.

    Raises:
        ValueError: If the split forward pass does not reproduce the model's logits.
    """
    named = dict(model.named_parameters())
    names = [name for name in parameter_names if name in named]
    params = [named[name] for name in names]
    sizes = [p.numel() for p in params]
    if settings is not None:
        matrix = _split_dense_hessian(model, loss_func, names, data, chunk_size, settings)
        return matrix.double().cpu().numpy(), names, sizes

    from curvlinops import HessianLinearOperator

    num_data = sum(inputs.shape[0] for inputs, _ in data)
    hessian = HessianLinearOperator(
        model, loss_func, params, data, check_deterministic=False, num_data=num_data
    )
    matrix = dense_matrix(hessian, chunk_size)
    return matrix.double().cpu().numpy(), names, sizes


def _split_dense_hessian(
    model: torch.nn.Module,
    loss_func: torch.nn.Module,
    names: list[str],
    data: list[tuple[torch.Tensor, torch.Tensor]],
    chunk_size: int,
    settings: TransformerSettings,
) -> torch.Tensor:
    """Compute the dense Hessian over `names` with the split forward pass.

    The batches are joined into one: the losses average (``ce``) or sum
    (``mse``) over sequences, so the joined batch has the same loss as
    curvlinops' weighted sum over batches.
    """
    split = SplitTransformer(settings, model.cfg)
    tokens = torch.cat([inputs for inputs, _ in data])
    check_against_model(split, model, tokens)
    params = {name: parameter.detach() for name, parameter in model.named_parameters()}

    def loss_of(*weights: torch.Tensor) -> torch.Tensor:
        answer_logits = split.answer_logits({**params, **dict(zip(names, weights))}, tokens)
        return loss_func(full_length_logits(answer_logits), tokens)

    return dense_hessian_of(loss_of, tuple(params[name] for name in names), chunk_size)
