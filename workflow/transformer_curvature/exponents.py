"""Fitted growth exponents of block Hessian norms, checked against the theory.

For one block, matrix and layer, the exponent ``p`` of ``||block||_F ~ sigma**p``
is the least-squares slope of ``log(norm)`` against ``log(sigma)`` over the
sigmas up to ``fit_max_sigma``, with one intercept per seed (a fixed-effects
fit). With every seed measured at every sigma this is the slope through the
geometric mean over seeds. Points whose norm is not finite and positive are
skipped. The geometric mean is used instead of the arithmetic mean because the
norms are heavy-tailed: the embeddings are redrawn at every sigma, and a block
whose norm grows like ``sigma**p`` scatters over seeds by a factor that grows
with ``p``.

The standard error is the spread of the fitted slope over a bootstrap that
resamples seeds with replacement.

A block that the theory predicts to vanish is measured as zero when its norm is
at most ``zero_threshold`` times the norm of the same block of ``H`` at every
seed and sigma. Zero blocks get no fitted exponent.

This module imports no torch, so the table and figure jobs stay light.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import theory

EXPONENT_COLUMNS = (
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
)
"""Columns of ``exponents.tsv``, in order."""

NORM_COLUMNS = ("config", "seed", "layer", "block", "matrix", "sigma", "norm", "probe_stderr")
"""Columns of ``norms.tsv``, in order."""


@dataclass(frozen=True)
class AnalysisSettings:
    """Settings of the exponent fits and their check against theory: config ``analysis``."""

    fit_max_sigma: float
    """Largest sigma in the fit, inclusive: the small-sigma range where the theory holds."""
    min_fit_sigmas: int
    """Minimum number of sigmas in the fit range; with fewer, no exponent is fitted."""
    tolerance: float
    """A fit agrees with the theory when ``|fitted - theoretical| <= tolerance``."""
    zero_threshold: float
    """A block is zero when its norm is at most this fraction of the same block's ``||H||``."""
    bootstrap_resamples: int
    """Resamples of the seeds for the standard error of a fit."""
    bootstrap_seed: int
    """Seed of the bootstrap's random generator."""
    fit_max_sigma_by_grid: Mapping[str, float] = field(default_factory=dict)
    """Per sigma grid name, a `fit_max_sigma` that replaces the default for that grid."""

    @classmethod
    def from_config(cls, analysis: Mapping[str, Any]) -> AnalysisSettings:
        """Read the ``analysis`` section of the workflow's config."""
        return cls(
            fit_max_sigma=float(analysis["fit_max_sigma"]),
            min_fit_sigmas=int(analysis["min_fit_sigmas"]),
            tolerance=float(analysis["tolerance"]),
            zero_threshold=float(analysis["zero_threshold"]),
            bootstrap_resamples=int(analysis["bootstrap"]["resamples"]),
            bootstrap_seed=int(analysis["bootstrap"]["seed"]),
            fit_max_sigma_by_grid={
                str(grid): float(value)
                for grid, value in analysis.get("fit_max_sigma_by_grid", {}).items()
            },
        )

    def for_grid(self, grid: str) -> AnalysisSettings:
        """Return these settings with the fit range of sigma grid `grid`."""
        return replace(self, fit_max_sigma=self.fit_max_sigma_by_grid.get(grid, self.fit_max_sigma))


@dataclass(frozen=True)
class ExponentFit:
    """A fitted exponent, its bootstrap standard error and the data behind it."""

    exponent: float | None
    """The slope; None with fewer than ``min_fit_sigmas`` usable sigmas in range or no seed
    with two of them."""
    stderr: float | None
    """Bootstrap standard error over seeds; None without a fit or with one seed."""
    num_sigmas: int
    """Sigmas in the fit range with at least one usable norm."""
    num_seeds: int
    """Seeds that contribute to the fit (two or more usable sigmas in range)."""


def _check_norms(sigmas: np.ndarray, norms: np.ndarray) -> None:
    """Raise ValueError unless `norms` is ``[num_seeds, num_sigmas]`` for `sigmas`."""
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be 1-D, got shape {sigmas.shape}.")
    if norms.ndim != 2 or norms.shape[1] != sigmas.size:
        raise ValueError(
            f"norms must have shape [num_seeds, {sigmas.size}] (one row per seed, one "
            f"column per sigma), got {norms.shape}."
        )


def _within_seed_sums(
    sigmas: np.ndarray, norms: np.ndarray, max_sigma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return each seed's centred sums ``Sxy`` and ``Sxx`` and the mask of usable points.

    ``x = log(sigma)`` and ``y = log(norm)`` are centred within each seed over
    its usable points, so the pooled slope is ``sum Sxy / sum Sxx``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        usable = np.isfinite(norms) & (norms > 0) & (sigmas > 0) & (sigmas <= max_sigma)
        x = np.where(usable, np.log(np.where(sigmas > 0, sigmas, 1.0)), 0.0)
        y = np.where(usable, np.log(np.where(usable, norms, 1.0)), 0.0)
    counts = usable.sum(axis=1)
    safe_counts = np.maximum(counts, 1)[:, None]
    x_centred = np.where(usable, x - x.sum(axis=1, keepdims=True) / safe_counts, 0.0)
    y_centred = np.where(usable, y - y.sum(axis=1, keepdims=True) / safe_counts, 0.0)
    return (x_centred * y_centred).sum(axis=1), (x_centred**2).sum(axis=1), usable


def fit_exponent(
    sigmas: Sequence[float],
    norms: np.ndarray,
    max_sigma: float,
    min_sigmas: int,
    bootstrap_resamples: int = 0,
    bootstrap_seed: int = 0,
) -> ExponentFit:
    """Fit ``norm ~ sigma**p`` by least squares in log-log, one intercept per seed.

    Args:
        sigmas: The sigma grid, ``[num_sigmas]``.
        norms: Frobenius norms, ``[num_seeds, num_sigmas]``; NaN, inf and values
            that are not positive are skipped.
        max_sigma: Largest sigma in the fit, inclusive.
        min_sigmas: Minimum number of usable sigmas in range for a fit.
        bootstrap_resamples: Resamples of the seeds for the standard error; 0 for none.
        bootstrap_seed: Seed of the bootstrap, so the standard error is reproducible.

    Returns:
        The fit; its exponent is None with fewer than `min_sigmas` usable sigmas.

    Raises:
        ValueError: If the shapes do not match or `min_sigmas` is below 2.
    """
    if min_sigmas < 2:
        raise ValueError(f"min_sigmas ({min_sigmas}) must be at least 2 to fit a slope.")
    sigma_array = np.asarray(sigmas, dtype=float)
    norm_array = np.asarray(norms, dtype=float)
    _check_norms(sigma_array, norm_array)

    sxy, sxx, usable = _within_seed_sums(sigma_array, norm_array, max_sigma)
    num_sigmas = int(usable.any(axis=0).sum())
    # A seed with fewer than two usable sigmas has Sxx = 0 and adds nothing to the slope.
    num_seeds = int((sxx > 0).sum())
    if num_sigmas < min_sigmas or num_seeds == 0:
        return ExponentFit(None, None, num_sigmas, num_seeds)

    exponent = float(sxy.sum() / sxx.sum())
    stderr = None
    if bootstrap_resamples > 0 and num_seeds > 1:
        stderr = _bootstrap_stderr(sxy, sxx, bootstrap_resamples, bootstrap_seed)
    return ExponentFit(exponent, stderr, num_sigmas, num_seeds)


def _bootstrap_stderr(sxy: np.ndarray, sxx: np.ndarray, resamples: int, seed: int) -> float | None:
    """Return the standard deviation of the slope over resamples of the seeds.

    A resample draws as many seeds as there are, with replacement; its slope is
    ``sum_s count_s Sxy_s / sum_s count_s Sxx_s``. Resamples that contain only
    seeds without a usable pair of sigmas are dropped.
    """
    generator = np.random.default_rng(seed)
    num_seeds = sxy.size
    drawn = generator.integers(0, num_seeds, size=(resamples, num_seeds))
    counts = np.zeros((resamples, num_seeds))
    np.add.at(counts, (np.arange(resamples)[:, None], drawn), 1.0)
    denominators = counts @ sxx
    valid = denominators > 0
    if valid.sum() < 2:
        return None
    slopes = (counts[valid] @ sxy) / denominators[valid]
    return float(slopes.std(ddof=1))


def is_measured_zero(norms: np.ndarray, hessian_norms: np.ndarray, threshold: float) -> bool:
    """Return whether a block is zero: ``norm <= threshold * ||H||`` wherever both are finite.

    For the ``H`` block itself this holds only where ``||H||`` is exactly 0.
    A block without any finite pair of values is not called zero.
    """
    norm_array = np.asarray(norms, dtype=float)
    hessian_array = np.asarray(hessian_norms, dtype=float)
    if norm_array.shape != hessian_array.shape:
        raise ValueError(
            f"norms {norm_array.shape} and hessian_norms {hessian_array.shape} must have "
            "the same shape: one value per seed and sigma."
        )
    finite = np.isfinite(norm_array) & np.isfinite(hessian_array)
    if not finite.any():
        return False
    return bool(np.all(norm_array[finite] <= threshold * hessian_array[finite]))


@dataclass(frozen=True)
class BlockSetting:
    """Architecture facts that `theory.theoretical_exponent` reads for a configuration."""

    model: str
    norm: str
    linear_attention: bool
    num_layers: int

    @classmethod
    def from_config(cls, growth_config: Mapping[str, Any]) -> BlockSetting:
        """Read the fields of a growth configuration (a dict of ``GrowthConfig`` fields)."""
        return cls(
            model=growth_config["model"],
            norm=growth_config.get("norm", "none"),
            linear_attention=bool(growth_config.get("linear_attention", False)),
            num_layers=int(growth_config["num_layers"]),
        )


def check_against_theory(
    fit: ExponentFit,
    theory_exponent: float | None,
    theory_zero: bool,
    measured_zero: bool,
    tolerance: float,
) -> bool | None:
    """Return whether a measurement agrees with the theory, or None where nothing is checked.

    A predicted zero block agrees when it is measured zero. A predicted
    exponent agrees when the fit lies within `tolerance` of it; a block
    measured zero disagrees, and a block without a fit is not checked.
    """
    if theory_zero:
        return measured_zero
    if theory_exponent is None:
        return None
    if measured_zero:
        return False
    if fit.exponent is None:
        return None
    return abs(fit.exponent - theory_exponent) <= tolerance


def exponent_row(
    config_name: str,
    setting: BlockSetting,
    block: str,
    matrix: str,
    layer: int,
    sigmas: Sequence[float],
    norms: np.ndarray,
    hessian_norms: np.ndarray,
    analysis: AnalysisSettings,
) -> dict[str, Any]:
    """Fit one block, matrix and layer and compare it with the theory.

    Args:
        config_name: The configuration's name, for the ``config`` column.
        setting: The configuration, for the theory.
        block, matrix, layer: What the row describes; `layer` is 0-based.
        sigmas: The sigma grid.
        norms: ``[num_seeds, num_sigmas]`` norms of this block and matrix.
        hessian_norms: ``[num_seeds, num_sigmas]`` norms of the same block of ``H``.
        analysis: Fit range, tolerance, zero threshold and bootstrap settings.

    Returns:
        One row with the keys of `EXPONENT_COLUMNS`; missing values are None.
    """
    theory_arguments = dict(
        model=setting.model,
        block=block,
        matrix=matrix,
        norm=setting.norm,
        linear_attention=setting.linear_attention,
        num_layers=setting.num_layers,
        layer=layer,
    )
    theory_zero = theory.is_zero_block(**theory_arguments)
    theory_exponent = theory.theoretical_exponent(**theory_arguments)
    measured_zero = is_measured_zero(norms, hessian_norms, analysis.zero_threshold)
    if measured_zero:
        fit = ExponentFit(None, None, 0, 0)
    else:
        fit = fit_exponent(
            sigmas,
            norms,
            analysis.fit_max_sigma,
            analysis.min_fit_sigmas,
            analysis.bootstrap_resamples,
            analysis.bootstrap_seed,
        )
    return {
        "config": config_name,
        "layer": layer,
        "block": block,
        "matrix": matrix,
        "fitted_exponent": fit.exponent,
        "stderr": fit.stderr,
        "theory_exponent": theory_exponent,
        "within_tolerance": check_against_theory(
            fit, theory_exponent, theory_zero, measured_zero, analysis.tolerance
        ),
        "theory_zero": theory_zero,
        "measured_zero": measured_zero,
        "num_sigmas": fit.num_sigmas,
        "num_seeds": fit.num_seeds,
    }


def stack_seed_norms(per_seed: Sequence[Mapping[str, Any]], key: str = "norms") -> dict:
    """Stack per-seed results into ``{block: {matrix: [num_seeds, num_layers, num_sigmas]}}``.

    Args:
        per_seed: Results of the growth jobs of one configuration, in seed order.
        key: ``norms`` or ``probe_stderr``.

    Raises:
        ValueError: If there is no result or the seeds disagree on blocks, matrices or shapes.
    """
    if not per_seed:
        raise ValueError("no per-seed result to stack. Run the growth jobs of this configuration.")
    first = per_seed[0]
    stacked = {}
    for block, matrices in first[key].items():
        stacked[block] = {}
        for matrix in matrices:
            arrays = []
            for result in per_seed:
                if block not in result[key] or matrix not in result[key][block]:
                    raise ValueError(
                        f"seed {result['seed']} of {result['config']} lacks {key}[{block!r}]"
                        f"[{matrix!r}] that seed {first['seed']} contains; rerun its growth job."
                    )
                arrays.append(np.asarray(result[key][block][matrix], dtype=float))
            shapes = {array.shape for array in arrays}
            if len(shapes) != 1:
                raise ValueError(
                    f"{result['config']}: {key}[{block!r}][{matrix!r}] has shapes {sorted(shapes)} "
                    "across seeds; every seed needs [num_layers, num_sigmas]. Rerun the growth "
                    "jobs."
                )
            stacked[block][matrix] = np.stack(arrays)
    return stacked


def configuration_rows(
    config_name: str,
    setting: BlockSetting,
    per_seed: Sequence[Mapping[str, Any]],
    analysis: AnalysisSettings,
) -> list[dict[str, Any]]:
    """Return the exponent rows of one configuration: layers, then blocks, then matrices.

    Raises:
        ValueError: If the seeds disagree on their sigmas or lack the ``H`` matrix.
    """
    sigmas = np.asarray(per_seed[0]["sigmas"], dtype=float)
    for result in per_seed[1:]:
        if not np.array_equal(np.asarray(result["sigmas"], dtype=float), sigmas):
            raise ValueError(
                f"{config_name}: seeds {per_seed[0]['seed']} and {result['seed']} were run "
                "on different sigma grids; rerun the growth jobs of this configuration."
            )
    norms = stack_seed_norms(per_seed)
    rows = []
    for layer in range(setting.num_layers):
        for block, matrices in norms.items():
            if "H" not in matrices:
                raise ValueError(
                    f"{config_name}: block {block!r} lacks the matrix 'H' that zero blocks "
                    "are measured against; rerun the growth jobs."
                )
            for matrix in _ordered_matrices(matrices):
                rows.append(
                    exponent_row(
                        config_name,
                        setting,
                        block,
                        matrix,
                        layer,
                        sigmas,
                        matrices[matrix][:, layer, :],
                        matrices["H"][:, layer, :],
                        analysis,
                    )
                )
    return rows


def _ordered_matrices(matrices: Mapping[str, Any]) -> list[str]:
    """Return the matrices present in the order ``H``, ``H_o``, ``H_f``."""
    return [matrix for matrix in theory.MATRICES if matrix in matrices]


def norm_rows(per_seed: Sequence[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """Yield one row per seed, layer, block, matrix and sigma with its norm and probe error."""
    for result in per_seed:
        sigmas = np.asarray(result["sigmas"], dtype=float)
        for block, matrices in result["norms"].items():
            for matrix in _ordered_matrices(matrices):
                values = np.asarray(matrices[matrix], dtype=float)
                stderrs = np.asarray(result["probe_stderr"][block][matrix], dtype=float)
                for layer in range(values.shape[0]):
                    for index, sigma in enumerate(sigmas):
                        yield {
                            "config": result["config"],
                            "seed": int(result["seed"]),
                            "layer": layer,
                            "block": block,
                            "matrix": matrix,
                            "sigma": float(sigma),
                            "norm": float(values[layer, index]),
                            "probe_stderr": float(stderrs[layer, index]),
                        }


def fitted_exponents_for_figure(
    results: Mapping[str, Mapping[str, Mapping[int, Mapping[int, Sequence[float]]]]],
    sigmas: Sequence[float],
    analysis: AnalysisSettings,
) -> dict[tuple[str, str, int], float]:
    """Fit every block, matrix and layer of a growth figure's results.

    Args:
        results: ``results[block][matrix]`` in the authors' layout
            ``{layer: {repeat: [norm per sigma]}}``.
        sigmas: The sigma grid.
        analysis: Fit range and zero threshold; no bootstrap is run.

    Returns:
        Fitted exponents keyed by ``(block, matrix, layer)``, for
        `plotting.plot_growth`. Zero blocks and blocks without a fit are left out.
    """
    fitted = {}
    for block, matrices in results.items():
        hessian = matrices.get("H")
        for matrix, layers in matrices.items():
            for layer, repeats in layers.items():
                norms = _repeats_as_array(repeats)
                if hessian is not None and is_measured_zero(
                    norms, _repeats_as_array(hessian[layer]), analysis.zero_threshold
                ):
                    continue
                fit = fit_exponent(sigmas, norms, analysis.fit_max_sigma, analysis.min_fit_sigmas)
                if fit.exponent is not None and math.isfinite(fit.exponent):
                    fitted[block, matrix, int(layer)] = fit.exponent
    return fitted


def _repeats_as_array(repeats: Mapping[int, Sequence[float]]) -> np.ndarray:
    """Return ``{repeat: [norm per sigma]}`` as ``[num_repeats, num_sigmas]``, repeats in order."""
    return np.array([repeats[repeat] for repeat in sorted(repeats)], dtype=float)


def group_by_config(
    per_seed: Sequence[Mapping[str, Any]], config_names: Sequence[str]
) -> dict[str, list[Mapping[str, Any]]]:
    """Group per-seed results by configuration, in the order of `config_names`, seeds ascending.

    Raises:
        ValueError: If a result belongs to no configuration in `config_names`,
            or a configuration has no result.
    """
    grouped: dict[str, list[Mapping[str, Any]]] = {name: [] for name in config_names}
    for result in per_seed:
        if result["config"] not in grouped:
            raise ValueError(
                f"a result of seed {result['seed']} belongs to configuration "
                f"{result['config']!r}, which is not in the config's growth experiments; "
                "delete the stale result or add the configuration."
            )
        grouped[result["config"]].append(result)
    missing = [name for name, results in grouped.items() if not results]
    if missing:
        raise ValueError(f"no per-seed result for {missing}; run their growth jobs first.")
    return {name: sorted(results, key=lambda r: r["seed"]) for name, results in grouped.items()}
