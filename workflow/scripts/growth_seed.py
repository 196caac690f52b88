"""Compute the block norms of one growth configuration and seed over its sigma grid.

Writes two files:
- the result pickle: plain data, with the job's provenance (configuration
  slice, seed, package versions, device, dtype, threads). Two runs of the same
  job on the CPU with the same thread count and packages write the same bytes.
- the provenance sidecar (JSON): what changes from run to run, such as wall
  time, timestamps, git revision and host.

Norms that overflow or turn NaN (large sigma in float32) are kept as inf or
NaN, and the job logs one warning with their count.
"""

import time
from datetime import datetime, timezone

# Wall time counts from here, so it includes the imports of torch, transformer_lens
# and curvlinops.
job_start = time.monotonic()
started = datetime.now(timezone.utc)

import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import logging

import numpy as np

from transformer_curvature import provenance
from transformer_curvature.devices import resolve_device
from transformer_curvature.experiments import GrowthConfig
from transformer_curvature.growth import run_growth
from transformer_curvature.jobs import start_job
from transformer_curvature.results_io import save_results


def count_nonfinite(norms: dict[str, dict[str, np.ndarray]]) -> dict[str, int]:
    """Count the NaN and infinite entries of ``norms[block][matrix]`` arrays."""
    counts = {"total": 0, "nan": 0, "inf": 0}
    for matrices in norms.values():
        for values in matrices.values():
            values = np.asarray(values, dtype=np.float64)
            counts["total"] += values.size
            counts["nan"] += int(np.isnan(values).sum())
            counts["inf"] += int(np.isinf(values).sum())
    return counts


def first_nonfinite_sigma(
    norms: dict[str, dict[str, np.ndarray]], sigmas: np.ndarray
) -> float | None:
    """Return the smallest sigma at which any norm is NaN or infinite, or None."""
    bad_columns = np.zeros(len(sigmas), dtype=bool)
    for matrices in norms.values():
        for values in matrices.values():
            bad_columns |= ~np.isfinite(np.asarray(values, dtype=np.float64)).all(axis=0)
    if not bad_columns.any():
        return None
    return float(np.min(sigmas[bad_columns]))


def log_nonfinite(
    logger: logging.Logger,
    counts: dict[str, int],
    first_sigma: float | None,
    growth_config: GrowthConfig,
) -> None:
    """Log one warning for all non-finite norms of the job, or one info line if none."""
    bad = counts["nan"] + counts["inf"]
    if bad == 0:
        logger.info("all %d norms are finite", counts["total"])
        return
    advice = (
        f" Set dtype: float64 in growth.experiments.{growth_config.experiment} "
        "to extend the finite range."
        if growth_config.dtype == "float32"
        else ""
    )
    logger.warning(
        "%d of %d norms are not finite (%d NaN, %d inf), from sigma = %.4g on. "
        "They are kept as NaN or inf, and the figures leave them out.%s",
        bad,
        counts["total"],
        counts["nan"],
        counts["inf"],
        first_sigma,
        advice,
    )


logger = start_job(snakemake)
growth_config = GrowthConfig(**snakemake.params.growth_config)
seed = int(snakemake.wildcards.seed)
device = resolve_device(snakemake.params.device)
sigmas = np.asarray(snakemake.params.sigmas, dtype=np.float64)
logger.info("%s, seed %d, on %s", growth_config.name, seed, device)

tokens = np.load(snakemake.input.tokens, allow_pickle=False)
results = run_growth(
    growth_config,
    tokens,
    sigmas,
    seed,
    snakemake.params.settings,
    device,
)
counts = count_nonfinite(results["norms"])
log_nonfinite(logger, counts, first_nonfinite_sigma(results["norms"], sigmas), growth_config)

job_record = provenance.job_provenance(
    config={
        "growth_config": dict(snakemake.params.growth_config, name=growth_config.name),
        "settings": dict(snakemake.params.settings),
        "data": dict(snakemake.params.data),
        "sigmas": [float(sigma) for sigma in sigmas],
        "device_setting": snakemake.params.device,
    },
    seed=seed,
    device=device.type,
    dtype=growth_config.dtype,
    threads=snakemake.threads,
    inputs={"tokens": snakemake.input.tokens},
)
results["provenance"] = job_record
save_results(snakemake.output.result, results)
logger.info("wrote %s", snakemake.output.result)

if device.type == "cuda":
    import torch

    device_name = torch.cuda.get_device_name(device)
else:
    device_name = platform.processor() or "cpu"
run_record = provenance.run_provenance(
    started=started,
    finished=datetime.now(timezone.utc),
    wall_time_s=time.monotonic() - job_start,
    repository=Path(snakemake.scriptdir).parents[1],
    device_name=device_name,
    result_path=snakemake.output.result,
    job=job_record,
    extra={"nonfinite_norms": counts},
)
provenance.write_sidecar(snakemake.output.provenance, run_record)
logger.info("wrote %s", snakemake.output.provenance)
