"""Start-up shared by the job scripts: logging into the rule's log, torch threads.

Importing this module does not import torch, so the table and figure jobs stay light.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


def log_to_file(snakemake: Any) -> logging.Logger:
    """Send logging and warnings to the job's log file and return the rule's logger."""
    logging.basicConfig(
        filename=snakemake.log[0],
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
    return logging.getLogger(snakemake.rule)


def start_job(snakemake: Any) -> logging.Logger:
    """Log to the job's log file, as `log_to_file`, and set torch's thread count.

    tqdm writes to stderr, which Snakemake does not capture, so progress bars
    go to the log file as well.
    """
    logger = log_to_file(snakemake)
    sys.stderr = open(snakemake.log[0], "a", buffering=1)

    import torch

    torch.set_num_threads(snakemake.threads)
    logger.info("torch %s, %d thread(s)", torch.__version__, snakemake.threads)
    return logger
