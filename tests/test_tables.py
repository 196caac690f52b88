"""exponents.tsv and norms.tsv: the table scripts on hand-made results, and a tiny workflow run.

The workflow test runs the tiny preset with all four attention blocks in a
temporary copy of the workflow, then builds the Snakemake report from it.
"""

import zipfile

import numpy as np
import pandas as pd
import pytest

from conftest import run_job_script

from transformer_curvature.experiments import GrowthConfig
from transformer_curvature.results_io import save_results

SIGMAS = np.logspace(-2, 1, 20)
ANALYSIS = {
    "fit_max_sigma": 0.3,
    "min_fit_sigmas": 4,
    "tolerance": 0.3,
    "zero_threshold": 1e-4,
    "bootstrap": {"resamples": 200, "seed": 0},
}
SOFTMAX = GrowthConfig(experiment="softmax", model="transformer", num_layers=2, sigma_grid="log")
MLP = GrowthConfig(experiment="mlp", model="mlp", num_layers=1, sigma_grid="log", loss="mse")
SEEDS = (7, 8)


def softmax_norms(seed_index):
    """Curves with the theory's exponents except query H_o (6.5); layer 1's value H_f is 1e-8 H."""
    scale = 1.0 + seed_index
    value = np.array([scale * SIGMAS**2, 2 * scale * SIGMAS**2])
    query = np.array([scale * SIGMAS**5, 3 * scale * SIGMAS**5])
    return {
        "query": {"H": query, "H_o": 1e-2 * scale * np.array([SIGMAS**6.5] * 2), "H_f": query},
        "value": {
            "H": value,
            "H_o": value,
            "H_f": np.array([scale * SIGMAS**3, 1e-8 * value[1]]),
        },
    }


def write_seed_results(folder):
    """Write the per-seed pickles of SOFTMAX and MLP and return their paths."""
    paths = []
    for config, make_norms in ((SOFTMAX, softmax_norms), (MLP, None)):
        for index, seed in enumerate(SEEDS):
            if make_norms is None:
                norms = {"mlp": {"H": np.array([(1.0 + index) * SIGMAS**2])}}
            else:
                norms = make_norms(index)
            stderr = {b: {m: 0.05 * values for m, values in ms.items()} for b, ms in norms.items()}
            result = {
                "config": config.name,
                "seed": seed,
                "sigmas": SIGMAS,
                "num_layers": config.num_layers,
                "norms": norms,
                "probe_stderr": stderr,
            }
            path = folder / config.name / f"seed={seed}.pickle"
            save_results(path, result)
            paths.append(path)
    return paths


def run_table_script(name, tmp_path, seeds, params):
    """Run a table script as a job on the per-seed files `seeds`; return its table and log."""
    output = tmp_path / f"{name}.tsv"
    log = tmp_path / f"{name}.log"
    run_job_script(name, inputs={"seeds": seeds}, outputs={"table": output}, log=log, params=params)
    return output, log


def config_fields():
    return {config.name: dict(vars(config)) for config in (SOFTMAX, MLP)}


@pytest.fixture
def exponent_table(tmp_path):
    seeds = write_seed_results(tmp_path / "growth")
    output, log = run_table_script(
        "write_exponents", tmp_path, seeds, {"analysis": ANALYSIS, "configs": config_fields()}
    )
    return pd.read_csv(output, sep="\t"), output, log


def test_exponent_table_columns_and_rows(exponent_table):
    table, _, _ = exponent_table
    assert list(table.columns) == [
        "config",
        "layer",
        "block",
        "matrix",
        "fitted_exponent",
        "stderr",
        "theory_exponent",
        "within_tolerance",
        "theory_zero",
        "measured_zero",
        "num_sigmas",
        "num_seeds",
    ]
    assert len(table) == 2 * 2 * 3 + 1  # softmax: layers x blocks x matrices; MLP: one layer
    assert list(table["config"].unique()) == [SOFTMAX.name, MLP.name]


def test_exponent_table_values(exponent_table):
    table, _, _ = exponent_table
    rows = table.set_index(["config", "layer", "block", "matrix"])

    query = rows.loc[(SOFTMAX.name, 1, "query", "H")]
    assert query["fitted_exponent"] == pytest.approx(5.0, abs=1e-5)
    assert query["theory_exponent"] == 5.0
    assert query["within_tolerance"] == True  # noqa: E712 (numpy bool)
    assert query["num_sigmas"] == 10
    assert query["num_seeds"] == 2

    outer = rows.loc[(SOFTMAX.name, 0, "query", "H_o")]
    assert outer["fitted_exponent"] == pytest.approx(6.5, abs=1e-5)
    assert outer["within_tolerance"] == False  # noqa: E712

    earlier = rows.loc[(SOFTMAX.name, 0, "value", "H_f")]
    assert earlier["fitted_exponent"] == pytest.approx(3.0, abs=1e-5)
    assert np.isnan(earlier["theory_exponent"])
    assert np.isnan(earlier["within_tolerance"])

    mlp = rows.loc[(MLP.name, 0, "mlp", "H")]
    assert mlp["fitted_exponent"] == pytest.approx(2.0, abs=1e-5)
    assert mlp["within_tolerance"] == True  # noqa: E712


def test_exponent_table_zero_block_format(exponent_table):
    table, output, _ = exponent_table
    zero = table[(table["layer"] == 1) & (table["block"] == "value") & (table["matrix"] == "H_f")]
    assert len(zero) == 1
    row = zero.iloc[0]
    assert np.isnan(row["fitted_exponent"])
    assert np.isnan(row["stderr"])
    assert np.isnan(row["theory_exponent"])
    assert row["theory_zero"] == True  # noqa: E712
    assert row["measured_zero"] == True  # noqa: E712
    assert row["within_tolerance"] == True  # noqa: E712

    line = next(
        line
        for line in output.read_text().splitlines()
        if line.startswith(SOFTMAX.name + "\t1\tvalue\tH_f")
    )
    assert line.split("\t")[4:] == ["", "", "", "True", "True", "True", "0", "0"]


def test_exponent_table_logs_disagreements(exponent_table):
    _, _, log = exponent_table
    text = log.read_text()
    # Checked: query H, H_o, H_f and value H, H_o in both layers, the zero block and the MLP.
    assert "13 rows, 12 checked against theory (tolerance 0.3): 10 agree, 2 disagree" in text
    assert f"{SOFTMAX.name}: fits over sigma <= 0.3" in text
    assert text.count("Disagrees with theory") == 2
    assert "layer 0 query H_o" in text


@pytest.mark.parametrize(
    ("by_grid", "num_sigmas"),
    [({"log": 0.05}, 5), ({"log_short": 0.05}, 10), ({}, 10)],
)
def test_exponent_table_fit_range_per_grid(tmp_path, by_grid, num_sigmas):
    # Both configurations run on the log grid: 5 of its sigmas are <= 0.05, 10 are <= 0.3.
    seeds = write_seed_results(tmp_path / "growth")
    analysis = ANALYSIS | {"fit_max_sigma_by_grid": by_grid}
    output, log = run_table_script(
        "write_exponents", tmp_path, seeds, {"analysis": analysis, "configs": config_fields()}
    )
    table = pd.read_csv(output, sep="\t")
    fitted = table[table["fitted_exponent"].notna()]
    assert set(fitted["num_sigmas"]) == {num_sigmas}
    fit_max = by_grid.get("log", 0.3)
    assert f"{MLP.name}: fits over sigma <= {fit_max:g}" in log.read_text()


def test_exponent_table_warns_without_fits(tmp_path):
    seeds = write_seed_results(tmp_path / "growth")
    analysis = ANALYSIS | {"fit_max_sigma_by_grid": {"log": 0.02}}  # two sigmas, 0.01 and 0.014
    _, log = run_table_script(
        "write_exponents", tmp_path, seeds, {"analysis": analysis, "configs": config_fields()}
    )
    warning = f"{SOFTMAX.name}: 2 of its sigmas are <= 0.02, fewer than min_fit_sigmas (4)"
    assert warning in log.read_text()
    assert "raise analysis.fit_max_sigma_by_grid.log" in log.read_text()


def test_exponent_script_rejects_missing_configuration(tmp_path):
    seeds = write_seed_results(tmp_path / "growth")
    fields = config_fields() | {"missing": dict(vars(MLP))}
    with pytest.raises(ValueError, match="missing"):
        run_table_script(
            "write_exponents", tmp_path, seeds, {"analysis": ANALYSIS, "configs": fields}
        )


def test_norm_table_one_row_per_value(tmp_path):
    seeds = write_seed_results(tmp_path / "growth")
    output, _ = run_table_script(
        "write_norms", tmp_path, seeds, {"configs": [SOFTMAX.name, MLP.name]}
    )
    table = pd.read_csv(output, sep="\t")
    assert list(table.columns) == [
        "config",
        "seed",
        "layer",
        "block",
        "matrix",
        "sigma",
        "norm",
        "probe_stderr",
    ]
    assert len(table) == len(SEEDS) * (2 * 2 * 3 + 1) * len(SIGMAS)

    row = table[
        (table["config"] == SOFTMAX.name)
        & (table["seed"] == 8)
        & (table["layer"] == 1)
        & (table["block"] == "query")
        & (table["matrix"] == "H")
    ].iloc[3]
    expected = 3 * 2.0 * SIGMAS[3] ** 5
    assert row["sigma"] == pytest.approx(SIGMAS[3], rel=1e-9)
    assert row["norm"] == pytest.approx(expected, rel=1e-9)
    assert row["probe_stderr"] == pytest.approx(0.05 * expected, rel=1e-9)


TINY_OVERRIDES = {
    "growth": {"blocks": ["query", "key", "value", "output"]},
    # The tiny grids have five sigmas: fit all of them, so every fit path runs.
    "analysis": {
        "fit_max_sigma": 10.0,
        "min_fit_sigmas": 3,
        "fit_max_sigma_by_grid": dict.fromkeys(
            ["log", "log_short", "linear", "linear_short"], 10.0
        ),
    },
}


@pytest.fixture(scope="module")
def tiny_run(new_workflow_copy, snakemake):
    """The tiny preset with all four attention blocks, run once in a private copy."""
    import yaml

    workdir = new_workflow_copy("tiny_all_blocks")
    (workdir / "all_blocks.yaml").write_text(yaml.safe_dump(TINY_OVERRIDES))
    configfiles = ("--configfile", "presets/tiny.yaml", "all_blocks.yaml")
    snakemake(workdir, *configfiles, cores=2)
    return workdir, configfiles


@pytest.mark.workflow
def test_tiny_run_tables_cover_all_blocks(tiny_run):
    workdir, _ = tiny_run
    exponents = pd.read_csv(workdir / "results/tiny/exponents.tsv", sep="\t")
    norms = pd.read_csv(workdir / "results/tiny/norms.tsv", sep="\t")

    attention = exponents[exponents["block"] != "mlp"]
    assert set(attention["block"]) == {"query", "key", "value", "output"}
    assert set(attention["matrix"]) == {"H", "H_o", "H_f"}
    assert set(exponents.loc[exponents["block"] == "mlp", "matrix"]) == {"H"}

    keys = ["config", "layer", "block", "matrix"]
    exponent_keys = set(map(tuple, exponents[keys].to_numpy()))
    norm_keys = set(map(tuple, norms[keys].to_numpy()))
    assert exponent_keys == norm_keys
    seeds_per_config = norms.groupby("config")["seed"].nunique()
    assert (seeds_per_config == 2).all()
    assert len(norms) == len(exponent_keys) * 2 * 5  # two seeds, five sigmas
    assert exponents["fitted_exponent"].notna().any()


@pytest.mark.workflow
def test_tiny_run_zero_blocks_measured_zero(tiny_run):
    workdir, _ = tiny_run
    exponents = pd.read_csv(workdir / "results/tiny/exponents.tsv", sep="\t")
    predicted = exponents[exponents["theory_zero"] == True]  # noqa: E712
    # Softmax: value and output H_f of the last layer; linear attention: every H_f there.
    assert set(predicted["block"]) == {"query", "key", "value", "output"}
    assert (predicted["measured_zero"] == True).all(), predicted  # noqa: E712
    assert (predicted["within_tolerance"] == True).all()  # noqa: E712
    assert predicted["fitted_exponent"].isna().all()


@pytest.mark.workflow
def test_tiny_run_key_and_output_blocks(tiny_run):
    workdir, _ = tiny_run
    name = "norm=none_num_layers=2_scale=log_residual_scaling=1.0_linear_attention=False_loss=ce"
    for suffix in ("k", "k_outer", "k_func", "o", "o_outer", "o_func"):
        assert (workdir / f"results/tiny/{name}_frob_{suffix}.pickle").is_file(), suffix
    assert (workdir / f"figures/tiny/{name}__all.pdf").read_bytes().startswith(b"%PDF")
    log = (workdir / f"results/tiny/logs/figures/{name}.log").read_text()
    assert "frob_k_func" in log and "frob_o_outer" in log
    assert "Fitted exponent of key H" in log


@pytest.mark.workflow
def test_tiny_run_report_builds(tiny_run, snakemake):
    workdir, configfiles = tiny_run
    snakemake(workdir, "--report", "report.zip", *configfiles)
    report = workdir / "report.zip"
    assert report.stat().st_size > 0
    with zipfile.ZipFile(report) as archive:
        names = archive.namelist()
        html = next(name for name in names if name.endswith("report.html"))
        archive_html = archive.read(html)
    assert archive_html
    configs = pd.read_csv(workdir / "results/tiny/exponents.tsv", sep="\t")["config"].unique()
    figures = ["heterogeneity.pdf", "histogram_classical.pdf", "histogram_linear.pdf"]
    figures += [
        f"{config}_frob_mlp.pdf" if config.startswith("mlp_") else f"{config}__all.pdf"
        for config in configs
    ]
    for figure in figures:
        assert (workdir / "figures/tiny" / figure).is_file(), figure
        assert any(name.endswith("/" + figure) for name in names), figure
    assert any(name.endswith("/exponents.tsv") for name in names)
    assert b"problematic" not in archive_html, "a caption has reStructuredText errors"
