"""Checks for run_slurm_test.sh: the test profile, the SLURM jobs, and the results.

Subcommands:
    prepare-profile PROFILE_DIR   drop slurm_account from a copy of the profile,
                                  print the partitions it names
    check-jobs ...                check what SLURM ran against Snakemake's log
    compare LOCAL SLURM           compare two runs' result files

A failed check exits with status 1 and prints what differed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))

from transformer_curvature.results_io import load_results  # noqa: E402

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
# The relative tolerance of the result comparison. Both runs use the CPU with
# the same thread count, so the numbers should agree to rounding.
RTOL = 1e-6


class CheckFailed(Exception):
    """A check found a difference, which the message names."""


def prepare_profile(profile_dir: Path) -> None:
    """Remove ``slurm_account`` from the profile copy and print its partition names.

    The test cluster has no accounts, and the plugin checks a given account
    with sacctmgr. The partitions are printed one per line, so that the test
    cluster can offer each of them.
    """
    path = profile_dir / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    sections = [profile.get("default-resources") or {}]
    sections += list((profile.get("set-resources") or {}).values())
    removed = False
    partitions = []
    for resources in sections:
        if resources.pop("slurm_account", None) is not None:
            removed = True
        if resources.get("slurm_partition"):
            partitions.append(str(resources["slurm_partition"]))
    if removed:
        path.write_text(yaml.safe_dump(profile, sort_keys=False))
        print(f"removed slurm_account from the test copy {path}", file=sys.stderr)
    for partition in dict.fromkeys(partitions):
        print(partition)


def slurm_jobs(run_name: str) -> dict[str, dict[str, str]]:
    """Return the jobs that squeue still lists under the job name `run_name`."""
    output = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--name", run_name, "--format=%i|%T|%k"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    jobs = {}
    for line in output.splitlines():
        job_id, state, comment = line.strip().split("|", 2)
        jobs[job_id] = {"state": state, "comment": comment}
    return jobs


def job_details(job_id: str) -> dict[str, str]:
    """Return ``scontrol show job`` fields of one job as a dict."""
    output = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", output))


def check_jobs(args: argparse.Namespace) -> None:
    """Check that every job went through sbatch, ran a step here and ended as expected.

    Raises:
        CheckFailed: On the first job that does not match.
    """
    log = Path(args.snakemake_log).read_text()
    submissions = SUBMITTED.findall(log)
    run_name = re.search(r"SLURM run ID: (\S+)", log)
    if run_name is None:
        raise CheckFailed(f"{args.snakemake_log} names no SLURM run ID.")
    jobs = slurm_jobs(run_name.group(1))
    steps = Path(args.steps).read_text().split("\n")
    stepped = {line.split()[0] for line in steps if line.split()[1:2] == ["0"]}

    print("SLURM jobs of this run (RunTime: start to end on the node):")
    for snakemake_id, slurm_id in submissions:
        job = jobs.get(slurm_id, {"state": "not in squeue", "comment": "?"})
        run_time = job_details(slurm_id).get("RunTime", "?") if slurm_id in jobs else "?"
        print(
            f"  SLURM job {slurm_id:>4}  Snakemake job {snakemake_id:>3}  {job['state']:<10} "
            f"RunTime {run_time}  {job['comment']}"
        )

    if len(submissions) != args.expected_submissions:
        raise CheckFailed(
            f"expected {args.expected_submissions} sbatch submissions, the log shows "
            f"{len(submissions)}: {submissions}"
        )
    killed_snakemake_ids = [snakemake for snakemake, slurm in submissions if slurm == args.killed]
    if not killed_snakemake_ids:
        raise CheckFailed(f"the killed SLURM job {args.killed} is not among the submissions.")
    for snakemake_id, slurm_id in submissions:
        state = jobs.get(slurm_id, {}).get("state")
        expected = "CANCELLED" if slurm_id == args.killed else "COMPLETED"
        if state != expected:
            raise CheckFailed(f"SLURM job {slurm_id} ended as {state}, expected {expected}.")
        if slurm_id not in stepped:
            raise CheckFailed(
                f"SLURM job {slurm_id} never started step 0 (the srun step that runs the "
                f"rule) on the node; see {args.steps}."
            )
    retried = [slurm for snakemake, slurm in submissions if snakemake == killed_snakemake_ids[0]]
    if len(retried) != 2 or jobs[retried[1]]["state"] != "COMPLETED":
        raise CheckFailed(
            f"the killed job's Snakemake job {killed_snakemake_ids[0]} should have run twice, "
            f"first cancelled, then completed; its SLURM jobs: {retried}"
        )
    print(f"killed SLURM job {args.killed}; the retry ran as SLURM job {retried[1]}")

    check_requests(submissions, jobs, Path(args.profile))


def check_requests(
    submissions: list[tuple[str, str]], jobs: dict[str, dict[str, str]], profile_path: Path
) -> None:
    """Check that sbatch asked for the time, memory and GPUs the profile sets per rule."""
    profile = yaml.safe_load(profile_path.read_text())
    defaults = profile.get("default-resources") or {}
    per_rule = profile.get("set-resources") or {}
    for _, slurm_id in submissions:
        rule = re.match(r"rule_(\w+?)(?:_wildcards_|$)", jobs[slurm_id]["comment"])
        if rule is None:
            raise CheckFailed(f"SLURM job {slurm_id}: no rule in comment {jobs[slurm_id]['comment']!r}")
        resources = {**defaults, **per_rule.get(rule.group(1), {})}
        details = job_details(slurm_id)
        minutes = int(resources["runtime"])
        expected_time = f"{minutes // 60:02d}:{minutes % 60:02d}:00"
        if details.get("TimeLimit") != expected_time:
            raise CheckFailed(
                f"SLURM job {slurm_id} ({rule.group(1)}): TimeLimit {details.get('TimeLimit')}, "
                f"the profile's runtime is {minutes} min ({expected_time})."
            )
        expected_memory = f"{int(resources['mem_mb'])}M"
        if details.get("MinMemoryNode") != expected_memory:
            raise CheckFailed(
                f"SLURM job {slurm_id} ({rule.group(1)}): memory {details.get('MinMemoryNode')}, "
                f"the profile's mem_mb is {expected_memory}."
            )
        gpus = int(resources.get("gpu") or 0)
        expected_gpus = f"gres:gpu:{gpus}" if gpus else None
        if details.get("TresPerJob") != expected_gpus:
            raise CheckFailed(
                f"SLURM job {slurm_id} ({rule.group(1)}): TresPerJob "
                f"{details.get('TresPerJob')}, the profile asks for {gpus} GPU(s)."
            )
    print(f"all {len(submissions)} jobs asked for the runtime, memory and GPUs of the profile")


def compare_values(local: Any, slurm: Any, where: str) -> None:
    """Compare two loaded results recursively: same keys, types, and numbers to RTOL.

    Raises:
        CheckFailed: Naming the first key path that differs.
    """
    if isinstance(local, dict):
        if not isinstance(slurm, dict) or set(local) != set(slurm):
            raise CheckFailed(f"{where}: keys differ: {sorted(local)} vs {sorted(slurm)}")
        for key in local:
            compare_values(local[key], slurm[key], f"{where}[{key!r}]")
    elif isinstance(local, (list, tuple)):
        if not isinstance(slurm, (list, tuple)) or len(local) != len(slurm):
            raise CheckFailed(f"{where}: lengths differ: {local!r} vs {slurm!r}")
        for index, (left, right) in enumerate(zip(local, slurm)):
            compare_values(left, right, f"{where}[{index}]")
    elif isinstance(local, (np.ndarray, float, int, np.number)) and not isinstance(local, bool):
        left, right = np.asarray(local), np.asarray(slurm)
        if left.shape != right.shape:
            raise CheckFailed(f"{where}: shapes differ: {left.shape} vs {right.shape}")
        if not np.allclose(left, right, rtol=RTOL, atol=0.0, equal_nan=True):
            difference = np.nanmax(np.abs(left - right) / np.maximum(np.abs(left), 1e-300))
            raise CheckFailed(f"{where}: numbers differ, max relative difference {difference:.3g}")
    elif local != slurm:
        raise CheckFailed(f"{where}: {local!r} vs {slurm!r}")


def compare(local_dir: Path, slurm_dir: Path) -> None:
    """Compare every per-seed pickle and dense ``.npz`` of the local run with the SLURM run.

    Raises:
        CheckFailed: If a file is missing on one side or its numbers differ.
    """
    patterns = ("growth/**/*.pickle", "dense/*.npz")
    local_files = sorted(path.relative_to(local_dir) for p in patterns for path in local_dir.glob(p))
    slurm_files = sorted(path.relative_to(slurm_dir) for p in patterns for path in slurm_dir.glob(p))
    if not local_files:
        raise CheckFailed(f"the local run left no result files in {local_dir}")
    if local_files != slurm_files:
        raise CheckFailed(f"the runs made different files: {local_files} vs {slurm_files}")
    identical = 0
    for relative in local_files:
        if relative.suffix == ".npz":
            with np.load(local_dir / relative) as left, np.load(slurm_dir / relative) as right:
                local = {key: left[key] for key in left.files}
                slurm = {key: right[key] for key in right.files}
        else:
            local = load_results(local_dir / relative)
            slurm = load_results(slurm_dir / relative)
        compare_values(local, slurm, str(relative))
        identical += (local_dir / relative).read_bytes() == (slurm_dir / relative).read_bytes()
        print(f"  equal: {relative}")
    print(f"{len(local_files)} result files agree (rtol {RTOL}); {identical} are byte-identical")


def main() -> None:
    """Parse the subcommand and run it; exit with status 1 when a check fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser("prepare-profile", help="Drop slurm_account, print partitions.")
    profile.add_argument("profile_dir", type=Path)

    jobs = commands.add_parser("check-jobs", help="Check the SLURM jobs of the run.")
    jobs.add_argument("--snakemake-log", required=True, help="Snakemake's output of the run.")
    jobs.add_argument("--steps", required=True, help="Lines 'job step comment' from the TaskProlog.")
    jobs.add_argument("--killed", required=True, help="SLURM id of the job that the test cancelled.")
    jobs.add_argument("--expected-submissions", type=int, required=True)
    jobs.add_argument("--profile", required=True, help="The profile's config.yaml as used.")

    results = commands.add_parser("compare", help="Compare the result files of two runs.")
    results.add_argument("local_dir", type=Path)
    results.add_argument("slurm_dir", type=Path)

    args = parser.parse_args()
    try:
        if args.command == "prepare-profile":
            prepare_profile(args.profile_dir)
        elif args.command == "check-jobs":
            check_jobs(args)
        else:
            compare(args.local_dir, args.slurm_dir)
    except CheckFailed as error:
        print(f"FAILED: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
