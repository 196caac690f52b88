"""Fit the growth exponent of every configuration, layer, block and matrix; compare with theory."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # the package lives in workflow/

import pandas as pd

from transformer_curvature import exponents
from transformer_curvature.jobs import log_to_file
from transformer_curvature.results_io import atomic_write_bytes, load_seed_result

logger = log_to_file(snakemake)

analysis = exponents.AnalysisSettings.from_config(snakemake.params.analysis)
configs = snakemake.params.configs
logger.info("Loading %d per-seed results", len(snakemake.input.seeds))
grouped = exponents.group_by_config(
    [load_seed_result(path) for path in snakemake.input.seeds], list(configs)
)

rows = []
for name, per_seed in grouped.items():
    setting = exponents.BlockSetting.from_config(configs[name])
    grid = configs[name]["sigma_grid"]
    fit_analysis = analysis.for_grid(grid)
    logger.info("%s: fits over sigma <= %g", name, fit_analysis.fit_max_sigma)
    in_range = sum(sigma <= fit_analysis.fit_max_sigma for sigma in per_seed[0]["sigmas"])
    if in_range < analysis.min_fit_sigmas:
        logger.warning(
            "%s: %d of its sigmas are <= %g, fewer than min_fit_sigmas (%d), so none of its "
            "exponents is fitted. To fit it, raise analysis.fit_max_sigma_by_grid.%s.",
            name,
            in_range,
            fit_analysis.fit_max_sigma,
            analysis.min_fit_sigmas,
            grid,
        )
    rows += exponents.configuration_rows(name, setting, per_seed, fit_analysis)

table = pd.DataFrame(rows, columns=list(exponents.EXPONENT_COLUMNS))
checked = table["within_tolerance"].notna()
disagree = table[table["within_tolerance"].map(lambda agrees: agrees is False)]
logger.info(
    "%d rows, %d checked against theory (tolerance %g): %d agree, %d disagree",
    len(table),
    int(checked.sum()),
    analysis.tolerance,
    int(checked.sum()) - len(disagree),
    len(disagree),
)
for row in disagree.itertuples(index=False):
    logger.warning(
        "Disagrees with theory: %s layer %d %s %s: fitted %s +- %s, theory %s, measured zero %s",
        row.config,
        row.layer,
        row.block,
        row.matrix,
        row.fitted_exponent,
        row.stderr,
        row.theory_exponent,
        row.measured_zero,
    )

text = table.to_csv(sep="\t", index=False, na_rep="", float_format="%.6g", lineterminator="\n")
atomic_write_bytes(snakemake.output.table, text.encode())
logger.info("Wrote %s", snakemake.output.table)
