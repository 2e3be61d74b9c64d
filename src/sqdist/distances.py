"""Pairwise squared Euclidean distances ``d[i, j] = ||X[i] - T[j]||**2``.

Numerics
--------
The fast way to compute the matrix is the expansion

    ||x - t||**2 = ||x||**2 + ||t||**2 - 2 x.t

which turns the work into one matrix product.  In floating point it suffers
*catastrophic cancellation*: the three terms are of size ``||x||**2`` while
their sum can be far smaller.  The rounding error of the product is about
``sqrt(D) * eps * (||x||**2 + ||t||**2)``, so for points near 1000 with
spread 1 (``||x||**2 ~ 1e6``) float32 (``eps ~ 1.2e-7``) loses every digit
of a distance of order 1 -- ``torch.cdist`` and FAISS are wrong by percents
there.  sqdist defends in three steps, none of which costs a pass over the
N x P x D intermediate:

1. **Centring.**  Distances do not change when the same vector ``c`` is
   subtracted from every point.  sqdist subtracts the mean of the finite
   rows of ``T``, so the norms above are those of the *spread* of the data,
   not of its offset from the origin.  (For two float32 values within a
   factor 2 of each other, ``x - c`` is exact by Sterbenz' lemma.)
2. **Re-computing the close pairs.**  After the product, an entry whose
   value is below ``tau * (||x_c||**2 + ||t_c||**2)`` -- where the
   product's error bound could exceed the accuracy target -- is recomputed
   directly as ``sum((x - t)**2)`` on the original data.  Identical rows
   therefore give exactly ``0.0``.  With centred data such pairs are rare.
3. **Clamping** the rest at zero, so no distance is ever negative.

Rows of ``X`` or ``T`` that contain NaN or Inf are computed by the direct
formula too, so non-finite values propagate element-wise as IEEE arithmetic
says (a row with an Inf gives ``inf`` against every finite row, a NaN gives
``nan``) and never spill into other rows.

Half precision (float16, bfloat16) is computed in float32 and rounded to
the input dtype at the end.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from . import _chunking
from ._validation import (
    SqdistError,
    as_tensor,
    check_choice,
    check_pair,
    common_dtype,
    compute_dtype,
    describe,
    to_output,
)

__all__ = ["sqdist", "sqdist_chunks", "nearest", "METHODS", "BACKENDS"]

METHODS = ("auto", "gemm", "broadcast", "numpy", "loops")
BACKENDS = ("auto", "torch", "triton")

# Relative accuracy the gemm path aims at before it recomputes a pair directly: 1e-5 for
# float32 (10x below the 1e-4 contract), the same number of units of roundoff (~84 eps)
# for other dtypes -- a fixed 1e-5 let float64 results be off by 5e-7 relative.
_REL_TARGET = 1e-5
_REL_TARGET_EPS = _REL_TARGET / torch.finfo(torch.float32).eps


def _tau(dtype: torch.dtype, d: int) -> float:
    """Threshold factor below which a gemm entry is recomputed directly.

    The expansion's error is about ``c * sqrt(d) * eps * (||x||^2 + ||t||^2)``;
    an entry smaller than ``tau * (||x||^2 + ||t||^2)`` could therefore be off
    by more than the relative target and is recomputed.  Measured on
    adversarial data (close pairs far from the centre, float32, d = 1..1000,
    tests/test_distances.py::test_error_constant_of_the_expansion) the
    constant ``c`` stays below 1.8; ``c = 2`` keeps a margin, and
    ``_REL_TARGET`` is itself 10x below the 1e-4 contract.  (A factor of 8
    made ``tau`` reach 1 from d ~ 100 on, so that half of all pairs of
    random data were recomputed.)
    """
    eps = torch.finfo(dtype).eps
    target = _REL_TARGET_EPS * eps  # 1e-5 for float32, ~1.9e-14 for float64
    return min(1.0, 2.0 * math.sqrt(d + 2) * eps / target)


# --------------------------------------------------------------------------
# option resolution (done once, in one place)
# --------------------------------------------------------------------------


def _triton_usable(device: torch.device) -> bool:
    if device.type == "cuda":
        pass
    elif device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return False
    else:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _resolve_backend(backend: str, device: torch.device) -> str:
    check_choice(backend, "backend", BACKENDS)
    if backend == "auto":
        return "triton" if device.type == "cuda" and _triton_usable(device) else "torch"
    if backend == "triton" and not _triton_usable(device):
        raise SqdistError(
            f"backend: 'triton' needs Triton installed (pip install 'sqdist[gpu]') and CUDA tensors "
            f"(or TRITON_INTERPRET=1 for CPU tensors), got tensors on {device}"
        )
    return backend


def _resolve_method(
    method: str, device: torch.device, X: torch.Tensor | None = None, T: torch.Tensor | None = None, backend: str = "torch"
) -> str:
    """Check ``method`` and turn "auto" into a concrete path.

    "auto" is "gemm", except on the CPU for small D (float32/float64, no
    autograd, numba installed) where the compiled direct-formula kernel
    ("_direct", internal) is both exact by construction and faster than any
    matrix product (see docs/performance.md).
    """
    check_choice(method, "method", METHODS)
    if method in ("numpy", "loops") and device.type != "cpu":
        raise SqdistError(
            f"method: {method!r} runs on the CPU with NumPy, got tensors on {device}; "
            f"move them with .cpu() or use method='gemm' or 'broadcast'"
        )
    if method == "auto":
        if (
            backend == "torch"
            and X is not None
            and T is not None
            and device.type == "cpu"
            and not (torch.is_grad_enabled() and (X.requires_grad or T.requires_grad))
        ):
            from . import _cpu_kernels

            if _cpu_kernels.sqdist_small_wins(common_dtype(X, T), X.shape[-1]):
                return "_direct"
        return "gemm"
    return method


def _prepare(X: Any, T: Any) -> tuple[torch.Tensor, torch.Tensor, bool, torch.dtype]:
    Xt, x_np = as_tensor(X, "X")
    Tt, t_np = as_tensor(T, "T")
    check_pair(Xt, Tt)
    return Xt, Tt, (x_np and t_np), common_dtype(Xt, Tt)


# --------------------------------------------------------------------------
# private implementations (trust their inputs: 2-D, same device, compute dtype)
# --------------------------------------------------------------------------


def _centre(T: torch.Tensor) -> torch.Tensor:
    """Mean of the finite rows of ``T`` (shape (D,)); zeros if there are none."""
    finite = torch.isfinite(T).all(dim=1)  # (P,)
    if bool(finite.all()):
        return T.mean(dim=0) if T.shape[0] else T.new_zeros(T.shape[1])
    n = int(finite.sum())
    return T[finite].mean(dim=0) if n else T.new_zeros(T.shape[1])


def _direct_rows(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Direct ``sum((x - t)**2)`` for a few rows of X against all of T: (n, P)."""
    return ((X[:, None, :] - T[None, :, :]) ** 2).sum(-1)


class _Prepared:
    """T centred once, with its norms: reused for every row block of X."""

    def __init__(self, T: torch.Tensor, cdtype: torch.dtype):
        self.T = T.to(cdtype)  # (P, D) original values, compute dtype
        from . import _cpu_kernels

        differentiable = torch.is_grad_enabled() and self.T.requires_grad
        self.fast = (
            self.T.device.type == "cpu" and cdtype in (torch.float32, torch.float64)
            and not differentiable and _cpu_kernels.available()
        )
        self.tau = _tau(cdtype, T.shape[1])
        if self.fast:
            # one compiled call instead of ~10 small torch ops (each a thread
            # barrier: milliseconds apiece on a loaded machine)
            self.c, self.Ta, self.nt, self.bad_cols = _cpu_kernels.prepare_right(self.T)
            self.tnt = self.nt * self.tau  # (P,) column part of the recompute threshold
            return
        self.c = _centre(self.T)  # (D,)
        Tc = self.T - self.c  # (P, D)
        self.nt = (Tc * Tc).sum(1)  # (P,)
        # augmented right factor so that one product gives ||x||^2 + ||t||^2 - 2 x.t
        self.Ta = torch.cat([-2.0 * Tc, torch.ones_like(self.nt)[:, None], self.nt[:, None]], dim=1)  # (P, D+2)
        self.bad_cols = _unsafe_norms(self.nt).nonzero().flatten()  # (b,)


def _gemm_block(Xb: torch.Tensor, prep: _Prepared, out: torch.Tensor | None, budget: int) -> torch.Tensor:
    """Exact distances of a row block ``Xb`` (n, D) to all of T, written into ``out`` (n, P)."""
    Xb = Xb.to(prep.T.dtype)
    differentiable = torch.is_grad_enabled() and (Xb.requires_grad or prep.T.requires_grad)
    if prep.fast and not differentiable:
        # compiled CPU path: one pass builds [x_c, |x_c|^2, 1] and counts
        # non-finite rows, the product goes straight into the output, then ONE
        # pass tests each entry against its threshold and recomputes the few
        # close pairs directly (replacing clamp + threshold tensor + mask +
        # nonzero + gather/scatter).  Few torch ops per block also matters on a
        # loaded machine, where every parallel op pays a thread barrier.
        from . import _cpu_kernels

        Xa, nx, nbad = _cpu_kernels.augment(Xb, prep.c)  # (n, D+2), (n,)
        d = _cpu_kernels.gemm_product(Xa, prep.Ta, out if out is not None and out.is_contiguous() else None)  # (n, P)
        _cpu_kernels.gemm_fixup(d, nx, prep.tnt, prep.tau, Xb, prep.T)
        return _fix_bad(d, Xb, nx, prep, False) if (nbad or prep.bad_cols.numel()) else d
    Xc = Xb - prep.c  # (n, D)
    nx = (Xc * Xc).sum(1)  # (n,)
    Xa = torch.cat([Xc, nx[:, None], torch.ones_like(nx)[:, None]], dim=1)  # (n, D+2)
    if differentiable or out is None:
        d = Xa @ prep.Ta.T  # (n, P)
        if not differentiable:
            d.clamp_min_(0)
        else:
            d = d.clamp_min(0)
    else:
        d = torch.mm(Xa, prep.Ta.T, out=out)  # (n, P)
        d.clamp_min_(0)
    # entries whose value is within the product's error bound: recompute directly
    thr = torch.add(prep.nt[None, :], nx[:, None]).mul_(prep.tau)  # (n, P)
    close = d < thr  # (n, P)
    del thr
    # the index pairs cost 16 bytes per close pair: take them a few rows at a time so that
    # they fit a quarter of the budget even when every pair is close (duplicated / clustered
    # data); the direct recompute (3 gathered (m, D) arrays) gets half of it
    n, P = close.shape
    rows = max(1, budget // max(1, 4 * 16 * P))
    step = max(1, budget // max(1, 2 * 3 * Xb.shape[1] * Xb.element_size()))
    for r0 in range(0, n, rows):
        ii, jj = close[r0 : r0 + rows].nonzero(as_tuple=True)  # (m,), (m,)
        if not ii.numel():
            continue
        ii += r0
        parts = []
        for s in range(0, ii.numel(), step):
            i, j = ii[s : s + step], jj[s : s + step]
            parts.append(((Xb[i] - prep.T[j]) ** 2).sum(1))  # (m_s,)
        vals = torch.cat(parts)
        d = d.index_put((ii, jj), vals) if differentiable else d.index_put_((ii, jj), vals)
    del close
    return _fix_bad(d, Xb, nx, prep, differentiable)


def _unsafe_norms(n: torch.Tensor) -> torch.Tensor:
    """Rows whose centred squared norm ``n`` (in the compute dtype) makes the
    expansion unusable: NaN/Inf in the row, or so large that
    ``|x_c|^2 + |t_c|^2 - 2 x_c.t_c`` can overflow to ``inf - inf = NaN`` (4 n
    not finite).  Those rows take the direct formula."""
    return ~torch.isfinite(n * 4)


def _fix_bad(d: torch.Tensor, Xb: torch.Tensor, nx: torch.Tensor, prep: _Prepared, differentiable: bool) -> torch.Tensor:
    """Overwrite the rows / columns of ``d`` (n, P) whose norms are unsafe (NaN, Inf, or
    large enough to overflow the expansion; ``nx`` (n,) the rows' centred norms) by the direct formula."""
    # IEEE semantics through the direct formula: exact 0 for identical rows, inf, NaN as they come
    bad_rows = _unsafe_norms(nx).nonzero().flatten()
    if bad_rows.numel():
        vals = _direct_rows(Xb[bad_rows], prep.T)
        d = d.index_copy(0, bad_rows, vals) if differentiable else d.index_copy_(0, bad_rows, vals)
    if prep.bad_cols.numel():
        vals = _direct_rows(Xb, prep.T[prep.bad_cols])
        d = d.index_copy(1, prep.bad_cols, vals) if differentiable else d.index_copy_(1, prep.bad_cols, vals)
    return d


def _broadcast_block(Xb: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """The exercise's broadcasting: (n, 1, D) - (1, P, D) -> (n, P, D) -> sum -> (n, P)."""
    diff = Xb[:, None, :] - T[None, :, :]  # (n, P, D)
    if diff.requires_grad:
        return (diff * diff).sum(-1)  # (n, P); autograd needs the out-of-place square
    return diff.square_().sum(-1)  # (n, P); in place: one (n, P, D) block, as budgeted


def _numpy_block(Xb: np.ndarray, T: np.ndarray) -> np.ndarray:
    diff = Xb[:, None, :] - T[None, :, :]  # (n, P, D)
    return np.einsum("ijk,ijk->ij", diff, diff)  # (n, P)


def _loops(X: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The exercise's reference: two Python for-loops over i and j."""
    N, P = X.shape[0], T.shape[0]
    d = np.empty((N, P), dtype=X.dtype)
    for i in range(N):
        for j in range(P):
            diff = X[i] - T[j]
            d[i, j] = np.dot(diff, diff)
    return d


def _bytes_per_row(method: str, P: int, D: int, itemsize: int) -> int:
    """Temporary bytes one row of X costs on each path (beyond the output row)."""
    if method in ("broadcast", "numpy"):
        return P * D * itemsize + P * itemsize
    return P * (itemsize + 1) + (D + 2) * itemsize  # threshold row + mask row + augmented row


def _sqdist_2d(X: torch.Tensor, T: torch.Tensor, method: str, backend: str, out: torch.Tensor, budget: int) -> torch.Tensor:
    """Fill ``out`` (N, P) with the distances between X (N, D) and T (P, D); returns ``out``
    (or a new tensor when autograd needs an out-of-place result)."""
    N, D = X.shape
    P = T.shape[0]
    if N == 0 or P == 0:
        return out
    cdtype = compute_dtype(out.dtype)
    if method == "_direct":
        # compiled direct formula (small D, CPU): exact, no temporaries
        from . import _cpu_kernels

        Xd, Td = X.detach().to(out.dtype), T.detach().to(out.dtype)
        if out.is_contiguous():
            _cpu_kernels.sqdist_small(Xd, Td, out)
        else:
            out.copy_(_cpu_kernels.sqdist_small(Xd, Td, torch.empty(out.shape, dtype=out.dtype)))
        return out
    if method == "loops":
        src = lambda a: a.detach().to(cdtype).numpy()  # noqa: E731
        out.copy_(torch.from_numpy(_loops(src(X), src(T))))
        return out
    differentiable = torch.is_grad_enabled() and (X.requires_grad or T.requires_grad)
    if backend == "triton" and method == "gemm" and not differentiable:  # Triton has no backward: torch with the budget
        from . import _triton

        return _triton.sqdist_triton(X, T, out)
    item = torch.finfo(cdtype).bits // 8
    chunk = _chunking.rows_per_chunk(N, _bytes_per_row(method, P, D, item), budget, what=f"{method} distances")
    if method == "numpy":
        Tn = T.detach().to(cdtype).numpy()
        for sl in _chunking.row_slices(N, chunk):
            out[sl].copy_(torch.from_numpy(_numpy_block(X[sl].detach().to(cdtype).numpy(), Tn)))
        return out
    if method == "broadcast":
        Tc = T.to(cdtype)
        for sl in _chunking.row_slices(N, chunk):
            out[sl] = _broadcast_block(X[sl].to(cdtype), Tc)
        return out
    # gemm
    prep = _Prepared(T, cdtype)
    if differentiable:
        return torch.cat([_gemm_block(X[sl], prep, None, budget) for sl in _chunking.row_slices(N, chunk)]).to(out.dtype)
    direct_out = out.dtype == cdtype and out.is_contiguous()
    if prep.fast:
        # blocks of ~_cpu_kernels._BLOCK_BYTES of output (still capped by the
        # budget): each block hands the cores between thread pools (BLAS,
        # numba), and larger blocks measured faster on the loaded test machine
        from . import _cpu_kernels

        chunk = min(chunk, max(8, _cpu_kernels._BLOCK_BYTES // max(1, P * item)))
    for sl in _chunking.row_slices(N, chunk):
        if direct_out:
            _gemm_block(X[sl], prep, out[sl], budget)
        else:
            out[sl].copy_(_gemm_block(X[sl], prep, None, budget))
    return out


def _check_out(out: Any, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, was_numpy: bool) -> torch.Tensor:
    if was_numpy and isinstance(out, np.ndarray):
        if not out.flags.writeable:
            raise SqdistError("out: the array is read-only")
        out_t = torch.from_numpy(out)
    elif isinstance(out, torch.Tensor):
        out_t = out
    else:
        kind = "a NumPy array" if was_numpy else "a torch tensor"
        raise SqdistError(f"out: expected {kind} of shape {shape}, got {describe(out)}")
    if tuple(out_t.shape) != shape or out_t.dtype != dtype or out_t.device != device:
        raise SqdistError(
            f"out: expected shape {shape}, dtype {dtype}, device {device}; got {describe(out)}"
        )
    return out_t


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


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
        ``"auto"`` -- the fastest exact path (currently ``"gemm"``).
    out : ndarray or Tensor of shape (..., N, P), optional
        Buffer to write the result into (same dtype and device as the result).
    working_memory : float, optional
        Budget in MiB for temporaries beyond the output (default:
        :func:`sqdist.get_working_memory`, 256 MiB).  The broadcast paths are
        processed in row blocks so the (n, P, D) intermediate fits it.
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
    Xt, Tt, was_numpy, dtype = _prepare(X, T)
    device = Xt.device
    backend = _resolve_backend(backend, device)
    method = _resolve_method(method, device, Xt, Tt, backend)
    budget = _chunking.resolve_budget(working_memory)
    try:
        batch = tuple(torch.broadcast_shapes(Xt.shape[:-2], Tt.shape[:-2]))
    except RuntimeError:
        raise SqdistError(
            f"X and T: batch dimensions {tuple(Xt.shape[:-2])} and {tuple(Tt.shape[:-2])} do not broadcast "
            f"(X is {describe(Xt)}, T is {describe(Tt)})"
        ) from None
    N, P = Xt.shape[-2], Tt.shape[-2]
    shape = batch + (N, P)
    if out is None:
        out_t = _chunking.empty_output(shape, dtype, device)
    else:
        out_t = _check_out(out, shape, dtype, device, was_numpy)
    if not batch:
        res = _sqdist_2d(Xt, Tt, method, backend, out_t, budget)
        if res is not out_t and out is not None:
            out_t.copy_(res)
            res = out_t
        return out if (out is not None and was_numpy) else to_output(res, was_numpy)
    Xb = Xt.expand(batch + Xt.shape[-2:])
    Tb = Tt.expand(batch + Tt.shape[-2:])
    results = []
    for idx in np.ndindex(*batch):
        res = _sqdist_2d(Xb[idx], Tb[idx], method, backend, out_t[idx], budget)
        results.append(res)
    if any(r.requires_grad for r in results):
        stacked = torch.stack(results).reshape(shape)
        if out is None:
            out_t = stacked
        else:
            out_t.copy_(stacked)  # autograd records the copy into the caller's buffer
    return out if (out is not None and was_numpy) else to_output(out_t, was_numpy)


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
    Xt, Tt, was_numpy, dtype = _prepare(X, T)
    if Xt.ndim != 2 or Tt.ndim != 2:
        raise SqdistError(f"X and T: sqdist_chunks takes 2-D inputs, got X {describe(Xt)} and T {describe(Tt)}")
    backend = _resolve_backend(backend, Xt.device)
    budget = _chunking.resolve_budget(working_memory)
    # validation above runs at the call, not at the first next(): the blocks come from a generator
    return _chunks_impl(Xt, Tt, was_numpy, dtype, backend, budget)


def _chunks_impl(
    Xt: torch.Tensor, Tt: torch.Tensor, was_numpy: bool, dtype: torch.dtype, backend: str, budget: int
) -> Iterator[tuple[Any, int]]:
    N, D = Xt.shape
    P = Tt.shape[0]
    item = torch.finfo(compute_dtype(dtype)).bits // 8
    chunk = _chunking.rows_per_chunk(N, P * item + _bytes_per_row("gemm", P, D, item), budget, what="distances")
    for sl in _chunking.row_slices(N, chunk):
        block = torch.empty((sl.stop - sl.start, P), dtype=dtype, device=Xt.device)
        block = _sqdist_2d(Xt[sl], Tt, "gemm", backend, block, budget)
        yield to_output(block, was_numpy), sl.start


def _nearest_impl(X: torch.Tensor, T: torch.Tensor, k: int, backend: str, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest rows of T for every row of X, chunked; trusts its inputs (2-D, same device)."""
    N, D = X.shape
    P = T.shape[0]
    dtype = common_dtype(X, T)
    if backend == "triton" and k == 1:
        from . import _triton

        return _triton.nearest_triton(X, T)
    cdtype = compute_dtype(dtype)
    dist = torch.empty((N, k), dtype=dtype, device=X.device)
    idx = torch.empty((N, k), dtype=torch.int64, device=X.device)
    if N == 0:
        return dist, idx
    item = torch.finfo(cdtype).bits // 8
    chunk = _chunking.rows_per_chunk(N, P * item + _bytes_per_row("gemm", P, D, item), budget, what="nearest")
    # small D on the CPU: the compiled direct formula (exact, so exact ties
    # really tie and go to the smallest index); else the exact gemm path
    direct = backend == "torch" and _resolve_method("auto", X.device, X, T, backend) == "_direct"
    if direct:
        from . import _cpu_kernels

        Td = T.detach().to(cdtype)
    else:
        prep = _Prepared(T, cdtype)
    for sl in _chunking.row_slices(N, chunk):
        if direct:
            Xd = X[sl].detach().to(cdtype)
            d = _cpu_kernels.sqdist_small(Xd, Td, torch.empty((Xd.shape[0], P), dtype=cdtype))  # (n, P)
        else:
            d = _gemm_block(X[sl], prep, None, budget)  # (n, P)
        if k == 1:
            v, j = d.min(dim=1, keepdim=True)  # first index on ties
        else:
            v, j = torch.topk(d, k, dim=1, largest=False, sorted=True)
        dist[sl] = v
        idx[sl] = j
        del d  # else the previous block stays alive while the next one is computed
    return dist, idx


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
    from . import streaming

    if streaming.is_out_of_core(X):  # .npy path, memory map or chunks: streamed, outputs in memory
        return streaming._nearest_stream(X, T, k, working_memory, backend)
    Xt, Tt, was_numpy, _ = _prepare(X, T)
    if Xt.ndim != 2 or Tt.ndim != 2:
        raise SqdistError(f"X and T: nearest takes 2-D inputs (N, D) and (P, D), got X {describe(Xt)} and T {describe(Tt)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= Tt.shape[0]:
        raise SqdistError(f"k: expected an integer in [1, {Tt.shape[0]}] (the number of rows of T), got {k!r}")
    backend = _resolve_backend(backend, Xt.device)
    budget = _chunking.resolve_budget(working_memory)
    dist, idx = _nearest_impl(Xt, Tt, int(k), backend, budget)
    return to_output(dist, was_numpy), to_output(idx, was_numpy)
