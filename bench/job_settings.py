"""Settings shared by the benchmark's processes: the job to time and its command line."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY / "workflow"))

# Data seed of config.yaml's softmax experiment (growth.experiments.softmax.data.seed).
BASE_SEED = 1234


@dataclass(frozen=True)
class JobSettings:
    """One growth job: a softmax transformer with the ``ce`` loss, one seed.

    The defaults are config.yaml's settings for the one-layer softmax job.
    """

    d_model: int = 128
    """Width of the residual stream; ``d_mlp = 4 * d_model``."""
    num_layers: int = 1
    num_sigmas: int = 20
    """Points of the ``log`` grid, ``10**linspace(-2, 1, num_sigmas)``."""
    probes: int = 20
    """Rademacher probes per block, sigma and matrix."""
    batch_size: int = 64
    threads: int = 1
    """torch threads of each process, as config.yaml's ``growth.threads``."""
    seed: int = BASE_SEED


PAPER = JobSettings()
# Small enough for a check of the whole benchmark in about a minute.
QUICK = JobSettings(d_model=32, num_sigmas=5, probes=8, batch_size=16)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per `JobSettings` field, defaulting to config.yaml's settings (`PAPER`)."""
    for field, value in asdict(PAPER).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=value)


def job_from_arguments(arguments: argparse.Namespace) -> JobSettings:
    """Collect the `JobSettings` fields from parsed arguments."""
    return JobSettings(**{field: getattr(arguments, field) for field in asdict(PAPER)})


def job_command_line(job: JobSettings) -> list[str]:
    """Return the options that pass `job` to a child process."""
    options = []
    for field, value in asdict(job).items():
        options += [f"--{field.replace('_', '-')}", str(value)]
    return options


def sigma_grid(job: JobSettings):
    """Return the ``log`` grid with `job.num_sigmas` points."""
    import numpy as np

    return 10.0 ** np.linspace(-2.0, 1.0, job.num_sigmas)


def write_json(path: str, record: dict) -> None:
    """Write `record` as JSON, with NaN and infinities as ``NaN`` and ``Infinity``.

    Python's `json` writes and reads these two extensions of the JSON standard.
    """
    Path(path).write_text(json.dumps(record, indent=1))
