"""Frobenius norms of one parameter block of the loss Hessian and its parts.

For a block ``theta_b`` (one weight tensor, flattened to ``n`` entries):

- ``H``: the loss Hessian ``d^2 L / d theta_b^2``, ``[n, n]``;
- ``H_o``: the outer-product Hessian, i.e. the generalized Gauss-Newton matrix
  ``J^T (d^2 loss / d logits^2) J``;
- ``H_f``: the functional Hessian ``H - H_o``.

Norms are Frobenius norms, not squared. Two ways to multiply these matrices
onto probes:

- curvlinops 3 operators (`curvature_operators`), which multiply all columns
  of a matrix in one vectorized pass; any model and parameter;
- `hessian_and_ggn_products`, for a model split into a body that holds the
  block and a head that acts on each position separately. It computes both
  products in one pass that shares the forward tangent. The head's Jacobian
  is formed once per point (`linearize_head`) instead of once per probe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import grad, jvp, vjp, vmap

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
    ggn = GGNLinearOperator(model, loss_func, [weight], data, **options) if with_ggn else None
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


def dense_hessian_of(
    loss: Callable[..., torch.Tensor], primals: tuple[torch.Tensor, ...], chunk_size: int
) -> torch.Tensor:
    """Materialize the Hessian of ``loss(*primals)`` over all entries of `primals`.

    Columns come from forward-over-reverse products with identity columns, at
    most `chunk_size` per vectorized pass, which bounds memory. Rows and
    columns follow `primals` in order, each flattened row-major.

    Returns:
        ``[n, n]`` in the dtype of `primals`, ``n`` the total number of entries.
    """
    sizes = [primal.numel() for primal in primals]
    dim = sum(sizes)
    first = primals[0]
    gradient = grad(loss, argnums=tuple(range(len(primals))))

    def column(*tangents: torch.Tensor) -> torch.Tensor:
        products = jvp(gradient, primals, tangents)[1]
        return torch.cat([product.reshape(-1) for product in products])

    columns = []
    for start in range(0, dim, chunk_size):
        stop = min(start + chunk_size, dim)
        identity = torch.zeros(stop - start, dim, dtype=first.dtype, device=first.device)
        identity[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        tangents = [
            part.reshape(stop - start, *primal.shape)
            for part, primal in zip(identity.split(sizes, dim=1), primals)
        ]
        columns.append(vmap(column)(*tangents))
    return torch.cat(columns).T


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


@dataclass(frozen=True)
class HeadLinearization:
    """A positionwise head and the loss, linearized at the body output ``m``.

    The head maps ``m [*positions, M]`` to logits ``[*positions, C]`` and acts
    on each of the ``T`` positions separately, so its Jacobian is
    block-diagonal: one ``[C, M]`` block per position.
    """

    head: Callable[[torch.Tensor], torch.Tensor]
    """The head, ``m -> logits``."""
    loss: Callable[[torch.Tensor], torch.Tensor]
    """The loss as a function of the logits alone."""
    body_output: torch.Tensor
    """``m [*positions, M]``: the point of the linearization."""
    logits: torch.Tensor
    """``[*positions, C]``: the head's output at ``m``."""
    loss_gradient: torch.Tensor
    """``g = dL/dlogits``, ``[*positions, C]``."""
    body_gradient: torch.Tensor
    """``J_head^T g = dL/dm``, ``[*positions, M]``."""
    jacobian: torch.Tensor
    """``[T, C, M]``: the head's Jacobian block at each position."""
    piecewise_linear: bool
    """True when the head's second derivatives vanish (ReLU and linear maps only)."""

    def jacobian_product(self, tangents: torch.Tensor) -> torch.Tensor:
        """Map ``[K, *positions, M]`` tangents of ``m`` to ``[K, *positions, C]`` logit tangents."""
        num_positions, num_logits, num_features = self.jacobian.shape
        columns = tangents.reshape(-1, num_positions, num_features).permute(1, 2, 0)
        products = torch.bmm(self.jacobian, columns)  # [T, C, K]
        return products.permute(2, 0, 1).reshape(-1, *self.logits.shape)

    def transposed_jacobian_product(self, cotangents: torch.Tensor) -> torch.Tensor:
        """Map ``[K, *positions, C]`` logit cotangents to ``[K, *positions, M]`` ones of ``m``."""
        num_positions, num_logits, num_features = self.jacobian.shape
        columns = cotangents.reshape(-1, num_positions, num_logits).permute(1, 2, 0)
        products = torch.bmm(self.jacobian.transpose(1, 2), columns)  # [T, M, K]
        return products.permute(2, 0, 1).reshape(-1, *self.body_gradient.shape)


def linearize_head(
    head: Callable[[torch.Tensor], torch.Tensor],
    loss: Callable[[torch.Tensor], torch.Tensor],
    body_output: torch.Tensor,
    piecewise_linear: bool,
) -> HeadLinearization:
    """Evaluate the head, the loss gradient and the head's Jacobian at `body_output`.

    The head acts on each position separately, so one vector-Jacobian product
    with the ``c``-th unit vector at every position at once gives row ``c`` of
    every position's Jacobian block: ``C`` products in all, whatever ``T``.
    A head that mixes positions would make these rows wrong.

    Args:
        head: ``m [*positions, M] -> logits [*positions, C]``, position by position.
        loss: Loss as a function of the logits.
        body_output: ``m``.
        piecewise_linear: Whether the head has no second derivatives, so that
            `hessian_and_ggn_products` can skip their term.
    """
    logits, head_vjp = vjp(head, body_output)
    loss_gradient = grad(loss)(logits)
    (body_gradient,) = head_vjp(loss_gradient)

    num_logits = logits.shape[-1]
    unit_vectors = torch.eye(num_logits, dtype=logits.dtype, device=logits.device)
    cotangents = unit_vectors.reshape(num_logits, *([1] * (logits.dim() - 1)), num_logits)
    (rows,) = vmap(head_vjp)(cotangents.expand(num_logits, *logits.shape))
    num_features = body_output.shape[-1]
    jacobian = rows.reshape(num_logits, -1, num_features).transpose(0, 1).contiguous()
    return HeadLinearization(
        head=head,
        loss=loss,
        body_output=body_output,
        logits=logits,
        loss_gradient=loss_gradient,
        body_gradient=body_gradient,
        jacobian=jacobian,
        piecewise_linear=piecewise_linear,
    )


def hessian_and_ggn_products(
    body: Callable[[torch.Tensor], torch.Tensor],
    weight: torch.Tensor,
    probes: torch.Tensor,
    head: HeadLinearization,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multiply the block's Hessian and GGN onto probes, sharing one forward tangent.

    With ``L = loss(head(body(w)))``, ``J_b`` the Jacobian of the body,
    ``J_h`` that of the head, ``g = dL/dlogits`` and ``H_c`` the loss Hessian
    in the logits:

        G = J_b^T (J_h^T H_c J_h) J_b
        H = G + J_b^T R J_b + sum_i (J_h^T g)_i d^2 body_i / dw^2,
        R = sum_k g_k d^2 head_k / dm^2  (zero for a piecewise-linear head).

    Per probe ``v``, one forward-over-reverse pass through the body gives both
    ``J_b v`` and the last term. The head's Jacobian blocks carry ``J_b v`` to
    the logits, a forward-over-reverse product with the loss applies ``H_c``,
    and the transposed blocks carry the result back. One reverse pass through
    the body then gives ``G v``.

    Args:
        body: ``w -> m``, the body as a function of this block alone.
        weight: The block's current value (the point of the products).
        probes: ``[K, *weight.shape]``.
        head: The head linearized at ``body(weight)``; other points give wrong products.

    Returns:
        ``(H V, G V)``, each ``[K, *weight.shape]``.
    """
    _, body_vjp = vjp(body, weight)

    def body_term_and_output(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output, pullback = vjp(body, w)
        (gradient,) = pullback(head.body_gradient)
        return gradient, output

    def tangents(probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, (body_term, output_tangent) = jvp(body_term_and_output, (weight,), (probe,))
        return body_term, output_tangent

    body_terms, output_tangents = vmap(tangents)(probes)

    loss_gradient_of = grad(head.loss)
    logit_tangents = head.jacobian_product(output_tangents)
    loss_curvature = vmap(lambda tangent: jvp(loss_gradient_of, (head.logits,), (tangent,))[1])(
        logit_tangents
    )
    cotangents = head.transposed_jacobian_product(loss_curvature)
    pull_back = vmap(lambda cotangent: body_vjp(cotangent)[0])
    ggn_products = pull_back(cotangents)
    hessian_products = ggn_products + body_terms

    if not head.piecewise_linear:
        # R (J_b v): forward-over-reverse through the head, at the body output.
        def head_curvature(tangent: torch.Tensor) -> torch.Tensor:
            def head_gradient(m: torch.Tensor) -> torch.Tensor:
                return vjp(head.head, m)[1](head.loss_gradient)[0]

            return jvp(head_gradient, (head.body_output,), (tangent,))[1]

        hessian_products = hessian_products + pull_back(vmap(head_curvature)(output_tangents))
    return hessian_products, ggn_products


def split_block_norms(
    body: Callable[[torch.Tensor], torch.Tensor],
    weight: torch.Tensor,
    probes: torch.Tensor,
    head: HeadLinearization,
    chunk_size: int,
) -> dict[str, NormEstimate]:
    """Estimate the norms of ``H``, ``H_o`` and ``H_f`` with `hessian_and_ggn_products`.

    Args:
        body, weight, head: As for `hessian_and_ggn_products`.
        probes: ``[n, K]``, as from `rademacher_probes`; column ``k`` is a
            probe in the block's flattened (row-major) order.
        chunk_size: At most this many probes per vectorized pass, which
            bounds memory.
    """
    hessian_columns, ggn_columns = [], []
    for start in range(0, probes.shape[1], chunk_size):
        chunk = probes[:, start : start + chunk_size].T.reshape(-1, *weight.shape)
        hessian_products, ggn_products = hessian_and_ggn_products(body, weight, chunk, head)
        hessian_columns.append(hessian_products.reshape(chunk.shape[0], -1).T)
        ggn_columns.append(ggn_products.reshape(chunk.shape[0], -1).T)
    hessian_products = torch.cat(hessian_columns, dim=1)
    ggn_products = torch.cat(ggn_columns, dim=1)
    return {
        "H": _estimate_from_products(hessian_products),
        "H_o": _estimate_from_products(ggn_products),
        "H_f": _estimate_from_products(hessian_products - ggn_products),
    }
