"""Start-up shared by the compute scripts: logging into the rule's log, torch threads."""

from __future__ import annotations

import logging
import sys
from typing import Any


def start_job(snakemake: Any) -> logging.Logger:
    """Send logging and warnings to the job's log file and set torch's thread count.

    tqdm writes to stderr, which Snakemake does not capture, so progress bars
    go to the log file as well.
    """
    log_path = snakemake.log[0]
    logging.basicConfig(
        filename=log_path,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)
    sys.stderr = open(log_path, "a", buffering=1)

    import torch

    torch.set_num_threads(snakemake.threads)
    logger = logging.getLogger(snakemake.rule)
    logger.info("torch %s, %d thread(s)", torch.__version__, snakemake.threads)
    return logger
