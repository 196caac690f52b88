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
is not included: `run_benchmark.py` times whole processes. With
``--count-flops`` it prints matrix-product FLOPs instead (torch's
FlopCounterMode): per probe from the difference between 1 and 21 probes.
"""

from __future__ import annotations

import argparse
import statistics
import time

from job_settings import BASE_SEED, add_job_arguments, job_from_arguments

BLOCK_WEIGHTS = {"query": "W_Q", "value": "W_V"}
SIGMA = 1.0


def count_flops(model, loss_func, data, split, names: list[str]) -> None:
    """Print the matrix-product FLOPs of one curvlinops ``H v`` and of one split probe."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from transformer_curvature import curvature, growth

    def flops(run) -> float:
        with FlopCounterMode(display=False) as counter:
            run()
        return counter.get_total_flops() / 1e9

    # FlopCounterMode's module tracker fails inside torch.func.grad when an
    # nn.Module is called there, so the split products call the loss's forward.
    def loss_forward(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return loss_func.forward(logits, tokens)

    counted = growth.SplitProducts(model, split.split.settings, loss_forward, data)
    head = counted.linearize_head()
    print(f"head_linearization_gflop: {flops(counted.linearize_head):.3f}")
    generator = torch.Generator().manual_seed(1)
    parameters = dict(model.named_parameters())
    for name in names:
        weight = counted.params[name]
        few, many = (
            (torch.randint(0, 2, (k, *weight.shape), generator=generator) * 2 - 1).float()
            for k in (1, 21)
        )
        body = counted.body_of(name)
        split_few = flops(lambda: curvature.hessian_and_ggn_products(body, weight, few, head))
        split_many = flops(lambda: curvature.hessian_and_ggn_products(body, weight, many, head))
        hessian, _ = curvature.curvature_operators(model, loss_func, parameters[name], data)
        columns_few, columns_many = (probes.reshape(len(probes), -1).T for probes in (few, many))
        single = flops(lambda: hessian @ columns_few[:, 0])
        batched_few = flops(lambda: hessian @ columns_few)
        batched_many = flops(lambda: hessian @ columns_many)
        print(f"{name}_curvlinops_single_hv_gflop: {single:.3f}")
        print(f"{name}_curvlinops_hv_per_probe_gflop: {(batched_many - batched_few) / 20:.3f}")
        print(f"{name}_split_hv_gv_per_probe_gflop: {(split_many - split_few) / 20:.3f}")


def main() -> None:
    """Run the three methods in turn, `--rounds` times, and print their medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_job_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per method")
    parser.add_argument(
        "--count-flops", action="store_true", help="print FLOPs per product instead of timing"
    )
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
    if arguments.count_flops:
        count_flops(model, loss_func, data, split, names)
        return

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
