"""Sparse rows: SciPy CSR/CSC (matrices and arrays) and torch sparse tensors as the left operand.

The rows of a sparse ``X`` are never densified as a whole: products run on
the CSR arrays, row block by row block, against a *dense* right operand ``T``
(the centres, or the prototypes; a sparse ``T`` is densified in row blocks
within the working-memory budget).  Outputs are dense.

Numerics (the contract of :mod:`sqdist._numerics`, adapted)
-----------------------------------------------------------
Centring -- subtracting a mean from every row -- would destroy the sparsity,
so the product path is the plain expansion

    d(x, t) = ||x||**2 + ||t||**2 - 2 x.t

evaluated in **float64** whatever the input dtype (float32 products are exact
in float64): ``x.t`` is a sum over the ``n_i`` stored values of row ``i``,
``||x||**2`` too, ``||t||**2`` a pairwise sum over the D features.  Its error
is about ``c sqrt(n_i + log2 D + 2) u (||x||**2 + ||t||**2)`` (``u`` the unit
roundoff of float64), so it can only lose the accuracy target (relative 1e-5
for float32 results, ~84 units of roundoff for float64, as the dense paths)
when ``d`` is small compared with the norms -- the close pairs, which centring
would not have helped with either when the rows are far from the origin.

* **Recompute the close pairs** (:func:`tau_unit`): an entry below ``tau_i
  (||x||**2 + ||t||**2)``, ``tau_i = min(1, 2 sqrt(n_i + log2 D + 2) eps64 /
  target)`` -- the dense rule with the row's stored values in place of D and
  float64 accumulation -- is recomputed by the **direct formula**: the row is
  scattered into a dense float64 buffer ``x`` and ``sum_j (x_j - t_j)**2`` is
  added over *all* D features in order.  That is the dense direct formula
  itself (no cancellation: a stored coordinate contributes ``(x_j - t_j)**2``,
  every other one ``t_j**2``, each a non-negative term), it costs O(D) per
  recomputed pair, and identical rows give exactly ``0.0``.  The form
  ``sum_{nnz} (x_j - t_j)**2 + (||t||**2 - sum_{nnz} t_j**2)`` is *not* used:
  its bracket cancels when ``t`` lives on the row's columns.  For float32
  results ``tau_i`` is ~1e-9, so only (near) duplicates are recomputed.
* **Clamp** every other entry at zero: never negative.
* **The assignment margin** (:func:`margin_unit`): nearest-centre ranking on
  ``e_k = ||c_k||**2 - 2 x.c_k`` keeps a row's argmin when the second best is
  more than ``gamma_i (||x||**2 + max_k ||c_k||**2)`` above the best, with
  ``gamma_i = 2 SAFETY u (2 n_i + 2 D + 2 log2 D + 8)``: the winner and a
  rival are each within ``u (n_i + log2 D + 2)(||x||**2 + ||c||**2)`` of
  their exact ``e_k`` and the direct formula is within ``2 (D + 1) u`` of
  ``d``.  Otherwise the centres inside the margin are compared by the direct
  formula (float64; ties: smallest index), so the labels are those of the
  exact distances.  The distance to the winner follows the recompute rule.
* **Unsafe norms** (NaN/Inf, or ``4 ||x||**2`` not finite): the direct
  formula for the whole row or column (IEEE propagation, confined to it).
* **Ordered accumulation**: per-cluster float64 sums add each cluster's rows
  in increasing row order (clusters in parallel), so nothing depends on the
  thread count; the sums equal those of the dense torch path bit for bit.

Paths: on the CPU with numba (the ``fast`` extra) the compiled kernels of
:mod:`sqdist._sparse_nb` (parallel over rows); everywhere else ``torch.sparse.mm``
on float64 CSR blocks (any device) with the same rules in torch operations.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from . import _chunking
from ._numerics import _REL_TARGET_EPS, _SAFETY, ordered_sum, segment_add
from ._validation import SqdistError, _scipy_sparse, as_tensor, compute_dtype, describe

__all__ = ["CSR", "Centres", "Pair", "as_csr", "assign", "assign_active", "can_prepare", "check_points", "is_sparse",
           "margin_unit", "mean_variance", "nearest", "pair_nearest", "pair_sqdist", "prepare_pair", "sqdist_into", "tau_unit"]

_U64 = torch.finfo(torch.float64).eps / 2  # unit roundoff of the float64 accumulation
_ASSIGN_CHUNK = 256  # rows per accumulator of the compiled assignment


def is_sparse(x: Any) -> bool:
    """Whether ``x`` is sparse input: a scipy.sparse matrix / array, a non-strided torch tensor or a :class:`CSR`."""
    return isinstance(x, CSR) or (isinstance(x, torch.Tensor) and x.layout != torch.strided) or _scipy_sparse(x)


@dataclass(frozen=True)
class CSR:
    """Rows in compressed sparse row form, as torch tensors on one device (never densified whole).

    ``indptr`` (N+1,), ``indices`` (nnz,) integer; ``data`` (nnz,) floating;
    no duplicate columns in a row.  ``was_numpy``: the input was SciPy (results
    are NumPy).  ``X[a:b]`` is the CSR of rows ``a:b`` (views); ``X[idx]``
    with an integer, integer array or tensor the **dense** rows.
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    data: torch.Tensor
    n_features: int
    was_numpy: bool = False

    ndim = 2

    @property
    def shape(self) -> tuple[int, int]:
        return (self.indptr.shape[0] - 1, self.n_features)

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0])

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> CSR:
        """The same rows on ``device`` / with values of ``dtype`` (a no-op when both match)."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        dev = self.device if device is None else torch.device(device)
        dt = self.dtype if dtype is None else dtype
        if dev == self.device and dt == self.dtype:
            return self
        return replace(self, indptr=self.indptr.to(dev), indices=self.indices.to(dev), data=self.data.to(dev, dt))

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            a, b, step = key.indices(self.shape[0])
            if step != 1:
                raise SqdistError(f"X: sparse rows take contiguous slices, got step {step}")
            b = max(a, b)
            p = self.indptr[a : b + 1]
            lo, hi = int(p[0]), int(p[-1])
            return replace(self, indptr=p - lo, indices=self.indices[lo:hi], data=self.data[lo:hi])
        idx = torch.as_tensor(np.asarray(key) if not isinstance(key, torch.Tensor) else key)
        single = idx.ndim == 0
        rows = self.dense_rows(idx.reshape(-1).to(torch.int64), self.dtype)
        return rows[0] if single else rows

    def dense_rows(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The rows at ``idx`` (m,) as a dense (m, D) tensor of ``dtype`` (m small: within the caller's budget)."""
        idx = idx.to(self.device)
        out = torch.zeros((idx.shape[0], self.n_features), dtype=dtype, device=self.device)
        if idx.numel() == 0:
            return out
        ptr = self.indptr.to(torch.int64)
        lo, hi = ptr[idx], ptr[idx + 1]  # (m,)
        cnt = hi - lo
        rr = torch.repeat_interleave(torch.arange(idx.shape[0], device=self.device), cnt)  # (s,)
        pos = torch.arange(int(cnt.sum()), device=self.device) - torch.repeat_interleave(cnt.cumsum(0) - cnt, cnt)
        q = torch.repeat_interleave(lo, cnt) + pos  # (s,) positions in data
        out[rr, self.indices[q].to(torch.int64)] = self.data[q].to(dtype)
        return out

    def dense(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """All rows as a dense tensor: only for blocks the caller has sized within its budget."""
        return self.dense_rows(torch.arange(self.shape[0], device=self.device), dtype or self.dtype)

    def torch_csr(self, dtype: torch.dtype) -> torch.Tensor:
        """A ``torch.sparse_csr`` tensor of these rows with values in ``dtype``."""
        with warnings.catch_warnings():  # "support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.indptr.to(torch.int64), self.indices.to(torch.int64),
                                           self.data.to(dtype), size=self.shape, check_invariants=False)

    def row_nnz(self) -> torch.Tensor:
        return self.indptr[1:].to(torch.int64) - self.indptr[:-1].to(torch.int64)

    def sq_norms(self) -> torch.Tensor:
        """(N,) float64 squared norms of the rows (their stored values, in order)."""
        rows = torch.repeat_interleave(torch.arange(self.shape[0], device=self.device), self.row_nnz())
        v = self.data.to(torch.float64)
        return torch.zeros(self.shape[0], dtype=torch.float64, device=self.device).index_add_(0, rows, v * v)


def _float_dtype(dt: Any, name: str, torch_input: bool) -> torch.dtype:
    """The floating torch dtype sparse values of dtype ``dt`` compute in (integers: float64 for SciPy,
    float32 for torch, as for dense input)."""
    if isinstance(dt, torch.dtype):
        if dt.is_complex:
            raise SqdistError(f"{name}: complex input is not supported (got {dt}); pass real values")
        return dt if dt.is_floating_point else torch.float32
    dt = np.dtype(dt)
    if dt.kind == "c":
        raise SqdistError(f"{name}: complex input is not supported (got dtype {dt}); pass real values")
    if dt.kind in "biu":
        return torch.float64
    if dt.kind != "f" or dt.itemsize > 8:
        raise SqdistError(f"{name}: dtype {dt} is not supported; expected a float, integer or boolean dtype")
    return {2: torch.float16, 4: torch.float32, 8: torch.float64}[dt.itemsize]


def as_csr(x: Any, name: str = "X") -> CSR:
    """``x`` (scipy.sparse of any format, torch sparse COO/CSR/CSC/BSR, or a :class:`CSR`) as a :class:`CSR`
    without duplicate entries, sharing SciPy's arrays where possible.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> X = as_csr(sp.csr_matrix([[0.0, 2.0], [1.0, 0.0]]))
    >>> X.shape, X.nnz, X.was_numpy, X[1].tolist()
    ((2, 2), 2, True, [1.0, 0.0])
    """
    if isinstance(x, CSR):
        return x
    if isinstance(x, torch.Tensor):
        if x.ndim != 2:
            raise SqdistError(f"{name}: expected a 2-D sparse tensor (N, D), got {describe(x)}")
        dt = _float_dtype(x.dtype, name, True)
        if x.layout == torch.sparse_coo:
            x = x.coalesce()
        t = x.to_sparse_csr() if x.layout != torch.sparse_csr else x
        return CSR(t.crow_indices(), t.col_indices(), t.values().to(dt), int(t.shape[1]), False)
    if not _scipy_sparse(x):
        raise SqdistError(f"{name}: expected a sparse matrix or tensor, got {describe(x)}")
    if x.ndim != 2:
        raise SqdistError(f"{name}: expected a 2-D sparse matrix (N, D), got shape {x.shape}")
    dt = _float_dtype(x.dtype, name, False)
    c = x.tocsr()
    if not c.has_canonical_format:  # duplicates would count twice in the norms
        c = c.copy()
        c.sum_duplicates()
    data = c.data if c.data.dtype.kind == "f" and c.data.dtype.byteorder in "=|" else c.data.astype(np.float64)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a) if a.flags.writeable else np.array(a))

    return CSR(t(c.indptr), t(c.indices), t(data).to(dt), int(c.shape[1]), True)


# --------------------------------------------------------------------------
# numerics
# --------------------------------------------------------------------------


def _log2d(D: int) -> float:
    return float(math.ceil(math.log2(max(D, 2))))


def tau_unit(dtype: torch.dtype) -> float:
    """``tau_i = min(1, tau_unit * sqrt(n_i + log2 D + 2))``: the recompute threshold of a row with
    ``n_i`` stored values for results of ``dtype`` (float64 accumulation).

    Examples
    --------
    >>> import torch
    >>> t = tau_unit(torch.float32) * (65 + 16 + 2) ** 0.5  # a TF-IDF row of 65 terms, D = 2**16
    >>> 1e-10 < t < 1e-8
    True
    """
    target = _REL_TARGET_EPS * torch.finfo(compute_dtype(dtype)).eps
    return 2.0 * torch.finfo(torch.float64).eps / target


def margin_unit() -> float:
    """``gamma_i = margin_unit() * (2 n_i + 2 D + 2 log2 D + 8)``: the assignment margin (module docstring)."""
    return 2.0 * _SAFETY * _U64


# --------------------------------------------------------------------------
# compiled kernels (lazily imported: importing numba costs ~0.5 s)
# --------------------------------------------------------------------------


@functools.cache
def _available() -> bool:
    return importlib.util.find_spec("numba") is not None


@functools.cache
def _nb() -> Any:
    """The kernel module :mod:`sqdist._sparse_nb`, imported on first use."""
    from . import _sparse_nb

    return _sparse_nb


def _compiled(X: CSR) -> bool:
    return X.device.type == "cpu" and _available()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


# --------------------------------------------------------------------------
# distances
# --------------------------------------------------------------------------


def _right_blocks(T: Any, budget: int) -> Any:
    """Yield ``(p0, Tb)``: consecutive row blocks of T as dense float64 (p, D), each within a quarter of the budget."""
    P, D = T.shape
    p = max(1, min(P, budget // max(1, 4 * 2 * D * 8)))
    for p0 in range(0, P, p):
        blk = T[p0 : p0 + p]
        yield p0, (blk.dense(torch.float64) if isinstance(blk, CSR) else blk.detach().to(torch.float64))


def _unsafe(n: torch.Tensor) -> torch.Tensor:
    return ~torch.isfinite(n * 4)


def sqdist_into(X: CSR, T: Any, out: torch.Tensor, budget: int) -> torch.Tensor:
    """Fill ``out`` (N, P) with ``||x_i - t_j||**2`` for CSR rows X and T (P, D) dense or CSR.

    Examples
    --------
    >>> import scipy.sparse as sp, torch
    >>> X = as_csr(sp.csr_matrix([[0.0, 3.0], [4.0, 0.0]]))
    >>> sqdist_into(X, torch.tensor([[0.0, 3.0], [0.0, 0.0]], dtype=torch.float64),
    ...             torch.empty(2, 2, dtype=torch.float64), 2**20).tolist()
    [[0.0, 9.0], [25.0, 16.0]]
    """
    N, D = X.shape
    if N == 0 or T.shape[0] == 0:
        return out
    tu, extra = tau_unit(out.dtype), _log2d(D) + 2.0
    for p0, Tb in _right_blocks(T, budget):
        nt = (Tb * Tb).sum(1)  # (p,) float64
        p = Tb.shape[0]
        if _compiled(X):
            o = out.numpy() if out.dtype in (torch.float32, torch.float64) else None
            target = o if o is not None else np.empty((N, p), dtype=np.float64)
            _nb().sqdist_rows(_np(X.indptr), _np(X.indices), _np(X.data), np.ascontiguousarray(_np(Tb).T), _np(Tb),
                              _np(nt), _np(_unsafe(nt)), tu, extra, target, p0 if o is not None else 0)
            if o is None:
                out[:, p0 : p0 + p] = torch.from_numpy(target).to(out.dtype)
            continue
        rows = _chunking.rows_per_chunk(N, p * 8 * 4 + 8 * D, budget, what="sparse distances")
        for sl in _chunking.row_slices(N, rows):
            out[sl, p0 : p0 + p] = _torch_block(X[sl], Tb, nt, tu, extra, budget).to(out.dtype)
    return out


def _torch_block(Xb: CSR, Tb: torch.Tensor, nt: torch.Tensor, tu: float, extra: float, budget: int) -> torch.Tensor:
    """Distances (n, p) float64 of CSR rows to a dense float64 block with torch ops (any device)."""
    nx = Xb.sq_norms()  # (n,)
    d = torch.sparse.mm(Xb.torch_csr(torch.float64), Tb.T.contiguous())  # (n, p)
    d.mul_(-2).add_(nx[:, None]).add_(nt[None, :])
    tau = (tu * torch.sqrt(Xb.row_nnz().to(torch.float64) + extra)).clamp_max_(1.0)  # (n,)
    close = (d < tau[:, None] * (nx[:, None] + nt[None, :])) | _unsafe(nx)[:, None] | _unsafe(nt)[None, :]
    d.clamp_min_(0)
    rows = close.any(1).nonzero().flatten()
    step = max(1, budget // max(1, 4 * Xb.shape[1] * 8))
    for s in range(0, rows.numel(), step):  # rows with a close pair: densified a few at a time
        r = rows[s : s + step]
        xd = Xb.dense_rows(r, torch.float64)  # (r, D)
        ii, jj = close[r].nonzero(as_tuple=True)
        d[r[ii], jj] = ((xd[ii] - Tb[jj]) ** 2).sum(1)
    return d


def nearest(X: CSR, T: Any, k: int, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dist (N, k), idx (N, k))`` of the k nearest rows of T (dense or CSR); k = 1 with finite
    data takes the exact assignment (the argmin of the exact distances, ties: smallest index)."""
    N, P = X.shape[0], T.shape[0]
    dtype = torch.promote_types(X.dtype, T.dtype)
    Td = T if not isinstance(T, CSR) else None
    if k == 1 and Td is not None and bool(torch.isfinite(X.data).all()) and bool(torch.isfinite(Td).all()):
        lab, md = _labels(X, Td.to(torch.float64), budget)
        return md.to(dtype)[:, None], lab[:, None]
    dist = torch.empty((N, k), dtype=dtype, device=X.device)
    idx = torch.empty((N, k), dtype=torch.int64, device=X.device)
    rows = _chunking.rows_per_chunk(N, P * 8 * 2, budget, what="nearest")
    for sl in _chunking.row_slices(N, rows):
        d = sqdist_into(X[sl], T, torch.empty((sl.stop - sl.start, P), dtype=torch.float64, device=X.device), budget)
        v, j = d.min(dim=1, keepdim=True) if k == 1 else torch.topk(d, k, dim=1, largest=False, sorted=True)
        dist[sl], idx[sl] = v, j
    return dist, idx


# --------------------------------------------------------------------------
# assignment (k-means)
# --------------------------------------------------------------------------


def _sq_norms_rows(C: torch.Tensor) -> torch.Tensor:
    """``(C * C).sum(1)`` bit for bit (each row's own reduction), a few rows at a time: no (K, D) temporary."""
    K, D = C.shape
    b = max(1, min(K, (1 << 18) // max(1, D)))
    buf = torch.empty((b, D), dtype=C.dtype, device=C.device)
    out = torch.empty(K, dtype=C.dtype, device=C.device)
    for k0 in range(0, K, b):
        c = C[k0 : k0 + b]
        t = torch.mul(c, c, out=buf[: c.shape[0]])
        out[k0 : k0 + b] = t.sum(1)
    return out


class Centres:
    """Dense centres prepared for the compiled CSR assignment (CPU): ``C64`` (K, D) float64 (contiguous,
    not copied), its transpose ``CT`` (D, K) and squared norms ``nc`` (K,) float64.

    Kept across the steps of a mini-batch fit, :meth:`set_rows` replaces a few centres in place in all
    three: O(rows * D) instead of the O(K * D) of preparing the centres again.  A row's norm does not
    depend on the other rows (:func:`sqdist._sparse_nb.sq_norms`), so updated and fresh ones agree bit for bit.

    Examples
    --------
    >>> import torch
    >>> P = Centres(torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64))
    >>> P.set_rows(torch.tensor([1]), torch.tensor([[0.0, 5.0]], dtype=torch.float64))
    >>> P.CT.tolist(), P.nc.tolist()
    ([[1.0, 0.0], [2.0, 5.0]], [5.0, 25.0])
    """

    def __init__(self, C64: torch.Tensor):
        K, D = C64.shape
        self.C64 = C64.contiguous()
        CT = np.empty((D, K), dtype=np.float64)  # allocated by NumPy: a fresh one from numba is slower to fill
        _nb().transpose(_np(self.C64), CT)
        self.CT = torch.from_numpy(CT)
        self.nc = self._norms(self.C64)

    @staticmethod
    def _norms(rows: torch.Tensor) -> torch.Tensor:
        out = np.empty(rows.shape[0], dtype=np.float64)
        _nb().sq_norms(_np(rows), np.arange(rows.shape[0], dtype=np.int64), out)
        return torch.from_numpy(out)

    def set_rows(self, idx: torch.Tensor, rows: torch.Tensor) -> None:
        """Centres ``idx`` (m,) int64 become ``rows`` (m, D) float64."""
        self.C64.index_copy_(0, idx, rows)
        self.CT.index_copy_(1, idx, rows.T)
        self.nc.index_copy_(0, idx, self._norms(rows))


def _labels(X: CSR, C: torch.Tensor, budget: int, prep: Centres | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact nearest centre (N,) int64 and the float64 distance to it (N,), C (K, D) float64 (``prep``:
    the same centres prepared, for the compiled kernels)."""
    N, D = X.shape
    K = C.shape[0]
    gu, mextra = margin_unit(), 2.0 * D + 2.0 * _log2d(D) + 8.0
    tu, extra = tau_unit(torch.float64), _log2d(D) + 2.0
    labels = torch.empty(N, dtype=torch.int64, device=X.device)
    mind = torch.empty(N, dtype=torch.float64, device=X.device)
    if N == 0:
        return labels, mind
    if _compiled(X):
        P = prep if prep is not None else Centres(C)
        _nb().assign_rows(_np(X.indptr), _np(X.indices), _np(X.data), _np(P.CT), _np(P.C64), _np(P.nc),
                          float(P.nc.max()), gu, mextra, tu, extra, _ASSIGN_CHUNK, labels.numpy(), mind.numpy())
        return labels, mind
    nc = _sq_norms_rows(C)  # (K,) float64
    ncmax = float(nc.max())
    rows = _chunking.rows_per_chunk(N, K * 8 * 4 + 8 * D, budget, what="sparse k-means assignment")
    CT = C.T.contiguous()  # (D, K)
    for sl in _chunking.row_slices(N, rows):
        Xb = X[sl]
        nx = Xb.sq_norms()  # (n,)
        e = torch.sparse.mm(Xb.torch_csr(torch.float64), CT).mul_(-2).add_(nc[None, :])  # (n, K)
        two = torch.topk(e, min(2, K), dim=1, largest=False, sorted=True)
        b1, lab = e.min(dim=1)  # first index on ties
        b2 = two.values[:, -1] if K > 1 else torch.full_like(b1, math.inf)
        nnz = Xb.row_nnz().to(torch.float64)
        margin = gu * (2 * nnz + mextra) * (nx + ncmax)
        d = nx + b1
        tau = (tu * torch.sqrt(nnz + extra)).clamp_max_(1.0)
        amb = ((b2 - b1 <= margin) | (d < tau * (nx + nc[lab]))).nonzero().flatten()
        d.clamp_min_(0)
        step = max(1, budget // max(1, 4 * K * D * 8))
        for s in range(0, amb.numel(), step):
            r = amb[s : s + step]
            xd = Xb.dense_rows(r, torch.float64)  # (r, D)
            direct = ((xd[:, None, :] - C[None, :, :]) ** 2).sum(-1)  # (r, K)
            direct = torch.where(e[r] <= (b1[r] + margin[r])[:, None], direct, math.inf)
            d[r], lab[r] = direct.min(dim=1)
        labels[sl], mind[sl] = lab, d
    return labels, mind


def assign(X: CSR, C: torch.Tensor, budget: int, weights: torch.Tensor | None = None):
    """Assign CSR rows to dense centres and accumulate: ``(labels, mind, sums, counts, inertia)``.

    ``labels`` (N,) int64: the exact nearest centre (ties: smallest index);
    ``mind`` (N,) in C's compute dtype: the distance to it; ``sums`` (K, D)
    float64 per-cluster sums of the rows (times ``weights`` (N,) when given),
    each cluster's rows added in row order; ``counts`` (K,) int64;
    ``inertia`` 0-d float64 (weighted when ``weights`` is given).  Memory:
    O(K * D) beyond the outputs; X is never densified (one row at a time
    where the direct formula decides).  The entry point MiniBatchKMeans uses
    for a sparse batch.

    Examples
    --------
    >>> import scipy.sparse as sp, torch
    >>> X = as_csr(sp.csr_matrix([[0.0, 1.0], [0.0, 0.0], [9.0, 0.0]]))
    >>> C = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    >>> labels, mind, sums, counts, inertia = assign(X, C, 2**20)
    >>> labels.tolist(), mind.tolist(), sums.tolist(), counts.tolist(), float(inertia)
    ([0, 0, 1], [1.0, 0.0, 1.0], [[0.0, 1.0], [9.0, 0.0]], [2, 1], 2.0)
    """
    N, D = X.shape
    K = C.shape[0]
    cdtype = compute_dtype(C.dtype)
    labels, md64 = _labels(X, C.detach().to(torch.float64), budget)
    mind = md64.to(cdtype)
    compiled = _compiled(X)
    sums = None if compiled else torch.zeros((K, D), dtype=torch.float64, device=X.device)
    counts = torch.bincount(labels, minlength=K) if N else torch.zeros(K, dtype=torch.int64, device=X.device)
    w = None if weights is None else weights.to(device=X.device, dtype=torch.float64)
    if compiled:
        sums, per_cluster = _cluster_sums(X, labels, mind, w, np.arange(K), K)
    else:
        rows = torch.repeat_interleave(torch.arange(N, device=X.device), X.row_nnz())  # (nnz,)
        vals = X.data.to(torch.float64) * (1.0 if w is None else w[rows])
        segment_add(sums.view(-1), labels[rows] * D + X.indices.to(torch.int64), vals)
        m64 = mind.to(torch.float64) * (1.0 if w is None else w)
        per_cluster = segment_add(torch.zeros(K, dtype=torch.float64, device=X.device), labels, m64)
    return labels, mind, sums, counts, ordered_sum(per_cluster)


def _cluster_sums(X: CSR, labels: torch.Tensor, mind: torch.Tensor, w: torch.Tensor | None, clusters: np.ndarray,
                  K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Compiled: the row sums of the clusters ``clusters`` (m,) int64 (times ``w``), each cluster's rows
    added in row order, (m, D) float64, and every cluster's (weighted) sum of ``mind`` (K,) float64."""
    order, starts = _nb().cluster_order(labels.numpy(), K)
    # NumPy's lazily zeroed pages: about twice as fast as torch.zeros for the sums
    sums = np.zeros((clusters.shape[0], X.shape[1]))
    per = np.zeros(K, dtype=np.float64)
    _nb().cluster_sums(_np(X.indptr), _np(X.indices), _np(X.data), order, starts, clusters,
                       np.ones(1) if w is None else _np(w), w is not None, _np(mind), sums, per)
    return torch.from_numpy(sums), torch.from_numpy(per)


def assign_active(X: CSR, P: Centres, cdtype: torch.dtype, weights: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`assign` for prepared centres (CPU, compiled kernels; ``X`` at least one row) that sums only
    the clusters given weight: ``(weight (K,) float64, active (m,) int64, sums (m, D) float64, inertia)``.

    ``weight`` is each cluster's row weight (its count when ``weights`` is None), ``active`` the clusters
    of positive weight in increasing order and ``sums[a]`` the sum of cluster ``active[a]``'s rows; the
    distances are rounded to ``cdtype`` (the centres' compute dtype) before the inertia adds them up.
    All as :func:`assign`'s, bit for bit, in O(nnz K + m D) instead of O(nnz K + K D).

    Examples
    --------
    >>> import scipy.sparse as sp, torch
    >>> X = as_csr(sp.csr_matrix([[0.0, 1.0], [0.0, 0.0], [9.0, 0.0]]))
    >>> P = Centres(torch.tensor([[0.0, 0.0], [10.0, 0.0], [50.0, 50.0]], dtype=torch.float64))
    >>> weight, active, sums, inertia = assign_active(X, P, torch.float64)
    >>> weight.tolist(), active.tolist(), sums.tolist(), float(inertia)
    ([2.0, 1.0, 0.0], [0, 1], [[0.0, 1.0], [9.0, 0.0]], 2.0)
    """
    K = P.C64.shape[0]
    labels, md64 = _labels(X, P.C64, 0, P)
    mind = md64.to(cdtype)
    w = None if weights is None else weights.to(dtype=torch.float64)
    if w is None:
        weight = torch.bincount(labels, minlength=K).to(torch.float64)
    else:
        weight = segment_add(torch.zeros(K, dtype=torch.float64), labels, w)
    active = (weight > 0).nonzero().flatten()
    sums, per_cluster = _cluster_sums(X, labels, mind, w, active.numpy(), K)
    return weight, active, sums, ordered_sum(per_cluster)


def can_prepare(X: CSR) -> bool:
    """Whether :class:`Centres` and :func:`assign_active` serve ``X`` (CPU rows, numba installed)."""
    return _compiled(X)


def mean_variance(X: CSR) -> float:
    """Mean over the features of their population variance, float64, without centring the rows:
    ``var_j = (sum_{stored} (x_j - mu_j)**2 + (N - nnz_j) mu_j**2) / N`` (scikit-learn's
    ``mean_variance_axis``; no ``E[x^2] - E[x]^2`` cancellation)."""
    N, D = X.shape
    col = X.indices.to(torch.int64)
    v = X.data.to(torch.float64)
    mu = torch.zeros(D, dtype=torch.float64, device=X.device).index_add_(0, col, v) / N  # (D,)
    dev = v - mu[col]
    m2 = torch.zeros(D, dtype=torch.float64, device=X.device).index_add_(0, col, dev * dev)
    cnt = torch.bincount(col, minlength=D).to(torch.float64)
    return float(((m2 + (N - cnt) * mu * mu) / N).mean())


def check_points(X: Any, name: str = "X") -> CSR:
    """``X`` as a :class:`CSR` with at least one row and one feature and only finite stored values
    (the sparse twin of the dense checks of the k-means functions)."""
    Xs = as_csr(X, name)
    if Xs.shape[0] == 0 or Xs.shape[1] == 0:
        raise SqdistError(f"{name}: expected at least one point and one feature, got sparse rows of shape {Xs.shape}")
    bad = ~torch.isfinite(Xs.data)
    if bool(bad.any()):
        q = bad.nonzero()[0]
        i = int(torch.searchsorted(Xs.indptr.to(torch.int64), q.to(Xs.device), right=True)[0]) - 1
        raise SqdistError(f"{name}: row {i} contains NaN or Inf (sparse rows of shape {Xs.shape}); "
                          f"remove or impute non-finite rows first")
    return Xs


# --------------------------------------------------------------------------
# pairs for the public distance functions
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """A validated pair with at least one sparse member: ``X`` (CSR or dense) and ``T`` (CSR or dense)."""

    X: Any
    T: Any
    was_numpy: bool  # both were SciPy / NumPy / array-likes: NumPy out
    dtype: torch.dtype  # the result's dtype


def prepare_pair(X: Any, T: Any) -> Pair:
    """Validate ``X`` (N, D) and ``T`` (P, D), one of them sparse: 2-D, same features and device."""
    parts = []
    for x, name in ((X, "X"), (T, "T")):
        if is_sparse(x):
            s = as_csr(x, name)
            parts.append((s, s.was_numpy))
        else:
            t, was_np = as_tensor(x, name)
            if t.ndim != 2:
                raise SqdistError(f"{name}: with sparse input both operands must be 2-D (N, D), got {describe(t)}")
            parts.append((t, was_np))
    (A, a_np), (B, b_np) = parts
    if A.device != B.device:
        raise SqdistError(f"X and T must be on the same device, got X on {A.device} and T on {B.device}")
    if A.shape[1] != B.shape[1]:
        raise SqdistError(f"X and T must have the same number of features (last dimension), got X of shape "
                          f"{tuple(A.shape)} and T of shape {tuple(B.shape)}")
    return Pair(A, B, a_np and b_np, torch.promote_types(A.dtype, B.dtype))


def pair_sqdist(pair: Pair, out: torch.Tensor, budget: int) -> torch.Tensor:
    """Fill ``out`` (N, P) with the distances of a :class:`Pair` (a dense X with a sparse T is computed
    as ``d(T, X)`` into the transposed view)."""
    if isinstance(pair.X, CSR):
        return sqdist_into(pair.X, pair.T, out, budget)
    sqdist_into(pair.T, pair.X, out.T, budget)
    return out


def pair_nearest(pair: Pair, k: int, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest rows of ``pair.T`` for every row of ``pair.X``: ``(dist (N, k), idx (N, k))``."""
    if isinstance(pair.X, CSR):
        d, j = nearest(pair.X, pair.T, k, budget)
        return d.to(pair.dtype), j
    N, P = pair.X.shape[0], pair.T.shape[0]
    dist = torch.empty((N, k), dtype=pair.dtype, device=pair.X.device)
    idx = torch.empty((N, k), dtype=torch.int64, device=pair.X.device)
    rows = _chunking.rows_per_chunk(N, P * 8 * 2, budget, what="nearest")
    for sl in _chunking.row_slices(N, rows):
        d = torch.empty((P, sl.stop - sl.start), dtype=torch.float64, device=pair.X.device)
        d = sqdist_into(pair.T, pair.X[sl], d, budget).T  # (n, P)
        v, j = d.min(dim=1, keepdim=True) if k == 1 else torch.topk(d, k, dim=1, largest=False, sorted=True)
        dist[sl], idx[sl] = v, j
    return dist, idx
