"""Gather the per-seed results of one configuration into the authors' layout.

Each output pickle holds ``{layer: {repeat: [value per sigma]}}`` for one
block and matrix, with repeats numbered from 0 in seed order.

Norms that overflowed or turned NaN in a growth job stay NaN or inf here:
dropping them would shift the other values off their sigmas. The log states
how many there are per output, and the figures leave those points out.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from typing import Any

import numpy as np

from transformer_curvature.experiments import BLOCK_LETTERS, MATRIX_SUFFIXES
from transformer_curvature.jobs import log_to_file
from transformer_curvature.results_io import load_seed_result, save_results

logger = log_to_file(snakemake)


def block_and_matrix(output_name: str) -> tuple[str, str]:
    """Map an authors' result name (``frob_q_outer``, ``frob_mlp``) to ``(block, matrix)``."""
    if output_name == "frob_mlp":
        return "mlp", "H"
    letter, _, suffix = output_name.removeprefix("frob_").partition("_")
    block = next(name for name, block_letter in BLOCK_LETTERS.items() if block_letter == letter)
    matrix_suffix = f"_{suffix}" if suffix else ""
    matrix = next(name for name, known in MATRIX_SUFFIXES.items() if known == matrix_suffix)
    return block, matrix


def check_consistent(per_seed: list[dict[str, Any]], paths: list[str]) -> None:
    """Check that all per-seed results belong to one configuration and sigma grid.

    Raises:
        ValueError: Naming the first file that differs from the first one.
    """
    first = per_seed[0]
    for result, path in zip(per_seed[1:], paths[1:]):
        for key in ("config", "num_layers"):
            if result[key] != first[key]:
                raise ValueError(
                    f"{path}: {key} is {result[key]!r}, but {paths[0]} has "
                    f"{first[key]!r}. Delete the stale file and rerun the growth jobs."
                )
        if not np.array_equal(result["sigmas"], first["sigmas"]):
            raise ValueError(
                f"{path}: its sigma grid differs from that of {paths[0]}. Delete "
                "the stale file and rerun the growth jobs."
            )


def nonfinite_mask(layout: dict[int, dict[int, list[float]]]) -> np.ndarray:
    """Return the mask of NaN or infinite values, ``[layers * repeats, sigmas]``."""
    values = np.array([layout[layer][repeat] for layer in layout for repeat in layout[layer]])
    return ~np.isfinite(values)


seed_paths = [str(path) for path in snakemake.input.seeds]
loaded = [(load_seed_result(path), path) for path in seed_paths]
loaded.sort(key=lambda pair: pair[0]["seed"])
per_seed = [result for result, _ in loaded]
check_consistent(per_seed, [path for _, path in loaded])
sigmas = np.asarray(per_seed[0]["sigmas"], dtype=np.float64)

nonfinite_counts: dict[str, int] = {}
nonfinite_sigmas = np.zeros(len(sigmas), dtype=bool)
total_values = 0
for output_name, path in snakemake.output.items():
    block, matrix = block_and_matrix(output_name)
    layout = {
        layer: {
            repeat: [float(value) for value in result["norms"][block][matrix][layer]]
            for repeat, result in enumerate(per_seed)
        }
        for layer in range(per_seed[0]["num_layers"])
    }
    mask = nonfinite_mask(layout)
    total_values += mask.size
    if mask.any():
        nonfinite_counts[output_name] = int(mask.sum())
        nonfinite_sigmas |= mask.any(axis=0)
    save_results(path, layout)
    logger.info("wrote %s from %d seeds", path, len(per_seed))

if nonfinite_counts:
    logger.warning(
        "%d of %d values are not finite (NaN or inf), at sigma %s, by output: %s. "
        "They are kept as they are, and the figures leave these points out",
        sum(nonfinite_counts.values()),
        total_values,
        ", ".join(f"{sigma:.4g}" for sigma in sigmas[nonfinite_sigmas]),
        ", ".join(f"{name} {count}" for name, count in nonfinite_counts.items()),
    )
else:
    logger.info("all %d values are finite", total_values)
