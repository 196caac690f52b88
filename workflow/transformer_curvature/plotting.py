"""Figures of the growth-rate experiment and of the two dense-matrix experiments.

Figures are drawn on matplotlib's Agg canvas without pyplot, so no display is
needed. Text goes through LaTeX when a ``latex`` executable is on the PATH and
through mathtext otherwise; labels use only commands that both understand.

Growth results use the layout ``{layer: {repeat: [norm per sigma]}}`` with
0-based integer layers and repeats, and Frobenius norms (not squared).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager

import cv2
import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from scipy import stats

from . import theory
from .results_io import atomic_write_bytes

logger = logging.getLogger(__name__)

LayerResults = Mapping[int, Mapping[int, Sequence[float]]]
"""Norms of one block and matrix: ``{layer: {repeat: [value per sigma]}}``."""

BLOCK_ORDER = ("value", "query", "key", "output")
MATRIX_ORDER = ("H_o", "H_f", "H")
BLOCK_COLORS = {
    "value": "#7570b3",
    "query": "#1b9e77",
    "key": "#d95f02",
    "output": "#e7298a",
    "mlp": "#1f78b4",
}
MATRIX_TITLES = {
    "H_o": r"$\mathbf{H}_{\mathrm{o}}$",
    "H_f": r"$\mathbf{H}_{\mathrm{f}}$",
    "H": r"$\mathbf{H}$",
}
NORM_LABEL = r"Block $\|\cdot\|_{\mathrm{F}}$"

# Guide lines sit this factor below the data point they are anchored to.
GUIDE_OFFSET_LOG = 0.1
GUIDE_OFFSET_LINEAR = 0.5

# Dense-matrix figures show log10(|H| + LOG_EPSILON), blurred over BLUR_KERNEL pixels.
LOG_EPSILON = 1e-6
BLUR_KERNEL = (5, 5)

HISTOGRAM_BINS = 50
HISTOGRAM_FLOOR = 1e-8
BACKGROUND_ALPHA = 0.4
HISTOGRAM_LAYOUTS = ("stacked", "side_by_side")


def _style(font_size: float) -> AbstractContextManager:
    """Return an rc context with LaTeX text if ``latex`` is installed, mathtext otherwise."""
    use_latex = shutil.which("latex") is not None
    params = {
        "font.size": font_size,
        "font.family": "serif",
        "mathtext.fontset": "cm",
        "text.usetex": use_latex,
    }
    if use_latex:
        params["text.latex.preamble"] = r"\usepackage{amsmath}"
    return matplotlib.rc_context(params)


def _new_figure(**subplot_options) -> tuple[Figure, np.ndarray]:
    """Create a figure on an Agg canvas and its grid of axes (always a 2-D array)."""
    figure = Figure(figsize=subplot_options.pop("figsize"), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(squeeze=False, **subplot_options)
    return figure, axes


def _save_pdf(figure: Figure, output_path: str | os.PathLike, title: str) -> None:
    """Write the figure as a PDF, atomically and without a creation date."""
    buffer = io.BytesIO()
    metadata = {"Title": title, "CreationDate": None}
    figure.savefig(buffer, format="pdf", bbox_inches="tight", metadata=metadata)
    atomic_write_bytes(output_path, buffer.getvalue())
    logger.info("Wrote %s", output_path)


def _check_sigmas(sigmas: Sequence[float], log_axes: bool) -> np.ndarray:
    """Return the sigmas as a 1-D float array, or raise ValueError."""
    sigma_array = np.asarray(sigmas, dtype=float)
    if sigma_array.ndim != 1 or sigma_array.size == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D sequence, got shape {sigma_array.shape}.")
    if log_axes and not np.all(sigma_array > 0):
        raise ValueError(
            f"sigmas must be positive for log axes, got minimum {sigma_array.min()}. "
            "Pass log_axes=False for a grid that contains 0 or negative values."
        )
    return sigma_array


def _check_layers(layer_results: LayerResults, num_layers: int, where: str) -> None:
    """Raise ValueError unless the results contain exactly layers 0..num_layers-1."""
    layers = sorted(layer_results)
    if layers != list(range(num_layers)):
        raise ValueError(
            f"{where}: results contain layers {layers}, expected 0..{num_layers - 1} "
            f"for a {num_layers}-layer model. Check num_layers against the result file."
        )


def layer_mean_and_sem(
    repeats: Mapping[int, Sequence[float]], num_sigmas: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the mean over repeats per sigma and its standard error (None for one repeat).

    Raises:
        ValueError: If there is no repeat or a repeat does not hold one value per sigma.
    """
    if not repeats:
        raise ValueError(
            "a layer contains no repeats. Rerun the growth jobs of this configuration."
        )
    values = [np.asarray(repeats[repeat], dtype=float) for repeat in sorted(repeats)]
    for repeat, row in zip(sorted(repeats), values):
        if row.shape != (num_sigmas,):
            raise ValueError(
                f"repeat {repeat} contains {row.shape} values, expected one per sigma "
                f"({num_sigmas}). Check that the sigma grid matches the result file."
            )
    table = np.stack(values)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = table.mean(axis=0)
        if len(table) < 2:
            return mean, None
        return mean, stats.sem(table, axis=0)


def _plottable(mean: np.ndarray, log_axes: bool) -> np.ndarray:
    """Return the mask of the points that can be drawn: finite, and positive on log axes."""
    keep = np.isfinite(mean)
    if log_axes:
        keep &= mean > 0
    return keep


def _layer_alpha(layer: int, num_layers: int) -> float:
    """Return an opacity that rises with depth, from 0.35 towards 1 in the last layer."""
    return 0.35 + 0.65 * (layer + 1) / num_layers


def _set_scales(ax: Axes, sigmas: np.ndarray, log_axes: bool) -> None:
    """Set log or linear scales, the sigma range and the dotted line at sigma = 1."""
    if log_axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        if np.log10(sigmas.max() / sigmas.min()) <= 2:
            # Within two decades, label 1, 2 and 5 times each power of ten instead of crowded minors.
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(x=1.0, color="black", linestyle="dotted", linewidth=1)
    ax.set_xlim(sigmas.min(), sigmas.max())


def _draw_guide(
    ax: Axes,
    sigmas: np.ndarray,
    mean: np.ndarray,
    keep: np.ndarray,
    exponent: float,
    log_axes: bool,
) -> np.ndarray:
    """Draw a dashed ``sigma**exponent``, anchored below the curve at its smallest kept sigma.

    Returns:
        The guide's values, one per sigma.
    """
    anchor = int(np.flatnonzero(keep)[0])
    offset = GUIDE_OFFSET_LOG if log_axes else GUIDE_OFFSET_LINEAR
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        scale = offset * mean[anchor] / sigmas[anchor] ** exponent
        guide = scale * sigmas**exponent
    ax.plot(sigmas, guide, color="gray", linestyle="dashed", linewidth=1, alpha=0.6)
    return guide


def _keep_in_view(ax: Axes, limits: tuple[float, float], anchors: list[float]) -> None:
    """Restore the data's y-limits, lowered on log axes to show the guides' anchors."""
    low, high = limits
    positive = [value for value in anchors if np.isfinite(value) and value > 0]
    if positive and ax.get_yscale() == "log":
        low = min(low, 0.5 * min(positive))
    ax.set_ylim(low, high)


def _label_guide(ax: Axes, sigmas: np.ndarray, guide: np.ndarray, exponent: float) -> None:
    """Write ``sigma^p`` just below the guide at the largest sigma where it is in view."""
    low, high = ax.get_ylim()
    with np.errstate(invalid="ignore"):
        in_view = np.flatnonzero(np.isfinite(guide) & (guide >= low) & (guide <= high))
    if in_view.size == 0:
        return
    index = int(in_view[-1])
    ax.text(
        sigmas[index],
        guide[index],
        rf"$\sigma^{{{exponent:g}}}$",
        color="dimgray",
        fontsize="small",
        ha="right",
        va="top",
        clip_on=True,
    )


def _draw_growth_panel(
    ax: Axes,
    layer_results: LayerResults,
    sigmas: np.ndarray,
    color: str,
    exponents: Sequence[float | None],
    log_axes: bool,
) -> int:
    """Draw one line per layer with error bars and the theoretical guides.

    Returns:
        The number of points skipped because their mean is not finite or, on
        log axes, not positive.
    """
    num_layers = len(exponents)
    skipped = 0
    curves = []
    for layer in range(num_layers):
        mean, sem = layer_mean_and_sem(layer_results[layer], sigmas.size)
        keep = _plottable(mean, log_axes)
        skipped += int((~keep).sum())
        curves.append((mean, keep))
        if not keep.any():
            continue
        ax.errorbar(
            sigmas[keep],
            mean[keep],
            yerr=None if sem is None else sem[keep],
            color=color,
            alpha=_layer_alpha(layer, num_layers),
            label=str(layer + 1),
        )

    # The guides must not rescale the axes: they can span many more decades than the data.
    limits = ax.get_ylim()
    guides: dict[float, np.ndarray] = {}
    anchors = []
    for (mean, keep), exponent in zip(curves, exponents):
        if exponent is None or not keep.any():
            continue
        guide = _draw_guide(ax, sigmas, mean, keep, exponent, log_axes)
        anchors.append(float(guide[np.flatnonzero(keep)[0]]))
        guides.setdefault(exponent, guide)
    _keep_in_view(ax, limits, anchors)
    for exponent, guide in guides.items():
        _label_guide(ax, sigmas, guide, exponent)
    return skipped


def _annotate_zero_layers(ax: Axes, zero_layers: Sequence[int], num_layers: int) -> None:
    """Mark a panel whose block the theory predicts to be exactly zero in some layers."""
    if not zero_layers:
        return
    text = "zero (theory)"
    if num_layers > 1:
        names = ", ".join(str(layer + 1) for layer in zero_layers)
        text = f"layer {names}: {text}"
    ax.text(0.5, 0.95, text, transform=ax.transAxes, ha="center", va="top", fontsize="small")


def _annotate_fits(ax: Axes, fits: Sequence[float]) -> None:
    """Write fitted exponents, in layer order, in the panel's lower right corner."""
    if not fits:
        return
    text = "fit: " + ", ".join(f"{value:.2f}" for value in fits)
    ax.text(
        0.97,
        0.05,
        text,
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        color="dimgray",
        fontsize="small",
    )


def _add_layer_legend(ax: Axes, num_layers: int) -> None:
    """Add a legend titled 'Layer' when there is more than one layer."""
    if num_layers > 1:
        ax.legend(loc="upper left", title="Layer", fontsize="x-small", title_fontsize="x-small")


def _add_skipped_note(figure: Figure, skipped: int) -> None:
    """State under the figure how many points were left out."""
    if skipped == 0:
        return
    logger.warning("%d points not shown: mean not finite, or not positive on log axes", skipped)
    point_word = "point" if skipped == 1 else "points"
    figure.text(
        0.01,
        0.0,
        f"{skipped} {point_word} not shown: mean not finite, or not positive on log axes.",
        fontsize="x-small",
        ha="left",
        va="top",
    )


def _draw_growth_cell(
    ax: Axes,
    layer_results: LayerResults,
    sigmas: np.ndarray,
    block: str,
    matrix: str,
    setting: Mapping[str, object],
    log_axes: bool,
    fitted: Mapping[tuple[str, str, int], float] | None,
) -> int:
    """Draw one block and matrix with its theory, and return the number of skipped points.

    `setting` contains the ``model``, ``norm``, ``linear_attention`` and
    ``num_layers`` arguments of `theory.theoretical_exponent`.
    """
    num_layers = setting["num_layers"]
    _check_layers(layer_results, num_layers, f"results[{block!r}][{matrix!r}]")
    layers = range(num_layers)
    exponents = [
        theory.theoretical_exponent(block=block, matrix=matrix, layer=layer, **setting)
        for layer in layers
    ]
    zero_layers = [
        layer
        for layer in layers
        if theory.is_zero_block(block=block, matrix=matrix, layer=layer, **setting)
    ]
    fitted = fitted or {}
    fits = [fitted[block, matrix, layer] for layer in layers if (block, matrix, layer) in fitted]

    _set_scales(ax, sigmas, log_axes)
    skipped = _draw_growth_panel(
        ax, layer_results, sigmas, BLOCK_COLORS[block], exponents, log_axes
    )
    _annotate_zero_layers(ax, zero_layers, num_layers)
    _annotate_fits(ax, fits)
    return skipped


def _growth_blocks(results: Mapping[str, Mapping[str, LayerResults]]) -> list[str]:
    """Return the blocks present, in row order, or raise ValueError."""
    unknown = sorted(set(results) - set(BLOCK_ORDER))
    if unknown:
        raise ValueError(
            f"results contain unknown blocks {unknown}. Expected some of {BLOCK_ORDER}."
        )
    blocks = [block for block in BLOCK_ORDER if block in results]
    if not blocks:
        raise ValueError(f"results contain no block. Expected some of {BLOCK_ORDER}.")
    for block in blocks:
        missing = [matrix for matrix in MATRIX_ORDER if matrix not in results[block]]
        if missing:
            raise ValueError(
                f"results[{block!r}] lacks matrices {missing}. Each block needs {MATRIX_ORDER}."
            )
    return blocks


def build_growth_figure(
    results: Mapping[str, Mapping[str, LayerResults]],
    sigmas: Sequence[float],
    *,
    model: str = "transformer",
    norm: str,
    linear_attention: bool,
    num_layers: int,
    log_axes: bool,
    fitted: Mapping[tuple[str, str, int], float] | None = None,
) -> Figure:
    """Build the growth figure: one row per block (value, query, key, output), columns H_o, H_f, H.

    Args:
        results: ``results[block][matrix]`` in the layout ``{layer: {repeat: [norm per sigma]}}``.
        sigmas: The embedding scales, one per value of a repeat.
        model, norm, linear_attention, num_layers: The configuration, for the
            theoretical exponents and zero blocks of ``theory``.
        log_axes: Log-log axes for log grids, linear axes otherwise.
        fitted: Optional fitted exponents keyed by ``(block, matrix, layer)``.

    Raises:
        ValueError: If blocks, matrices, layers or repeats do not match the arguments.
    """
    sigma_array = _check_sigmas(sigmas, log_axes)
    blocks = _growth_blocks(results)
    setting = {
        "model": model,
        "norm": norm,
        "linear_attention": linear_attention,
        "num_layers": num_layers,
    }
    with _style(font_size=16):
        figure, axes = _new_figure(
            nrows=len(blocks), ncols=len(MATRIX_ORDER), figsize=(12, 2.2 * len(blocks)), sharex=True
        )
        skipped = 0
        for row, block in enumerate(blocks):
            for column, matrix in enumerate(MATRIX_ORDER):
                ax = axes[row, column]
                skipped += _draw_growth_cell(
                    ax,
                    results[block][matrix],
                    sigma_array,
                    block,
                    matrix,
                    setting,
                    log_axes,
                    fitted,
                )
                if row == 0:
                    ax.set_title(MATRIX_TITLES[matrix])
                if row == len(blocks) - 1:
                    ax.set_xlabel(r"$\sigma$")
            axes[row, 0].set_ylabel(block)
            _add_layer_legend(axes[row, 0], num_layers)
        figure.supylabel(NORM_LABEL)
        _add_skipped_note(figure, skipped)
    return figure


def plot_growth(
    results: Mapping[str, Mapping[str, LayerResults]],
    sigmas: Sequence[float],
    config_name: str,
    *,
    model: str = "transformer",
    norm: str,
    linear_attention: bool,
    num_layers: int,
    log_axes: bool,
    output_path: str | os.PathLike,
    fitted: Mapping[tuple[str, str, int], float] | None = None,
) -> None:
    """Build the growth figure of one configuration and save it as a PDF.

    `config_name` becomes the PDF's title metadata. The other arguments are
    those of `build_growth_figure`.
    """
    logger.info("Plotting growth figure of %s", config_name)
    with _style(font_size=16):
        figure = build_growth_figure(
            results,
            sigmas,
            model=model,
            norm=norm,
            linear_attention=linear_attention,
            num_layers=num_layers,
            log_axes=log_axes,
            fitted=fitted,
        )
        _save_pdf(figure, output_path, config_name)


def build_mlp_growth_figure(
    results_mlp: LayerResults,
    sigmas: Sequence[float],
    fitted: Sequence[float | None] | None = None,
) -> Figure:
    """Build the MLP baseline's figure: ``||H||_F`` per layer against sigma, log-log.

    `fitted` holds an optional fitted exponent per layer (None where there is
    no fit); the panel lists them beside the guide lines.

    Raises:
        ValueError: If the layers are not 0..L-1 or a repeat has the wrong length.
    """
    sigma_array = _check_sigmas(sigmas, log_axes=True)
    num_layers = len(results_mlp)
    _check_layers(results_mlp, num_layers, "MLP results")
    exponents = [
        theory.theoretical_exponent("mlp", "mlp", "H", "none", False, num_layers, layer)
        for layer in range(num_layers)
    ]
    with _style(font_size=16):
        figure, axes = _new_figure(nrows=1, ncols=1, figsize=(5, 3))
        ax = axes[0, 0]
        _set_scales(ax, sigma_array, log_axes=True)
        skipped = _draw_growth_panel(
            ax, results_mlp, sigma_array, BLOCK_COLORS["mlp"], exponents, log_axes=True
        )
        _annotate_fits(ax, [fit for fit in fitted or () if fit is not None])
        ax.set_title(MATRIX_TITLES["H"])
        ax.set_xlabel(r"$\sigma$")
        ax.set_ylabel(NORM_LABEL)
        _add_layer_legend(ax, num_layers)
        _add_skipped_note(figure, skipped)
    return figure


def plot_mlp_growth(
    results_mlp: LayerResults,
    sigmas: Sequence[float],
    output_path: str | os.PathLike,
    fitted: Sequence[float | None] | None = None,
) -> None:
    """Build the MLP baseline's growth figure, as `build_mlp_growth_figure`, and save it as a PDF."""
    with _style(font_size=16):
        figure = build_mlp_growth_figure(results_mlp, sigmas, fitted)
        _save_pdf(figure, output_path, f"MLP, {len(results_mlp)} layers")


def log_abs_blurred(matrix: np.ndarray) -> np.ndarray:
    """Return ``log10(|matrix| + LOG_EPSILON)`` smoothed by a Gaussian blur over BLUR_KERNEL.

    The blur's standard deviation is OpenCV's default for the kernel size
    (1.1 pixels for 5 x 5).
    """
    log_abs = np.log10(np.abs(np.asarray(matrix, dtype=np.float64)) + LOG_EPSILON)
    return cv2.GaussianBlur(np.ascontiguousarray(log_abs), BLUR_KERNEL, sigmaX=0)


def _check_dense(matrix: np.ndarray, group_sizes: Sequence[int], name: str) -> None:
    """Raise ValueError unless `matrix` is square and `group_sizes` sum to its size."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {matrix.shape}.")
    total = int(np.sum(group_sizes))
    if total != matrix.shape[0]:
        raise ValueError(
            f"{name} group sizes sum to {total}, but the matrix has {matrix.shape[0]} rows. "
            "Pass one size per parameter group, in the matrix's order."
        )


def _draw_group_boundaries(ax: Axes, group_sizes: Sequence[int]) -> None:
    """Draw dashed white lines between parameter groups (between pixels, hence -0.5)."""
    style = {"color": "white", "linewidth": 0.5, "linestyle": "--", "alpha": 0.8}
    for position in np.cumsum(group_sizes)[:-1]:
        ax.axhline(y=position - 0.5, **style)
        ax.axvline(x=position - 0.5, **style)


def build_heterogeneity_figure(
    full: np.ndarray,
    attention: np.ndarray,
    full_group_sizes: Sequence[int],
    attention_group_sizes: Sequence[int],
) -> Figure:
    """Build the heterogeneity figure: two dense Hessians side by side on one colour scale.

    Args:
        full: Hessian over all parameters of the transformer block, ``[n, n]``.
        attention: Hessian over ``W_Q, W_K, W_V, W_O``, ``[m, m]``.
        full_group_sizes, attention_group_sizes: Parameter counts per group, in
            the matrices' order, for the dashed boundary lines.

    Raises:
        ValueError: If a matrix is not square or its group sizes do not sum to its size.
    """
    _check_dense(np.asarray(full), full_group_sizes, "full")
    _check_dense(np.asarray(attention), attention_group_sizes, "attention")
    images = [log_abs_blurred(full), log_abs_blurred(attention)]
    vmin = min(float(image.min()) for image in images)
    vmax = max(float(image.max()) for image in images)
    titles = ("Transformer block", "Self-attention")
    with _style(font_size=20):
        figure, axes = _new_figure(nrows=1, ncols=2, figsize=(14, 7))
        for ax, image, title, sizes in zip(
            axes[0], images, titles, (full_group_sizes, attention_group_sizes)
        ):
            image_artist = ax.imshow(image, vmin=vmin, vmax=vmax)
            _draw_group_boundaries(ax, sizes)
            ax.set_title(title, pad=20)
            ax.axis("off")
        colorbar = figure.colorbar(image_artist, ax=list(axes[0]), shrink=0.8)
        colorbar.set_label(r"$\log_{10}(|\mathbf{H}| + 10^{-6})$", labelpad=20)
    return figure


def plot_heterogeneity(
    full: np.ndarray,
    attention: np.ndarray,
    full_group_sizes: Sequence[int],
    attention_group_sizes: Sequence[int],
    output_path: str | os.PathLike,
) -> None:
    """Build the heterogeneity figure and save it as a PDF."""
    with _style(font_size=20):
        figure = build_heterogeneity_figure(
            full, attention, full_group_sizes, attention_group_sizes
        )
        _save_pdf(figure, output_path, "Hessian heterogeneity")


def log_bins(values: np.ndarray, num_bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Return ``num_bins + 1`` log-spaced edges from ``max(1e-8, min |v| > 0)`` to ``max |v|``.

    Raises:
        ValueError: If no entry is nonzero and finite.
    """
    magnitudes = np.abs(np.asarray(values, dtype=float)).ravel()
    positive = magnitudes[np.isfinite(magnitudes) & (magnitudes > 0)]
    if positive.size == 0:
        raise ValueError(
            f"cannot bin {magnitudes.size} entries on a log scale: none is nonzero and finite."
        )
    low = max(HISTOGRAM_FLOOR, float(positive.min()))
    high = float(positive.max())
    if high <= low:
        # All entries are equal or below the floor: show one decade above `low`.
        high = 10 * low
    edges = np.logspace(np.log10(low), np.log10(high), num_bins + 1)
    # 10**log10(x) can round below x, which would drop the largest entry from the last bin.
    edges[0], edges[-1] = low, high
    return edges


def _draw_histogram(
    ax: Axes, values: np.ndarray, color: str, alpha: float, label: str | None
) -> None:
    """Draw a log-binned histogram of the absolute entries of `values`."""
    magnitudes = np.abs(np.asarray(values, dtype=float)).ravel()
    bins = log_bins(magnitudes)
    outside = int(
        np.sum((magnitudes < bins[0]) | (magnitudes > bins[-1]) | ~np.isfinite(magnitudes))
    )
    if outside:
        logger.info(
            "%d of %d entries lie outside the bins [%g, %g]",
            outside,
            magnitudes.size,
            bins[0],
            bins[-1],
        )
    ax.hist(magnitudes, bins=bins, color=color, alpha=alpha, edgecolor="black", label=label)
    ax.set_xscale("log")


def build_histogram_figure(
    query: np.ndarray,
    value: np.ndarray,
    background: tuple[np.ndarray, np.ndarray] | None = None,
    layout: str = "stacked",
    labels: tuple[str, str] | None = None,
) -> Figure:
    """Build histograms of the absolute entries of the value and query blocks.

    Args:
        query, value: Dense Hessian blocks of ``W_Q`` and ``W_V``.
        background: Optional ``(query, value)`` blocks drawn faintly behind.
        layout: ``stacked`` (value above query) or ``side_by_side`` (value left).
        labels: Optional legend labels ``(foreground, background)``.

    Raises:
        ValueError: If `layout` is unknown or a block has no nonzero entry.
    """
    if layout not in HISTOGRAM_LAYOUTS:
        raise ValueError(f"layout {layout!r} is unknown. Use one of {HISTOGRAM_LAYOUTS}.")
    stacked = layout == "stacked"
    foreground_label, background_label = labels if labels else (None, None)
    with _style(font_size=18):
        if stacked:
            figure, axes = _new_figure(nrows=2, ncols=1, figsize=(5.5, 4.5), sharex=True)
        else:
            figure, axes = _new_figure(nrows=1, ncols=2, figsize=(9.3, 3.2), sharey=True)
        panels = list(axes.ravel())
        foregrounds = (value, query)
        backgrounds = (background[1], background[0]) if background is not None else (None, None)
        for ax, block, matrix, behind in zip(panels, ("value", "query"), foregrounds, backgrounds):
            if behind is not None:
                _draw_histogram(ax, behind, BLOCK_COLORS[block], BACKGROUND_ALPHA, background_label)
            _draw_histogram(ax, matrix, BLOCK_COLORS[block], 1.0, foreground_label)
            ax.set_title(block, fontsize="medium")
            if labels:
                ax.legend(fontsize="xx-small")
        if stacked:
            panels[1].set_xlabel("Absolute entries")
            figure.supylabel("Frequency")
        else:
            panels[0].set_ylabel("Frequency")
            figure.supxlabel("Absolute entries")
    return figure


def plot_histograms(
    query: np.ndarray,
    value: np.ndarray,
    output_path: str | os.PathLike,
    background: tuple[np.ndarray, np.ndarray] | None = None,
    layout: str = "stacked",
    labels: tuple[str, str] | None = None,
) -> None:
    """Build the histogram figure (see `build_histogram_figure`) and save it as a PDF."""
    with _style(font_size=18):
        figure = build_histogram_figure(query, value, background, layout, labels)
        _save_pdf(figure, output_path, f"Hessian entries, {layout}")
