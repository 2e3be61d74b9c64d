"""Gradients of the distance matrix within the working-memory budget.

``d[i, j] = ||x_i - t_j||**2`` is a smooth function of both inputs.  For an
upstream gradient ``G = dL/dd`` (N, P)::

    dL/dx_i =  2 * sum_j G[i, j] * (x_i - t_j) =  2 * (x_i * s_i - (G @ T)[i]),  s = G.sum(1)
    dL/dt_j = -2 * sum_i G[i, j] * (x_i - t_j) =  2 * (t_j * r_j - (G.T @ X)[j]), r = G.sum(0)

:func:`sqdist_function` wraps an exact forward (any of the no-autograd paths
of :mod:`sqdist._dense`, which keep the accuracy contract) in a
:class:`torch.autograd.Function` whose backward evaluates these two
formulas row block by row block: one block of ``G`` (converted to the
compute dtype, made contiguous when it is an expanded view) at a time,
within the budget, and products of shape (n, D) and (P, D) -- never an
(N, P) temporary beyond ``G`` itself, never an (N, P, D) one.  Recording the
forward with autograd instead keeps every temporary of every row block
alive for the backward (~14x the result's bytes were measured).

Both formulas are evaluated on rows centred at the mean ``c`` of the finite
rows of ``T`` (``x - c`` and ``t - c``): the terms ``(x - c) * s`` and
``G @ (T - c)`` are then of the size of the data's spread rather than its
offset, so far from the origin they do not cancel catastrophically.  ``c``
cancels exactly in exact arithmetic and is treated as a constant.

Coincident points (``d = 0``): ``d`` is differentiable there and its
gradient is ``2 (x - t) = 0`` -- this is the value used (unlike
``torch.cdist(X, T) ** 2``, whose square root has no derivative at 0).  A
coincident pair alone in its row of ``G`` contributes exactly 0.0.

The backward is written in torch operations on the saved inputs, so it is
itself differentiable (``create_graph=True``: second derivatives, gradient
penalties).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import _chunking

__all__ = ["distance_grads", "sqdist_function"]


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision is computed in float32)."""
    dt = tensors[0].dtype
    for t in tensors[1:]:
        dt = torch.promote_types(dt, t.dtype)
    return torch.float64 if dt == torch.float64 else torch.float32


def _centre(T: torch.Tensor) -> torch.Tensor:
    """Mean (D,) of the finite rows of ``T`` (zeros when none is), detached."""
    T = T.detach()
    finite = torch.isfinite(T).all(1)
    if bool(finite.all()):
        return T.mean(0) if T.shape[0] else T.new_zeros(T.shape[1])
    return T[finite].mean(0) if bool(finite.any()) else T.new_zeros(T.shape[1])


def distance_grads(X: torch.Tensor, T: torch.Tensor, G: torch.Tensor, need_x: bool, need_t: bool,
                   budget: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(dL/dX (N, D), dL/dT (P, D))`` of ``L`` with ``dL/dd = G`` (N, P), in row blocks of ``G``
    that fit ``budget`` bytes; None for a gradient that is not needed."""
    N, D = X.shape
    P = T.shape[0]
    cd = _compute_dtype(X, T)
    c = _centre(T.to(cd))  # (D,)
    Xc = X.to(cd) - c  # (N, D)
    Tc = T.to(cd) - c  # (P, D)
    item = torch.finfo(cd).bits // 8
    # a block of G: its converted / contiguous copy and what BLAS may copy of it
    chunk = _chunking.rows_per_chunk(N, 2 * P * item, budget, what="distance gradients")
    gx_parts: list[torch.Tensor] = []
    gtx = Xc.new_zeros((P, D)) if need_t else None  # sum_i G[i, j] x_c,i
    r = Xc.new_zeros(P) if need_t else None  # column sums of G
    for sl in _chunking.row_slices(N, chunk):
        Gb = G[sl].to(cd)  # (n, P)
        if need_x:
            gx_parts.append(2 * (Xc[sl] * Gb.sum(1)[:, None] - Gb @ Tc))  # (n, D)
        if need_t:
            gtx = gtx + Gb.T @ Xc[sl]  # (P, D)
            r = r + Gb.sum(0)  # (P,)
        del Gb
    gx = None
    if need_x:
        gx = (torch.cat(gx_parts) if gx_parts else Xc.new_zeros((0, D))).to(X.dtype)
    gt = (2 * (Tc * r[:, None] - gtx)).to(T.dtype) if need_t else None
    return gx, gt


class _SquaredDistances(torch.autograd.Function):
    """``d = forward(X, T)`` (exact, no autograd inside) with the chunked backward above."""

    @staticmethod
    def forward(ctx, X, T, compute, budget):  # noqa: D102 - see the class docstring
        ctx.save_for_backward(X, T)
        ctx.budget = budget
        return compute(X, T)

    @staticmethod
    def backward(ctx, G):  # noqa: D102
        X, T = ctx.saved_tensors
        gx, gt = distance_grads(X, T, G, ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.budget)
        return gx, gt, None, None


def sqdist_function(X: torch.Tensor, T: torch.Tensor, compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    budget: int) -> torch.Tensor:
    """``compute(X, T)`` (N, P), recorded by autograd as one operation with the chunked backward.

    ``compute`` gets the inputs with autograd off and must return a new
    tensor (not a view of X or T) holding the exact distances.

    Examples
    --------
    >>> import torch
    >>> from sqdist._autograd import sqdist_function
    >>> X = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    >>> T = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    >>> d = sqdist_function(X, T, lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1), 2**20)
    >>> d.sum().backward()
    >>> X.grad.tolist()  # 2 (x - t); 0 at the coincident point
    [[0.0, 0.0], [6.0, 8.0]]
    """
    return _SquaredDistances.apply(X, T, compute, budget)
