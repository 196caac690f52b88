"""Expand the workflow's config into growth configurations, names and paths.

This module imports no torch, so the Snakefile can import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DENSE_EXPERIMENTS = ("heterogeneity", "histograms")

# Authors' result-file suffixes: block letter and matrix suffix.
BLOCK_LETTERS = {"query": "q", "key": "k", "value": "v", "output": "o"}
MATRIX_SUFFIXES = {"H": "", "H_o": "_outer", "H_f": "_func"}


class ConfigError(ValueError):
    """A config value the workflow cannot run."""


@dataclass(frozen=True)
class GrowthConfig:
    """One growth-rate configuration: an architecture, a depth and a sigma grid."""

    experiment: str
    """Key in ``growth.experiments``; its batches and base seed are shared."""
    model: str
    """``transformer`` or ``mlp``."""
    num_layers: int
    sigma_grid: str
    """Key in ``sigma_grids``."""
    norm: str = "none"
    linear_attention: bool = False
    residual_scaling: float = 1.0
    loss: str = "ce"
    dtype: str = "float32"

    @property
    def name(self) -> str:
        """File-name stem, with values as Python writes them (``1.0``, ``False``)."""
        if self.model == "mlp":
            return f"mlp_num_layers={self.num_layers}"
        return (
            f"norm={self.norm}_num_layers={self.num_layers}_scale={self.sigma_grid}"
            f"_residual_scaling={float(self.residual_scaling)}"
            f"_linear_attention={bool(self.linear_attention)}_loss={self.loss}"
        )


def sigma_values(grid: dict[str, Any]) -> np.ndarray:
    """Return the sigmas of a grid ``{spacing, start, stop, num}``."""
    if grid["spacing"] == "log":
        return np.logspace(np.log10(grid["start"]), np.log10(grid["stop"]), grid["num"])
    return np.linspace(grid["start"], grid["stop"], grid["num"])


def growth_configs(config: dict[str, Any]) -> dict[str, GrowthConfig]:
    """Expand ``growth.experiments`` into configurations, keyed by name."""
    configs: dict[str, GrowthConfig] = {}
    for experiment, settings in config["growth"]["experiments"].items():
        for num_layers in settings["num_layers"]:
            for grid in settings["sigma_grids"]:
                growth_config = GrowthConfig(
                    experiment=experiment,
                    model=settings["model"],
                    num_layers=int(num_layers),
                    sigma_grid=grid,
                    norm=settings.get("norm", "none"),
                    linear_attention=bool(settings.get("linear_attention", False)),
                    residual_scaling=float(settings.get("residual_scaling", 1.0)),
                    loss=settings["loss"],
                    dtype=settings.get("dtype", "float32"),
                )
                if growth_config.name in configs:
                    other = configs[growth_config.name].experiment
                    raise ConfigError(
                        f"growth.experiments: {experiment!r} and {other!r} both "
                        f"define {growth_config.name!r}; remove it from one of them."
                    )
                configs[growth_config.name] = growth_config
    return configs


def seeds(config: dict[str, Any], growth_config: GrowthConfig) -> list[int]:
    """Return the absolute seeds of a configuration's repeats."""
    base_seed = config["growth"]["experiments"][growth_config.experiment]["data"]["seed"]
    return [base_seed + repeat for repeat in range(config["growth"]["repeats"])]


def data_settings(config: dict[str, Any], experiment: str) -> dict[str, int]:
    """Return ``{batch_size, num_batches, seed}`` of a growth or dense experiment."""
    if experiment in DENSE_EXPERIMENTS:
        return config["dense"][experiment]["data"]
    return config["growth"]["experiments"][experiment]["data"]


def output_dirs(config: dict[str, Any]) -> tuple[Path, Path]:
    """Return ``(results, figures)`` folders: ``results/<preset>``, ``figures/<preset>``."""
    preset = config.get("preset") or ""
    return Path("results", preset), Path("figures", preset)


def check_config(config: dict[str, Any]) -> None:
    """Check what the JSON schema cannot: names that refer to other keys.

    Raises:
        ConfigError: Naming the key, the value and the allowed values.
    """
    grids = sorted(config["sigma_grids"])
    for experiment, settings in config["growth"]["experiments"].items():
        if experiment in DENSE_EXPERIMENTS:
            raise ConfigError(
                f"growth.experiments.{experiment}: the name is taken by a dense "
                f"experiment; use a name other than {list(DENSE_EXPERIMENTS)}."
            )
        for grid in settings["sigma_grids"]:
            if grid not in grids:
                raise ConfigError(
                    f"growth.experiments.{experiment}.sigma_grids: unknown sigma "
                    f"grid {grid!r}; known grids (sigma_grids): {grids}."
                )
        if settings["model"] == "mlp" and settings["loss"] != "mse":
            raise ConfigError(
                f"growth.experiments.{experiment}.loss: the MLP baseline supports "
                f"only 'mse', not {settings['loss']!r}."
            )
    for name, grid in config["sigma_grids"].items():
        if grid["stop"] <= grid["start"]:
            raise ConfigError(
                f"sigma_grids.{name}: stop ({grid['stop']}) must be greater than "
                f"start ({grid['start']})."
            )
    for grid in config["analysis"].get("fit_max_sigma_by_grid", {}):
        if grid not in grids:
            raise ConfigError(
                f"analysis.fit_max_sigma_by_grid: unknown sigma grid {grid!r}; "
                f"known grids (sigma_grids): {grids}."
            )
    blocks = config["growth"]["blocks"]
    if len(set(blocks)) != len(blocks):
        raise ConfigError(f"growth.blocks: {blocks} lists a block twice.")
    growth_configs(config)


def result_file_names(growth_config: GrowthConfig, blocks: list[str]) -> dict[tuple[str, str], str]:
    """Map ``(block, matrix)`` to the authors' result-file suffix, e.g. ``frob_q_outer``."""
    if growth_config.model == "mlp":
        return {("mlp", "H"): "frob_mlp"}
    return {
        (block, matrix): f"frob_{BLOCK_LETTERS[block]}{suffix}"
        for block in blocks
        for matrix, suffix in MATRIX_SUFFIXES.items()
    }
