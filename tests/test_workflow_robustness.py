"""The workflow under faults: provenance, determinism, SIGKILL and restart, overflow, reruns, disk.

Every test runs Snakemake in a private copy of the workflow on the tiny
preset, layered with `OVERRIDES`:
- ``softmax`` is cut to two layers on a 40-point grid, so that its growth job
  computes long enough to be killed in the middle;
- ``overflow`` is three-layer linear attention in float32 on sigma 1 and 10,
  where the norms overflow float32 at sigma 10.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import yaml

from transformer_curvature.experiments import GrowthConfig
from transformer_curvature.results_io import load_results

pytestmark = pytest.mark.workflow

CONFIG_FILE = "robustness.yaml"
OVERRIDES = {
    "sigma_grids": {
        "dense_log": {"spacing": "log", "start": 0.1, "stop": 1.0, "num": 40},
        "overflow": {"spacing": "log", "start": 1.0, "stop": 10.0, "num": 2},
    },
    "growth": {
        "repeats": 1,
        "experiments": {
            "softmax": {"num_layers": [2], "sigma_grids": ["dense_log"]},
            "overflow": {
                "data": {"batch_size": 4, "num_batches": 1, "seed": 1234},
                "model": "transformer",
                "norm": "none",
                "num_layers": [3],
                "sigma_grids": ["overflow"],
                "linear_attention": True,
                "residual_scaling": 0.0,
                "loss": "mse",
                "dtype": "float32",
            },
        },
    },
}
CONFIG_ARGS = ("--configfile", "presets/tiny.yaml", CONFIG_FILE)

SLOW = GrowthConfig(
    experiment="softmax", model="transformer", num_layers=2, sigma_grid="dense_log"
).name
PRE_LN = GrowthConfig(
    experiment="pre_ln", model="transformer", num_layers=1, sigma_grid="log", norm="pre"
).name
OVERFLOW = GrowthConfig(
    experiment="overflow",
    model="transformer",
    num_layers=3,
    sigma_grid="overflow",
    linear_attention=True,
    residual_scaling=0.0,
    loss="mse",
).name
SEED = 1234


def seed_result(config: str) -> str:
    return f"results/tiny/growth/{config}/seed={SEED}.pickle"


def seed_sidecar(config: str) -> str:
    return f"results/tiny/growth/{config}/seed={SEED}.provenance.json"


def seed_log(config: str) -> str:
    return f"results/tiny/logs/growth/{config}/seed={SEED}.log"


TARGETS = (seed_result(SLOW), seed_result(PRE_LN))


def prepare(workdir: Path) -> Path:
    """Write the test's config layer into a workflow copy and return the copy."""
    (workdir / CONFIG_FILE).write_text(yaml.safe_dump(OVERRIDES, sort_keys=False))
    return workdir


def planned_jobs(completed: subprocess.CompletedProcess[str]) -> set[tuple[str, str]]:
    """Parse a dry run's output into ``{(rule, first output)}`` of the jobs it would run."""
    jobs = set()
    rule = None
    for line in completed.stdout.splitlines():
        header = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if header:
            rule = header.group(1)
        elif rule is not None and line.strip().startswith("output: "):
            jobs.add((rule, line.strip().removeprefix("output: ").split(", ")[0]))
            rule = None
    return jobs


def partial_files(workdir: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes under results/."""
    return sorted((workdir / "results").rglob(".*.partial"))


def all_keys(value) -> set[str]:
    """Every dict key in a nested structure."""
    keys: set[str] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            keys.add(str(key))
            keys |= all_keys(child)
    elif isinstance(value, (list, tuple)):
        for child in value:
            keys |= all_keys(child)
    return keys


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference_run(new_workflow_copy, snakemake) -> Path:
    """A workflow copy that has run the growth jobs of `TARGETS` without interruption."""
    workdir = prepare(new_workflow_copy("reference"))
    snakemake(workdir, *TARGETS, *CONFIG_ARGS, cores=2)
    return workdir


def test_result_records_provenance(reference_run):
    result_path = reference_run / seed_result(SLOW)
    result = load_results(result_path)
    record = result["provenance"]

    assert record["seed"] == SEED
    assert record["device"] == "cpu"
    assert record["dtype"] == "float32"
    assert record["threads"] == 1
    growth_config = record["config"]["growth_config"]
    assert growth_config["name"] == SLOW
    assert growth_config["experiment"] == "softmax"
    assert growth_config["num_layers"] == 2
    assert growth_config["sigma_grid"] == "dense_log"
    assert record["config"]["settings"]["d_model"] == 4
    assert record["config"]["settings"]["probes"] == 3
    assert record["config"]["data"] == {"batch_size": 4, "num_batches": 1, "seed": 1234}
    np.testing.assert_allclose(record["config"]["sigmas"], np.logspace(-1, 0, 40))
    for package in ("torch", "transformer-lens", "curvlinops-for-pytorch", "numpy"):
        assert record["packages"][package] == metadata.version(package)
    tokens = reference_run / "results/tiny/data/softmax.npy"
    assert record["inputs_sha256"] == {"tokens": sha256(tokens)}

    # What changes from run to run stays out of the pickle.
    volatile = {"wall_time_s", "started_at", "finished_at", "host", "git", "revision"}
    assert all_keys(result).isdisjoint(volatile)


def test_sidecar_records_run(reference_run):
    result_path = reference_run / seed_result(SLOW)
    sidecar = json.loads((reference_run / seed_sidecar(SLOW)).read_text())
    assert sidecar["result"] == result_path.name
    assert sidecar["result_sha256"] == sha256(result_path)
    assert sidecar["wall_time_s"] > 0
    assert sidecar["host"] == socket.gethostname()
    # The copy is no git checkout, so the revision is unknown, not the project's.
    assert sidecar["git"] == {"revision": None, "dirty": None}
    assert sidecar["job"] == load_results(result_path)["provenance"]
    assert sidecar["nonfinite_norms"] == {"total": 2 * 3 * 2 * 40, "nan": 0, "inf": 0}


def test_same_seed_same_bytes(reference_run, new_workflow_copy, snakemake):
    rerun = prepare(new_workflow_copy("determinism"))
    snakemake(rerun, seed_result(SLOW), *CONFIG_ARGS)
    first = (reference_run / seed_result(SLOW)).read_bytes()
    second = (rerun / seed_result(SLOW)).read_bytes()
    assert first == second
    first_sidecar = json.loads((reference_run / seed_sidecar(SLOW)).read_text())
    second_sidecar = json.loads((rerun / seed_sidecar(SLOW)).read_text())
    assert first_sidecar["result_sha256"] == second_sidecar["result_sha256"]


def wait_for(condition, event: str, process: subprocess.Popen, limit_s: float = 600) -> None:
    """Poll `condition` until it is true.

    Fails the test if `process` exits first or `limit_s` seconds pass.
    """
    deadline = time.monotonic() + limit_s
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"snakemake exited ({process.returncode}) before {event}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit_s} s waiting for {event}")
        time.sleep(0.05)


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_killed_run_restarts_to_same_numbers(
    reference_run, new_workflow_copy, snakemake, snakemake_cli
):
    workdir = prepare(new_workflow_copy("interrupted"))
    process = subprocess.Popen(
        snakemake_cli(seed_result(SLOW), *CONFIG_ARGS),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    log = workdir / seed_log(SLOW)
    try:
        # The job logs this line just before its loop over sigma.
        wait_for(
            lambda: log.exists() and ", on cpu" in log.read_text(),
            "the growth job started",
            process,
        )
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    while group_alive(process.pid):
        time.sleep(0.05)

    result = workdir / seed_result(SLOW)
    if result.exists():
        pytest.fail("the growth job finished before the kill; give it a longer sigma grid")
    assert not (workdir / seed_sidecar(SLOW)).exists()
    assert partial_files(workdir) == []

    # SIGKILL leaves Snakemake's lock behind; --unlock is its documented remedy.
    snakemake(workdir, "--unlock", *CONFIG_ARGS)
    snakemake(workdir, seed_result(SLOW), *CONFIG_ARGS)

    assert partial_files(workdir) == []
    restarted = load_results(result)
    reference = load_results(reference_run / seed_result(SLOW))
    for block, matrices in reference["norms"].items():
        for matrix, values in matrices.items():
            np.testing.assert_array_equal(restarted["norms"][block][matrix], values)
    assert result.read_bytes() == (reference_run / seed_result(SLOW)).read_bytes()


def warning_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if " WARNING " in line]


def test_overflow_recorded_and_skipped(new_workflow_copy, snakemake):
    workdir = prepare(new_workflow_copy("overflow"))
    figure = f"figures/tiny/{OVERFLOW}__all.pdf"
    snakemake(workdir, figure, *CONFIG_ARGS, cores=2)

    result = load_results(workdir / seed_result(OVERFLOW))
    arrays = [values for matrices in result["norms"].values() for values in matrices.values()]
    total = sum(values.size for values in arrays)
    nan = sum(int(np.isnan(values).sum()) for values in arrays)
    inf = sum(int(np.isinf(values).sum()) for values in arrays)
    assert nan + inf > 0, "float32 did not overflow; the test config no longer forces it"
    # Every norm at sigma = 1 is finite: the fault is confined to the large sigma.
    assert all(np.isfinite(values[:, 0]).all() for values in arrays)

    job_warnings = warning_lines(workdir / seed_log(OVERFLOW))
    assert len(job_warnings) == 1, job_warnings
    assert f"{nan + inf} of {total} norms are not finite ({nan} NaN, {inf} inf)" in job_warnings[0]
    assert "from sigma = 10 on" in job_warnings[0]
    assert "dtype: float64 in growth.experiments.overflow" in job_warnings[0]
    sidecar = json.loads((workdir / seed_sidecar(OVERFLOW)).read_text())
    assert sidecar["nonfinite_norms"] == {"total": total, "nan": nan, "inf": inf}

    collect_warnings = warning_lines(workdir / f"results/tiny/logs/collect/{OVERFLOW}.log")
    assert len(collect_warnings) == 1, collect_warnings
    assert f"{nan + inf} of {total} values are not finite" in collect_warnings[0]
    assert "at sigma 10" in collect_warnings[0]
    collected = load_results(workdir / f"results/tiny/{OVERFLOW}_frob_q.pickle")
    for layer, repeats in collected.items():
        np.testing.assert_array_equal(repeats[0], result["norms"]["query"]["H"][layer])

    plot_log = (workdir / f"results/tiny/logs/figures/{OVERFLOW}.log").read_text()
    assert "not shown" in plot_log
    assert (workdir / figure).read_bytes().startswith(b"%PDF")


# (case id, change to the reference copy, jobs the dry run must plan afterwards).
def append_line(relative: str):
    def change(workdir: Path) -> None:
        path = workdir / relative
        path.write_text(path.read_text() + "\n# edited by a rerun test\n")

    return change


def layer_config(overrides: dict):
    def change(workdir: Path) -> None:
        (workdir / "change.yaml").write_text(yaml.safe_dump(overrides))

    return change


BOTH_GROWTH_JOBS = {("growth_seed", seed_result(SLOW)), ("growth_seed", seed_result(PRE_LN))}
RERUN_CASES = [
    ("nothing_changed", None, set()),
    ("package_module_used_by_growth", append_line("workflow/transformer_curvature/losses.py"),
     BOTH_GROWTH_JOBS),
    ("package_module_used_by_data", append_line("workflow/transformer_curvature/data.py"),
     BOTH_GROWTH_JOBS | {("make_batches", "results/tiny/data/softmax.npy"),
                         ("make_batches", "results/tiny/data/pre_ln.npy")}),
    ("package_module_not_used", append_line("workflow/transformer_curvature/plotting.py"), set()),
    ("growth_script", append_line("workflow/scripts/growth_seed.py"), BOTH_GROWTH_JOBS),
    ("one_experiment_dtype", layer_config({"growth": {"experiments": {"pre_ln": {"dtype": "float64"}}}}),
     {("growth_seed", seed_result(PRE_LN))}),
    ("one_experiment_batches", layer_config({"growth": {"experiments": {"pre_ln": {"data": {"batch_size": 5}}}}}),
     {("growth_seed", seed_result(PRE_LN)), ("make_batches", "results/tiny/data/pre_ln.npy")}),
    ("shared_setting", layer_config({"growth": {"probes": 4}}), BOTH_GROWTH_JOBS),
    ("other_experiment", layer_config({"growth": {"experiments": {"mlp": {"dtype": "float64"}}}}), set()),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    [pytest.param(change, expected, id=case) for case, change, expected in RERUN_CASES],
)
def test_dry_run_plans_affected_jobs(reference_run, tmp_path, snakemake, change, expected):
    # Edits happen in place and are undone after, with the files' old times.
    backup = tmp_path / "backup"
    shutil.copytree(reference_run / "workflow", backup)
    (reference_run / "change.yaml").write_text("{}\n")
    try:
        if change is not None:
            change(reference_run)
        completed = snakemake(reference_run, "--dry-run", *TARGETS, *CONFIG_ARGS, "change.yaml")
    finally:
        shutil.rmtree(reference_run / "workflow")
        shutil.copytree(backup, reference_run / "workflow")
        (reference_run / "change.yaml").unlink()
    assert planned_jobs(completed) == expected, completed.stdout


def rule_scripts(workdir: Path) -> dict[str, str]:
    """Map each rule with a ``script:`` to the script's file name."""
    scripts = {}
    for rules_file in sorted((workdir / "workflow" / "rules").glob("*.smk")):
        text = rules_file.read_text()
        for match in re.finditer(r"^rule (\w+):(.*?)(?=^rule |\Z)", text, re.M | re.S):
            script = re.search(r'script:\s*"([^"]+)"', match.group(2))
            if script:
                scripts[match.group(1)] = Path(script.group(1)).name
    return scripts


def imported_modules(source: Path) -> set[str]:
    """Return the package modules that `source` imports directly."""
    modules = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:  # inside the package: from . import x, from .x import y
            modules |= {alias.name for alias in node.names} if node.module is None else {node.module}
        elif node.module == "transformer_curvature":
            modules |= {alias.name for alias in node.names}
        elif node.module and node.module.startswith("transformer_curvature."):
            modules.add(node.module.split(".")[1])
    return modules


def module_closure(script: Path, package: Path) -> set[str]:
    """Return the package modules a script uses, directly or through other modules."""
    pending = list(imported_modules(script))
    seen = {"__init__"}
    while pending:
        module = pending.pop()
        if module in seen or not (package / f"{module}.py").exists():
            continue
        seen.add(module)
        pending.extend(imported_modules(package / f"{module}.py"))
    return seen


def test_code_inputs_cover_imports(reference_run, snakemake):
    completed = snakemake(reference_run, "--dry-run", "--forceall", "--configfile", "presets/tiny.yaml")
    package = reference_run / "workflow" / "transformer_curvature"
    declared: dict[str, set[str]] = {}
    rule = None
    for line in completed.stdout.splitlines():
        header = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if header:
            rule = header.group(1)
        elif rule is not None and line.strip().startswith("input: "):
            inputs = line.strip().removeprefix("input: ").split(", ")
            # Code inputs are relative to the working directory.
            declared[rule] = {
                Path(path).stem
                for path in inputs
                if (reference_run / path).resolve().parent == package.resolve()
            }
    scripts = rule_scripts(reference_run)
    assert scripts, "no rule with a script found: the parser is broken"
    missing = {}
    for rule_name, script in scripts.items():
        if rule_name not in declared:
            continue  # not part of the tiny preset's DAG
        used = module_closure(reference_run / "workflow" / "scripts" / script, package)
        if used - declared[rule_name]:
            missing[rule_name] = sorted(used - declared[rule_name])
    assert missing == {}


def test_results_under_file_stops_run(workflow_copy, snakemake):
    (workflow_copy / "results").write_text("a file where the results folder belongs\n")
    completed = snakemake(workflow_copy, "--dry-run", "--configfile", "presets/tiny.yaml", check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert "cannot write results/tiny" in output
    assert "results is a file, not a folder" in output
    assert "Traceback (most recent call last)" not in output
    assert (workflow_copy / "results").read_text().startswith("a file")
