"""Time the workflow's growth job against the notebook's method, each as a whole process.

Runs, in one invocation and on the same machine:

1. a matrix-multiplication rate (float32, square 2048 x 2048, the job's threads);
2. the FLOPs of the workflow's per-sigma curvature work (torch's FlopCounterMode,
   matrix products only);
3. the two methods as separate processes, interleaved, the workflow's first
   and last: wall time from process start to exit (imports included), peak
   resident memory of each process, and the seconds of its computation
   without imports.

Prints one ``name: value`` line per figure, including
``speedup_vs_notebook: X`` (median notebook seconds / median workflow seconds),
and compares the two methods' norms in units of their combined probe errors.
config.yaml's settings by default, with 1 torch thread per process as in
config.yaml: about 5 minutes on 2 shared cores (see docs/benchmarks.md).
``--quick`` runs a small model for a check of the script in about a minute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from job_settings import PAPER, QUICK, JobSettings, job_command_line

BENCH = Path(__file__).resolve().parent
MATMUL_SIZE = 2048

# A norm at most this fraction of the same block's ||H|| counts as zero (the
# last layer's value-block H_f is rounding noise); such pairs are not compared.
ZERO_FRACTION = 1e-4
# Estimates agree when they differ by at most this many combined standard errors.
AGREEMENT_Z = 3.0

MATMUL_SCRIPT = """
import sys, time, statistics, torch
torch.set_num_threads(int(sys.argv[1]))
size = int(sys.argv[2])
a, b = torch.randn(size, size), torch.randn(size, size)
for _ in range(3):
    a @ b
seconds = []
for _ in range(15):
    start = time.perf_counter()
    a @ b
    seconds.append(time.perf_counter() - start)
print(2 * size**3 / statistics.median(seconds))
"""


def run_process(command: list[str]) -> tuple[float, float]:
    """Run `command` to completion.

    Returns:
        ``(wall seconds, peak resident memory in MiB)`` of that process alone.

    Raises:
        RuntimeError: If it exits with a nonzero status.
    """
    # TQDM_DISABLE silences run_growth's progress bar in the benchmark's output.
    environment = os.environ | {"TQDM_DISABLE": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=BENCH, env=environment)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit status {process.returncode}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def matmul_rate(threads: int) -> float:
    """Return the float32 matmul rate in FLOP/s, measured in a child process."""
    output = subprocess.run(
        [sys.executable, "-c", MATMUL_SCRIPT, str(threads), str(MATMUL_SIZE)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(output.strip())


def method_command(script: str, job: JobSettings, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(BENCH / script),
        *job_command_line(job),
        "--output",
        str(output),
        *extra,
    ]


def compare_norms(fast: dict, notebook: dict) -> dict:
    """Compare the two methods' estimates block by block, in combined standard errors.

    Returns:
        ``compared`` (pairs with both values finite and nonzero), ``agree``
        (within `AGREEMENT_Z`), ``max_abs_z``, ``median_relative_difference``,
        ``zero_pairs`` and ``nonfinite_pairs``.
    """
    z_scores, relative, zero_pairs, nonfinite_pairs = [], [], 0, 0
    for block, matrices in fast["norms"].items():
        hessian = fast["norms"][block]["H"]
        for matrix, layers in matrices.items():
            for layer, values in enumerate(layers):
                for index, value in enumerate(values):
                    other = notebook["norms"][block][matrix][layer][index]
                    error = math.hypot(
                        fast["stderr"][block][matrix][layer][index],
                        notebook["stderr"][block][matrix][layer][index],
                    )
                    scale = hessian[layer][index]
                    if not all(math.isfinite(x) for x in (value, other, scale)):
                        nonfinite_pairs += 1
                    elif max(value, other) <= ZERO_FRACTION * scale:
                        zero_pairs += 1
                    elif not math.isfinite(error) or error == 0.0:
                        nonfinite_pairs += 1
                    else:
                        z_scores.append(abs(value - other) / error)
                        relative.append(abs(value - other) / other)
    return {
        "compared": len(z_scores),
        "agree": sum(z <= AGREEMENT_Z for z in z_scores),
        "max_abs_z": max(z_scores, default=float("nan")),
        "median_relative_difference": statistics.median(relative) if relative else float("nan"),
        "zero_pairs": zero_pairs,
        "nonfinite_pairs": nonfinite_pairs,
    }


def main() -> None:
    """Run the benchmark and print its figures, one per line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small settings (d_model 32, 5 sigmas, 8 probes, batch 16)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs of the notebook method; the workflow runs one more",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per process (default 1)"
    )
    arguments = parser.parse_args()
    if arguments.repeats < 1:
        parser.error(f"--repeats ({arguments.repeats}) must be at least 1")
    job = QUICK if arguments.quick else PAPER
    if arguments.threads is not None:
        job = replace(job, threads=arguments.threads)

    print("settings:", json.dumps(asdict(job)), flush=True)
    rate_before = matmul_rate(job.threads)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        flops_file = folder / "flops.json"
        run_process(method_command("fast_method.py", job, flops_file, "--count-flops"))
        flops_per_sigma = json.loads(flops_file.read_text())["flops_per_sigma"]

        runs = {"workflow": [], "notebook": []}
        records = {}
        order = ["workflow", "notebook"] * arguments.repeats + ["workflow"]
        for number, method in enumerate(order):
            output = folder / f"{method}-{number}.json"
            script = "fast_method.py" if method == "workflow" else "notebook_method.py"
            seconds, memory = run_process(method_command(script, job, output))
            record = json.loads(output.read_text())
            runs[method].append((seconds, memory, record["work_seconds"]))
            records[method] = record
            print(f"run {number + 1}/{len(order)} {method}: {seconds:.2f} s", flush=True)
    rate_after = matmul_rate(job.threads)

    def median(method: str, column: int) -> float:
        return statistics.median(run[column] for run in runs[method])

    workflow_seconds, notebook_seconds = median("workflow", 0), median("notebook", 0)
    workflow_work, notebook_work = median("workflow", 2), median("notebook", 2)
    achieved = flops_per_sigma * job.num_sigmas / workflow_work
    matmul = statistics.median([rate_before, rate_after])
    agreement = compare_norms(records["workflow"], records["notebook"])
    figures = {
        "workflow_seconds": f"{workflow_seconds:.2f}",
        "notebook_seconds": f"{notebook_seconds:.2f}",
        "speedup_vs_notebook": f"{notebook_seconds / workflow_seconds:.1f}",
        "workflow_runs_seconds": [round(run[0], 2) for run in runs["workflow"]],
        "notebook_runs_seconds": [round(run[0], 2) for run in runs["notebook"]],
        "workflow_run_growth_seconds": f"{workflow_work:.2f}",
        "notebook_sigma_loop_seconds": f"{notebook_work:.2f}",
        "workflow_startup_seconds": f"{workflow_seconds - workflow_work:.2f}",
        "workflow_peak_rss_mib": f"{max(run[1] for run in runs['workflow']):.0f}",
        "notebook_peak_rss_mib": f"{max(run[1] for run in runs['notebook']):.0f}",
        "workflow_products_per_second": f"{records['workflow']['products'] / workflow_work:.0f}",
        "notebook_products_per_second": f"{records['notebook']['products'] / notebook_work:.0f}",
        "workflow_matmul_flops_per_sigma": f"{flops_per_sigma:.4g}",
        "workflow_gflops_per_second": f"{achieved / 1e9:.1f}",
        "matmul_gflops_per_second": f"{matmul / 1e9:.1f}",
        "matmul_gflops_per_second_before_after": f"{rate_before / 1e9:.1f} {rate_after / 1e9:.1f}",
        "workflow_share_of_matmul_rate": f"{achieved / matmul:.2f}",
        "norms_compared": agreement["compared"],
        f"norms_within_{AGREEMENT_Z:g}_stderr": agreement["agree"],
        "norms_max_abs_z": f"{agreement['max_abs_z']:.2f}",
        "norms_median_relative_difference": f"{agreement['median_relative_difference']:.3f}",
        "norms_skipped_zero": agreement["zero_pairs"],
        "norms_skipped_nonfinite": agreement["nonfinite_pairs"],
    }
    for name, value in figures.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
