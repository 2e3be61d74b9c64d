"""Pairwise squared Euclidean distances ``d[i, j] = ||X[i] - T[j]||**2``: the matrix, its row blocks, nearest rows.

Exact on data far from the origin (the accuracy contract is :mod:`sqdist._numerics`):
identical rows give exactly ``0.0``, no distance is ever negative, and rows
of ``X`` or ``T`` that contain NaN or Inf are computed by the direct formula,
so non-finite values propagate element-wise as IEEE arithmetic says (a row
with an Inf gives ``inf`` against every finite row, a NaN gives ``nan``) and
never spill into other rows.  Half precision (float16, bfloat16) is computed
in float32 and rounded to the input dtype at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from . import _chunking
from ._backend import BACKENDS, METHODS, resolve_backend, resolve_method
from ._dense import check_out, chunks, nearest_rows, prepare_inputs, sqdist_2d
from ._sources import as_source, chunk_rows, is_out_of_core
from ._sparse import is_sparse, pair_nearest, pair_sqdist, prepare_pair
from ._validation import SqdistError, as_tensor, check_choice, check_no_alias, compute_dtype, describe, to_output

__all__ = ["BACKENDS", "METHODS", "nearest", "sqdist", "sqdist_chunks"]


def sqdist(
    X: Any,
    T: Any,
    *,
    method: str = "auto",
    out: Any = None,
    working_memory: float | None = None,
    backend: str = "auto",
) -> Any:
    """Pairwise squared Euclidean distances ``d[..., i, j] = ||X[..., i, :] - T[..., j, :]||**2``.

    Parameters
    ----------
    X : array-like or Tensor of shape (..., N, D)
        Points (features).  NumPy arrays, lists and torch tensors are accepted.
    T : array-like or Tensor of shape (..., P, D)
        Prototypes.  Leading (batch) dimensions broadcast with those of ``X``.
    method : {"auto", "gemm", "broadcast", "numpy", "loops"}
        ``"loops"`` -- the exercise's two Python for-loops (the reference, slow);
        ``"numpy"`` -- NumPy broadcasting ``X[:, None] - T[None]`` (CPU only);
        ``"broadcast"`` -- the same in torch; ``"gemm"`` -- the expansion
        ``||x||^2 + ||t||^2 - 2 x.t`` through one matrix product, made exact
        by centring and recomputing close pairs (see the module docstring);
        ``"auto"`` -- the fastest exact path: on the CPU for few features
        (float32 up to 24 with the C kernels built at install -- up to 15
        against 1024 or more rows of T where their own float32 product
        runs --, otherwise up to 16), or with the C kernels for small
        problems (N * P * D up to 2^22, D up to 1024), a compiled
        direct-formula kernel, otherwise ``"gemm"``.
    out : ndarray or Tensor of shape (..., N, P), optional
        Buffer to write the result into (same dtype and device as the result).
        It may not share memory with ``X`` or ``T`` (``SqdistError``).
    working_memory : float, optional
        Budget in MiB for temporaries beyond the output (default:
        :func:`sqdist.get_working_memory`, 256 MiB).  The broadcast paths are
        processed in row blocks so the (n, P, D) intermediate fits it; so is
        the backward when autograd records ``X`` or ``T`` (the gradient is
        ``2 * sum_j G[i, j] * (x_i - t_j)``, exactly 0 for a coincident pair).
    backend : {"auto", "torch", "triton"}
        ``"triton"`` uses the fused GPU kernels (``pip install 'sqdist[gpu]'``);
        ``"auto"`` picks it for CUDA tensors when Triton is installed.

    Returns
    -------
    ndarray or Tensor of shape (..., N, P)
        NumPy when both inputs are NumPy / array-likes, else a tensor on the
        inputs' device.  The dtype is the promoted floating dtype of the inputs;
        integer inputs become float64 (NumPy) or float32 (torch).  Entries are
        never negative; identical rows give exactly 0.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> X = np.array([[0.0, 0.0], [3.0, 4.0]])
    >>> T = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    >>> sqdist.sqdist(X, T)
    array([[ 0.,  2., 25.],
           [25., 13.,  0.]])
    >>> sqdist.sqdist([[512695.0]], [[512804.0]])  # exact far from the origin
    array([[11881.]])
    """
    if is_sparse(X) or is_sparse(T):  # sparse rows: dense output, never densified whole (sqdist._sparse)
        return _sqdist_sparse(X, T, method, out, working_memory, backend)
    Xt, Tt, was_numpy, dtype = prepare_inputs(X, T)
    backend = resolve_backend(backend, Xt.device)
    method = resolve_method(method, Xt, Tt, backend)
    budget = _chunking.resolve_budget(working_memory)
    try:  # (torch.broadcast_shapes costs ~20 us: skipped for the common 2-D pair)
        batch = () if Xt.ndim == 2 and Tt.ndim == 2 else tuple(torch.broadcast_shapes(Xt.shape[:-2], Tt.shape[:-2]))
    except RuntimeError:
        raise SqdistError(
            f"X and T: batch dimensions {tuple(Xt.shape[:-2])} and {tuple(Tt.shape[:-2])} do not broadcast "
            f"(X is {describe(Xt)}, T is {describe(Tt)})"
        ) from None
    shape = batch + (Xt.shape[-2], Tt.shape[-2])
    if out is None:
        out_t = _chunking.empty_output(shape, dtype, Xt.device)
    else:
        out_t = check_out(out, shape, dtype, Xt.device, was_numpy)
        check_no_alias({"out": out_t}, {"X": Xt, "T": Tt})  # never overwrite an input while reading it
    if not batch:
        res = sqdist_2d(Xt, Tt, method, backend, out_t, budget)
        if res is not out_t and out is not None:
            res = out_t.copy_(res)
        return out if (out is not None and was_numpy) else to_output(res, was_numpy)
    Xb = Xt.expand(batch + Xt.shape[-2:])
    Tb = Tt.expand(batch + Tt.shape[-2:])
    results = [sqdist_2d(Xb[idx], Tb[idx], method, backend, out_t[idx], budget) for idx in np.ndindex(*batch)]
    if any(r.requires_grad for r in results):
        stacked = torch.stack(results).reshape(shape)
        if out is None:
            out_t = stacked
        else:
            out_t.copy_(stacked)  # autograd records the copy into the caller's buffer
    return out if (out is not None and was_numpy) else to_output(out_t, was_numpy)


def _sqdist_sparse(X: Any, T: Any, method: str, out: Any, working_memory: float | None, backend: str) -> Any:
    """:func:`sqdist` with a sparse X and/or T: every method gives the sparse product path's exact values."""
    check_choice(method, "method", METHODS)
    check_choice(backend, "backend", BACKENDS)
    pair = prepare_pair(X, T)
    shape = (pair.X.shape[0], pair.T.shape[0])
    if out is None:
        out_t = _chunking.empty_output(shape, pair.dtype, pair.X.device)
    else:
        out_t = check_out(out, shape, pair.dtype, pair.X.device, pair.was_numpy)
        check_no_alias({"out": out_t}, {k: v for k, v in (("X", pair.X), ("T", pair.T)) if isinstance(v, torch.Tensor)})
    pair_sqdist(pair, out_t, _chunking.resolve_budget(working_memory))
    return out if (out is not None and pair.was_numpy) else to_output(out_t, pair.was_numpy)


def sqdist_chunks(
    X: Any, T: Any, *, working_memory: float | None = None, backend: str = "auto"
) -> Iterator[tuple[Any, int]]:
    """Iterate over the distance matrix in row blocks: yields ``(block, start)``.

    ``block`` has shape (n, P) and holds rows ``start : start + n`` of
    ``sqdist(X, T)``; each block (with its temporaries) fits ``working_memory``.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> X = np.arange(10.0).reshape(5, 2)
    >>> blocks = list(sqdist.sqdist_chunks(X, X, working_memory=0.00012))  # one row per block
    >>> [start for _, start in blocks]
    [0, 1, 2, 3, 4]
    >>> np.array_equal(np.vstack([b for b, _ in blocks]), sqdist.sqdist(X, X))
    True
    """
    Xt, Tt, was_numpy, dtype = prepare_inputs(X, T)
    if Xt.ndim != 2 or Tt.ndim != 2:
        raise SqdistError(f"X and T: sqdist_chunks takes 2-D inputs, got X {describe(Xt)} and T {describe(Tt)}")
    backend = resolve_backend(backend, Xt.device)
    budget = _chunking.resolve_budget(working_memory)
    # validation above runs at the call, not at the first next(): the blocks come from a generator
    return chunks(Xt, Tt, was_numpy, dtype, backend, budget)


def _check_k(k: Any, P: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= P:
        raise SqdistError(f"k: expected an integer in [1, {P}] (the number of rows of T), got {k!r}")
    return int(k)


def nearest(
    X: Any, T: Any, k: int = 1, *, working_memory: float | None = None, backend: str = "auto"
) -> tuple[Any, Any]:
    """The ``k`` nearest rows of ``T`` for every row of ``X``, without the full N x P matrix.

    Parameters
    ----------
    X : array-like or Tensor of shape (N, D), or out-of-core data
        A ``.npy`` path, ``np.memmap`` or re-iterable of (n_i, D) chunks is
        read chunk by chunk (only the (N, k) outputs are held in memory).
    T : array-like or Tensor of shape (P, D)
    k : int, default 1
        Number of neighbours, ``1 <= k <= P``.
    working_memory : float, optional
        MiB budget for one block of distances (default 256 MiB).
    backend : {"auto", "torch", "triton"}
        ``"triton"`` (k = 1) runs a fused distance + argmin kernel.

    Returns
    -------
    distances : of shape (N, k)
        Exact squared distances, ascending along each row.
    indices : int64 of shape (N, k)
        Row indices into ``T``.  For ``k = 1`` ties (equal computed distances)
        go to the smallest index; distances equal in exact arithmetic may
        differ in their last bits after the matrix product, and then the
        smaller computed one wins.
        NaN distances (from rows of ``X`` or ``T`` holding NaN): for ``k = 1``
        a NaN in a row of distances wins, as in :func:`torch.min` and
        :func:`numpy.argmin` (a NaN row of ``T`` is every row's nearest);
        for ``k > 1`` NaN ranks after every number, as in :func:`torch.topk`.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> d, i = sqdist.nearest(np.array([[0.0], [2.9]]), np.array([[0.0], [1.0], [3.0]]))
    >>> i.ravel().tolist(), d.ravel().round(6).tolist()
    ([0, 2], [0.0, 0.01])
    """
    if is_out_of_core(X):  # .npy path, memory map or chunks: streamed, outputs in memory
        return _nearest_stream(X, T, k, working_memory, backend)
    if is_sparse(X) or is_sparse(T):  # sparse rows (sqdist._sparse); k = 1: the exact argmin
        pair = prepare_pair(X, T)
        k = _check_k(k, pair.T.shape[0])
        check_choice(backend, "backend", BACKENDS)
        dist, idx = pair_nearest(pair, k, _chunking.resolve_budget(working_memory))
        return to_output(dist, pair.was_numpy), to_output(idx, pair.was_numpy)
    Xt, Tt, was_numpy, _ = prepare_inputs(X, T)
    if Xt.ndim != 2 or Tt.ndim != 2:
        raise SqdistError(f"X and T: nearest takes 2-D inputs (N, D) and (P, D), got X {describe(Xt)} and T {describe(Tt)}")
    k = _check_k(k, Tt.shape[0])
    backend = resolve_backend(backend, Xt.device)
    dist, idx = nearest_rows(Xt, Tt, k, backend, _chunking.resolve_budget(working_memory))
    return to_output(dist, was_numpy), to_output(idx, was_numpy)


def _nearest_stream(X: Any, T: Any, k: int, working_memory: float | None, backend: str) -> tuple[Any, Any]:
    """``sqdist.nearest`` for a path, memory map or chunks: outputs (N, k) in memory, input streamed."""
    source = as_source(X)
    Tt, _ = as_tensor(T, "T")
    if Tt.ndim != 2 or Tt.shape[1] != source.n_features:
        raise SqdistError(f"T: expected shape (P, {source.n_features}) to match X's features, got {describe(Tt)}")
    k = _check_k(k, Tt.shape[0])
    dev = Tt.device
    backend = resolve_backend(backend, dev)
    budget = _chunking.resolve_budget(working_memory)
    item = torch.finfo(compute_dtype(source.dtype)).bits // 8
    R = chunk_rows(budget, Tt.shape[0], source.n_features, item)
    ds, js = [], []
    for x in source.pieces(R):  # out-of-core pages are released after each piece
        d, j = nearest_rows(x.to(dev), Tt, k, backend, budget)  # (n, k), (n, k)
        ds.append(d)
        js.append(j)
        del x, d, j
    d = torch.cat(ds) if ds else torch.empty((0, k), dtype=torch.promote_types(source.dtype, Tt.dtype))
    j = torch.cat(js) if js else torch.empty((0, k), dtype=torch.int64)
    if source.numpy_out and not isinstance(T, torch.Tensor):
        return d.cpu().numpy(), j.cpu().numpy()
    return d, j
