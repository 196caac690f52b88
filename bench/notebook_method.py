"""The authors' notebook method for one growth job, restated on curvlinops 3, for timing.

For each sigma, layer and block (query, value), the notebook builds a fresh
`HessianLinearOperator` and `GGNLinearOperator` and estimates ``||H||``,
``||G||`` and ``||G - H||`` with Hutchinson's method, each from its own
Rademacher probes, one matrix-vector product per probe:
``||A||_F^2 ~ mean_k ||A v_k||^2``. ``G - H`` is curvlinops' difference
operator, so each of its probes costs two products: four products per probe
and block in all. curvlinops 3 removed the estimator class that the notebook
sampled from (`HutchinsonSquaredFrobeniusNormEstimator`), so the products are
written out here.

The model, the token batch and the embedding draws are the workflow's
(`models.build_transformer`, `data.make_addition_batches`, and the embedding
stream of `growth.run_growth`), so the norms differ from the workflow's only
by probe noise. Run as a script, it computes one job and writes a JSON record.
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

BLOCK_WEIGHTS = {"query": "W_Q", "value": "W_V"}
# Seed of the notebook's own probes (the notebook drew them from torch's global RNG).
PROBE_SEED = 2024


def squared_norm_samples(operator, num_probes: int, generator) -> list[float]:
    """Return ``||A v_k||^2`` for `num_probes` Rademacher vectors, one product each."""
    import torch

    samples = []
    for _ in range(num_probes):
        signs = torch.randint(0, 2, (operator.shape[1],), generator=generator)
        probe = (2 * signs - 1).to(operator.dtype)
        samples.append(float((operator @ probe).double().pow(2).sum()))
    return samples


def norm_and_stderr(samples: list[float]) -> tuple[float, float]:
    """Return ``sqrt(mean(samples))`` and its standard error by the delta method.

    The error is NaN for fewer than two samples and 0 when every sample is 0.
    """
    import numpy as np

    values = np.asarray(samples)
    norm = float(np.sqrt(values.mean()))
    if len(values) < 2:
        return norm, float("nan")
    if norm == 0.0:
        return norm, 0.0
    return norm, float(values.std(ddof=1) / np.sqrt(len(values)) / (2 * norm))


def notebook_growth_norms(job: JobSettings) -> dict:
    """Compute the job's block norms by the notebook's method.

    Returns:
        ``norms[block][matrix]`` and ``stderr[block][matrix]`` as nested lists
        ``[layer][sigma]`` for the matrices ``H``, ``H_o`` and ``H_f``. Also
        ``products``, the number of matrix-vector products, and
        ``work_seconds``, the seconds of the sigma loop without imports and
        model set-up.
    """
    import numpy as np
    import torch
    from curvlinops import GGNLinearOperator, HessianLinearOperator

    from transformer_curvature.data import as_curvlinops_data, make_addition_batches
    from transformer_curvature.losses import make_loss
    from transformer_curvature.models import (
        TransformerSettings,
        build_transformer,
        embedding_weights,
    )

    settings = TransformerSettings(num_layers=job.num_layers, d_model=job.d_model)
    model = build_transformer(settings, job.seed)
    data = as_curvlinops_data(
        make_addition_batches(job.batch_size, 1, BASE_SEED), torch.device("cpu")
    )
    loss_func = make_loss("ce")
    embedding_seed, _ = np.random.SeedSequence(job.seed).generate_state(2)
    embedding_generator = torch.Generator().manual_seed(int(embedding_seed))
    probe_generator = torch.Generator().manual_seed(PROBE_SEED)

    shape = (job.num_layers, job.num_sigmas)
    norms = {b: {m: np.full(shape, np.nan) for m in ("H", "H_o", "H_f")} for b in BLOCK_WEIGHTS}
    stderr = {b: {m: np.full(shape, np.nan) for m in ("H", "H_o", "H_f")} for b in BLOCK_WEIGHTS}
    products = 0
    start = time.perf_counter()
    for sigma_index, sigma in enumerate(sigma_grid(job)):
        with torch.no_grad():
            for weight in embedding_weights(model):
                draw = torch.randn(weight.shape, generator=embedding_generator, dtype=torch.float64)
                weight.copy_((sigma * draw).to(weight.dtype))
        parameters = dict(model.named_parameters())
        for layer in range(job.num_layers):
            for block, weight_name in BLOCK_WEIGHTS.items():
                weight = parameters[f"blocks.{layer}.attn.{weight_name}"]
                hessian = HessianLinearOperator(
                    model, loss_func, [weight], data, check_deterministic=False
                )
                ggn = GGNLinearOperator(model, loss_func, [weight], data, check_deterministic=False)
                for matrix, operator, cost in (
                    ("H", hessian, 1),
                    ("H_o", ggn, 1),
                    ("H_f", ggn - hessian, 2),
                ):
                    samples = squared_norm_samples(operator, job.probes, probe_generator)
                    value, error = norm_and_stderr(samples)
                    norms[block][matrix][layer, sigma_index] = value
                    stderr[block][matrix][layer, sigma_index] = error
                    products += cost * job.probes

    def as_lists(table: dict) -> dict:
        return {b: {m: values.tolist() for m, values in ms.items()} for b, ms in table.items()}

    work_seconds = time.perf_counter() - start
    return {
        "norms": as_lists(norms),
        "stderr": as_lists(stderr),
        "products": products,
        "work_seconds": work_seconds,
    }


def main() -> None:
    """Compute one job by the notebook's method and write its JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_job_arguments(parser)
    parser.add_argument("--output", required=True, help="JSON file to write")
    arguments = parser.parse_args()
    job = job_from_arguments(arguments)

    import torch

    torch.set_num_threads(job.threads)
    record = notebook_growth_norms(job)
    write_json(arguments.output, record)


if __name__ == "__main__":
    main()
