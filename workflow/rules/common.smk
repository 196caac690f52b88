import dataclasses
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir, "workflow")))
from transformer_curvature import config_validation, experiments  # noqa: E402
from transformer_curvature.results_io import (
    ResultWriteError,
    check_output_dir,
)  # noqa: E402

# The quick preset's results take 124 MB, 123 MB of them dense Hessians
# (dense.d_model 16, as in the paper's settings). 256 MiB leaves room for logs.
MIN_FREE_BYTES = 256 * 2**20

# Every key is checked before any job is built: a wrong value stops the run
# with its key path, the value and what is allowed.
try:
    config_validation.validate_config(
        config, Path(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
    )
    experiments.check_config(config)
except experiments.ConfigError as error:
    message = str(error)
    if not message.startswith("Invalid config"):
        message = f"Invalid config (1 problem):\n  {message}"
    raise WorkflowError(message) from None

RESULTS, FIGURES = (str(path) for path in experiments.output_dirs(config))
try:
    for output_dir in (RESULTS, FIGURES):
        check_output_dir(output_dir, MIN_FREE_BYTES)
except ResultWriteError as error:
    raise WorkflowError(str(error)) from None

GROWTH = experiments.growth_configs(config)
ATTENTION_CONFIGS = [name for name, spec in GROWTH.items() if spec.model != "mlp"]
MLP_CONFIGS = [name for name, spec in GROWTH.items() if spec.model == "mlp"]
DATA_EXPERIMENTS = list(config["growth"]["experiments"]) + list(
    experiments.DENSE_EXPERIMENTS
)


def one_of(names):
    """Return a wildcard regex that matches exactly one of `names`."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def package_sources(*modules):
    """Return the package modules a rule's results depend on, so edits rerun it.

    The paths are relative to the working directory where they can be, so a
    moved checkout does not count as changed input.
    """
    package = Path(workflow.basedir, "workflow", "transformer_curvature")
    return [
        os.path.relpath(package / f"{module}.py") for module in ("__init__",) + modules
    ]


wildcard_constraints:
    config=one_of(GROWTH),
    seed=r"\d+",
    experiment=one_of(DATA_EXPERIMENTS),


def sigmas(name):
    """Return the sigma grid of a configuration as a list of floats."""
    grid = config["sigma_grids"][GROWTH[name].sigma_grid]
    return [float(sigma) for sigma in experiments.sigma_values(grid)]


def growth_data(wildcards):
    return f"{RESULTS}/data/{GROWTH[wildcards.config].experiment}.npy"


def growth_seed_results(wildcards):
    spec = GROWTH[wildcards.config]
    return [
        f"{RESULTS}/growth/{wildcards.config}/seed={seed}.pickle"
        for seed in experiments.seeds(config, spec)
    ]


def growth_settings(wildcards):
    """Return the part of the ``growth`` section that one configuration's jobs use."""
    keys = (
        "d_model",
        "mlp_ratio",
        "probes",
        "estimator",
        "exact_max_size",
        "chunk_size",
        "random_draws",
    )
    settings = {key: config["growth"][key] for key in keys}
    is_mlp = GROWTH[wildcards.config].model == "mlp"
    settings["blocks"] = ["mlp"] if is_mlp else list(config["growth"]["blocks"])
    return settings


def attention_result_files(pattern):
    """Map the authors' result names (``frob_q_outer``, ...) to paths for `pattern`."""
    spec = next((GROWTH[name] for name in ATTENTION_CONFIGS), None)
    if spec is None:
        return {}
    names = experiments.result_file_names(spec, config["growth"]["blocks"]).values()
    return {name: pattern.format(name=name) for name in names}


def all_figures():
    figures = [
        f"{FIGURES}/heterogeneity.pdf",
        f"{FIGURES}/histogram_classical.pdf",
        f"{FIGURES}/histogram_linear.pdf",
    ]
    figures += [f"{FIGURES}/{name}__all.pdf" for name in ATTENTION_CONFIGS]
    figures += [f"{FIGURES}/{name}_frob_mlp.pdf" for name in MLP_CONFIGS]
    return figures
