"""Figures: layout, plotted values against hand-computed ones, and the PDFs they write."""

import math

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from conftest import run_job_script

from transformer_curvature import plotting
from transformer_curvature.results_io import save_arrays, save_results

SIGMAS = [0.1, 1.0, 10.0]


def layer_results(num_layers=1, num_repeats=2, exponent=2.0, sigmas=SIGMAS):
    """Norms ``(layer + 1) * (1 + repeat / 10) * sigma**exponent`` in the authors' layout."""
    return {
        layer: {
            repeat: [(layer + 1) * (1 + repeat / 10) * sigma**exponent for sigma in sigmas]
            for repeat in range(num_repeats)
        }
        for layer in range(num_layers)
    }


def growth_results(blocks=("query", "value"), **kwargs):
    return {
        block: {matrix: layer_results(**kwargs) for matrix in ("H_o", "H_f", "H")}
        for block in blocks
    }


def build(results, sigmas=SIGMAS, **overrides):
    num_layers = len(next(iter(results.values()))["H"])
    options = dict(norm="none", linear_attention=False, num_layers=num_layers, log_axes=True)
    options.update(overrides)
    return plotting.build_growth_figure(results, sigmas, **options)


def panel(figure, row, column):
    return figure.axes[row * 3 + column]


def data_containers(ax):
    return [container for container in ax.containers if isinstance(container, ErrorbarContainer)]


def dashed_lines(ax):
    return [line for line in ax.get_lines() if line.get_linestyle() == "--"]


def all_texts(figure):
    texts = [text.get_text() for text in figure.texts]
    for ax in figure.axes:
        texts += [text.get_text() for text in ax.texts]
    return texts


def test_growth_grid_two_blocks():
    figure = build(growth_results(blocks=("query", "value")))
    assert len(figure.axes) == 6
    assert figure.axes[0].get_subplotspec().get_geometry()[:2] == (2, 3)
    assert panel(figure, 0, 0).get_ylabel() == "value"
    assert panel(figure, 1, 0).get_ylabel() == "query"
    titles = [panel(figure, 0, column).get_title() for column in range(3)]
    assert titles == [plotting.MATRIX_TITLES[matrix] for matrix in ("H_o", "H_f", "H")]


def test_growth_grid_four_blocks():
    figure = build(growth_results(blocks=("output", "key", "query", "value")))
    assert len(figure.axes) == 12
    assert figure.axes[0].get_subplotspec().get_geometry()[:2] == (4, 3)
    rows = [panel(figure, row, 0).get_ylabel() for row in range(4)]
    assert rows == ["value", "query", "key", "output"]


def test_growth_block_colours():
    figure = build(growth_results())
    value_line = data_containers(panel(figure, 0, 0))[0].lines[0]
    query_line = data_containers(panel(figure, 1, 0))[0].lines[0]
    assert value_line.get_color() == "#7570b3"
    assert query_line.get_color() == "#1b9e77"


def test_growth_mean_and_sem_match_hand_values():
    values = {0: {0: [1.0, 2.0], 1: [2.0, 4.0], 2: [3.0, 9.0]}}
    results = {
        "query": {"H_o": values, "H_f": values, "H": values},
        "value": {"H_o": values, "H_f": values, "H": values},
    }
    figure = build(results, sigmas=[0.5, 2.0])
    container = data_containers(panel(figure, 1, 2))[0]

    # Mean [2, 5]; sample standard deviations 1 and sqrt(13) over sqrt(3) repeats.
    expected_mean = [2.0, 5.0]
    expected_sem = [1.0 / math.sqrt(3), math.sqrt(13.0) / math.sqrt(3)]
    data_line, _, (bars,) = container
    np.testing.assert_allclose(data_line.get_xdata(), [0.5, 2.0])
    np.testing.assert_allclose(data_line.get_ydata(), expected_mean)
    for segment, mean, sem in zip(bars.get_segments(), expected_mean, expected_sem):
        (_, low), (_, high) = segment
        assert low == pytest.approx(mean - sem)
        assert high == pytest.approx(mean + sem)


def test_growth_one_repeat_has_no_error_bars():
    figure = build(growth_results(num_repeats=1))
    container = data_containers(panel(figure, 0, 0))[0]
    assert not container.has_yerr


def test_growth_alpha_rises_with_layer():
    figure = build(growth_results(num_layers=3))
    containers = data_containers(panel(figure, 0, 0))
    assert [container.get_label() for container in containers] == ["1", "2", "3"]
    alphas = [container.lines[0].get_alpha() for container in containers]
    assert alphas == sorted(alphas)
    assert alphas[0] < alphas[-1]
    assert alphas[-1] == pytest.approx(1.0)


def test_growth_legend_only_for_several_layers():
    one_layer = build(growth_results(num_layers=1))
    assert panel(one_layer, 0, 0).get_legend() is None
    three_layers = build(growth_results(num_layers=3))
    legend = panel(three_layers, 0, 0).get_legend()
    assert legend is not None
    assert legend.get_title().get_text() == "Layer"


def test_growth_nan_point_skipped_with_note():
    results = growth_results(num_repeats=2)
    results["query"]["H"][0][1][1] = float("nan")
    figure = build(results)
    data_line = data_containers(panel(figure, 1, 2))[0].lines[0]
    np.testing.assert_allclose(data_line.get_xdata(), [0.1, 10.0])
    assert any("1 point not shown" in text for text in all_texts(figure))


def test_growth_zero_and_inf_skipped_on_log_axes():
    results = growth_results(num_repeats=1)
    results["value"]["H_o"][0][0] = [0.0, float("inf"), 5.0]
    figure = build(results)
    data_line = data_containers(panel(figure, 0, 0))[0].lines[0]
    np.testing.assert_allclose(data_line.get_xdata(), [10.0])
    assert any("2 points not shown" in text for text in all_texts(figure))


def test_growth_zero_kept_on_linear_axes():
    results = growth_results(num_repeats=1)
    results["value"]["H_o"][0][0] = [0.0, 1.0, 5.0]
    figure = build(results, log_axes=False)
    ax = panel(figure, 0, 0)
    assert ax.get_xscale() == "linear"
    assert ax.get_yscale() == "linear"
    np.testing.assert_allclose(data_containers(ax)[0].lines[0].get_ydata(), [0.0, 1.0, 5.0])
    assert not any("not shown" in text for text in all_texts(figure))


def test_growth_log_axes_and_sigma_one_line():
    figure = build(growth_results())
    ax = panel(figure, 0, 0)
    assert ax.get_xscale() == "log"
    assert ax.get_yscale() == "log"
    assert ax.get_xlim() == pytest.approx((0.1, 10.0))
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 1
    assert list(dotted[0].get_xdata()) == [1.0, 1.0]


def test_growth_guide_slope_matches_theory():
    figure = build(growth_results(exponent=6.0))
    ax = panel(figure, 1, 0)  # query block, H_o: exponent 6
    (guide,) = dashed_lines(ax)
    x, y = guide.get_xdata(), guide.get_ydata()
    assert math.log(y[-1] / y[0]) / math.log(x[-1] / x[0]) == pytest.approx(6.0)
    data_at_anchor = data_containers(ax)[0].lines[0].get_ydata()[0]
    assert y[0] < data_at_anchor
    assert any(text.get_text() == r"$\sigma^{6}$" for text in ax.texts)


def test_growth_guide_per_layer():
    figure = build(growth_results(num_layers=2))
    assert len(dashed_lines(panel(figure, 0, 0))) == 2  # value H_o: exponent 2 in both layers
    assert len(dashed_lines(panel(figure, 0, 1))) == 0  # value H_f: none, and zero in layer 2


def test_growth_no_guides_for_pre_layer_norm():
    figure = build(growth_results(), norm="pre")
    for ax in figure.axes:
        assert dashed_lines(ax) == []


def test_growth_zero_block_annotated():
    figure = build(growth_results())
    assert [text.get_text() for text in panel(figure, 0, 1).texts] == ["zero (theory)"]
    assert data_containers(panel(figure, 0, 1))  # the data is drawn anyway
    assert not any("zero" in text.get_text() for text in panel(figure, 1, 1).texts)


def test_growth_zero_block_names_layer():
    figure = build(growth_results(num_layers=3))
    assert [text.get_text() for text in panel(figure, 0, 1).texts] == ["layer 3: zero (theory)"]


def test_growth_fit_annotation():
    figure = build(growth_results(), fitted={("query", "H", 0): 4.968})
    assert "fit: 4.97" in [text.get_text() for text in panel(figure, 1, 2).texts]
    assert not any("fit" in text.get_text() for text in panel(figure, 0, 2).texts)


def test_growth_mismatched_layers_raise():
    with pytest.raises(ValueError, match="expected 0..2"):
        build(growth_results(num_layers=2), num_layers=3)


def test_growth_missing_matrix_raises():
    results = growth_results()
    del results["value"]["H_f"]
    with pytest.raises(ValueError, match=r"lacks matrices \['H_f'\]"):
        build(results)


def test_growth_unknown_block_raises():
    results = growth_results()
    results["mlp"] = results["value"]
    with pytest.raises(ValueError, match="unknown blocks"):
        build(results)


def test_growth_wrong_repeat_length_raises():
    with pytest.raises(ValueError, match="one per sigma"):
        build(growth_results(), sigmas=[0.1, 1.0])


def test_growth_pdf_written(tmp_path):
    output = tmp_path / "figures" / "growth.pdf"
    plotting.plot_growth(
        growth_results(num_layers=2),
        SIGMAS,
        "norm=none_num_layers=2",
        norm="none",
        linear_attention=False,
        num_layers=2,
        log_axes=True,
        output_path=output,
    )
    assert output.read_bytes().startswith(b"%PDF")


def test_mlp_growth_single_panel_with_square_guide():
    figure = plotting.build_mlp_growth_figure(layer_results(num_layers=3), SIGMAS)
    (ax,) = figure.axes
    assert ax.get_xscale() == "log"
    assert len(data_containers(ax)) == 3
    guides = dashed_lines(ax)
    assert len(guides) == 3
    x, y = guides[0].get_xdata(), guides[0].get_ydata()
    assert math.log(y[-1] / y[0]) / math.log(x[-1] / x[0]) == pytest.approx(2.0)


def test_mlp_growth_annotates_fits():
    figure = plotting.build_mlp_growth_figure(
        layer_results(num_layers=3), SIGMAS, fitted=[2.013, None, 1.987]
    )
    (ax,) = figure.axes
    assert "fit: 2.01, 1.99" in [text.get_text() for text in ax.texts]


def test_mlp_growth_pdf_written(tmp_path):
    output = tmp_path / "mlp.pdf"
    plotting.plot_mlp_growth(layer_results(num_layers=2), SIGMAS, output)
    assert output.read_bytes().startswith(b"%PDF")


def heterogeneity_inputs():
    rng = np.random.default_rng(0)
    full = rng.standard_normal((30, 30))
    attention = 1e-3 * rng.standard_normal((12, 12))
    return full, attention, [10, 15, 5], [3, 3, 3, 3]


def test_heterogeneity_shared_colour_scale():
    full, attention, full_sizes, attention_sizes = heterogeneity_inputs()
    figure = plotting.build_heterogeneity_figure(full, attention, full_sizes, attention_sizes)
    images = [image for ax in figure.axes for image in ax.images]
    assert len(images) == 2
    assert images[0].get_clim() == images[1].get_clim()
    arrays = [image.get_array() for image in images]
    vmin, vmax = images[0].get_clim()
    assert vmin == pytest.approx(min(array.min() for array in arrays))
    assert vmax == pytest.approx(max(array.max() for array in arrays))
    assert len(figure.axes) == 3  # two panels and one colour bar


def test_heterogeneity_titles_and_boundaries():
    full, attention, full_sizes, attention_sizes = heterogeneity_inputs()
    figure = plotting.build_heterogeneity_figure(full, attention, full_sizes, attention_sizes)
    left, right = figure.axes[:2]
    assert left.get_title() == "Transformer block"
    assert right.get_title() == "Self-attention"
    assert not left.axison
    # Boundaries after groups 1 and 2 of 3 (at 10 and 25), one horizontal and one vertical each.
    left_lines = [line for line in left.get_lines() if line.get_linestyle() == "--"]
    assert len(left_lines) == 4
    horizontal_rows = []
    for line in left_lines:
        start, end = line.get_ydata()
        if start == end:
            horizontal_rows.append(start)
    assert sorted(horizontal_rows) == [9.5, 24.5]
    right_lines = [line for line in right.get_lines() if line.get_linestyle() == "--"]
    assert len(right_lines) == 6


def test_log_abs_blurred_of_constant():
    blurred = plotting.log_abs_blurred(np.full((8, 8), -0.01))
    np.testing.assert_allclose(blurred, np.log10(0.01 + 1e-6))


def test_heterogeneity_group_size_mismatch_raises():
    full, attention, _, attention_sizes = heterogeneity_inputs()
    with pytest.raises(ValueError, match="sum to 29"):
        plotting.build_heterogeneity_figure(full, attention, [10, 15, 4], attention_sizes)


def test_heterogeneity_pdf_written(tmp_path):
    output = tmp_path / "heterogeneity.pdf"
    plotting.plot_heterogeneity(*heterogeneity_inputs(), output)
    assert output.read_bytes().startswith(b"%PDF")


def test_log_bins_edges():
    edges = plotting.log_bins(np.array([[0.0, -1e-3], [1e-12, 10.0]]))
    assert len(edges) == 51
    assert edges[0] == pytest.approx(1e-8)  # 1e-12 is below the floor
    assert edges[-1] == pytest.approx(10.0)
    np.testing.assert_allclose(np.diff(np.log10(edges)), 9 / 50)


def test_log_bins_all_zero_raises():
    with pytest.raises(ValueError, match="none is nonzero"):
        plotting.log_bins(np.zeros((3, 3)))


def histogram_heights(ax, alpha):
    return [patch.get_height() for patch in ax.patches if patch.get_alpha() == alpha]


def test_histograms_stacked_value_above():
    query = np.array([[1e-4, -2e-4], [3e-3, 0.0]])
    value = np.array([[1.0, -2.0], [0.5, 4.0]])
    figure = plotting.build_histogram_figure(query, value, layout="stacked")
    top, bottom = figure.axes
    assert top.get_title() == "value"
    assert bottom.get_title() == "query"
    assert top.get_position().y0 > bottom.get_position().y0
    assert top.get_xscale() == "log"
    assert len(top.patches) == 50
    # All four value entries are counted, but only the three nonzero query entries (0 is off the log scale).
    assert sum(histogram_heights(top, 1.0)) == 4
    assert sum(histogram_heights(bottom, 1.0)) == 3


def test_histograms_side_by_side_with_background():
    rng = np.random.default_rng(1)
    query, value = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    background = (10 * rng.standard_normal((6, 6)), 10 * rng.standard_normal((6, 6)))
    figure = plotting.build_histogram_figure(
        query, value, background=background, layout="side_by_side"
    )
    left, right = figure.axes
    assert left.get_title() == "value"
    assert left.get_position().x0 < right.get_position().x0
    for ax in (left, right):
        assert sum(histogram_heights(ax, 1.0)) == 36
        assert sum(histogram_heights(ax, plotting.BACKGROUND_ALPHA)) == 36
    # The background is drawn first, so it lies behind.
    assert left.patches[0].get_alpha() == plotting.BACKGROUND_ALPHA
    assert left.patches[0].get_facecolor()[:3] == pytest.approx(
        (0x75 / 255, 0x70 / 255, 0xB3 / 255)
    )


def test_histograms_unknown_layout_raises():
    with pytest.raises(ValueError, match="layout 'grid'"):
        plotting.build_histogram_figure(np.ones((2, 2)), np.ones((2, 2)), layout="grid")


def test_histograms_pdf_written(tmp_path):
    output = tmp_path / "histogram_linear.pdf"
    blocks = (np.arange(1.0, 10.0).reshape(3, 3), np.arange(2.0, 11.0).reshape(3, 3))
    plotting.plot_histograms(
        *blocks, output, background=blocks, layout="side_by_side", labels=("linear", "softmax")
    )
    assert output.read_bytes().startswith(b"%PDF")


def run_script(name, tmp_path, inputs, params, output):
    """Run a plotting script as a job and return its log."""
    log = tmp_path / f"{name}.log"
    run_job_script(name, inputs=inputs, outputs={"figure": output}, log=log, params=params)
    return log


def test_plot_growth_script(tmp_path):
    inputs = {}
    results = growth_results(num_layers=2)
    for block, letter in (("query", "q"), ("value", "v")):
        for matrix, suffix in (("H", ""), ("H_o", "_outer"), ("H_f", "_func")):
            path = tmp_path / f"frob_{letter}{suffix}.pickle"
            save_results(path, results[block][matrix])
            inputs[f"frob_{letter}{suffix}"] = path
    config = {
        "model": "transformer",
        "norm": "none",
        "linear_attention": False,
        "num_layers": 2,
        "name": "test",
    }
    output = tmp_path / "growth.pdf"
    log = run_script(
        "plot_growth",
        tmp_path,
        inputs,
        {"sigmas": SIGMAS, "log_axes": True, "config": config},
        output,
    )
    assert output.read_bytes().startswith(b"%PDF")
    assert "frob_q_outer" in log.read_text()


def test_plot_histograms_script(tmp_path):
    dense = tmp_path / "dense.npz"
    save_arrays(
        dense, query=np.arange(1.0, 5.0).reshape(2, 2), value=np.arange(2.0, 6.0).reshape(2, 2)
    )
    output = tmp_path / "histogram.pdf"
    inputs = {"dense": dense, "background": dense}
    run_script("plot_histograms", tmp_path, inputs, {"layout": "side_by_side"}, output)
    assert output.read_bytes().startswith(b"%PDF")


def test_plot_heterogeneity_script(tmp_path):
    full, attention, full_sizes, attention_sizes = heterogeneity_inputs()
    dense = tmp_path / "dense.npz"
    save_arrays(
        dense,
        full=full,
        attention=attention,
        full_group_sizes=np.array(full_sizes),
        attention_group_sizes=np.array(attention_sizes),
    )
    output = tmp_path / "heterogeneity.pdf"
    run_script("plot_heterogeneity", tmp_path, {"dense": dense}, {}, output)
    assert output.read_bytes().startswith(b"%PDF")


def test_plot_mlp_growth_script(tmp_path):
    sigmas = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    pickle_path = tmp_path / "frob_mlp.pickle"
    save_results(pickle_path, layer_results(num_layers=2, exponent=2.5, sigmas=sigmas))
    analysis = {
        "fit_max_sigma": 10.0,
        "min_fit_sigmas": 4,
        "tolerance": 0.3,
        "zero_threshold": 1e-4,
        "bootstrap": {"resamples": 0, "seed": 0},
        "fit_max_sigma_by_grid": {"log": 0.3},  # the four smallest sigmas
    }
    params = {"sigmas": sigmas, "sigma_grid": "log", "analysis": analysis}
    output = tmp_path / "mlp.pdf"
    log = run_script("plot_mlp_growth", tmp_path, {"frob_mlp": pickle_path}, params, output)
    assert output.read_bytes().startswith(b"%PDF")
    fits = log.read_text().split("Fitted exponents per layer: ")[1].splitlines()[0]
    assert [float(value) for value in fits.strip("[]").split(",")] == pytest.approx([2.5, 2.5])
