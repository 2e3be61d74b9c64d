"""Numba kernels behind :mod:`sqdist._sparse` (CSR rows against dense right operands).

Import this module only through :mod:`sqdist._sparse`, which checks that numba
is installed.  Without numba the decorators fall back to no-ops so that the
module still imports (the doctest collector imports every module); the
functions are then plain, slow Python and are never called by sqdist.

Every kernel works on CSR arrays ``(indptr, indices, data)`` of a row block:
``data[indptr[i]:indptr[i + 1]]`` are the stored values of row ``i`` at the
columns ``indices[...]`` (no duplicates, any order).  Products are
accumulated in float64, nonzero by nonzero: each stored value ``v`` at column
``j`` adds ``v * TT[j, :]`` to a row of accumulators, with the right operand
laid out (D, P) so that this inner loop is contiguous and vectorises.

Determinism: a row's value depends only on that row (its nonzeros in stored
order); ``prange`` only decides which thread computes it.  Per-cluster sums
are added by cluster, each cluster's rows in increasing row order.  No result
depends on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import njit, prange

_OPTS = dict(cache=True, error_model="numpy")


@njit(**_OPTS)
def _scatter(indptr, indices, data, i, xd):  # pragma: no cover
    """Write row ``i`` into the zeroed dense buffer ``xd`` (D,) float64."""
    for q in range(indptr[i], indptr[i + 1]):
        xd[indices[q]] = np.float64(data[q])


@njit(**_OPTS)
def _clear(indptr, indices, i, xd):  # pragma: no cover
    for q in range(indptr[i], indptr[i + 1]):
        xd[indices[q]] = 0.0


@njit(**_OPTS)
def _direct(xd, T, k):  # pragma: no cover
    """The direct formula ``sum_j (x_j - t_kj)**2`` over all D features in order, float64:
    the dense row ``xd`` (D,) against row ``k`` of ``T`` -- no cancellation, IEEE for NaN/Inf."""
    s = 0.0
    for j in range(xd.shape[0]):
        d = xd[j] - np.float64(T[k, j])
        s += d * d
    return s


@njit(**_OPTS)
def _row_products(indptr, indices, data, i, TT, acc):  # pragma: no cover
    """``acc[:] = x_i . TT[:, :]`` (P,) in float64; returns ``||x_i||**2`` (float64, stored order)."""
    acc[:] = 0.0
    nx = 0.0
    for q in range(indptr[i], indptr[i + 1]):
        v = np.float64(data[q])
        j = indices[q]
        nx += v * v
        for k in range(acc.shape[0]):
            acc[k] += v * TT[j, k]
    return nx


@njit(parallel=True, **_OPTS)
def sqdist_rows(indptr, indices, data, TT, T, nt, badcol, tau_unit, extra, out, c0):  # pragma: no cover
    """``out[i, c0 + k] = ||x_i - t_k||**2`` for the CSR rows and the dense block ``T`` (p, D).

    ``TT`` (D, p) float64 is ``T`` transposed, ``nt`` (p,) float64 its squared
    norms, ``badcol`` (p,) bool its rows with unsafe norms.  A value of the
    expansion ``nx + nt - 2 x.t`` below ``tau_i * (nx + nt)``, with ``tau_i =
    min(1, tau_unit * sqrt(nnz_i + extra))``, or of an unsafe row / column, is
    recomputed by the direct formula; the rest is clamped at zero.
    """
    n = indptr.shape[0] - 1
    p = TT.shape[1]
    D = TT.shape[0]
    for i in prange(n):
        acc = np.empty(p)
        nx = _row_products(indptr, indices, data, i, TT, acc)
        tau_i = min(1.0, tau_unit * math.sqrt(indptr[i + 1] - indptr[i] + extra))
        badrow = not np.isfinite(4.0 * nx)
        xd = np.empty(0)
        for k in range(p):
            d = nx + nt[k] - 2.0 * acc[k]
            if badrow or badcol[k] or d < tau_i * (nx + nt[k]):
                if xd.shape[0] == 0:
                    xd = np.zeros(D)
                    _scatter(indptr, indices, data, i, xd)
                d = _direct(xd, T, k)
            elif d < 0.0:  # pragma: no cover - below the threshold, recomputed above
                d = 0.0
            out[i, c0 + k] = d


@njit(**_OPTS)
def transpose(C, out):  # pragma: no cover
    """``out[:] = C.T``: ``C`` (K, D) into ``out`` (D, K), copied in tiles of 128 columns whose reads and
    writes stay in cache (about twice as fast as NumPy's strided copy for K << D)."""
    K, D = C.shape
    for j0 in range(0, D, 128):
        j1 = min(D, j0 + 128)
        for k in range(K):
            for j in range(j0, j1):
                out[j, k] = C[k, j]


@njit(parallel=True, **_OPTS)
def assign_rows(indptr, indices, data, CT, C, nc, ncmax, gamma_unit, mextra, tau_unit, extra, chunk, labels,
                mind):  # pragma: no cover
    """Exact nearest centre of every CSR row (ties: smallest index) and the distance to it.

    ``CT`` (D, K) float64 is the centres transposed, ``C`` (K, D) the centres,
    ``nc`` (K,) float64 their squared norms, ``ncmax`` the largest.  Ranking
    values ``e_k = nc_k - 2 x.c_k``; a row whose second best lies within
    ``gamma_i (nx + ncmax)`` of its best (``gamma_i = gamma_unit * (2 nnz_i +
    mextra)``) is decided by the direct formula over the centres inside that
    margin.  The distance to the winner is ``nx + e_best``, recomputed
    directly below ``tau_i (nx + nc_best)``, ``tau_i = min(1, tau_unit *
    sqrt(nnz_i + extra))`` (exact zeros).  Rows are taken
    ``chunk`` at a time (one accumulator per chunk).
    """
    n = indptr.shape[0] - 1
    nchunks = (n + chunk - 1) // chunk
    for c in prange(nchunks):
        _assign_chunk(indptr, indices, data, CT, C, nc, ncmax, gamma_unit, mextra, tau_unit, extra,
                      c * chunk, min(n, (c + 1) * chunk), labels, mind)


@njit(**_OPTS)
def _assign_chunk(indptr, indices, data, CT, C, nc, ncmax, gamma_unit, mextra, tau_unit, extra, lo, hi, labels,
                  mind):  # pragma: no cover
    """Rows lo:hi of :func:`assign_rows` (one accumulator, one lazily made dense row buffer)."""
    K = CT.shape[1]
    D = CT.shape[0]
    acc = np.empty(K)
    xd = np.empty(0)
    for i in range(lo, hi):
        nx = _row_products(indptr, indices, data, i, CT, acc)
        nnz = indptr[i + 1] - indptr[i]
        b1 = math.inf
        b2 = math.inf
        kb = 0
        for k in range(K):
            e = nc[k] - 2.0 * acc[k]
            acc[k] = e
            if e < b1:
                b2 = b1
                b1 = e
                kb = k
            elif e < b2:
                b2 = e
        margin = gamma_unit * (2.0 * nnz + mextra) * (nx + ncmax)
        d = nx + b1
        direct = b2 - b1 <= margin
        if not direct:
            tau_i = min(1.0, tau_unit * math.sqrt(nnz + extra))
            direct = d < tau_i * (nx + nc[kb])
        if direct:
            if xd.shape[0] == 0:
                xd = np.zeros(D)
            _scatter(indptr, indices, data, i, xd)
            best = math.inf
            for k in range(K):
                if acc[k] <= b1 + margin:
                    dk = _direct(xd, C, k)
                    if dk < best:
                        best = dk
                        kb = k
            d = best
            _clear(indptr, indices, i, xd)
        labels[i] = kb
        mind[i] = d


@njit(**_OPTS)
def cluster_order(labels, K):  # pragma: no cover
    """Stable counting sort of the rows by label: ``(order (n,), starts (K + 1,))``."""
    starts = np.zeros(K + 1, dtype=np.int64)
    for i in range(labels.shape[0]):
        starts[labels[i] + 1] += 1
    for k in range(K):
        starts[k + 1] += starts[k]
    pos = starts[:-1].copy()
    order = np.empty(labels.shape[0], dtype=np.int64)
    for i in range(labels.shape[0]):
        order[pos[labels[i]]] = i
        pos[labels[i]] += 1
    return order, starts


@njit(parallel=True, **_OPTS)
def cluster_sums(indptr, indices, data, order, starts, ks, w, weighted, mind, sums, inert):  # pragma: no cover
    """Per-cluster float64 sums of the rows (times their weights) into ``sums[a]`` for the clusters
    ``ks[a]`` (a zeroed (len(ks), D) buffer: only the clusters asked for), and of ``mind`` (times the
    weights) into ``inert[k]`` for every cluster; each cluster's rows added in increasing row order,
    clusters in parallel."""
    for a in prange(ks.shape[0]):
        k = ks[a]
        for r in range(starts[k], starts[k + 1]):
            i = order[r]
            wi = w[i] if weighted else 1.0
            for q in range(indptr[i], indptr[i + 1]):
                sums[a, indices[q]] += np.float64(data[q]) * wi
    for k in prange(starts.shape[0] - 1):
        s = 0.0
        for r in range(starts[k], starts[k + 1]):
            i = order[r]
            s += np.float64(mind[i]) * (w[i] if weighted else 1.0)
        inert[k] = s


@njit(**_OPTS)
def _sq_norm(C, k):  # pragma: no cover
    """``sum_j C[k, j]**2`` in float64: eight lanes over the columns (j mod 8), added in lane order, then the
    tail -- the same value for a row whatever the other rows or the number of threads."""
    D = C.shape[1]
    lanes = np.zeros(8)
    m = D - D % 8
    for j0 in range(0, m, 8):
        for b in range(8):
            v = np.float64(C[k, j0 + b])
            lanes[b] += v * v
    s = 0.0
    for b in range(8):
        s += lanes[b]
    for j in range(m, D):
        v = np.float64(C[k, j])
        s += v * v
    return s


@njit(parallel=True, **_OPTS)
def sq_norms(C, rows, out):  # pragma: no cover
    """``out[a] = ||C[rows[a]]||**2`` (float64, :func:`_sq_norm`), rows in parallel."""
    for a in prange(rows.shape[0]):
        out[a] = _sq_norm(C, rows[a])
