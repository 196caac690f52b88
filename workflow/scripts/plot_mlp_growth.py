import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package lives in workflow/

from transformer_curvature.plotting import plot_mlp_growth
from transformer_curvature.results_io import load_results

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
logger = logging.getLogger("plot_mlp_growth")

logger.info("Loading %s", snakemake.input.frob_mlp)
results_mlp = load_results(snakemake.input.frob_mlp)
plot_mlp_growth(results_mlp, snakemake.params.sigmas, snakemake.output.figure)
