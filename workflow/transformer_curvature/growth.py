"""The growth-rate experiment for one configuration and one seed.

For each sigma on the grid, in order, the token and positional embeddings are
redrawn from N(0, sigma^2), every other weight is kept, and the Frobenius norms
of ``H``, ``H_o`` and ``H_f`` are computed for each layer and block.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import curvature
from .data import as_curvlinops_data
from .experiments import GrowthConfig
from .losses import make_loss
from .models import (
    TransformerSettings,
    attention_weight,
    build_mlp,
    build_transformer,
    embedding_weights,
    move_model,
)

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_model(growth_config: GrowthConfig, d_model: int, mlp_ratio: int, seed: int, dtype):
    """Build the configuration's model on the CPU under `seed`."""
    if growth_config.model == "mlp":
        return build_mlp(d_model, growth_config.num_layers, seed, dtype)
    settings = TransformerSettings(
        num_layers=growth_config.num_layers,
        d_model=d_model,
        norm=growth_config.norm,
        linear_attention=growth_config.linear_attention,
        residual_scaling=growth_config.residual_scaling,
        mlp_ratio=mlp_ratio,
    )
    return build_transformer(settings, seed, dtype)


def block_weights(model, growth_config: GrowthConfig, blocks: list[str]):
    """Return ``[(layer, block, weight)]`` in a fixed order: layers outer, blocks inner."""
    if growth_config.model == "mlp":
        return [(layer, "mlp", model.layers[layer].weight) for layer in range(growth_config.num_layers)]
    return [
        (layer, block, attention_weight(model, layer, block))
        for layer in range(growth_config.num_layers)
        for block in blocks
    ]


def choose_exact(estimator: str, numel: int, probes: int, exact_max_size: int) -> bool:
    """Decide whether a block of `numel` entries is computed exactly.

    Raises:
        ValueError: If `estimator` is ``exact`` and the block is larger than `exact_max_size`.
    """
    if estimator == "exact":
        if numel > exact_max_size:
            raise ValueError(
                f"A block has {numel} entries, more than growth.exact_max_size "
                f"({exact_max_size}); raise exact_max_size or use estimator: hutchinson."
            )
        return True
    return estimator == "auto" and numel <= probes


def run_growth(
    growth_config: GrowthConfig,
    tokens: np.ndarray,
    sigmas: np.ndarray,
    seed: int,
    settings: dict[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """Compute the block norms of one configuration and seed over the sigma grid.

    Args:
        growth_config: The configuration.
        tokens: Token batches ``[num_batches, batch_size, 18]``.
        sigmas: Embedding scales, in the order they are visited.
        seed: Absolute seed: model weights, embeddings and probes.
        settings: The ``growth`` section of the config (``d_model``,
            ``mlp_ratio``, ``probes``, ``estimator``, ``exact_max_size``,
            ``chunk_size``, ``blocks``).
        device: Device for the curvature products.

    Returns:
        Plain data: ``norms[block][matrix]`` and ``probe_stderr[block][matrix]``
        as float64 arrays ``[num_layers, num_sigmas]`` (NaN stderr when exact),
        with the configuration name, seed and sigmas.
    """
    dtype = DTYPES[growth_config.dtype]
    model = build_model(growth_config, settings["d_model"], settings["mlp_ratio"], seed, dtype)
    model = move_model(model, device)
    model.eval()
    data = as_curvlinops_data(tokens, device)
    loss_func = make_loss(growth_config.loss)

    # Separate streams, so the embeddings do not depend on the number of probes.
    embedding_seed, probe_seed = np.random.SeedSequence(seed).generate_state(2)
    embedding_generator = torch.Generator().manual_seed(int(embedding_seed))
    probe_generator = torch.Generator().manual_seed(int(probe_seed))

    with_ggn = growth_config.model != "mlp"
    matrices = curvature.MATRICES if with_ggn else ("H",)
    weights = block_weights(model, growth_config, settings["blocks"])
    operators = [
        curvature.curvature_operators(model, loss_func, weight, data, with_ggn)
        for _, _, weight in weights
    ]
    block_names = sorted({block for _, block, _ in weights}, key=[w[1] for w in weights].index)
    shape = (growth_config.num_layers, len(sigmas))
    norms = {b: {m: np.full(shape, np.nan) for m in matrices} for b in block_names}
    stderrs = {b: {m: np.full(shape, np.nan) for m in matrices} for b in block_names}
    probes = settings["probes"]

    for sigma_index, sigma in enumerate(tqdm(sigmas, desc=growth_config.name, mininterval=5)):
        with torch.no_grad():
            for weight in embedding_weights(model):
                draw = torch.randn(weight.shape, generator=embedding_generator, dtype=torch.float64)
                weight.copy_((sigma * draw).to(dtype))

        for (layer, block, weight), (hessian, ggn) in zip(weights, operators):
            if choose_exact(settings["estimator"], weight.numel(), probes, settings["exact_max_size"]):
                estimates = curvature.exact_block_norms(hessian, ggn, settings["chunk_size"])
            else:
                block_probes = curvature.rademacher_probes(
                    weight.numel(), probes, probe_generator, dtype, device
                )
                estimates = curvature.hutchinson_block_norms(hessian, ggn, block_probes)
            for matrix, estimate in estimates.items():
                norms[block][matrix][layer, sigma_index] = estimate.value
                stderrs[block][matrix][layer, sigma_index] = estimate.stderr

    return {
        "config": growth_config.name,
        "seed": seed,
        "sigmas": np.asarray(sigmas, dtype=np.float64),
        "num_layers": growth_config.num_layers,
        "dtype": growth_config.dtype,
        "estimator": settings["estimator"],
        "probes": probes,
        "norms": norms,
        "probe_stderr": stderrs,
    }
