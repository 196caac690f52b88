"""The workflow's growth job for the benchmark: `growth.run_growth` in a fresh process.

It imports what ``workflow/scripts/growth_seed.py`` imports, so its start-up
matches a Snakemake job's, and writes a JSON record. With ``--count-flops``
it instead counts the matrix-product FLOPs of one sigma's curvature work.
"""

from __future__ import annotations

import argparse
import time

from job_settings import (
    BASE_SEED,
    JobSettings,
    add_job_arguments,
    job_from_arguments,
    sigma_grid,
    write_json,
)

BLOCKS = ["query", "value"]
# The count of FLOPs does not depend on sigma; this one keeps every value finite.
FLOP_COUNT_SIGMA = 1.0


def growth_settings(job: JobSettings) -> dict:
    """Return the ``growth`` config section that the workflow passes to run_growth."""
    return {
        "d_model": job.d_model,
        "mlp_ratio": 4,
        "probes": job.probes,
        "estimator": "hutchinson",
        "exact_max_size": 4096,
        "chunk_size": 256,
        "blocks": BLOCKS,
    }


def growth_config(job: JobSettings):
    """Return config.yaml's softmax configuration (``log`` grid, ``ce``), `job.num_layers` deep."""
    from transformer_curvature.experiments import GrowthConfig

    return GrowthConfig(
        experiment="softmax",
        model="transformer",
        num_layers=job.num_layers,
        sigma_grid="log",
        norm="none",
        loss="ce",
        dtype="float32",
    )


def run_job(job: JobSettings) -> dict:
    """Run the growth job and return its norms, product count and seconds of run_growth.

    The seconds cover the model set-up and the sigma loop, and no imports
    when `main` has imported transformer_lens before.
    """
    import torch

    from transformer_curvature.data import make_addition_batches
    from transformer_curvature.growth import run_growth

    tokens = make_addition_batches(job.batch_size, 1, BASE_SEED)
    start = time.perf_counter()
    result = run_growth(
        growth_config(job),
        tokens,
        sigma_grid(job),
        job.seed,
        growth_settings(job),
        torch.device("cpu"),
    )
    work_seconds = time.perf_counter() - start

    def as_lists(table: dict) -> dict:
        return {b: {m: values.tolist() for m, values in ms.items()} for b, ms in table.items()}

    return {
        "norms": as_lists(result["norms"]),
        "stderr": as_lists(result["probe_stderr"]),
        # One Hessian and one GGN product per probe, block, layer and sigma.
        "products": 2 * job.probes * len(BLOCKS) * job.num_layers * job.num_sigmas,
        "work_seconds": work_seconds,
    }


def count_flops_per_sigma(job: JobSettings) -> int:
    """Count the matrix-product FLOPs of one sigma's work with torch's FlopCounterMode.

    The count covers what run_growth does per sigma (the head linearization
    and the products of every block), not the set-up before the loop.
    """
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from transformer_curvature import curvature, growth
    from transformer_curvature.data import as_curvlinops_data, make_addition_batches
    from transformer_curvature.losses import make_loss
    from transformer_curvature.models import ATTENTION_BLOCKS, embedding_weights

    config = growth_config(job)
    settings = growth_settings(job)
    model = growth.build_model(config, job.d_model, 4, job.seed, torch.float32)
    data = as_curvlinops_data(
        make_addition_batches(job.batch_size, 1, BASE_SEED), torch.device("cpu")
    )
    loss_module = make_loss("ce")

    # FlopCounterMode's module tracker fails inside torch.func.grad when an
    # nn.Module is called there, so the loss is called through its forward.
    def loss_func(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return loss_module.forward(logits, tokens)

    split = growth.SplitProducts(
        model, growth.transformer_settings(config, job.d_model, 4), loss_func, data
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in embedding_weights(model):
            weight.copy_(FLOP_COUNT_SIGMA * torch.randn(weight.shape, generator=generator))
    with FlopCounterMode(display=False) as counter:
        head = split.linearize_head()
        for layer in range(job.num_layers):
            for block in BLOCKS:
                name = f"blocks.{layer}.attn.{ATTENTION_BLOCKS[block]}"
                weight = split.params[name]
                probes = curvature.rademacher_probes(
                    weight.numel(), job.probes, generator, torch.float32, torch.device("cpu")
                )
                estimates = curvature.split_block_norms(
                    split.body_of(name), weight, probes, head, settings["chunk_size"]
                )
                if not np.isfinite(estimates["H"].value):
                    raise RuntimeError(f"non-finite norm at sigma {FLOP_COUNT_SIGMA}: {estimates}")
    return counter.get_total_flops()


def main() -> None:
    """Run one growth job (or count its FLOPs) and write a JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_job_arguments(parser)
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument(
        "--count-flops", action="store_true", help="count the FLOPs of one sigma instead of timing"
    )
    arguments = parser.parse_args()
    job = job_from_arguments(arguments)

    # The imports of workflow/scripts/growth_seed.py, for a job's start-up cost,
    # and transformer_lens, which run_growth imports when it builds the model:
    # so the "work_seconds" of run_job count no imports.
    import numpy as np  # noqa: F401
    import torch
    import transformer_lens  # noqa: F401

    from transformer_curvature import (
        devices,
        experiments,
        growth,
        provenance,
        results_io,
    )  # noqa: F401

    torch.set_num_threads(job.threads)
    if arguments.count_flops:
        write_json(arguments.output, {"flops_per_sigma": count_flops_per_sigma(job)})
    else:
        write_json(arguments.output, run_job(job))


if __name__ == "__main__":
    main()
