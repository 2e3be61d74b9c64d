"""Distance-matrix and nearest-row implementations on in-memory tensors (trusted inputs).

Public functions (:mod:`sqdist.distances`, :mod:`sqdist.kernels`, the k-means
initialisation) validate their arguments and resolve "auto" once; the
functions here trust their inputs: 2-D, same device, resolved method and
backend, a budget in bytes.  The accuracy rules come from :mod:`sqdist._numerics`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from . import _autograd, _chunking, _cpu_kernels, _cpu_product
from ._backend import differentiable, resolve_method, triton_kernels
from ._numerics import RightOperand, direct_rows, prepare_right, unsafe_norms
from ._validation import SqdistError, as_tensor, check_pair, common_dtype, compute_dtype, describe, to_output

__all__ = ["check_out", "chunks", "gemm_rows", "nearest_rows", "prepare_inputs", "prepare", "sqdist_2d"]

# bytes of one sub-block of products in the nearest-row search (a reused buffer: below glibc's
# largest mmap threshold, 32 MiB, freed blocks come back without fresh pages).  2-core EPYC, 2
# threads, ms per sqdist.nearest at 4096 x 4096 x 128 / 16384 x 1024 x 256, quiet: 2 MiB 118 / 157,
# 4 MiB 98 / 152, 8 MiB 85 / 156, 16 MiB 88 / 156, 64 MiB 105 / 164, gemm_rows + min(1) 113 / 181,
# fresh torch.mm 98 / 152; load average ~3 (each sub-block's two thread hand-overs cost
# milliseconds): 8 MiB 312 / 455, 16 MiB 235 / 359, 64 MiB 216 / 366, gemm_rows + min(1) 243 / 377.
_NEAREST_SUB_BYTES = 16 << 20


def prepare_inputs(X: Any, T: Any) -> tuple[torch.Tensor, torch.Tensor, bool, torch.dtype]:
    """Validated tensors of a pair: ``(X, T, both were NumPy / array-likes, result dtype)``."""
    Xt, x_np = as_tensor(X, "X")
    Tt, t_np = as_tensor(T, "T")
    check_pair(Xt, Tt)
    return Xt, Tt, (x_np and t_np), common_dtype(Xt, Tt)


def _compiled(T: torch.Tensor, cdtype: torch.dtype) -> bool:
    """Whether the compiled CPU passes serve the product path for ``T`` (no autograd)."""
    return (
        T.device.type == "cpu" and cdtype in (torch.float32, torch.float64)
        and not differentiable(T) and _cpu_kernels.available()
    )


def prepare(T: torch.Tensor, cdtype: torch.dtype) -> RightOperand:
    """The product path's right operand for ``T`` (one compiled pass on the CPU when possible)."""
    if _compiled(T, cdtype):
        # one compiled call instead of ~10 small torch ops (each a thread
        # barrier: milliseconds apiece on a loaded machine)
        return _cpu_product.prepare_right(T.to(cdtype))
    return prepare_right(T, cdtype)


def gemm_rows(Xb: torch.Tensor, prep: RightOperand, out: torch.Tensor | None, budget: int) -> torch.Tensor:
    """Exact distances of a row block ``Xb`` (n, D) to all of T, written into ``out`` (n, P)."""
    Xb = Xb.to(prep.T.dtype)
    grad = differentiable(Xb, prep.T)
    if not grad and _compiled(prep.T, prep.T.dtype):
        # compiled CPU path: one pass builds [x_c, |x_c|^2, 1] and counts
        # unsafe rows, the product goes straight into the output, and each
        # entry is tested against its threshold (inside the product's tiles,
        # or in ONE pass after it) and the few close pairs recomputed directly
        # (replacing clamp + threshold tensor + mask + nonzero + gather/scatter).
        Xa, nx, nbad = _cpu_product.augment(Xb, prep.c)  # (n, D+2), (n,)
        d = _cpu_product.gemm_distances(Xa, nx, Xb, prep, out if out is not None and out.is_contiguous() else None)
        return _fix_unsafe(d, Xb, nx, prep, False) if (nbad or prep.bad_cols.numel()) else d
    Xc = Xb - prep.c  # (n, D)
    nx = (Xc * Xc).sum(1)  # (n,)
    Xa = torch.cat([Xc, nx[:, None], torch.ones_like(nx)[:, None]], dim=1)  # (n, D+2)
    if grad or out is None:
        d = Xa @ prep.Ta.T  # (n, P)
        d = d.clamp_min(0) if grad else d.clamp_min_(0)
    else:
        d = torch.mm(Xa, prep.Ta.T, out=out).clamp_min_(0)  # (n, P)
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
        parts = [((Xb[ii[s : s + step]] - prep.T[jj[s : s + step]]) ** 2).sum(1) for s in range(0, ii.numel(), step)]
        vals = torch.cat(parts)  # (m,)
        d = d.index_put((ii, jj), vals) if grad else d.index_put_((ii, jj), vals)
    del close
    return _fix_unsafe(d, Xb, nx, prep, grad)


def _fix_unsafe(d: torch.Tensor, Xb: torch.Tensor, nx: torch.Tensor, prep: RightOperand, grad: bool) -> torch.Tensor:
    """Overwrite the rows / columns of ``d`` (n, P) whose norms are unsafe (``nx`` (n,) the
    rows' centred norms, ``prep.bad_cols`` the columns) by the direct formula: IEEE
    semantics, exact 0 for identical rows, inf and NaN as they come."""
    bad_rows = unsafe_norms(nx).nonzero().flatten()
    if bad_rows.numel():
        vals = direct_rows(Xb[bad_rows], prep.T)
        d = d.index_copy(0, bad_rows, vals) if grad else d.index_copy_(0, bad_rows, vals)
    if prep.bad_cols.numel():
        vals = direct_rows(Xb, prep.T[prep.bad_cols])
        d = d.index_copy(1, prep.bad_cols, vals) if grad else d.index_copy_(1, prep.bad_cols, vals)
    return d


def _broadcast_block(Xb: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """The exercise's broadcasting: (n, 1, D) - (1, P, D) -> (n, P, D) -> sum -> (n, P)."""
    diff = Xb[:, None, :] - T[None, :, :]  # (n, P, D)
    if diff.requires_grad:
        return (diff * diff).sum(-1)  # (n, P); autograd needs the out-of-place square
    return diff.square_().sum(-1)  # (n, P); in place: one (n, P, D) block, as budgeted


def _numpy_block(Xb: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The same with NumPy broadcasting: (n, P)."""
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


def bytes_per_row(method: str, P: int, D: int, itemsize: int) -> int:
    """Temporary bytes one row of X costs on each path (beyond the output row)."""
    if method in ("broadcast", "numpy"):
        return P * D * itemsize + P * itemsize
    return P * (itemsize + 1) + (D + 2) * itemsize  # threshold row + mask row + augmented row


def sqdist_2d(X: torch.Tensor, T: torch.Tensor, method: str, backend: str, out: torch.Tensor, budget: int) -> torch.Tensor:
    """Fill ``out`` (N, P) with the distances between X (N, D) and T (P, D); returns ``out``,
    or, when autograd records X or T (methods "gemm" and "broadcast"), a new tensor whose
    backward runs in row blocks within ``budget`` (:mod:`sqdist._autograd`)."""
    N, D = X.shape
    P = T.shape[0]
    if N == 0 or P == 0:
        return out
    cdtype = compute_dtype(out.dtype)
    if differentiable(X, T) and method in ("gemm", "broadcast", "_direct"):
        # one autograd operation: the exact no-autograd forward below (compiled, Triton, ...) into a
        # new result, and a backward in row blocks within the budget (sqdist._autograd)
        def forward(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return sqdist_2d(a, b, method, backend, torch.empty(out.shape, dtype=out.dtype, device=out.device), budget)

        return _autograd.sqdist_function(X, T, forward, budget)
    if method == "_direct":  # compiled direct formula (small D, CPU): exact, no temporaries
        Xd, Td = X.detach().to(out.dtype), T.detach().to(out.dtype)
        if out.is_contiguous():
            return _cpu_kernels.sqdist_small(Xd, Td, out)
        return out.copy_(_cpu_kernels.sqdist_small(Xd, Td, torch.empty(out.shape, dtype=out.dtype)))
    if method == "loops":
        return out.copy_(torch.from_numpy(_loops(X.detach().to(cdtype).numpy(), T.detach().to(cdtype).numpy())))
    if backend == "triton" and method == "gemm":
        return triton_kernels().sqdist_triton(X, T, out)
    item = torch.finfo(cdtype).bits // 8
    chunk = _chunking.rows_per_chunk(N, bytes_per_row(method, P, D, item), budget, what=f"{method} distances")
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
    prep = prepare(T, cdtype)  # gemm
    if _compiled(prep.T, cdtype):
        # blocks of ~_cpu_kernels.BLOCK_BYTES of output (still capped by the
        # budget): each block hands the cores between thread pools (BLAS,
        # numba), and larger blocks measured faster on the loaded test machine
        chunk = min(chunk, max(8, _cpu_kernels.BLOCK_BYTES // max(1, P * item)))
    direct_out = out.dtype == cdtype and out.is_contiguous()
    for sl in _chunking.row_slices(N, chunk):
        if direct_out:
            gemm_rows(X[sl], prep, out[sl], budget)
        else:
            out[sl].copy_(gemm_rows(X[sl], prep, None, budget))
    return out


def check_out(out: Any, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, was_numpy: bool) -> torch.Tensor:
    """The caller's ``out=`` buffer as a tensor, checked against the result's shape, dtype and device."""
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
        raise SqdistError(f"out: expected shape {shape}, dtype {dtype}, device {device}; got {describe(out)}")
    return out_t


def chunks(X: torch.Tensor, T: torch.Tensor, was_numpy: bool, dtype: torch.dtype, backend: str,
           budget: int) -> Iterator[tuple[Any, int]]:
    """Row blocks ``(block (n, P), start)`` of the distance matrix, each within ``budget``."""
    N, D = X.shape
    P = T.shape[0]
    item = torch.finfo(compute_dtype(dtype)).bits // 8
    chunk = _chunking.rows_per_chunk(N, P * item + bytes_per_row("gemm", P, D, item), budget, what="distances")
    for sl in _chunking.row_slices(N, chunk):
        block = torch.empty((sl.stop - sl.start, P), dtype=dtype, device=X.device)
        block = sqdist_2d(X[sl], T, "gemm", backend, block, budget)
        yield to_output(block, was_numpy), sl.start


def nearest_rows(X: torch.Tensor, T: torch.Tensor, k: int, backend: str, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest rows of T for every row of X, chunked: ``(dist (N, k), idx (N, k))``."""
    N, D = X.shape
    P = T.shape[0]
    dtype = common_dtype(X, T)
    if backend == "triton" and k == 1:
        return triton_kernels().nearest_triton(X, T)
    cdtype = compute_dtype(dtype)
    dist = torch.empty((N, k), dtype=dtype, device=X.device)
    idx = torch.empty((N, k), dtype=torch.int64, device=X.device)
    if N == 0:
        return dist, idx
    item = torch.finfo(cdtype).bits // 8
    chunk = _chunking.rows_per_chunk(N, P * item + bytes_per_row("gemm", P, D, item), budget, what="nearest")
    # small D on the CPU: the compiled direct formula (exact, so exact ties
    # really tie and go to the smallest index); else the exact product path
    direct = backend == "torch" and not differentiable(X, T) and resolve_method("auto", X, T, backend, matrix=False) == "_direct"
    Td = T.detach().to(cdtype) if direct else None
    prep = None if direct else prepare(T, cdtype)
    fused = not direct and k == 1 and not differentiable(X) and _compiled(prep.T, cdtype)
    direct_min = direct and k == 1 and _compiled(Td, cdtype)  # distances and row minimum in one compiled pass
    if direct_min:  # one compiled pass over all rows: no (n, P) block at all
        dm = dist.view(-1) if dtype == cdtype else torch.empty(N, dtype=cdtype)  # (N,)
        _cpu_kernels.nearest_small(X.detach().to(cdtype).contiguous(), Td.contiguous(), dm, idx.view(-1))
        if dtype != cdtype:  # half precision in: the distances rounded as the block path rounds them
            dist.view(-1).copy_(dm)
        return dist, idx
    for sl in _chunking.row_slices(N, chunk):
        if fused and _nearest_fused(X[sl], prep, dist[sl], idx[sl]):
            continue
        if direct:
            Xd = X[sl].detach().to(cdtype)
            d = _cpu_kernels.sqdist_small(Xd, Td, torch.empty((Xd.shape[0], P), dtype=cdtype))  # (n, P)
        else:
            d = gemm_rows(X[sl], prep, None, budget)  # (n, P)
        if k == 1:
            v, j = d.min(dim=1, keepdim=True)  # first index on ties
        else:
            v, j = torch.topk(d, k, dim=1, largest=False, sorted=True)
        dist[sl] = v
        idx[sl] = j
        del d  # else the previous block stays alive while the next one is computed
    return dist, idx


def _nearest_fused(Xb: torch.Tensor, prep: RightOperand, dist: torch.Tensor, idx: torch.Tensor) -> bool:
    """The nearest row of T for the rows ``Xb`` (n, D) into ``dist`` / ``idx`` (n, 1) on the compiled
    CPU path: sub-blocks of rows (about _NEAREST_SUB_BYTES of products, one product each into
    a reused buffer) get the cancellation fix-up and the row minimum in one compiled pass, row by
    row while the row is in cache (no second pass, no ``min``) -- the values of
    ``gemm_rows(Xb).min(1)``.  Returns False (nothing written) for rows or columns with unsafe
    norms, which take the general path."""
    Xb = Xb.detach().to(prep.T.dtype)
    Xa, nx, nbad = _cpu_product.augment(Xb, prep.c)  # (n, D+2), (n,)
    if nbad or prep.bad_cols.numel():
        return False
    n, P = Xb.shape[0], prep.T.shape[0]
    rows = max(1, min(n, _NEAREST_SUB_BYTES // (P * Xb.element_size())))
    buf = torch.empty(rows * P, dtype=Xb.dtype)  # (rows, P) products, reused
    dmin = torch.empty(n, dtype=Xb.dtype)  # (n,)
    imin = torch.empty(n, dtype=torch.int64)  # (n,)
    tnt = prep.nt * prep.tau  # (P,)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        g = _cpu_kernels.product_nt(Xa[s:e], prep.Ta, buf[: (e - s) * P].view(e - s, P))  # (r, P)
        _cpu_product.gemm_min(g, nx[s:e], tnt, prep.tau, Xb[s:e], prep.T, dmin[s:e], imin[s:e])
    dist[:, 0] = dmin
    idx[:, 0] = imin
    return True
