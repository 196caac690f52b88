"""Config validation: every bad config stops a dry run with its key path, value and allowed values.

Each case is a config file layered over the tiny preset (or an edit of
config.yaml where a key must be missing). The dry run must fail before any
job, print one line that names the key path, the bad value and what is
allowed, and create no results/ or figures/ folder.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from transformer_curvature import config_validation
from transformer_curvature.experiments import ConfigError

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

def softmax(**settings) -> dict:
    """Overrides for the softmax experiment."""
    return {"growth": {"experiments": {"softmax": settings}}}


def mlp(**settings) -> dict:
    """Overrides for the MLP baseline experiment."""
    return {"growth": {"experiments": {"mlp": settings}}}


def growth(**settings) -> dict:
    """Overrides for the growth section."""
    return {"growth": settings}


def full_experiment(**changes) -> dict:
    """A complete softmax-like experiment, for cases that add a new one."""
    experiment = {
        "data": {"batch_size": 4, "num_batches": 1, "seed": 1234},
        "model": "transformer",
        "norm": "none",
        "num_layers": [1],
        "sigma_grids": ["log"],
        "linear_attention": False,
        "residual_scaling": 1.0,
        "loss": "ce",
    }
    experiment.update(changes)
    return experiment


# (case id, overrides as a dict or raw YAML text, substrings the message must contain:
# the key path, the bad value, and what is allowed).
BAD_CONFIGS = [
    ("unknown_norm", softmax(norm="post"),
     ["growth.experiments.softmax.norm:", "'post'", "'none', 'pre'"]),
    ("zero_num_layers", softmax(num_layers=[0]),
     ["growth.experiments.softmax.num_layers[0]:", "0 is too small", "minimum is 1"]),
    ("negative_num_layers", softmax(num_layers=[1, -2]),
     ["growth.experiments.softmax.num_layers[1]:", "-2 is too small", "minimum is 1"]),
    ("empty_num_layers", softmax(num_layers=[]),
     ["growth.experiments.softmax.num_layers:", "[]", "at least 1 item"]),
    ("num_layers_not_a_list", softmax(num_layers=2),
     ["growth.experiments.softmax.num_layers:", "2 is an integer", "expected a list"]),
    ("unknown_sigma_grid", softmax(sigma_grids=["huge"]),
     ["growth.experiments.softmax.sigma_grids:", "'huge'", "'linear', 'linear_short', 'log', 'log_short'"]),
    ("unknown_top_level_key", {"outputs": "elsewhere"},
     ["outputs: unknown key", "dense, device, growth, preset, sigma_grids"]),
    ("misspelled_experiment_key", softmax(layers=[1]),
     ["growth.experiments.softmax.layers: unknown key", "num_layers", "Did you mean 'num_layers'?"]),
    ("d_model_wrong_type", growth(d_model="wide"),
     ["growth.d_model:", "'wide' is a string", "expected an integer"]),
    ("d_model_fraction", growth(d_model=4.5),
     ["growth.d_model:", "4.5", "expected an integer"]),
    ("unknown_loss", softmax(loss="nll"),
     ["growth.experiments.softmax.loss:", "'nll'", "'ce', 'mse'"]),
    ("unknown_device", {"device": "gpu"},
     ["device:", "'gpu'", "'auto', 'cpu', 'cuda'"]),
    ("probes_below_two", growth(probes=1),
     ["growth.probes:", "1 is too small", "minimum is 2"]),
    ("unknown_block", growth(blocks=["query", "attention"]),
     ["growth.blocks[1]:", "'attention'", "'query', 'key', 'value', 'output'"]),
    ("duplicate_blocks", growth(blocks=["value", "query", "value"]),
     ["growth.blocks:", "'value' more than once", "list each item once"]),
    ("mlp_with_ce_loss", mlp(loss="ce"),
     ["growth.experiments.mlp.loss:", "'ce'", "only allowed value here is 'mse'"]),
    ("mlp_with_norm", mlp(norm="pre"),
     ["growth.experiments.mlp.norm:", "'pre' is not allowed here", "no layer norm"]),
    ("preset_with_slash", {"preset": "../elsewhere"},
     ["preset:", "'../elsewhere'", "Letters, digits, '_' and '-' only"]),
    ("preset_named_like_results_folder", {"preset": "growth"},
     ["preset:", "'growth' is not allowed", "data, growth, dense, logs, benchmarks"]),
    ("unknown_estimator", growth(estimator="exactly"),
     ["growth.estimator:", "'exactly'", "'hutchinson', 'exact', 'auto'", "Did you mean 'exact'?"]),
    ("unknown_dtype", softmax(dtype="float16"),
     ["growth.experiments.softmax.dtype:", "'float16'", "'float32', 'float64'"]),
    ("sigma_start_zero", {"sigma_grids": {"log": {"start": 0}}},
     ["sigma_grids.log.start:", "0 is too small", "greater than 0"]),
    ("sigma_stop_below_start", {"sigma_grids": {"log": {"start": 1.0, "stop": 0.5}}},
     ["sigma_grids.log:", "stop (0.5)", "greater than start (1.0)"]),
    ("sigma_float_without_dot", "sigma_grids:\n  log: {start: 1e-2}\n",
     ["sigma_grids.log.start:", "'1e-2' is a string", "write 1.0e-2"]),
    ("unknown_spacing", {"sigma_grids": {"log": {"spacing": "geometric"}}},
     ["sigma_grids.log.spacing:", "'geometric'", "'log', 'linear'"]),
    ("sigma_num_one", {"sigma_grids": {"log": {"num": 1}}},
     ["sigma_grids.log.num:", "1 is too small", "minimum is 2"]),
    ("zero_repeats", growth(repeats=0),
     ["growth.repeats:", "0 is too small", "minimum is 1"]),
    ("negative_gpu", {"dense": {"gpu": -1}},
     ["dense.gpu:", "-1 is too small", "minimum is 0"]),
    ("linear_attention_not_boolean", softmax(linear_attention="sometimes"),
     ["growth.experiments.softmax.linear_attention:", "'sometimes' is a string", "true or false"]),
    ("residual_scaling_infinite", "growth:\n  experiments:\n    softmax: {residual_scaling: .inf}\n",
     ["growth.experiments.softmax.residual_scaling:", "inf is not a finite number", "finite value"]),
    ("negative_data_seed", softmax(data={"seed": -1}),
     ["growth.experiments.softmax.data.seed:", "-1 is too small", "minimum is 0"]),
    ("unknown_dense_loss", {"dense": {"loss": "hinge"}},
     ["dense.loss:", "'hinge'", "'ce', 'mse'"]),
    ("experiment_name_with_dash", {"growth": {"experiments": {"soft-max": full_experiment()}}},
     ["growth.experiments.soft-max:", "invalid name 'soft-max'", "letters, digits and '_' only"]),
    ("experiment_named_like_dense", {"growth": {"experiments": {"heterogeneity": full_experiment()}}},
     ["growth.experiments.heterogeneity:", "taken by a dense experiment", "'heterogeneity', 'histograms'"]),
    ("configuration_defined_twice", {"growth": {"experiments": {"again": full_experiment()}}},
     ["growth.experiments:", "'again' and 'softmax'", "norm=none_num_layers=1_scale=log", "remove it from one"]),
    ("exact_blocks_too_large", growth(estimator="exact", exact_max_size=8),
     ["growth.exact_max_size:", "8 is smaller", "raise exact_max_size to 48", "'hutchinson'"]),
    ("fit_range_of_unknown_grid", {"analysis": {"fit_max_sigma_by_grid": {"logarithmic": 0.1}}},
     ["analysis.fit_max_sigma_by_grid:", "'logarithmic'", "'linear', 'linear_short', 'log', 'log_short'"]),
    ("huge_d_model", growth(d_model=1_000_000_000),
     ["growth.d_model:", "1000000000 is too large", "maximum is 4096"]),
    ("huge_repeats", growth(repeats=100_000_000),
     ["growth.repeats:", "100000000 is too large", "maximum is 1000"]),
    ("huge_dense_d_model", {"dense": {"d_model": 100_000}},
     ["dense.d_model:", "100000 is too large", "maximum is 64"]),
    ("negative_fit_range_of_grid", {"analysis": {"fit_max_sigma_by_grid": {"log": -0.1}}},
     ["analysis.fit_max_sigma_by_grid.log:", "-0.1", "greater than 0"]),
]


def assert_rejected(completed, expected: list[str], workdir: Path) -> None:
    """Check a failed dry run: its message, no Python traceback, and no output folders."""
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0, f"the dry run accepted the config:\n{output}"
    assert "Invalid config" in output, output
    for text in expected:
        assert text in output, f"{text!r} missing from the message:\n{output}"
    assert "Traceback (most recent call last)" not in output, output
    assert not (workdir / "results").exists()
    assert not (workdir / "figures").exists()


@pytest.fixture(scope="module")
def shared_copy(new_workflow_copy) -> Path:
    """One workflow copy for the control run; it must stay free of outputs."""
    return new_workflow_copy("config_control")


@pytest.fixture(scope="module")
def bad_config_runs(new_workflow_copy, snakemake) -> dict[str, tuple[Path, object]]:
    """Dry-run every bad config, a few at a time, each in its own workflow copy.

    Returns:
        ``{case id: (workflow copy, finished process)}``.
    """

    def dry_run(case: str, overrides) -> tuple[str, tuple[Path, object]]:
        workdir = new_workflow_copy(f"bad_{case}")
        text = overrides if isinstance(overrides, str) else yaml.safe_dump(overrides)
        (workdir / "bad_config.yaml").write_text(text)
        completed = snakemake(
            workdir,
            "--dry-run",
            "--configfile",
            "presets/tiny.yaml",
            "bad_config.yaml",
            check=False,
        )
        return case, (workdir, completed)

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        finished = pool.map(lambda case: dry_run(case[0], case[1]), BAD_CONFIGS)
        return dict(finished)


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("case", "expected"),
    [pytest.param(case, expected, id=case) for case, _, expected in BAD_CONFIGS],
)
def test_bad_config_stops_dry_run(bad_config_runs, case, expected):
    workdir, completed = bad_config_runs[case]
    assert_rejected(completed, expected, workdir)


@pytest.mark.workflow
def test_missing_key_stops_dry_run(workflow_copy, snakemake):
    config = yaml.safe_load((workflow_copy / "config.yaml").read_text())
    del config["growth"]["probes"]
    (workflow_copy / "config.yaml").write_text(yaml.safe_dump(config))
    completed = snakemake(workflow_copy, "--dry-run", check=False)
    assert_rejected(completed, ["growth.probes: missing", "required", "Rademacher probes"], workflow_copy)


@pytest.mark.workflow
def test_tiny_preset_passes_dry_run(shared_copy, snakemake):
    completed = snakemake(shared_copy, "--dry-run", "--configfile", "presets/tiny.yaml")
    assert "growth_seed" in completed.stdout
    assert not (shared_copy / "results").exists()


@pytest.mark.parametrize("preset", [None, "quick.yaml", "tiny.yaml"])
def test_shipped_configs_valid(preset):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if preset is not None:
        overrides = yaml.safe_load((REPO / "presets" / preset).read_text())
        config = merge(config, overrides)
    config_validation.validate_config(config, SCHEMA)


def merge(base: dict, overrides: dict) -> dict:
    """Merge `overrides` into a copy of `base` key by key, as Snakemake layers config files."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_all_problems_listed_at_once():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config = merge(config, {"device": "tpu", "growth": {"probes": 0, "bogus": 1}})
    with pytest.raises(ConfigError) as raised:
        config_validation.validate_config(config, SCHEMA)
    lines = str(raised.value).splitlines()
    assert lines[0] == "Invalid config (3 problems):"
    assert lines[1].startswith("  device: 'tpu'")
    assert lines[2].startswith("  growth.bogus: unknown key")
    assert lines[3].startswith("  growth.probes: 0 is too small")


def test_every_key_has_description():
    schema = config_validation.load_schema(SCHEMA)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    missing = []
    stack = [([], config)]
    while stack:
        path, value = stack.pop()
        if path and config_validation.describe_key(schema, path) is None:
            missing.append(config_validation.key_path(path))
        if isinstance(value, dict):
            stack.extend(([*path, key], child) for key, child in value.items())
    assert missing == []


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (["growth", "experiments", "softmax", "norm"], "growth.experiments.softmax.norm"),
        (["growth", "blocks", 1], "growth.blocks[1]"),
        ([], "(top level)"),
    ],
)
def test_key_path_format(parts, expected):
    assert config_validation.key_path(parts) == expected
