import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package lives in workflow/

import numpy as np

from transformer_curvature.jobs import log_to_file
from transformer_curvature.plotting import plot_heterogeneity

logger = log_to_file(snakemake)

logger.info("Loading %s", snakemake.input.dense)
with np.load(snakemake.input.dense, allow_pickle=False) as dense:
    arrays = {name: dense[name] for name in dense.files}
logger.info(
    "Full Hessian %s, attention Hessian %s", arrays["full"].shape, arrays["attention"].shape
)

plot_heterogeneity(
    arrays["full"],
    arrays["attention"],
    arrays["full_group_sizes"],
    arrays["attention_group_sizes"],
    snakemake.output.figure,
)
