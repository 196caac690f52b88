"""The split products of the growth jobs against autograd, curvlinops and the notebook's method.

References:
- the HookedTransformer's own logits for the split forward pass;
- `torch.autograd.functional.jacobian` for the head's Jacobian blocks;
- dense Hessians and GGNs of one weight of the whole model
  (`test_curvature.reference_blocks`: the GGN as an explicit ``J^T H_loss J``,
  summed over the batches with curvlinops' weights) and curvlinops operators
  for the products;
- the notebook's method (bench/notebook_method.py: fresh operators, separate
  probes for H, G and G - H) for run_growth's estimates, within probe error.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call, hessian

from test_curvature import reference_blocks, scaled_embeddings
from transformer_curvature import curvature
from transformer_curvature.data import as_curvlinops_data, make_addition_batches
from transformer_curvature.experiments import GrowthConfig
from transformer_curvature.growth import SplitProducts, run_growth
from transformer_curvature.losses import make_loss
from transformer_curvature.models import TransformerSettings, build_transformer
from transformer_curvature.split_forward import (
    FIRST_ANSWER_LOGIT,
    NUM_USED_POSITIONS,
    SplitTransformer,
    check_against_model,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

CPU = torch.device("cpu")
BATCHES = make_addition_batches(batch_size=3, num_batches=2, seed=4)

VARIANTS = [
    pytest.param(TransformerSettings(2, 4), "ce", id="softmax-ce-2layers"),
    pytest.param(TransformerSettings(1, 4), "mse", id="softmax-mse"),
    pytest.param(TransformerSettings(2, 4, norm="pre"), "ce", id="pre_ln-ce-2layers"),
    pytest.param(
        TransformerSettings(2, 4, linear_attention=True, residual_scaling=0.0),
        "mse",
        id="linear-s0-mse-2layers",
    ),
    pytest.param(
        TransformerSettings(1, 6, linear_attention=True, residual_scaling=1.0),
        "ce",
        id="linear-s1-ce",
    ),
    pytest.param(TransformerSettings(1, 4, residual_scaling=0.0), "ce", id="softmax-s0-ce"),
]
WEIGHTS = ("W_Q", "W_K", "W_V", "W_O")


def split_setup(settings, loss_name, seed=2):
    """A float64 model with scaled embeddings, and its SplitProducts over BATCHES."""
    model = build_transformer(settings, seed=seed, dtype=torch.float64)
    scaled_embeddings(model)
    loss_func = make_loss(loss_name)
    split = SplitProducts(model, settings, loss_func, as_curvlinops_data(BATCHES, CPU))
    return model, loss_func, split


@pytest.mark.parametrize("settings, loss_name", VARIANTS)
def test_split_forward_matches_model_logits(settings, loss_name):
    model = build_transformer(settings, seed=3, dtype=torch.float64)
    scaled_embeddings(model, sigma=1.3)
    tokens = torch.as_tensor(BATCHES[0])
    params = {name: p.detach() for name, p in model.named_parameters()}

    expected = model(tokens)[:, FIRST_ANSWER_LOGIT:NUM_USED_POSITIONS]
    actual = SplitTransformer(settings, model.cfg).answer_logits(params, tokens)

    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_split_forward_check_rejects_wrong_variant():
    """A model whose variant differs from the settings fails the logits check."""
    model = build_transformer(
        TransformerSettings(1, 4, linear_attention=True), seed=3, dtype=torch.float64
    )
    scaled_embeddings(model)
    split = SplitTransformer(TransformerSettings(1, 4), model.cfg)
    with pytest.raises(ValueError, match="differs from the model"):
        check_against_model(split, model, torch.as_tensor(BATCHES[0]), rtol=1e-6)


def test_split_forward_rejects_unsupported_config():
    model = build_transformer(TransformerSettings(1, 4), seed=3, dtype=torch.float64)
    model.cfg.gated_mlp = True
    with pytest.raises(ValueError, match="gated_mlp"):
        SplitTransformer(TransformerSettings(1, 4), model.cfg)


@pytest.mark.parametrize(
    "settings",
    [TransformerSettings(1, 4), TransformerSettings(1, 4, norm="pre")],
    ids=["relu-head", "layer_norm-head"],
)
def test_head_jacobian_matches_autograd(settings):
    model, _, split = split_setup(settings, "ce")
    head = split.linearize_head()
    body_output = split.split.body(split.params, split.tokens)

    def head_of(m):
        return split.split.head(split.params, m)

    dense = torch.autograd.functional.jacobian(head_of, body_output)  # [B, 6, C, B, 6, M]
    batch, positions, features = body_output.shape
    dense = dense.reshape(batch * positions, -1, batch * positions, features)
    expected = torch.stack([dense[t, :, t, :] for t in range(batch * positions)])

    torch.testing.assert_close(head.jacobian, expected, rtol=1e-10, atol=1e-12)
    off_diagonal = dense.clone()
    for t in range(batch * positions):
        off_diagonal[t, :, t, :] = 0
    assert off_diagonal.abs().max() == 0, "the head mixes positions"


@pytest.mark.parametrize("settings, loss_name", VARIANTS)
def test_products_match_dense_autograd(settings, loss_name):
    model, loss_func, split = split_setup(settings, loss_name)
    head = split.linearize_head()
    generator = torch.Generator().manual_seed(5)
    for layer in range(settings.num_layers):
        for weight_name in WEIGHTS:
            name = f"blocks.{layer}.attn.{weight_name}"
            weight = split.params[name]
            probes = torch.randn(3, *weight.shape, generator=generator, dtype=torch.float64)
            dense_hessian, dense_ggn = reference_blocks(model, loss_func, name, BATCHES)
            flat = probes.reshape(3, -1).T

            hessian_products, ggn_products = curvature.hessian_and_ggn_products(
                split.body_of(name), weight, probes, head
            )

            torch.testing.assert_close(
                hessian_products.reshape(3, -1).T,
                dense_hessian @ flat,
                rtol=1e-8,
                atol=1e-10,
                msg=name,
            )
            torch.testing.assert_close(
                ggn_products.reshape(3, -1).T, dense_ggn @ flat, rtol=1e-8, atol=1e-10, msg=name
            )


@pytest.mark.parametrize("settings, loss_name", VARIANTS[:3])
def test_products_match_curvlinops(settings, loss_name):
    model, loss_func, split = split_setup(settings, loss_name)
    head = split.linearize_head()
    data = as_curvlinops_data(BATCHES, CPU)
    generator = torch.Generator().manual_seed(6)
    for layer in range(settings.num_layers):
        for weight_name in ("W_Q", "W_V"):
            name = f"blocks.{layer}.attn.{weight_name}"
            parameter = dict(model.named_parameters())[name]
            hessian_op, ggn_op = curvature.curvature_operators(model, loss_func, parameter, data)
            probes = curvature.rademacher_probes(
                parameter.numel(), 4, generator, torch.float64, CPU
            )

            hessian_products, ggn_products = curvature.hessian_and_ggn_products(
                split.body_of(name), split.params[name], probes.T.reshape(4, *parameter.shape), head
            )

            torch.testing.assert_close(
                hessian_products.reshape(4, -1).T, hessian_op @ probes, msg=name
            )
            torch.testing.assert_close(ggn_products.reshape(4, -1).T, ggn_op @ probes, msg=name)


def test_chunked_split_norms_match_dense():
    """Probes split over several passes give the Hutchinson estimate of the dense blocks."""
    settings = TransformerSettings(1, 4)
    model, loss_func, split = split_setup(settings, "ce")
    head = split.linearize_head()
    name = "blocks.0.attn.W_Q"
    weight = split.params[name]
    probes = curvature.rademacher_probes(
        16, 10, torch.Generator().manual_seed(7), torch.float64, CPU
    )
    dense_hessian, dense_ggn = reference_blocks(model, loss_func, name, BATCHES)

    estimates = curvature.split_block_norms(split.body_of(name), weight, probes, head, chunk_size=3)

    for matrix, dense in (
        ("H", dense_hessian),
        ("H_o", dense_ggn),
        ("H_f", dense_hessian - dense_ggn),
    ):
        expected = torch.sqrt(((dense @ probes) ** 2).sum(0).mean()).item()
        assert estimates[matrix].value == pytest.approx(expected, rel=1e-9), matrix


def growth_settings(d_model, probes):
    return {
        "d_model": d_model,
        "mlp_ratio": 4,
        "probes": probes,
        "estimator": "hutchinson",
        "exact_max_size": 4096,
        "chunk_size": 256,
        "blocks": ["query", "value"],
    }


def test_run_growth_is_deterministic():
    config = GrowthConfig(experiment="test", model="transformer", num_layers=1, sigma_grid="test")
    sigmas = np.array([0.1, 1.0])
    first = run_growth(config, BATCHES, sigmas, 9, growth_settings(4, 3), CPU)
    second = run_growth(config, BATCHES, sigmas, 9, growth_settings(4, 3), CPU)
    for block in ("query", "value"):
        for matrix in ("H", "H_o", "H_f"):
            np.testing.assert_array_equal(
                first["norms"][block][matrix], second["norms"][block][matrix]
            )


def test_run_growth_agrees_with_notebook_method():
    """run_growth and the notebook's method agree within their probe errors on a tiny model."""
    from notebook_method import notebook_growth_norms
    from job_settings import BASE_SEED, JobSettings, sigma_grid

    job = JobSettings(d_model=4, num_sigmas=3, probes=32, batch_size=8, threads=1)
    config = GrowthConfig(experiment="softmax", model="transformer", num_layers=1, sigma_grid="log")
    tokens = make_addition_batches(job.batch_size, 1, BASE_SEED)
    fast = run_growth(
        config, tokens, sigma_grid(job), job.seed, growth_settings(4, job.probes), CPU
    )
    notebook = notebook_growth_norms(job)

    compared = 0
    for block in ("query", "value"):
        hessian = fast["norms"][block]["H"][0]
        for matrix in ("H", "H_o", "H_f"):
            value = fast["norms"][block][matrix][0]
            other = np.array(notebook["norms"][block][matrix][0])
            error = np.hypot(
                fast["probe_stderr"][block][matrix][0], notebook["stderr"][block][matrix][0]
            )
            # The value block's H_f is zero in the last layer: rounding noise in both.
            zero = np.maximum(value, other) <= 1e-4 * hessian
            assert np.all(np.abs(value - other)[~zero] <= 4 * error[~zero]), f"{block} {matrix}"
            compared += int((~zero).sum())
    assert compared >= 15


@pytest.mark.parametrize(
    "settings",
    [
        TransformerSettings(1, 4),
        TransformerSettings(1, 4, norm="pre"),
        TransformerSettings(1, 4, linear_attention=True, residual_scaling=1.0),
    ],
    ids=["softmax", "pre_ln", "linear-s1"],
)
def test_split_dense_hessian_matches_autograd(settings):
    """The dense heat-map Hessian over all parameters, by both paths, against torch.func.hessian."""
    from transformer_curvature.dense import TRANSFORMER_PARAMETERS, dense_hessian

    model = build_transformer(settings, seed=4, dtype=torch.float64)
    scaled_embeddings(model)
    loss_func = make_loss("ce")
    data = as_curvlinops_data(BATCHES, CPU)

    split_matrix, names, sizes = dense_hessian(
        model, loss_func, TRANSFORMER_PARAMETERS, data, chunk_size=50, settings=settings
    )
    curvlinops_matrix, curvlinops_names, _ = dense_hessian(
        model, loss_func, TRANSFORMER_PARAMETERS, data, chunk_size=50
    )

    named = dict(model.named_parameters())
    shapes = [named[name].shape for name in names]
    flat = torch.cat([named[name].detach().reshape(-1) for name in names])
    num_data = sum(len(batch) for batch in BATCHES)
    expected = torch.zeros(flat.numel(), flat.numel(), dtype=torch.float64)
    for batch in BATCHES:
        tokens = torch.as_tensor(batch)

        def loss_of(vector):
            weights = {n: part.reshape(s) for n, part, s in zip(names, vector.split(sizes), shapes)}
            return loss_func(functional_call(model, weights, (tokens,)), tokens)

        expected += len(batch) / num_data * hessian(loss_of)(flat).detach()

    assert curvlinops_names == names
    assert split_matrix.shape == (sum(sizes), sum(sizes))
    np.testing.assert_allclose(split_matrix, expected.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(curvlinops_matrix, expected.numpy(), rtol=1e-9, atol=1e-12)
