"""Draw the MLP baseline's growth figure, with fitted exponents."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package lives in workflow/

from transformer_curvature.exponents import AnalysisSettings, fitted_exponents_for_figure
from transformer_curvature.jobs import log_to_file
from transformer_curvature.plotting import plot_mlp_growth
from transformer_curvature.results_io import load_results

logger = log_to_file(snakemake)

logger.info("Loading %s", snakemake.input.frob_mlp)
results_mlp = load_results(snakemake.input.frob_mlp)
analysis = AnalysisSettings.from_config(snakemake.params.analysis)
fitted = fitted_exponents_for_figure(
    {"mlp": {"H": results_mlp}},
    snakemake.params.sigmas,
    analysis.for_grid(snakemake.params.sigma_grid),
)
fits = [fitted.get(("mlp", "H", layer)) for layer in range(len(results_mlp))]
logger.info("Fitted exponents per layer: %s", fits)
plot_mlp_growth(results_mlp, snakemake.params.sigmas, snakemake.output.figure, fitted=fits)
