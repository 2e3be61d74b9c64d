"""The distance matrix's product path on the CPU in compiled passes (trusted inputs).

``prepare_right`` / ``augment`` -- T's right factor ``[-2 t_c, 1, |t_c|^2]`` and
    the rows' ``[x_c, |x_c|^2, 1]`` (centred on T's finite mean), one compiled
    pass each instead of ~10 small torch ops.
``gemm_distances`` -- their product with the cancellation fix-up: inside the
    register tiles of the C kernels' own float32 product where
    :func:`sqdist._cpu_kernels.own_gemm`, else ``torch.mm`` then ``gemm_fixup``.
``gemm_fixup`` -- one pass over a product block replacing the threshold tensor,
    mask and ``nonzero`` of the torch path by a test + direct recomputation
    (C: each row screened in its dtype first, the exact float64 test only where
    the screen flags it).
``gemm_min`` -- ``gemm_fixup`` and every row's minimum and first index in the
    same pass (``sqdist.nearest`` on the product path, no ``min`` pass).

The implementation (C or numba) is :func:`sqdist._cpu_kernels.kernels`'s.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _ckernels
from ._cpu_kernels import _np, kernels, own_gemm, product_nt
from ._numerics import RightOperand, tau

__all__ = ["augment", "prepare_right", "gemm_distances", "gemm_fixup", "gemm_min"]


def augment(X: torch.Tensor, c: torch.Tensor):
    """Centred, augmented rows ``[X - c, ||X - c||^2, 1]`` (n, D+2), the norms (n,)
    and the number of non-finite rows, in one compiled pass."""
    n, D = X.shape
    Xa = torch.empty((n, D + 2), dtype=X.dtype)  # (n, D+2)
    nx = torch.empty(n, dtype=X.dtype)  # (n,)
    bad = kernels().augment(_np(X), _np(c), Xa.numpy(), nx.numpy())
    return Xa, nx, int(bad)


def prepare_right(T: torch.Tensor) -> RightOperand:
    """:class:`~sqdist._numerics.RightOperand` of ``T`` (P, D) (CPU, float32/float64, no
    autograd) in one compiled call instead of ~10 small torch ops."""
    T = T.detach()
    P, D = T.shape
    c = torch.empty(D, dtype=T.dtype)  # (D,)
    Ta = torch.empty((P, D + 2), dtype=T.dtype)  # (P, D+2)
    nt = torch.empty(P, dtype=T.dtype)  # (P,)
    finite = np.empty(P, dtype=np.bool_)
    nf = kernels().prepare_right(_np(T), c.numpy(), Ta.numpy(), nt.numpy(), finite)
    bad = torch.from_numpy(np.flatnonzero(~finite)) if nf < P else torch.empty(0, dtype=torch.int64)
    return RightOperand(T, c, Ta, nt, tau(T.dtype, D), bad)


def gemm_distances(Xa: torch.Tensor, nx: torch.Tensor, Xb: torch.Tensor, prep: RightOperand,
                   out: torch.Tensor | None) -> torch.Tensor:
    """The distance block of the augmented rows ``Xa`` (n, D+2) (:func:`augment`; ``nx`` (n,) their
    norms, ``Xb`` (n, D) the rows themselves) against ``prep``: ``Xa @ prep.Ta.T`` with
    :func:`gemm_fixup` applied, into ``out`` (contiguous) when given.  With :func:`own_gemm` the
    fix-up runs in the product's register tiles while they are in cache (one pass instead of a
    product and a second read of the whole block)."""
    tnt = prep.nt * prep.tau  # (P,)
    if own_gemm(Xa.dtype, Xa.shape[0], prep.Ta.shape[0]) and Xb.shape[1] >= 1:
        d = out if out is not None else torch.empty((Xa.shape[0], prep.Ta.shape[0]), dtype=Xa.dtype)  # (n, P)
        _ckernels.gemm_sqdist(Xa.numpy(), prep.Ta.numpy(), d.numpy(), nx.numpy(), prep.nt.numpy(), tnt.numpy(),
                              prep.tau, _np(Xb), _np(prep.T))
        return d
    d = product_nt(Xa, prep.Ta, out)  # (n, P)
    gemm_fixup(d, nx, tnt, prep.tau, Xb, prep.T)
    return d


def gemm_fixup(d: torch.Tensor, nx: torch.Tensor, tnt: torch.Tensor, tau: float, X: torch.Tensor, T: torch.Tensor) -> int:
    """Recompute, in place, the entries of a gemm block ``d`` (n, P) that are
    below ``tau * nx[i] + tnt[j]`` (``tnt = tau * nt``); returns how many were recomputed."""
    return int(kernels().gemm_fixup(d.numpy(), _np(nx), _np(tnt), float(tau), _np(X), _np(T)))


def gemm_min(d: torch.Tensor, nx: torch.Tensor, tnt: torch.Tensor, tau: float, X: torch.Tensor, T: torch.Tensor,
             dmin: torch.Tensor, imin: torch.Tensor) -> int:
    """:func:`gemm_fixup` of a gemm block ``d`` (n, P), then every row's smallest entry into
    ``dmin`` (n,) and the index of its first occurrence into ``imin`` (n,, int64) -- the
    values of ``d.min(1)`` without a second pass over the block; returns gemm_fixup's count."""
    return int(kernels().gemm_min(d.numpy(), _np(nx), _np(tnt), float(tau), _np(X), _np(T), dmin.numpy(),
                                  imin.numpy()))
