"""Dense Hessians of a small transformer for the heterogeneity and histogram figures."""

from __future__ import annotations

import numpy as np
import torch

from .curvature import dense_matrix

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
) -> tuple[np.ndarray, list[str], list[int]]:
    """Compute the dense loss Hessian over the named parameters that the model has.

    Returns:
        ``(matrix [n, n], names, sizes)``: the Hessian in float64, and the names
        and entry counts of the parameter groups along its axes, in order.
    """
    from curvlinops import HessianLinearOperator

    named = dict(model.named_parameters())
    names = [name for name in parameter_names if name in named]
    params = [named[name] for name in names]
    num_data = sum(inputs.shape[0] for inputs, _ in data)
    hessian = HessianLinearOperator(
        model, loss_func, params, data, check_deterministic=False, num_data=num_data
    )
    matrix = dense_matrix(hessian, chunk_size)
    return matrix.double().cpu().numpy(), names, [p.numel() for p in params]
