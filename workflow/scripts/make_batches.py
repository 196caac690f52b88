"""Write the token batches of one experiment."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import io

import numpy as np

from transformer_curvature.data import make_addition_batches
from transformer_curvature.jobs import start_job
from transformer_curvature.results_io import atomic_write_bytes

logger = start_job(snakemake)
settings = snakemake.params.data
tokens = make_addition_batches(settings["batch_size"], settings["num_batches"], settings["seed"])
buffer = io.BytesIO()
np.save(buffer, tokens, allow_pickle=False)
atomic_write_bytes(snakemake.output.tokens, buffer.getvalue())
logger.info("wrote tokens of shape %s with seed %d", tokens.shape, settings["seed"])
