"""The growth-rate experiment for one configuration and one seed.

For each sigma on the grid, in order, the token and positional embeddings are
redrawn from N(0, sigma^2), every other weight is kept, and the Frobenius norms
of ``H``, ``H_o`` and ``H_f`` are computed for each layer and block.

Transformer blocks estimated with Hutchinson's method use the split products
(`split_forward`, `curvature.hessian_and_ggn_products`); exact blocks and the
MLP baseline use curvlinops operators. Both give the same products up to
rounding, from the same probes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import curvature
from .data import as_curvlinops_data
from .experiments import GrowthConfig
from .losses import make_loss
from .models import (
    ATTENTION_BLOCKS,
    TransformerSettings,
    attention_weight,
    build_mlp,
    build_transformer,
    embedding_weights,
    move_model,
)
from .split_forward import SplitTransformer, check_against_model, full_length_logits

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def transformer_settings(
    growth_config: GrowthConfig, d_model: int, mlp_ratio: int
) -> TransformerSettings:
    """Return the architecture of a transformer configuration."""
    return TransformerSettings(
        num_layers=growth_config.num_layers,
        d_model=d_model,
        norm=growth_config.norm,
        linear_attention=growth_config.linear_attention,
        residual_scaling=growth_config.residual_scaling,
        mlp_ratio=mlp_ratio,
    )


def build_model(growth_config: GrowthConfig, d_model: int, mlp_ratio: int, seed: int, dtype):
    """Build the configuration's model on the CPU under `seed`."""
    if growth_config.model == "mlp":
        return build_mlp(d_model, growth_config.num_layers, seed, dtype)
    return build_transformer(transformer_settings(growth_config, d_model, mlp_ratio), seed, dtype)


def block_weights(model, growth_config: GrowthConfig, blocks: list[str]):
    """Return ``[(layer, block, weight)]`` in a fixed order: layers outer, blocks inner."""
    if growth_config.model == "mlp":
        return [
            (layer, "mlp", model.layers[layer].weight) for layer in range(growth_config.num_layers)
        ]
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


class SplitProducts:
    """The split forward pass of one job's transformer, for `curvature.split_block_norms`.

    All token batches are joined into one: the losses average (``ce``) or sum
    (``mse``) over sequences, so the joined batch has the same loss, and thus
    the same curvature, as curvlinops' weighted sum over batches.

    Raises:
        ValueError: If the split forward pass does not reproduce the model's logits.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        settings: TransformerSettings,
        loss_func: torch.nn.Module,
        data: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        self.split = SplitTransformer(settings, model.cfg)
        self.tokens = torch.cat([inputs for inputs, _ in data])
        # Detached views share storage with the model, so redrawn embeddings show here too.
        self.params = {name: parameter.detach() for name, parameter in model.named_parameters()}
        difference = check_against_model(self.split, model, self.tokens)
        logger.info("split forward pass matches the model's logits to %.2g (relative)", difference)

        def loss_of_answer_logits(answer_logits: torch.Tensor) -> torch.Tensor:
            return loss_func(full_length_logits(answer_logits), self.tokens)

        self.loss = loss_of_answer_logits

    def linearize_head(self) -> curvature.HeadLinearization:
        """Linearize the head and loss at the current weights (after each redraw)."""
        body_output = self.split.body(self.params, self.tokens)

        def head(resid_mid: torch.Tensor) -> torch.Tensor:
            return self.split.head(self.params, resid_mid)

        # Without layer norm the head is ReLU and linear maps only.
        piecewise_linear = not self.split.layer_norm
        return curvature.linearize_head(head, self.loss, body_output, piecewise_linear)

    def body_of(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """Return the body as a function of the parameter `name` alone."""

        def body(weight: torch.Tensor) -> torch.Tensor:
            return self.split.body({**self.params, name: weight}, self.tokens)

        return body


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

    Raises:
        ValueError: If a block is too large for ``estimator: exact``.
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
    probes = settings["probes"]
    exact = [
        choose_exact(settings["estimator"], weight.numel(), probes, settings["exact_max_size"])
        for _, _, weight in weights
    ]

    split = None
    if with_ggn and not all(exact):
        split_settings = transformer_settings(
            growth_config, settings["d_model"], settings["mlp_ratio"]
        )
        split = SplitProducts(model, split_settings, loss_func, data)

    # curvlinops operators, built on first use: only exact blocks and the MLP need them.
    operators: dict[int, tuple] = {}

    def operators_of(index: int) -> tuple:
        if index not in operators:
            weight = weights[index][2]
            operators[index] = curvature.curvature_operators(
                model, loss_func, weight, data, with_ggn
            )
        return operators[index]

    block_names = sorted({block for _, block, _ in weights}, key=[w[1] for w in weights].index)
    shape = (growth_config.num_layers, len(sigmas))
    norms = {b: {m: np.full(shape, np.nan) for m in matrices} for b in block_names}
    stderrs = {b: {m: np.full(shape, np.nan) for m in matrices} for b in block_names}

    def standard_normal_draws() -> list[torch.Tensor]:
        return [
            torch.randn(weight.shape, generator=embedding_generator, dtype=torch.float64)
            for weight in embedding_weights(model)
        ]

    # per_seed draws the embeddings and the probes once: the embeddings are
    # scaled by each sigma, so the embeddings at every sigma still follow N(0, sigma^2), and the
    # draw-to-draw scatter and probe noise largely cancel in the curve's slope
    # (common random numbers).
    per_seed = settings.get("random_draws") == "per_seed"
    shared_draws = standard_normal_draws() if per_seed else None
    shared_probes: dict[int, torch.Tensor] = {}
    for sigma_index, sigma in enumerate(tqdm(sigmas, desc=growth_config.name, mininterval=5)):
        draws = shared_draws if shared_draws is not None else standard_normal_draws()
        with torch.no_grad():
            for weight, draw in zip(embedding_weights(model), draws):
                weight.copy_((sigma * draw).to(dtype))
        head = split.linearize_head() if split is not None else None

        for index, (layer, block, weight) in enumerate(weights):
            if exact[index]:
                hessian, ggn = operators_of(index)
                estimates = curvature.exact_block_norms(hessian, ggn, settings["chunk_size"])
            else:
                block_probes = shared_probes.get(index)
                if block_probes is None:
                    block_probes = curvature.rademacher_probes(
                        weight.numel(), probes, probe_generator, dtype, device
                    )
                    if per_seed:
                        shared_probes[index] = block_probes
                if split is not None:
                    body = split.body_of(f"blocks.{layer}.attn.{ATTENTION_BLOCKS[block]}")
                    estimates = curvature.split_block_norms(
                        body, weight.detach(), block_probes, head, settings["chunk_size"]
                    )
                else:
                    hessian, ggn = operators_of(index)
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
