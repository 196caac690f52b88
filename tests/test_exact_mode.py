"""run_growth's exact estimator against dense autograd blocks, and Hutchinson against exact.

The reference rebuilds each job's model and embeddings from its seed: the model
with `build_transformer` or `build_mlp` under the seed, and the embeddings in
sigma order from the first of two streams that ``SeedSequence(seed)`` spawns,
as run_growth draws them. It then computes the dense Hessian with
torch.autograd.functional.hessian and the GGN as an explicit J^T H_loss J.
"""

from functools import lru_cache

import numpy as np
import pytest
import torch

from test_curvature import reference_blocks
from transformer_curvature.data import make_addition_batches
from transformer_curvature.experiments import GrowthConfig
from transformer_curvature.growth import run_growth
from transformer_curvature.losses import make_loss
from transformer_curvature.models import (
    ATTENTION_BLOCKS,
    TransformerSettings,
    build_mlp,
    build_transformer,
    embedding_weights,
)

CPU = torch.device("cpu")
TOKENS = make_addition_batches(batch_size=3, num_batches=2, seed=4)
SIGMAS = np.array([0.4, 1.0])
SEED = 21
ALL_BLOCKS = ["query", "key", "value", "output"]

# Exact mode must match the dense reference to this relative error in float64.
RELATIVE_TOLERANCE = 1e-5
# A reference block below this fraction of ||H|| counts as zero; the exact
# norm then has to stay below ZERO_TOLERANCE * ||H||.
ZERO_FRACTION = 1e-10
ZERO_TOLERANCE = 1e-8


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run torch on one thread.

    With two threads on a busy 2-core machine, one exact run took 240 s instead of 2 s.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def growth_config(**fields):
    defaults = dict(experiment="test", model="transformer", num_layers=1, sigma_grid="test")
    return GrowthConfig(**(defaults | fields | {"dtype": "float64"}))


CASES = [
    pytest.param(growth_config(num_layers=2, loss="ce"), 4, id="softmax-ce-2layers"),
    pytest.param(growth_config(loss="mse", residual_scaling=0.0), 6, id="softmax-mse-s0"),
    pytest.param(
        growth_config(num_layers=2, linear_attention=True, residual_scaling=0.0, loss="mse"),
        4,
        id="linear-mse-s0-2layers",
    ),
    pytest.param(
        growth_config(linear_attention=True, residual_scaling=1.0, loss="ce"), 5, id="linear-ce-s1"
    ),
    pytest.param(growth_config(norm="pre", loss="ce"), 8, id="pre_ln-ce"),
    pytest.param(growth_config(model="mlp", num_layers=2, loss="mse"), 4, id="mlp-mse-2layers"),
]


def job_settings(d_model, estimator, probes=4, exact_max_size=4096, blocks=ALL_BLOCKS):
    """The ``growth`` settings of one job, as the workflow passes them to run_growth."""
    return {
        "d_model": d_model,
        "mlp_ratio": 4,
        "probes": probes,
        "estimator": estimator,
        "exact_max_size": exact_max_size,
        "chunk_size": 7,  # not a divisor of any block size, so the last chunk is partial
        "blocks": blocks,
    }


def reference_model(config, d_model):
    """Rebuild the model of a run_growth job with seed SEED, in float64."""
    if config.model == "mlp":
        return build_mlp(d_model, config.num_layers, SEED, torch.float64)
    settings = TransformerSettings(
        num_layers=config.num_layers,
        d_model=d_model,
        norm=config.norm,
        linear_attention=config.linear_attention,
        residual_scaling=config.residual_scaling,
    )
    return build_transformer(settings, SEED, torch.float64)


def parameter_names(config, blocks):
    """Map ``(layer, block)`` to the name of its weight in ``model.named_parameters()``."""
    if config.model == "mlp":
        return {(layer, "mlp"): f"layers.{layer}.weight" for layer in range(config.num_layers)}
    return {
        (layer, block): f"blocks.{layer}.attn.{ATTENTION_BLOCKS[block]}"
        for layer in range(config.num_layers)
        for block in blocks
    }


def reference_norms(config, d_model, blocks):
    """Dense-reference norms ``{(layer, block, matrix): [value per sigma]}``."""
    model = reference_model(config, d_model)
    loss_func = make_loss(config.loss)
    embedding_seed, _ = np.random.SeedSequence(SEED).generate_state(2)
    generator = torch.Generator().manual_seed(int(embedding_seed))
    names = parameter_names(config, blocks)
    norms = {}
    for sigma in SIGMAS:
        with torch.no_grad():
            for weight in embedding_weights(model):
                draw = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
                weight.copy_(sigma * draw)
        for (layer, block), name in names.items():
            hessian, ggn = reference_blocks(model, loss_func, name, TOKENS)
            values = {
                "H": torch.linalg.matrix_norm(hessian).item(),
                "H_o": torch.linalg.matrix_norm(ggn).item(),
                "H_f": torch.linalg.matrix_norm(hessian - ggn).item(),
            }
            for matrix, value in values.items():
                norms.setdefault((layer, block, matrix), []).append(value)
    return {key: np.array(values) for key, values in norms.items()}


@lru_cache(maxsize=None)
def exact_run(config, d_model):
    """run_growth in exact mode, cached: the Hutchinson test compares with the same runs."""
    blocks = ["mlp"] if config.model == "mlp" else ALL_BLOCKS
    return run_growth(
        config, TOKENS, SIGMAS, SEED, job_settings(d_model, "exact", blocks=blocks), CPU
    )


@pytest.mark.parametrize("config, d_model", CASES)
def test_exact_mode_matches_dense_reference(config, d_model):
    blocks = ["mlp"] if config.model == "mlp" else ALL_BLOCKS
    result = exact_run(config, d_model)
    reference = reference_norms(config, d_model, blocks)

    matrices = ("H",) if config.model == "mlp" else ("H", "H_o", "H_f")
    assert set(result["norms"]) == set(blocks)
    for (layer, block, matrix), expected in reference.items():
        if matrix not in matrices:
            continue
        measured = result["norms"][block][matrix][layer]
        hessian = reference[layer, block, "H"]
        where = f"layer {layer} {block} {matrix}"
        assert np.all(np.isnan(result["probe_stderr"][block][matrix][layer])), where
        for index, sigma in enumerate(SIGMAS):
            if expected[index] <= ZERO_FRACTION * hessian[index]:
                assert measured[index] <= ZERO_TOLERANCE * hessian[index], f"{where}, sigma {sigma}"
            else:
                relative_error = abs(measured[index] - expected[index]) / expected[index]
                assert (
                    relative_error <= RELATIVE_TOLERANCE
                ), f"{where}, sigma {sigma}: {relative_error:.2e}"


def test_reference_covers_zero_and_nonzero():
    """The cases reach both branches of the check: zero H_f in the last layer, nonzero earlier."""
    config = growth_config(num_layers=2, loss="ce")
    reference = reference_norms(config, 4, ["value"])
    assert np.all(reference[1, "value", "H_f"] <= ZERO_FRACTION * reference[1, "value", "H"])
    assert np.all(reference[0, "value", "H_f"] > 1e-3 * reference[0, "value", "H"])


@pytest.mark.parametrize(
    "config, d_model",
    [
        pytest.param(growth_config(num_layers=2, loss="ce"), 4, id="softmax-ce-2layers"),
        pytest.param(
            growth_config(num_layers=2, linear_attention=True, residual_scaling=0.0, loss="mse"),
            4,
            id="linear-mse-s0-2layers",
        ),
    ],
)
def test_hutchinson_within_probe_error_of_exact(config, d_model):
    exact = exact_run(config, d_model)
    estimated = run_growth(
        config, TOKENS, SIGMAS, SEED, job_settings(d_model, "hutchinson", probes=64), CPU
    )
    for block in ALL_BLOCKS:
        hessian = exact["norms"][block]["H"]
        for matrix in ("H", "H_o", "H_f"):
            value = estimated["norms"][block][matrix]
            stderr = estimated["probe_stderr"][block][matrix]
            reference = exact["norms"][block][matrix]
            zero = reference <= ZERO_FRACTION * hessian
            # Four standard errors, plus rounding where the block is zero.
            bound = 4 * stderr + ZERO_TOLERANCE * hessian
            assert np.all(np.abs(value - reference) <= bound), f"{block} {matrix}"
            assert np.all(stderr[~zero] < 0.25 * value[~zero]), f"{block} {matrix}: too few probes"


def test_auto_uses_exact_for_small_blocks():
    config = growth_config(num_layers=2, loss="ce")
    exact = exact_run(config, 4)
    # d_model 4: every attention block has 16 entries, so 16 probes make auto exact.
    auto = run_growth(config, TOKENS, SIGMAS, SEED, job_settings(4, "auto", probes=16), CPU)
    for block in ALL_BLOCKS:
        for matrix in ("H", "H_o", "H_f"):
            np.testing.assert_allclose(
                auto["norms"][block][matrix], exact["norms"][block][matrix], rtol=1e-12, atol=0
            )
            assert np.all(np.isnan(auto["probe_stderr"][block][matrix]))


def test_exact_mode_rejects_block_above_max_size():
    config = growth_config(loss="ce")
    settings = job_settings(4, "exact", exact_max_size=8)
    with pytest.raises(ValueError, match="exact_max_size"):
        run_growth(config, TOKENS, SIGMAS, SEED, settings, CPU)
