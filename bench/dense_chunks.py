"""Time the heterogeneity figure's dense Hessian by both paths and several chunk sizes.

The model and data are config.yaml's ``dense`` settings: a one-layer softmax
transformer with ``d_model`` 16 (3,836 parameters), one batch of 64, the
``ce`` loss. Each (path, chunk size) runs in its own process, so that its
peak memory is its own; the rounds are interleaved. Prints one line per
setting: median seconds of `dense.dense_hessian` for the full parameter set
and the attention weights (imports excluded), and peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SETTINGS = [("curvlinops", 32), ("curvlinops", 64), ("curvlinops", 256)]
SETTINGS += [("split", 64), ("split", 128), ("split", 256)]

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[4])
import torch
torch.set_num_threads(int(sys.argv[3]))
from transformer_curvature.data import as_curvlinops_data, make_addition_batches
from transformer_curvature.dense import ATTENTION_PARAMETERS, TRANSFORMER_PARAMETERS, dense_hessian
from transformer_curvature.losses import make_loss
from transformer_curvature.models import TransformerSettings, build_transformer
settings = TransformerSettings(num_layers=1, d_model=16, mlp_ratio=4)
model = build_transformer(settings, seed=1234)
data = as_curvlinops_data(make_addition_batches(64, 1, 1234), torch.device("cpu"))
loss = make_loss("ce")
split = settings if sys.argv[1] == "split" else None
start = time.perf_counter()
for names in (TRANSFORMER_PARAMETERS, ATTENTION_PARAMETERS):
    dense_hessian(model, loss, names, data, int(sys.argv[2]), settings=split)
print(time.perf_counter() - start)
"""


def run(path: str, chunk_size: int, threads: int) -> tuple[float, float]:
    """Return ``(seconds of dense_hessian, peak resident MiB)`` of one child process."""
    command = [
        sys.executable,
        "-c",
        CHILD,
        path,
        str(chunk_size),
        str(threads),
        str(BENCH.parent / "workflow"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"dense Hessian with {path}, chunk {chunk_size} failed: {output}")
    return float(output.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main() -> None:
    """Run every setting `--rounds` times, interleaved, and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    arguments = parser.parse_args()

    results = {setting: [] for setting in SETTINGS}
    for _ in range(arguments.rounds):
        for path, chunk_size in SETTINGS:
            start = time.perf_counter()
            results[path, chunk_size].append(run(path, chunk_size, arguments.threads))
            print(f"{path} chunk {chunk_size}: {time.perf_counter() - start:.1f} s", flush=True)
    for (path, chunk_size), runs in results.items():
        seconds = statistics.median(run[0] for run in runs)
        memory = max(run[1] for run in runs)
        print(f"dense_{path}_chunk_{chunk_size}: {seconds:.1f} s, peak {memory:.0f} MiB")


if __name__ == "__main__":
    main()
