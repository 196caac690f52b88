"""Shared fixtures: a private copy of the workflow and a helper that runs Snakemake in it.

Tests that run Snakemake never write under the checkout's results/ or figures/:
they copy the workflow into a temporary folder and run there.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "workflow" / "scripts"

# What a run of the workflow reads; results/, figures/ and .snakemake/ stay behind.
WORKFLOW_PATHS = ("Snakefile", "config.yaml", "presets", "profiles", "workflow", "envs")

# Upper bound for one Snakemake call, so that a hung run fails the test instead
# of stalling CI. Not a timing check: tiny runs take well under a minute.
SNAKEMAKE_TIMEOUT_S = 900


def snakemake_executable() -> str:
    """Return the snakemake beside the running Python (the project's venv), else on PATH."""
    beside = Path(sys.executable).with_name("snakemake")
    if beside.exists():
        return str(beside)
    found = shutil.which("snakemake")
    if found is None:
        pytest.skip("snakemake is not installed in this environment")
    return found


def copy_workflow(destination: Path) -> Path:
    """Copy the files a run needs into `destination` (created) and return it."""
    destination.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in WORKFLOW_PATHS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, destination / name)
    return destination


def snakemake_command(*args: str, cores: int = 1) -> list[str]:
    """Build a snakemake command line.

    Put targets before ``--configfile``, which reads every following word as a file.
    """
    return [snakemake_executable(), "--cores", str(cores), *args]


def run_snakemake(
    workdir: Path, *args: str, cores: int = 1, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run snakemake in `workdir` and return the finished process with its output.

    Raises:
        AssertionError: If `check` and snakemake exits with an error. The
            message contains its output.
    """
    completed = subprocess.run(
        snakemake_command(*args, cores=cores),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=SNAKEMAKE_TIMEOUT_S,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
        check=False,
    )
    if check and completed.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed with exit code {completed.returncode}:\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    return completed


def write_config(workdir: Path, name: str, overrides: dict) -> str:
    """Write a config file of `overrides` into `workdir` and return its name for --configfile."""
    (workdir / name).write_text(yaml.safe_dump(overrides, sort_keys=False))
    return name


def run_job_script(
    script: str,
    *,
    inputs: dict[str, Any],
    outputs: dict[str, Path],
    log: Path,
    params: dict[str, Any] | None = None,
    rule: str | None = None,
) -> None:
    """Run ``workflow/scripts/<script>.py`` with Snakemake's own job containers as `snakemake`.

    Each input is a path, or a list of paths that the script reads as one
    named list (as Snakemake passes ``seeds=[...]``). `rule` defaults to `script`.
    """
    iocontainers = pytest.importorskip("snakemake.iocontainers")
    files: list[str] = []
    names = []
    for name, value in inputs.items():
        start = len(files)
        if isinstance(value, (list, tuple)):
            files += [str(path) for path in value]
            names.append((name, start, len(files)))
        else:
            files.append(str(value))
            names.append((name, start, None))
    input_files = iocontainers.InputFiles(toclone=files)
    for name, start, end in names:
        input_files._set_name(name, start, end)
    job = iocontainers.Snakemake(
        input_=input_files,
        output=iocontainers.OutputFiles(fromdict={key: str(path) for key, path in outputs.items()}),
        params=iocontainers.Params(fromdict=params or {}),
        wildcards=iocontainers.Wildcards(),
        threads=1,
        resources=iocontainers.ResourceList(),
        log=iocontainers.Log(fromdict={"log": str(log)}),
        config={},
        rulename=rule or script,
        bench_iteration=None,
        scriptdir=str(SCRIPTS),
    )
    runpy.run_path(
        str(SCRIPTS / f"{script}.py"), init_globals={"snakemake": job}, run_name="__main__"
    )


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    """A fresh copy of the workflow in a temporary folder, to run Snakemake in."""
    return copy_workflow(tmp_path / "workflow_copy")


@pytest.fixture(scope="session")
def new_workflow_copy(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A factory of fresh workflow copies, for module-scoped runs and for comparing runs."""

    def make(name: str) -> Path:
        return copy_workflow(tmp_path_factory.mktemp(name))

    return make


@pytest.fixture(scope="session")
def snakemake() -> Callable[..., subprocess.CompletedProcess[str]]:
    """The `run_snakemake` helper: ``snakemake(workdir, *args, cores=1, check=True)``."""
    return run_snakemake


@pytest.fixture(scope="session")
def snakemake_cli() -> Callable[..., list[str]]:
    """The `snakemake_command` helper, for tests that start Snakemake with Popen."""
    return snakemake_command
