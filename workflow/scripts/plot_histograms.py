import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package lives in workflow/

import numpy as np

from transformer_curvature.jobs import log_to_file
from transformer_curvature.plotting import plot_histograms

logger = log_to_file(snakemake)


def load_blocks(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Load the dense ``(query, value)`` blocks of an ``.npz`` file."""
    logger.info("Loading %s", path)
    with np.load(path, allow_pickle=False) as dense:
        return dense["query"], dense["value"]


query, value = load_blocks(snakemake.input.dense)
background = (
    load_blocks(snakemake.input.background) if "background" in snakemake.input.keys() else None
)
labels = snakemake.params.get("labels")

plot_histograms(
    query,
    value,
    snakemake.output.figure,
    background=background,
    layout=snakemake.params.layout,
    labels=tuple(labels) if labels else None,
)
