"""Draw the growth figure of one attention configuration, with fitted exponents."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package lives in workflow/

from transformer_curvature.experiments import BLOCK_LETTERS, MATRIX_SUFFIXES
from transformer_curvature.exponents import AnalysisSettings, fitted_exponents_for_figure
from transformer_curvature.jobs import log_to_file
from transformer_curvature.plotting import plot_growth
from transformer_curvature.results_io import load_results

logger = log_to_file(snakemake)

# Input names follow the authors' result files: frob_<block letter><matrix suffix>.
INPUT_NAMES = {
    f"frob_{letter}{suffix}": (block, matrix)
    for block, letter in BLOCK_LETTERS.items()
    for matrix, suffix in MATRIX_SUFFIXES.items()
}

config = snakemake.params.config
results: dict[str, dict] = {}
for name, path in snakemake.input.items():
    if name == "code":  # package sources, listed so that edits rerun the figure
        continue
    if name not in INPUT_NAMES:
        raise ValueError(
            f"input {name!r} is not a growth result. Name each input one of {sorted(INPUT_NAMES)}."
        )
    block, matrix = INPUT_NAMES[name]
    logger.info("Loading %s (%s, %s) from %s", name, block, matrix, path)
    results.setdefault(block, {})[matrix] = load_results(path)

# The fits use the same function as exponents.tsv, without its bootstrap, so a
# figure needs only its own results. Without analysis settings no fit is drawn.
analysis = snakemake.params.get("analysis")
fitted = None
if analysis is None:
    logger.info("No analysis settings given: the panels show no fitted exponents")
else:
    fitted = fitted_exponents_for_figure(
        results,
        snakemake.params.sigmas,
        AnalysisSettings.from_config(analysis).for_grid(config["sigma_grid"]),
    )
    for (block, matrix, layer), exponent in sorted(fitted.items()):
        logger.info("Fitted exponent of %s %s, layer %d: %.3f", block, matrix, layer, exponent)

plot_growth(
    results,
    snakemake.params.sigmas,
    config["name"],
    model=config["model"],
    norm=config["norm"],
    linear_attention=config["linear_attention"],
    num_layers=config["num_layers"],
    log_axes=snakemake.params.log_axes,
    output_path=snakemake.output.figure,
    fitted=fitted,
)
