"""Time one sigma's curvature work by three product methods, interleaved in one process.

For config.yaml's one-layer softmax job at sigma = 1, with the same probes
(20 by default) per block (query, value):

- ``single``: the notebook's unit of work, one curvlinops product per probe
  and matrix (``H v``, ``G v`` and ``(G - H) v``: four products per probe),
  with operators built per block;
- ``curvlinops``: curvlinops operators built once, all probes of a block in
  one product, ``H V`` and ``G V`` (the workflow's method before the split
  products);
- ``split``: the workflow's split products (`curvature.linearize_head` once
  per sigma, `curvature.split_block_norms` per block).

Prints the median seconds per sigma of each method and their ratios. Start-up
is not included: `run_benchmark.py` times whole processes.
"""

from __future__ import annotations

import argparse
import statistics
import time

from job_settings import BASE_SEED, add_job_arguments, job_from_arguments

BLOCK_WEIGHTS = {"query": "W_Q", "value": "W_V"}
SIGMA = 1.0


def main() -> None:
    """Run the three methods in turn, `--rounds` times, and print their medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_job_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per method")
    arguments = parser.parse_args()
    job = job_from_arguments(arguments)

    import torch

    from transformer_curvature import curvature, growth
    from transformer_curvature.data import as_curvlinops_data, make_addition_batches
    from transformer_curvature.experiments import GrowthConfig
    from transformer_curvature.losses import make_loss
    from transformer_curvature.models import embedding_weights

    torch.set_num_threads(job.threads)
    config = GrowthConfig(
        experiment="softmax", model="transformer", num_layers=job.num_layers, sigma_grid="log"
    )
    model = growth.build_model(config, job.d_model, 4, job.seed, torch.float32)
    data = as_curvlinops_data(
        make_addition_batches(job.batch_size, 1, BASE_SEED), torch.device("cpu")
    )
    loss_func = make_loss("ce")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in embedding_weights(model):
            weight.copy_(SIGMA * torch.randn(weight.shape, generator=generator))

    parameters = dict(model.named_parameters())
    names = [
        f"blocks.{layer}.attn.{weight}"
        for layer in range(job.num_layers)
        for weight in BLOCK_WEIGHTS.values()
    ]
    probes = {
        name: curvature.rademacher_probes(
            parameters[name].numel(), job.probes, generator, torch.float32, torch.device("cpu")
        )
        for name in names
    }
    operators = {
        name: curvature.curvature_operators(model, loss_func, parameters[name], data)
        for name in names
    }
    split = growth.SplitProducts(
        model, growth.transformer_settings(config, job.d_model, 4), loss_func, data
    )

    def single() -> None:
        for name in names:
            hessian, ggn = curvature.curvature_operators(model, loss_func, parameters[name], data)
            for operator in (hessian, ggn, ggn - hessian):
                for column in probes[name].T:
                    operator @ column

    def batched_curvlinops() -> None:
        for name in names:
            curvature.hutchinson_block_norms(*operators[name], probes[name])

    def split_products() -> None:
        head = split.linearize_head()
        for name in names:
            curvature.split_block_norms(
                split.body_of(name), split.params[name], probes[name], head, 256
            )

    methods = {"single": single, "curvlinops": batched_curvlinops, "split": split_products}
    seconds = {method: [] for method in methods}
    for method in methods.values():
        method()  # warm-up: lazy imports and first-call set-up
    for _ in range(arguments.rounds):
        for method, run in methods.items():
            start = time.perf_counter()
            run()
            seconds[method].append(time.perf_counter() - start)

    medians = {method: statistics.median(values) for method, values in seconds.items()}
    for method, median in medians.items():
        print(f"{method}_seconds_per_sigma: {median:.3f}")
    print(f"single_over_curvlinops: {medians['single'] / medians['curvlinops']:.1f}")
    print(f"curvlinops_over_split: {medians['curvlinops'] / medians['split']:.1f}")
    print(f"single_over_split: {medians['single'] / medians['split']:.1f}")


if __name__ == "__main__":
    main()
