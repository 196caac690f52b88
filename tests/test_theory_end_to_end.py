"""A small workflow run whose fitted exponents must match the theory of SPEC.md.

The run builds real models (``d_model`` 8, two seeds, exact block norms, so
no probe noise) and goes through the workflow's own rules up to
``exponents.tsv``. Its sigma grids keep to the small-sigma range where the
exponents hold. The test then checks the table itself, not only that it
exists: every row with a theoretical exponent must lie within 0.15 of it
(the tolerance of config.yaml), and every block that the theory predicts to
vanish must be measured zero.
"""

from __future__ import annotations

import pandas as pd
import pytest

PRESET = "theory_check"
SETTINGS = {
    "preset": PRESET,
    "device": "cpu",
    "sigma_grids": {
        # The five smallest sigmas of config.yaml's log grid: 0.01 to 0.043.
        "log": {"spacing": "log", "start": 0.01, "stop": 0.0428133, "num": 5},
        # Linear attention: from 0.02, because at d_model 8 the first of two
        # layers leaves sigma**9 in H and H_f before sigma = 0.1.
        "log_short": {"spacing": "log", "start": 0.02, "stop": 0.1, "num": 5},
        "linear": {"num": 3},
        "linear_short": {"num": 3},
    },
    "growth": {
        "d_model": 8,
        "repeats": 2,
        "estimator": "exact",
        "random_draws": "per_seed",
        "experiments": {
            "softmax": {"num_layers": [1, 2], "data": {"batch_size": 8}},
            "linear_sigma": {"data": {"batch_size": 4}},
            "pre_ln": {"data": {"batch_size": 4}},
            "linear_attention": {"num_layers": [1, 2], "data": {"batch_size": 8}},
            "mlp": {"num_layers": [1, 2], "data": {"batch_size": 8}},
        },
    },
    "analysis": {
        "fit_max_sigma": 0.3,
        "tolerance": 0.15,
        "bootstrap": {"resamples": 50, "seed": 0},
    },
}


@pytest.fixture(scope="module")
def exponent_table(new_workflow_copy, snakemake):
    """Run the small configuration up to exponents.tsv and return the table."""
    import yaml

    workdir = new_workflow_copy("theory_check")
    (workdir / "theory_check.yaml").write_text(yaml.safe_dump(SETTINGS))
    target = f"results/{PRESET}/exponents.tsv"
    snakemake(workdir, target, "--configfile", "theory_check.yaml", cores=2)
    return pd.read_csv(workdir / target, sep="\t")


def rows(table, config_prefix, block, matrix, layer):
    """Return the rows of one block, matrix and layer whose config name starts with `config_prefix`."""
    return table[
        table["config"].str.startswith(config_prefix)
        & (table["block"] == block)
        & (table["matrix"] == matrix)
        & (table["layer"] == layer)
    ]


@pytest.mark.workflow
def test_every_theoretical_exponent_within_tolerance(exponent_table):
    with_theory = exponent_table[exponent_table["theory_exponent"].notna()]
    # The linear grids (three sigmas from 0.1 up) leave one sigma in the fit
    # range, too few for a fit; every other configuration is fitted.
    on_linear_grid = with_theory["config"].str.contains("_scale=linear")
    assert with_theory.loc[on_linear_grid, "fitted_exponent"].isna().all()
    checked = with_theory[~on_linear_grid]
    # Softmax (1 and 2 layers): query H_o, H_f, H and value H_o, H per layer;
    # linear attention and the MLP add theirs. The count guards against a run
    # whose rows lost their theory.
    assert len(checked) >= 30
    assert checked["fitted_exponent"].notna().all()
    deviation = (checked["fitted_exponent"] - checked["theory_exponent"]).abs()
    outside = checked[deviation > 0.15]
    assert outside.empty, outside.to_string()
    assert (checked["within_tolerance"] == True).all()  # noqa: E712 (numpy bool)


@pytest.mark.workflow
def test_zero_blocks_measured_zero(exponent_table):
    zero = exponent_table[exponent_table["theory_zero"] == True]  # noqa: E712
    # The value block's H_f in the last layer of each softmax model, the query
    # block's H_f of the one-layer linear-attention model, and more.
    assert len(zero) >= 3
    assert (zero["measured_zero"] == True).all(), zero.to_string()  # noqa: E712
    assert zero["fitted_exponent"].isna().all()


@pytest.mark.parametrize(
    ("config_prefix", "block", "matrix", "layer", "exponent"),
    [
        ("norm=none_num_layers=2_scale=log_residual", "query", "H", 0, 5),
        ("norm=none_num_layers=2_scale=log_residual", "query", "H_o", 1, 6),
        ("norm=none_num_layers=2_scale=log_residual", "value", "H", 1, 2),
        ("norm=none_num_layers=1_scale=log_short", "value", "H_o", 0, 6),
        ("norm=none_num_layers=2_scale=log_short", "query", "H_o", 0, 18),
        ("mlp_num_layers=2", "mlp", "H", 1, 2),
    ],
)
@pytest.mark.workflow
def test_headline_exponents(exponent_table, config_prefix, block, matrix, layer, exponent):
    (row,) = rows(exponent_table, config_prefix, block, matrix, layer).itertuples()
    assert row.theory_exponent == exponent
    assert row.fitted_exponent == pytest.approx(exponent, abs=0.15)
