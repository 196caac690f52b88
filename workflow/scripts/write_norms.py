"""Write every per-seed norm and its probe standard error as one long table."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package lives in workflow/

import pandas as pd

from transformer_curvature import exponents
from transformer_curvature.jobs import log_to_file
from transformer_curvature.results_io import atomic_write_bytes, load_seed_result

logger = log_to_file(snakemake)

logger.info("Loading %d per-seed results", len(snakemake.input.seeds))
grouped = exponents.group_by_config(
    [load_seed_result(path) for path in snakemake.input.seeds], snakemake.params.configs
)
rows = [row for per_seed in grouped.values() for row in exponents.norm_rows(per_seed)]
table = pd.DataFrame(rows, columns=list(exponents.NORM_COLUMNS))

# Ten significant digits: more than float32 curvature products carry (about seven).
text = table.to_csv(sep="\t", index=False, na_rep="", float_format="%.10g", lineterminator="\n")
atomic_write_bytes(snakemake.output.table, text.encode())
logger.info("Wrote %d rows to %s", len(table), snakemake.output.table)
