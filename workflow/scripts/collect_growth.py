"""Gather the per-seed results of one configuration into the authors' layout.

Each output pickle holds ``{layer: {repeat: [value per sigma]}}`` for one
block and matrix, with repeats numbered from 0 in seed order.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import logging

from transformer_curvature.experiments import BLOCK_LETTERS, MATRIX_SUFFIXES
from transformer_curvature.results_io import load_results, save_results

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, force=True)
logger = logging.getLogger("collect_growth")

per_seed = sorted((load_results(path) for path in snakemake.input.seeds), key=lambda r: r["seed"])
for output_name, path in snakemake.output.items():
    if output_name == "frob_mlp":
        block, matrix = "mlp", "H"
    else:
        letter, _, suffix = output_name.removeprefix("frob_").partition("_")
        block = next(b for b, l in BLOCK_LETTERS.items() if l == letter)
        matrix = next(m for m, s in MATRIX_SUFFIXES.items() if s == (f"_{suffix}" if suffix else ""))
    layout = {
        layer: {
            repeat: [float(value) for value in result["norms"][block][matrix][layer]]
            for repeat, result in enumerate(per_seed)
        }
        for layer in range(per_seed[0]["num_layers"])
    }
    save_results(path, layout)
    logger.info("wrote %s from %d seeds", path, len(per_seed))
