"""Block norms against a dense autograd Hessian and an explicit J^T H_loss J."""

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, jacfwd, jvp, vmap

from transformer_curvature import curvature
from transformer_curvature.data import as_curvlinops_data, make_addition_batches
from transformer_curvature.losses import make_loss
from transformer_curvature.models import TransformerSettings, build_transformer

BATCHES = make_addition_batches(batch_size=3, num_batches=2, seed=4)


def reference_blocks(model, loss_func, name, batches):
    """Return the dense ``H`` and GGN ``[n, n]`` of one weight, summed over all batches.

    ``H`` from `torch.autograd.functional.hessian`, the GGN as an explicit
    ``J^T H_loss J`` (torch.func), each batch weighted as curvlinops weights it.
    """
    weight = dict(model.named_parameters())[name].detach()
    num_data = sum(len(batch) for batch in batches)
    hessian_total = torch.zeros(weight.numel(), weight.numel(), dtype=torch.float64)
    ggn_total = torch.zeros_like(hessian_total)
    for batch in batches:
        tokens = torch.as_tensor(batch)
        factor = len(batch) / num_data if loss_func.reduction == "mean" else 1.0

        def logits_of(w):
            return functional_call(model, {name: w}, (tokens,))

        def loss_of_logits(logits):
            return loss_func(logits, tokens)

        hessian_total += factor * torch.autograd.functional.hessian(
            lambda w: loss_of_logits(logits_of(w)), weight
        ).reshape(weight.numel(), -1)
        logits = logits_of(weight)
        jacobian = jacfwd(logits_of)(weight).reshape(logits.numel(), -1)  # [outputs, n]
        tangents = jacobian.T.reshape(-1, *logits.shape)
        loss_curvature = vmap(lambda t: jvp(grad(loss_of_logits), (logits,), (t,))[1])(tangents)
        ggn_total += factor * jacobian.T @ loss_curvature.reshape(weight.numel(), -1).T
    return hessian_total, ggn_total


def frobenius(matrix):
    return torch.linalg.matrix_norm(matrix).item()


CASES = [
    pytest.param(TransformerSettings(2, 4), "ce", id="softmax-ce"),
    pytest.param(TransformerSettings(2, 4), "mse", id="softmax-mse"),
    pytest.param(TransformerSettings(1, 4, norm="pre"), "ce", id="pre_ln-ce"),
    pytest.param(
        TransformerSettings(2, 4, linear_attention=True, residual_scaling=0.0),
        "mse",
        id="linear-s0-mse",
    ),
    pytest.param(
        TransformerSettings(1, 6, linear_attention=True, residual_scaling=1.0), "ce", id="linear-s1-ce"
    ),
    pytest.param(TransformerSettings(1, 4, residual_scaling=0.0), "ce", id="softmax-s0-ce"),
]


def scaled_embeddings(model, sigma=0.7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in (model.embed.W_E, model.pos_embed.W_pos):
            weight.copy_(sigma * torch.randn(weight.shape, generator=generator, dtype=weight.dtype))


@pytest.mark.parametrize("settings, loss_name", CASES)
@pytest.mark.parametrize("name", ["blocks.0.attn.W_Q", "blocks.0.attn.W_V"])
def test_exact_norms_match_autograd(settings, loss_name, name):
    model = build_transformer(settings, seed=2, dtype=torch.float64)
    scaled_embeddings(model)
    loss_func = make_loss(loss_name)
    weight = dict(model.named_parameters())[name]
    hessian_op, ggn_op = curvature.curvature_operators(
        model, loss_func, weight, as_curvlinops_data(BATCHES, torch.device("cpu"))
    )
    reference_h, reference_g = reference_blocks(model, loss_func, name, BATCHES)

    dense_h = curvature.dense_matrix(hessian_op, chunk_size=7)
    torch.testing.assert_close(dense_h, reference_h, rtol=1e-7, atol=1e-12)

    norms = curvature.exact_block_norms(hessian_op, ggn_op, chunk_size=5)
    assert norms["H"].value == pytest.approx(frobenius(reference_h), rel=1e-5)
    assert norms["H_o"].value == pytest.approx(frobenius(reference_g), rel=1e-5)
    reference_f = frobenius(reference_h - reference_g)
    if reference_f < 1e-10 * frobenius(reference_h):
        assert norms["H_f"].value <= 1e-8 * norms["H"].value
    else:
        assert norms["H_f"].value == pytest.approx(reference_f, rel=1e-5)


def test_last_layer_value_functional_hessian_is_zero():
    model = build_transformer(TransformerSettings(2, 4), seed=2, dtype=torch.float64)
    scaled_embeddings(model)
    weight = model.blocks[1].attn.W_V
    hessian_op, ggn_op = curvature.curvature_operators(
        model, make_loss("ce"), weight, as_curvlinops_data(BATCHES, torch.device("cpu"))
    )
    norms = curvature.exact_block_norms(hessian_op, ggn_op, chunk_size=16)
    assert norms["H"].value > 0
    assert norms["H_f"].value < 1e-10 * norms["H"].value


def test_hutchinson_within_its_error_of_exact():
    model = build_transformer(TransformerSettings(1, 4), seed=2, dtype=torch.float64)
    scaled_embeddings(model)
    hessian_op, ggn_op = curvature.curvature_operators(
        model, make_loss("ce"), model.blocks[0].attn.W_Q, as_curvlinops_data(BATCHES, torch.device("cpu"))
    )
    exact = curvature.exact_block_norms(hessian_op, ggn_op, chunk_size=16)
    probes = curvature.rademacher_probes(
        16, 400, torch.Generator().manual_seed(0), torch.float64, torch.device("cpu")
    )
    estimates = curvature.hutchinson_block_norms(hessian_op, ggn_op, probes)
    for matrix in curvature.MATRICES:
        estimate = estimates[matrix]
        assert 0 < estimate.stderr < 0.2 * estimate.value
        assert abs(estimate.value - exact[matrix].value) < 5 * estimate.stderr, matrix


def test_hutchinson_stderr_matches_spread_of_repeats():
    """The reported probe standard error predicts the scatter of independent estimates."""
    matrix = torch.randn(30, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    symmetric = matrix + matrix.T
    generator = torch.Generator().manual_seed(2)
    values, stderrs = [], []
    for _ in range(300):
        probes = curvature.rademacher_probes(30, 10, generator, torch.float64, torch.device("cpu"))
        estimate = curvature.hutchinson_block_norms(symmetric, None, probes)["H"]
        values.append(estimate.value)
        stderrs.append(estimate.stderr)
    assert np.mean(values) == pytest.approx(frobenius(symmetric), rel=0.02)
    assert np.std(values) == pytest.approx(np.mean(stderrs), rel=0.25)


def test_probes_are_signs():
    probes = curvature.rademacher_probes(
        50, 4, torch.Generator().manual_seed(0), torch.float32, torch.device("cpu")
    )
    assert probes.shape == (50, 4)
    assert set(probes.unique().tolist()) == {-1.0, 1.0}


def test_dense_matrix_independent_of_chunk_size():
    matrix = torch.randn(11, 11, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    class Operator:
        shape = matrix.shape
        dtype = matrix.dtype
        device = matrix.device

        def __matmul__(self, other):
            return matrix @ other

    for chunk_size in (1, 4, 11, 50):
        torch.testing.assert_close(curvature.dense_matrix(Operator(), chunk_size), matrix)
