"""Record what produced a result: its configuration, packages, device and run.

Two records per result:

- `job_provenance`: what the numbers depend on (the configuration slice, the
  seed, package versions, device, dtype, threads). It goes into the result
  pickle and is the same on every run of the same job in the same
  environment, so the pickle stays byte-identical across runs.
- `run_provenance`: what changes from run to run (wall time, timestamps, git
  revision, host). It goes into a JSON sidecar beside the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .results_io import atomic_write_bytes

# Distributions whose versions can change the numbers, by their PyPI names.
TRACKED_PACKAGES = ("torch", "transformer-lens", "curvlinops-for-pytorch", "numpy")

# Seconds to wait for git, so that a slow network file system does not stall a job.
GIT_TIMEOUT_S = 10


def package_versions(packages: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Return the installed version of each distribution and of Python (None if not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def file_sha256(path: str | os.PathLike) -> str:
    """Return the SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run_git(repository: Path, *args: str) -> str | None:
    """Run a read-only git command in `repository` and return its stdout, or None if it fails."""
    try:
        completed = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(repository), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip()


def git_revision(repository: str | os.PathLike) -> dict[str, Any]:
    """Return ``{revision, dirty}`` of the git checkout whose top level is `repository`.

    Both are None when git is missing, or when `repository` is not the top
    level of a checkout (a copy of the workflow inside another repository
    does not report that repository's revision). ``dirty`` is True when
    tracked files differ from the commit.
    """
    repository = Path(repository).resolve()
    unknown = {"revision": None, "dirty": None}
    top_level = _run_git(repository, "rev-parse", "--show-toplevel")
    if top_level is None or Path(top_level).resolve() != repository:
        return unknown
    revision = _run_git(repository, "rev-parse", "HEAD")
    if revision is None:
        return unknown
    status = _run_git(repository, "status", "--porcelain", "--untracked-files=no")
    return {"revision": revision, "dirty": None if status is None else bool(status)}


def job_provenance(
    *,
    config: dict[str, Any],
    seed: int,
    device: str,
    dtype: str,
    threads: int,
    inputs: dict[str, str | os.PathLike],
) -> dict[str, Any]:
    """Describe what a job's numbers depend on, as plain data (JSON and pickle safe).

    Args:
        config: The configuration slice the job ran (its rule's params).
        seed: Absolute seed of the job.
        device: Device type the products ran on (``cpu`` or ``cuda``).
        dtype: Floating-point type of the model (``float32`` or ``float64``).
        threads: Torch threads of the job.
        inputs: Input files by name; their SHA-256 digests are recorded.

    Returns:
        A dict with the keys ``config``, ``seed``, ``device``, ``dtype``,
        ``threads``, ``packages`` and ``inputs_sha256``.
    """
    return {
        "config": config,
        "seed": int(seed),
        "device": device,
        "dtype": dtype,
        "threads": int(threads),
        "packages": package_versions(),
        "inputs_sha256": {name: file_sha256(path) for name, path in inputs.items()},
    }


def run_provenance(
    *,
    started: datetime,
    finished: datetime,
    wall_time_s: float,
    repository: str | os.PathLike,
    device_name: str,
    result_path: str | os.PathLike,
    job: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe one run of a job: what changes from run to run, plus the job record.

    Args:
        started: Start time of the job (timezone-aware).
        finished: End time of the job (timezone-aware).
        wall_time_s: Seconds from the start of the job to the result written.
        repository: Root of the project's checkout, for its git revision.
        device_name: Human-readable device, e.g. the GPU model.
        result_path: The result file that this record describes.
        job: The record from `job_provenance`, repeated so the sidecar reads
            on its own.
        extra: Further plain-data facts about the run (counts, warnings).

    Returns:
        A dict ready for `write_sidecar`.
    """
    return {
        "result": Path(result_path).name,
        "result_sha256": file_sha256(result_path),
        "started_at": started.astimezone(timezone.utc).isoformat(),
        "finished_at": finished.astimezone(timezone.utc).isoformat(),
        "wall_time_s": round(float(wall_time_s), 3),
        "git": git_revision(repository),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "device_name": device_name,
        "job": job,
        **(extra or {}),
    }


def write_sidecar(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write a provenance record as indented JSON, atomically.

    Raises:
        TypeError: If `record` contains a value JSON cannot encode.
        ValueError: If `record` contains NaN or infinity, which JSON lacks.
    """
    text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))
