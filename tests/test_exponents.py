"""Exponent fits against synthetic curves with known exponents and hand-computed slopes."""

import math

import numpy as np
import pytest

from conftest import run_job_script

from transformer_curvature import exponents
from transformer_curvature.results_io import save_results

LOG_GRID = np.logspace(-2, 1, 20)
ANALYSIS = exponents.AnalysisSettings(
    fit_max_sigma=0.3,
    min_fit_sigmas=4,
    tolerance=0.3,
    zero_threshold=1e-4,
    bootstrap_resamples=500,
    bootstrap_seed=0,
)
SOFTMAX_TWO_LAYERS = exponents.BlockSetting(
    model="transformer", norm="none", linear_attention=False, num_layers=2
)


def power_law(sigmas, exponent, prefactors):
    """Norms ``prefactor * sigma**exponent``: one row per prefactor (seed)."""
    return np.outer(prefactors, np.asarray(sigmas) ** exponent)


def test_fit_recovers_exact_power_law():
    norms = power_law(LOG_GRID, 5.0, [1e-3, 4e-3, 2e-2])
    fit = exponents.fit_exponent(LOG_GRID, norms, 0.3, 4, bootstrap_resamples=200)
    assert fit.exponent == pytest.approx(5.0, rel=1e-12)
    assert fit.stderr == pytest.approx(0.0, abs=1e-12)
    assert fit.num_sigmas == 10  # 10**linspace(-2, 1, 20) <= 0.3: the first ten
    assert fit.num_seeds == 3


def test_fit_ignores_sigmas_above_range():
    sigmas = LOG_GRID
    bent = np.where(sigmas <= 0.3, sigmas**2, 0.3**2 * (sigmas / 0.3) ** 7)
    fit = exponents.fit_exponent(sigmas, bent[None, :], 0.3, 4)
    assert fit.exponent == pytest.approx(2.0, rel=1e-12)


def test_fit_matches_hand_computed_slope():
    # log(sigma) = 0, 1, 2. Seed A: log(norm) = 0, 1, 3, centred sums Sxy 3, Sxx 2.
    # Seed B: log(norm) = 5, 5, 9, Sxy 4, Sxx 2. Pooled slope (3 + 4) / (2 + 2).
    sigmas = np.exp([0.0, 1.0, 2.0])
    norms = np.exp([[0.0, 1.0, 3.0], [5.0, 5.0, 9.0]])
    fit = exponents.fit_exponent(sigmas, norms, 10.0, 3, bootstrap_resamples=4000)
    assert fit.exponent == pytest.approx(1.75, rel=1e-12)
    # Resamples AA, BB and AB have slopes 1.5, 2.0 and 1.75 with probabilities
    # 1/4, 1/4 and 1/2: standard deviation sqrt(2 * 0.25 * 0.25**2) = 0.1768.
    assert fit.stderr == pytest.approx(math.sqrt(2 * 0.25 * 0.25**2), rel=0.05)


def test_fit_uses_one_intercept_per_seed():
    # Seed 1 misses its two smallest sigmas. Pooled without per-seed intercepts,
    # its 100-fold larger prefactor would steepen the slope.
    norms = power_law(LOG_GRID, 2.0, [1.0, 100.0])
    norms[1, :2] = np.nan
    fit = exponents.fit_exponent(LOG_GRID, norms, 0.3, 4)
    assert fit.exponent == pytest.approx(2.0, rel=1e-12)


def test_fit_skips_values_not_finite_and_positive():
    norms = power_law(LOG_GRID, 6.0, [1.0, 2.0])
    norms[0, 1] = np.nan
    norms[0, 3] = np.inf
    norms[1, 2] = 0.0
    norms[1, 4] = -1.0
    fit = exponents.fit_exponent(LOG_GRID, norms, 0.3, 4)
    assert fit.exponent == pytest.approx(6.0, rel=1e-12)
    assert fit.num_sigmas == 10


def test_fit_needs_min_sigmas_in_range():
    linear_grid = np.linspace(0.1, 10, 20)  # only sigma = 0.1 lies below 0.3
    fit = exponents.fit_exponent(linear_grid, power_law(linear_grid, 2.0, [1.0]), 0.3, 4)
    assert fit.exponent is None
    assert fit.stderr is None
    assert fit.num_sigmas == 1


def test_fit_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="num_seeds, 20"):
        exponents.fit_exponent(LOG_GRID, np.ones((3, 19)), 0.3, 4)
    with pytest.raises(ValueError, match="min_sigmas"):
        exponents.fit_exponent(LOG_GRID, np.ones((3, 20)), 0.3, 1)


def test_stderr_absent_with_one_seed():
    fit = exponents.fit_exponent(
        LOG_GRID, power_law(LOG_GRID, 2.0, [1.0]), 0.3, 4, bootstrap_resamples=100
    )
    assert fit.exponent == pytest.approx(2.0)
    assert fit.stderr is None


def test_noisy_fit_stderr_matches_ols():
    """Log-normal noise: the fit lies near the truth, the bootstrap near the OLS standard error."""
    generator = np.random.default_rng(7)
    num_seeds, noise = 40, 0.5
    log_norms = 3.0 * np.log(LOG_GRID) + noise * generator.standard_normal((num_seeds, 20))
    norms = np.exp(log_norms + generator.normal(0, 2, size=(num_seeds, 1)))
    fit = exponents.fit_exponent(LOG_GRID, norms, 0.3, 4, bootstrap_resamples=2000)

    x = np.log(LOG_GRID[LOG_GRID <= 0.3])
    ols_stderr = noise / math.sqrt(num_seeds * ((x - x.mean()) ** 2).sum())
    assert abs(fit.exponent - 3.0) < 4 * ols_stderr
    assert fit.stderr == pytest.approx(ols_stderr, rel=0.3)


def test_bootstrap_is_reproducible():
    generator = np.random.default_rng(3)
    norms = power_law(LOG_GRID, 2.0, [1.0, 2.0, 3.0]) * np.exp(
        0.3 * generator.standard_normal((3, 20))
    )
    first = exponents.fit_exponent(LOG_GRID, norms, 0.3, 4, 300, bootstrap_seed=11)
    second = exponents.fit_exponent(LOG_GRID, norms, 0.3, 4, 300, bootstrap_seed=11)
    other = exponents.fit_exponent(LOG_GRID, norms, 0.3, 4, 300, bootstrap_seed=12)
    assert first.stderr == second.stderr
    assert first.stderr != other.stderr


@pytest.mark.parametrize(
    "ratio, expected",
    [(0.0, True), (1e-7, True), (1e-4, True), (2e-4, False), (0.5, False)],
)
def test_measured_zero_relative_to_hessian(ratio, expected):
    hessian = power_law(LOG_GRID, 2.0, [1.0, 3.0])
    assert exponents.is_measured_zero(ratio * hessian, hessian, 1e-4) is expected


def test_measured_zero_needs_every_point():
    hessian = power_law(LOG_GRID, 2.0, [1.0, 3.0])
    block = 1e-7 * hessian
    block[1, -1] = 0.1 * hessian[1, -1]
    assert not exponents.is_measured_zero(block, hessian, 1e-4)


def test_measured_zero_skips_nan_and_hessian_itself():
    hessian = power_law(LOG_GRID, 2.0, [1.0])
    block = np.zeros_like(hessian)
    block[0, 0] = np.nan
    assert exponents.is_measured_zero(block, hessian, 1e-4)
    assert not exponents.is_measured_zero(hessian, hessian, 1e-4)
    assert exponents.is_measured_zero(np.zeros_like(hessian), np.zeros_like(hessian), 1e-4)
    assert not exponents.is_measured_zero(np.full_like(hessian, np.nan), hessian, 1e-4)


FIT = exponents.ExponentFit(5.25, 0.1, 10, 3)
NO_FIT = exponents.ExponentFit(None, None, 1, 3)


@pytest.mark.parametrize(
    "fit, theory_exponent, theory_zero, measured_zero, expected",
    [
        pytest.param(FIT, 5.125, False, False, True, id="within"),
        pytest.param(FIT, 5.0, False, False, True, id="on-boundary"),
        pytest.param(FIT, 4.9375, False, False, False, id="just-outside"),
        pytest.param(FIT, 6.0, False, False, False, id="outside"),
        pytest.param(FIT, None, False, False, None, id="no-theory"),
        pytest.param(NO_FIT, 5.0, False, False, None, id="no-fit"),
        pytest.param(NO_FIT, None, True, True, True, id="zero-as-predicted"),
        pytest.param(FIT, None, True, False, False, id="predicted-zero-not-zero"),
        pytest.param(NO_FIT, 2.0, False, True, False, id="zero-but-growth-predicted"),
    ],
)
def test_check_against_theory(fit, theory_exponent, theory_zero, measured_zero, expected):
    # Differences and the tolerance 0.25 are exact in binary, so the boundary is exact.
    agrees = exponents.check_against_theory(fit, theory_exponent, theory_zero, measured_zero, 0.25)
    assert agrees is expected


def per_seed_results(setting, sigmas, curves, seeds=(10, 11, 12), config="test"):
    """Per-seed results with norms ``curves[(block, matrix)](layer, seed_index, sigmas)``."""
    results = []
    for index, seed in enumerate(seeds):
        norms = {}
        for (block, matrix), curve in curves.items():
            rows = [curve(layer, index, np.asarray(sigmas)) for layer in range(setting.num_layers)]
            norms.setdefault(block, {})[matrix] = np.array(rows)
        stderr = {b: {m: 0.01 * values for m, values in ms.items()} for b, ms in norms.items()}
        results.append(
            {
                "config": config,
                "seed": seed,
                "sigmas": np.asarray(sigmas, dtype=float),
                "num_layers": setting.num_layers,
                "norms": norms,
                "probe_stderr": stderr,
            }
        )
    return results


def softmax_curves(query_exponent=5.0):
    """Query and value curves of a two-layer softmax model; the last layer's value H_f is 1e-8 H."""
    value = lambda layer, seed, s: (1 + seed) * (layer + 1) * s**2  # noqa: E731
    return {
        ("query", "H"): lambda layer, seed, s: (2 + seed) * s**query_exponent,
        ("query", "H_o"): lambda layer, seed, s: (2 + seed) * 1e-2 * s**6,
        ("query", "H_f"): lambda layer, seed, s: (2 + seed) * s**query_exponent,
        ("value", "H"): value,
        ("value", "H_o"): value,
        ("value", "H_f"): lambda layer, seed, s: (
            1e-8 * value(layer, seed, s) if layer == 1 else (1 + seed) * s**3
        ),
    }


def rows_by_key(rows):
    return {(row["layer"], row["block"], row["matrix"]): row for row in rows}


def test_configuration_rows_against_theory():
    per_seed = per_seed_results(SOFTMAX_TWO_LAYERS, LOG_GRID, softmax_curves())
    rows = exponents.configuration_rows("test", SOFTMAX_TWO_LAYERS, per_seed, ANALYSIS)
    assert len(rows) == 2 * 2 * 3
    assert [tuple(row) for row in rows] == [exponents.EXPONENT_COLUMNS] * len(rows)
    assert [(row["layer"], row["block"], row["matrix"]) for row in rows[:3]] == [
        (0, "query", "H"),
        (0, "query", "H_o"),
        (0, "query", "H_f"),
    ]
    table = rows_by_key(rows)

    query = table[0, "query", "H_o"]
    assert query["fitted_exponent"] == pytest.approx(6.0)
    assert query["theory_exponent"] == 6.0
    assert query["within_tolerance"] is True
    assert query["num_seeds"] == 3

    zero = table[1, "value", "H_f"]
    assert zero["theory_zero"] is True
    assert zero["measured_zero"] is True
    assert zero["fitted_exponent"] is None
    assert zero["stderr"] is None
    assert zero["theory_exponent"] is None
    assert zero["within_tolerance"] is True

    earlier = table[0, "value", "H_f"]
    assert earlier["fitted_exponent"] == pytest.approx(3.0)
    assert earlier["theory_exponent"] is None
    assert earlier["within_tolerance"] is None


def test_configuration_rows_flag_wrong_exponent():
    per_seed = per_seed_results(SOFTMAX_TWO_LAYERS, LOG_GRID, softmax_curves(query_exponent=5.5))
    table = rows_by_key(
        exponents.configuration_rows("test", SOFTMAX_TWO_LAYERS, per_seed, ANALYSIS)
    )
    assert table[0, "query", "H"]["fitted_exponent"] == pytest.approx(5.5)
    assert table[0, "query", "H"]["within_tolerance"] is False


def test_configuration_rows_reject_mixed_grids():
    per_seed = per_seed_results(SOFTMAX_TWO_LAYERS, LOG_GRID, softmax_curves())
    per_seed[1]["sigmas"] = LOG_GRID * 2
    with pytest.raises(ValueError, match="different sigma grids"):
        exponents.configuration_rows("test", SOFTMAX_TWO_LAYERS, per_seed, ANALYSIS)


def test_linear_attention_zero_blocks_in_last_layer():
    setting = exponents.BlockSetting("transformer", "none", True, 1)
    curves = {
        ("query", "H"): lambda layer, seed, s: s**6,
        ("query", "H_o"): lambda layer, seed, s: s**6,
        ("query", "H_f"): lambda layer, seed, s: np.zeros_like(s),
    }
    grid = np.logspace(-1, 0, 20)
    table = rows_by_key(
        exponents.configuration_rows(
            "lin", setting, per_seed_results(setting, grid, curves), ANALYSIS
        )
    )
    assert table[0, "query", "H_f"]["within_tolerance"] is True
    assert table[0, "query", "H"]["fitted_exponent"] == pytest.approx(6.0)
    assert table[0, "query", "H"]["within_tolerance"] is True


def test_mlp_rows_have_only_hessian():
    setting = exponents.BlockSetting("mlp", "none", False, 2)
    curves = {("mlp", "H"): lambda layer, seed, s: (layer + 1) * s**2}
    rows = exponents.configuration_rows(
        "mlp", setting, per_seed_results(setting, LOG_GRID, curves), ANALYSIS
    )
    assert [(row["layer"], row["matrix"]) for row in rows] == [(0, "H"), (1, "H")]
    assert all(row["theory_exponent"] == 2.0 and row["within_tolerance"] is True for row in rows)


def test_norm_rows_one_per_value():
    grid = [0.1, 0.2]
    per_seed = per_seed_results(SOFTMAX_TWO_LAYERS, grid, softmax_curves(), seeds=(5, 6))
    rows = list(exponents.norm_rows(per_seed))
    assert len(rows) == 2 * 2 * 2 * 3 * 2  # seeds, layers, blocks, matrices, sigmas
    first = rows[0]
    assert tuple(first) == exponents.NORM_COLUMNS
    assert first["seed"] == 5
    assert (first["block"], first["matrix"], first["layer"], first["sigma"]) == (
        "query",
        "H",
        0,
        0.1,
    )
    assert first["norm"] == pytest.approx(2 * 0.1**5)
    assert first["probe_stderr"] == pytest.approx(0.01 * 2 * 0.1**5)


def test_figure_fits_skip_zero_blocks():
    per_seed = per_seed_results(SOFTMAX_TWO_LAYERS, LOG_GRID, softmax_curves())
    layout = {
        block: {
            matrix: {
                layer: {
                    repeat: list(result["norms"][block][matrix][layer])
                    for repeat, result in enumerate(per_seed)
                }
                for layer in range(2)
            }
            for matrix in ("H", "H_o", "H_f")
        }
        for block in ("query", "value")
    }
    fitted = exponents.fitted_exponents_for_figure(layout, LOG_GRID, ANALYSIS)
    assert fitted["query", "H_o", 1] == pytest.approx(6.0)
    assert fitted["value", "H_f", 0] == pytest.approx(3.0)
    assert ("value", "H_f", 1) not in fitted
    assert len(fitted) == 11


def test_group_by_config_orders_and_checks():
    setting = exponents.BlockSetting("mlp", "none", False, 1)
    curves = {("mlp", "H"): lambda layer, seed, s: s**2}
    first = per_seed_results(setting, [0.1], curves, seeds=(3, 1), config="a")
    second = per_seed_results(setting, [0.1], curves, seeds=(2,), config="b")
    grouped = exponents.group_by_config(first + second, ["b", "a"])
    assert list(grouped) == ["b", "a"]
    assert [result["seed"] for result in grouped["a"]] == [1, 3]
    with pytest.raises(ValueError, match="'c'"):
        exponents.group_by_config(first, ["a", "c"])
    with pytest.raises(ValueError, match="not in the config"):
        exponents.group_by_config(first + second, ["a"])


def test_settings_from_config():
    settings = exponents.AnalysisSettings.from_config(
        {
            "fit_max_sigma": 0.3,
            "min_fit_sigmas": 4,
            "tolerance": 0.15,
            "zero_threshold": 1e-4,
            "bootstrap": {"resamples": 1000, "seed": 0},
        }
    )
    assert settings == exponents.AnalysisSettings(0.3, 4, 0.15, 1e-4, 1000, 0)


def test_settings_fit_range_per_grid():
    analysis = {
        "fit_max_sigma": 0.3,
        "min_fit_sigmas": 4,
        "tolerance": 0.15,
        "zero_threshold": 1e-4,
        "bootstrap": {"resamples": 1000, "seed": 0},
        "fit_max_sigma_by_grid": {"log": 0.1},
    }
    settings = exponents.AnalysisSettings.from_config(analysis)
    assert settings.for_grid("log").fit_max_sigma == 0.1
    assert settings.for_grid("log_short").fit_max_sigma == 0.3
    assert settings.for_grid("log").tolerance == 0.15


def test_plot_growth_script_writes_fits(tmp_path):
    """The growth figure's script fits its own results and logs the fits it draws."""
    per_seed = per_seed_results(SOFTMAX_TWO_LAYERS, LOG_GRID, softmax_curves())
    letters = {"query": "q", "value": "v"}
    suffixes = {"H": "", "H_o": "_outer", "H_f": "_func"}
    inputs = {}
    for block, letter in letters.items():
        for matrix, suffix in suffixes.items():
            layout = {
                layer: {
                    repeat: list(result["norms"][block][matrix][layer])
                    for repeat, result in enumerate(per_seed)
                }
                for layer in range(2)
            }
            path = tmp_path / f"frob_{letter}{suffix}.pickle"
            save_results(path, layout)
            inputs[f"frob_{letter}{suffix}"] = str(path)
    analysis = {
        "fit_max_sigma": 0.3,
        "min_fit_sigmas": 4,
        "tolerance": 0.3,
        "zero_threshold": 1e-4,
        "bootstrap": {"resamples": 10, "seed": 0},
    }
    config = dict(
        model="transformer", norm="none", linear_attention=False, num_layers=2, sigma_grid="log"
    )
    log = tmp_path / "plot_growth.log"
    output = tmp_path / "growth.pdf"
    params = {
        "sigmas": list(LOG_GRID),
        "log_axes": True,
        "config": config | {"name": "test"},
        "analysis": analysis,
    }
    run_job_script("plot_growth", inputs=inputs, outputs={"figure": output}, log=log, params=params)

    assert output.read_bytes().startswith(b"%PDF")
    text = log.read_text()
    assert "Fitted exponent of query H_o, layer 1: 6.000" in text
    assert "Fitted exponent of value H_f, layer 0: 3.000" in text
    assert "value H_f, layer 1" not in text  # measured zero: no fit drawn
