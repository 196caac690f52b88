"""Frobenius norms of one parameter block of the loss Hessian and its parts.

For a block ``theta_b`` (one weight tensor, flattened to ``n`` entries):

- ``H``: the loss Hessian ``d^2 L / d theta_b^2``, ``[n, n]``;
- ``H_o``: the outer-product Hessian, i.e. the generalized Gauss-Newton matrix
  ``J^T (d^2 loss / d logits^2) J``;
- ``H_f``: the functional Hessian ``H - H_o``.

Norms are Frobenius norms, not squared. Products come from curvlinops 3
operators, which multiply all columns of a matrix in one vectorized pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MATRICES = ("H", "H_o", "H_f")


@dataclass(frozen=True)
class NormEstimate:
    """An estimated Frobenius norm and the standard error from its probes (NaN if exact)."""

    value: float
    stderr: float


def curvature_operators(
    model: torch.nn.Module,
    loss_func: torch.nn.Module,
    weight: torch.nn.Parameter,
    data: list[tuple[torch.Tensor, torch.Tensor]],
    with_ggn: bool = True,
):
    """Build the Hessian and GGN operators of one block.

    The operators keep references to the model's parameters, so they stay
    valid after in-place changes to other weights (the redrawn embeddings).

    Returns:
        ``(hessian, ggn)``; ``ggn`` is None unless `with_ggn`.
    """
    from curvlinops import GGNLinearOperator, HessianLinearOperator

    num_data = sum(inputs.shape[0] for inputs, _ in data)
    options = dict(check_deterministic=False, num_data=num_data)
    hessian = HessianLinearOperator(model, loss_func, [weight], data, **options)
    ggn = (
        GGNLinearOperator(model, loss_func, [weight], data, **options)
        if with_ggn
        else None
    )
    return hessian, ggn


def rademacher_probes(
    dim: int,
    num_probes: int,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """Draw ``[dim, num_probes]`` Rademacher probes (entries +-1) on the CPU, then move them."""
    signs = torch.randint(0, 2, (dim, num_probes), generator=generator)
    return (2 * signs - 1).to(dtype=dtype, device=device)


def _estimate_from_products(products: torch.Tensor) -> NormEstimate:
    """Estimate ``||A||_F = sqrt(mean_k ||A v_k||^2)`` from the columns ``A v_k``.

    The standard error follows from the spread of ``||A v_k||^2`` over the
    probes by the delta method: ``se(sqrt(m)) = se(m) / (2 sqrt(m))``.
    """
    squared = (products.double() ** 2).sum(dim=0)
    mean_squared = squared.mean()
    value = mean_squared.sqrt().item()
    num_probes = squared.numel()
    if num_probes < 2 or value == 0.0:
        return NormEstimate(value, float("nan") if num_probes < 2 else 0.0)
    stderr_squared = squared.std(unbiased=True) / num_probes**0.5
    return NormEstimate(value, (stderr_squared / (2 * value)).item())


def hutchinson_block_norms(hessian, ggn, probes: torch.Tensor) -> dict[str, NormEstimate]:
    """Estimate the norms of ``H``, ``H_o`` and ``H_f`` with one set of probes.

    Two products per probe: ``H V`` and ``H_o V``; ``H_f V`` is their difference.
    With ``ggn`` None, only ``H`` is estimated.
    """
    hessian_products = hessian @ probes
    norms = {"H": _estimate_from_products(hessian_products)}
    if ggn is not None:
        ggn_products = ggn @ probes
        norms["H_o"] = _estimate_from_products(ggn_products)
        norms["H_f"] = _estimate_from_products(hessian_products - ggn_products)
    return norms


def dense_matrix(operator, chunk_size: int) -> torch.Tensor:
    """Materialize an ``[n, n]`` operator from products with identity columns.

    At most `chunk_size` columns are multiplied at once, which bounds the
    memory of curvlinops' vectorized product.
    """
    dim = operator.shape[1]
    columns = []
    for start in range(0, dim, chunk_size):
        stop = min(start + chunk_size, dim)
        identity = torch.zeros(dim, stop - start, dtype=operator.dtype, device=operator.device)
        identity[torch.arange(start, stop), torch.arange(stop - start)] = 1.0
        columns.append(operator @ identity)
    return torch.cat(columns, dim=1)


def exact_block_norms(hessian, ggn, chunk_size: int) -> dict[str, NormEstimate]:
    """Compute the exact norms of ``H``, ``H_o`` and ``H_f`` from dense blocks."""
    nan = float("nan")
    hessian_matrix = dense_matrix(hessian, chunk_size)
    norms = {"H": NormEstimate(torch.linalg.matrix_norm(hessian_matrix.double()).item(), nan)}
    if ggn is not None:
        ggn_matrix = dense_matrix(ggn, chunk_size)
        functional = hessian_matrix.double() - ggn_matrix.double()
        norms["H_o"] = NormEstimate(torch.linalg.matrix_norm(ggn_matrix.double()).item(), nan)
        norms["H_f"] = NormEstimate(torch.linalg.matrix_norm(functional).item(), nan)
    return norms
