"""Compute the block norms of one growth configuration and seed over its sigma grid."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import numpy as np

from transformer_curvature.devices import resolve_device
from transformer_curvature.experiments import GrowthConfig
from transformer_curvature.growth import run_growth
from transformer_curvature.jobs import start_job
from transformer_curvature.results_io import save_results

logger = start_job(snakemake)
growth_config = GrowthConfig(**snakemake.params.growth_config)
seed = int(snakemake.wildcards.seed)
device = resolve_device(snakemake.params.device)
logger.info("%s, seed %d, on %s", growth_config.name, seed, device)

tokens = np.load(snakemake.input.tokens, allow_pickle=False)
results = run_growth(
    growth_config,
    tokens,
    np.asarray(snakemake.params.sigmas),
    seed,
    snakemake.params.settings,
    device,
)
save_results(snakemake.output.result, results)
logger.info("wrote %s", snakemake.output.result)
