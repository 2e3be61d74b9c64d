"""Numba kernels behind :mod:`sqdist._cpu_kernels` (the optional ``fast`` extra).

Import this module only through :mod:`sqdist._cpu_kernels`, which checks that
numba is installed.  Without numba the decorators are :mod:`sqdist._jit`'s
no-op stand-ins, so that the module still imports (pytest collects every module
for doctests); the functions are then plain, slow Python and are never called
by sqdist.

Determinism: every kernel that reduces over rows splits the rows into a fixed
number of contiguous groups chosen from the *shape only* (never from the thread
count), accumulates each group sequentially in float64, and the caller combines
the group partials in group order.  ``prange`` only decides which thread runs a
group, so the bytes of the result do not depend on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import njit, prange

# The kernels keep the GIL (no ``nogil``): the workqueue layer must not be
# entered by two Python threads at once, and the GIL guarantees that.
_OPTS = dict(cache=True, error_model="numpy")


# --------------------------------------------------------------------------
# small D: direct formula, fused assign + accumulate
# --------------------------------------------------------------------------


@njit(**_OPTS)
def _assign_rows(X, C, lo, hi, chunk, labels, mind, psums_g, pcounts_g):  # pragma: no cover
    """Rows lo:hi of the direct assign + accumulate; returns their float64 inertia.

    ``chunk`` rows at a time are transposed into a small (D, chunk) buffer, and
    every loop then runs element-wise over the chunk's rows: the distance to
    centre k, ``d = sum_j (x_j - c_kj)^2`` (features added in order, in X's
    dtype), and the running (min, index) update with strict ``<`` (ties go to
    the smallest index): the labels and distances are those of the direct
    formula, and the argmin is not a horizontal, branchy scan over the centres
    of one row: it vectorises, which measured 1.4-2.7x faster (N = 1e5..1e6, D <= 16, K <= 64).
    """
    D = X.shape[1]
    K = C.shape[0]
    xt = np.empty((D, chunk), dtype=X.dtype)  # (D, chunk) the chunk's rows, transposed
    d = np.empty(chunk, dtype=X.dtype)  # (chunk,) distance to centre k
    m1 = np.empty(chunk, dtype=X.dtype)  # (chunk,) smallest distance so far
    ix = np.empty(chunk, dtype=np.int64)  # (chunk,) its centre
    acc = 0.0
    for s in range(lo, hi, chunk):
        r = min(chunk, hi - s)
        for i in range(r):
            for j in range(D):
                xt[j, i] = X[s + i, j]
        for k in range(K):
            c0 = C[k, 0]
            for i in range(r):
                t = xt[0, i] - c0
                d[i] = t * t
            for j in range(1, D):
                cj = C[k, j]
                for i in range(r):
                    t = xt[j, i] - cj
                    d[i] += t * t
            if k == 0:
                for i in range(r):
                    m1[i] = d[i]
                    ix[i] = 0
            else:
                for i in range(r):
                    v = d[i]
                    lt = v < m1[i]
                    m1[i] = v if lt else m1[i]
                    ix[i] = k if lt else ix[i]
        for i in range(r):
            bk = ix[i]
            best = m1[i]
            labels[s + i] = bk
            mind[s + i] = best
            acc += best
            pcounts_g[bk] += 1
            for j in range(D):
                psums_g[bk, j] += X[s + i, j]
    return acc


@njit(parallel=True, **_OPTS)
def assign_accumulate_direct(X, C, bounds, chunk, labels, mind, psums, pcounts, pinert):  # pragma: no cover
    """Nearest centre of every row by the direct formula, and per-group sums.

    X (n, D); C (K, D); bounds (G+1,) group row boundaries; chunk rows per
    transposed block (see :func:`_assign_rows`); outputs labels (n,), mind
    (n,), psums (G, K, D) float64, pcounts (G, K) int64, pinert (G,) float64.
    Ties go to the smallest centre index (strict ``<``).
    """
    G = bounds.shape[0] - 1
    for g in prange(G):
        pinert[g] = _assign_rows(X, C, bounds[g], bounds[g + 1], chunk, labels, mind, psums[g], pcounts[g])


@njit(**_OPTS)
def assign_accumulate_direct_serial(X, C, bounds, chunk, labels, mind, psums, pcounts, pinert):  # pragma: no cover
    """The same, on the calling thread (small inputs: a parallel launch costs more
    than the work, and milliseconds on a loaded machine)."""
    for g in range(bounds.shape[0] - 1):
        pinert[g] = _assign_rows(X, C, bounds[g], bounds[g + 1], chunk, labels, mind, psums[g], pcounts[g])


@njit(**_OPTS)
def update_assign_direct(X, C, sums, counts, chunk, labels, mind):  # pragma: no cover
    """One whole Lloyd iteration of a small problem in one call: update, then assign.

    New centres (K, D) in C's dtype: every centre moves to its mean (``sums``
    (K, D) float64 / ``counts`` (K,), all > 0; the float64 quotient rounded to
    C's dtype); the largest Euclidean move (float64, squares added in feature
    order, as ``sqdist._step.max_shift`` does for up to 4 features) and the sum
    of the squared moves; then the rows are assigned to the new centres by
    :func:`_assign_rows` as one group, into ``labels`` / ``mind`` (n,) and new
    float64 sums and int64 counts.  Returns ``(centres, largest move, sum of
    squared moves, sums, counts, inertia, empty clusters)``: the bits of the
    update, ``max_shift`` and the assignment called one after the other,
    without their Python overhead.
    """
    K, D = C.shape
    Cn = np.empty_like(C)
    s2max = 0.0
    s2sum = 0.0
    for k in range(K):
        s2 = 0.0
        for j in range(D):
            Cn[k, j] = sums[k, j] / counts[k]
            t = np.float64(Cn[k, j]) - np.float64(C[k, j])
            s2 += t * t
        s2sum += s2
        if s2 > s2max:
            s2max = s2
    psums = np.zeros((K, D), dtype=np.float64)
    pcounts = np.zeros(K, dtype=np.int64)
    inertia = _assign_rows(X, Cn, 0, X.shape[0], chunk, labels, mind, psums, pcounts)
    n_empty = 0
    for k in range(K):
        n_empty += pcounts[k] == 0
    return Cn, math.sqrt(s2max), s2sum, psums, pcounts, inertia, n_empty


# --------------------------------------------------------------------------
# large D: argmin of a gemm block with exact recomputation of near ties
# --------------------------------------------------------------------------


@njit(**_OPTS)
def _nearest_rows(X, C, lo, hi, labels, mind):  # pragma: no cover
    """Rows lo:hi's nearest centre by the direct formula (features added in order in X's dtype):
    the index of the first smallest distance, NaN first (as torch.min), and the distance."""
    K, D = C.shape
    for i in range(lo, hi):
        best = mind[i]  # (its dtype; replaced at k = 0)
        bk = 0
        for k in range(K):
            t = X[i, 0] - C[k, 0]
            dist = t * t
            for j in range(1, D):
                t = X[i, j] - C[k, j]
                dist += t * t
            if k == 0 or dist < best or (dist != dist and best == best):
                best = dist
                bk = k
        labels[i] = bk
        mind[i] = best


@njit(parallel=True, **_OPTS)
def nearest_direct(X, C, chunk, labels, mind):  # pragma: no cover
    """Every row's nearest centre by the direct formula, labels (n,) and distances (n,) only,
    without the (n, K) matrix: blocks of ``chunk`` rows in parallel (each row's result depends
    on that row alone).  For finite rows the labels and distances of the assignment kernels."""
    n = X.shape[0]
    nb = (n + chunk - 1) // chunk
    for b in prange(nb):
        _nearest_rows(X, C, b * chunk, min(n, (b + 1) * chunk), labels, mind)


def update_assign_bound(chunk):
    """:func:`update_assign_direct` with its row chunk bound: ``step(X, C, sums, counts, labels,
    mind)``, the call a fit makes every iteration (as :func:`sqdist._ckernels.update_assign_bound`)."""
    return lambda X, C, sums, counts, labels, mind: update_assign_direct(X, C, sums, counts, chunk, labels, mind)


@njit(fastmath={"reassoc", "contract"}, **_OPTS)
def _dist_row(X, xi, C, k):  # pragma: no cover
    """Direct-formula distance ``sum_j (X[xi, j] - C[k, j])^2``, squares added in
    float64 (exact for the float32 squares of up to ~2^29 features of similar
    size, so the order rarely shows in the bits).

    ``reassoc`` lets the float64 sum vectorise: the in-order loop is scalar,
    ~10 instructions per feature with the 2-D indexing (25.6 ns per row at
    D = 64 against 4.3 ns; at (2*10^5, 64, 256) this was ~2 ms of a 27 ms
    k-means assignment).  Every product-path caller (winner and near-tie
    candidates, chunked and block kernels) goes through this one function.
    """
    acc = 0.0
    for j in range(X.shape[1]):
        t = X[xi, j] - C[k, j]
        acc += t * t
    return acc


@njit(**_OPTS)
def _closest_candidate(e, lim, X, xi, C):  # pragma: no cover
    """Near tie: the nearest of the centres whose product value ``e[k]`` (K,)
    is within ``lim``, by the direct formula on the original data (smallest
    index on ties); every centre when ``lim`` is not finite (an overflowed
    product).  Returns ``(k, distance)``."""
    every = not (lim < np.inf)
    bk = -1
    best = 0.0
    for k in range(e.shape[0]):
        if every or e[k] <= lim:
            dk = _dist_row(X, xi, C, k)
            if bk < 0 or dk < best:
                best = dk
                bk = k
    return bk, best


@njit(fastmath={"nnan", "ninf", "nsz"}, **_OPTS)
def _row_min16(Gm, i, acc):  # pragma: no cover
    """Smallest value of row i with 16 independent lanes ``acc`` (16,) (the
    inputs are finite; a min is exact in any order).  The plain reduction loop
    does not vectorise; this one measured 2.3x faster at K = 256."""
    K = Gm.shape[1]
    K16 = K - K % 16
    for l in range(16):
        acc[l] = Gm[i, 0]
    for k in range(0, K16, 16):
        for l in range(16):
            v = Gm[i, k + l]
            acc[l] = v if v < acc[l] else acc[l]
    m = acc[0]
    for l in range(1, 16):
        m = acc[l] if acc[l] < m else m
    for k in range(K16, K):
        v = Gm[i, k]
        m = v if v < m else m
    return m


@njit(**_OPTS)
def _gemm_row(Gm, gi, X, xi, nx, C, ncmax, gamma, acc):  # pragma: no cover
    """Exact nearest centre of row ``X[xi]`` from its products ``Gm[gi]`` (K,),
    ``Gm[gi, k] = e_k = |c_k|^2 - 2 x_c.c_k`` on centred data; ``nx`` =
    ``|x_c|^2``; ``acc`` (16,) scratch.  Returns ``(k, distance)``.

    ``e_k`` orders the centres like the distances, but rounding can swap two
    centres whose distances are within ``gamma * (|x_c|^2 + max|c_c|^2)`` of
    each other.  Every centre within twice that of the smallest ``e_k`` is a
    candidate.  One vectorised pass counts the candidates and sums their
    indices: with a single candidate (almost every row) that sum is the
    argmin; otherwise every candidate is compared by the direct formula
    ``sum((x - c)^2)`` on the original data (smallest index on ties).  The
    winner's distance is always the direct one.  So labels and distances are
    those of the direct formula.
    """
    K = Gm.shape[1]
    m1 = _row_min16(Gm, gi, acc)
    lim = m1 + 2.0 * gamma * (nx + ncmax)
    cnt = 0
    isum = 0
    for k in range(K):  # branch-free, vectorised
        h = Gm[gi, k] <= lim
        cnt += h
        isum += k * h
    if cnt == 1:
        return isum, _dist_row(X, xi, C, isum)
    return _closest_candidate(Gm[gi], lim, X, xi, C)  # a near tie


@njit(parallel=True, **_OPTS)
def argmin_accumulate_gemm(Gm, X, m, C, ncmax, gamma, sub, labels, mind, psums, pcounts, pinert):  # pragma: no cover
    """Assign the rows of one block from its products ``Gm`` (n, K) (see
    :func:`_gemm_row`) and accumulate.

    X (n, D) original block rows, m (D,) the centring vector; C (K, D); ncmax = max
    |c_c|^2; sub (S+1,) fixed sub-group boundaries of the block; labels/mind
    (n,) outputs for the block; psums (S, K, D) float64, pcounts (S, K),
    pinert (S,) persist across blocks.
    """
    D = X.shape[1]
    S = sub.shape[0] - 1
    for s in prange(S):
        acc = 0.0
        lanes = np.empty(16, dtype=Gm.dtype)
        for i in range(sub[s], sub[s + 1]):
            nx = 0.0  # |x - m|^2 (the centred row, recomputed from contiguous X)
            for j in range(D):
                t = X[i, j] - m[j]
                nx += t * t
            bk, best = _gemm_row(Gm, i, X, i, nx, C, ncmax, gamma, lanes)
            labels[i] = bk
            mind[i] = best
            acc += best
            pcounts[s, bk] += 1
            for j in range(D):
                psums[s, bk, j] += X[i, j]
        pinert[s] += acc


@njit(fastmath={"reassoc", "contract"}, **_OPTS)
def _sumsq_bound(A, i, n):  # pragma: no cover
    """``sum(A[i, :n]**2)`` in float64, in whatever order vectorises (``reassoc``;
    no ``nnan``/``ninf``: an overflowing row must still give ``inf`` here).

    Only for the near-tie *bound* ``|x_c|^2``: its rounding (relative ~n eps)
    is far inside the bound's factor 2, and the labels and distances do not
    depend on it -- it only decides which rows get the direct re-check.  The
    in-order float64 sum was a dependent chain of n additions per row, ~1.6 ms
    per 10^5 rows at D = 128 (half the centring pass).
    """
    acc = 0.0
    for j in range(n):
        t = A[i, j]
        acc += t * t
    return acc


@njit(parallel=True, **_OPTS)
def assign_accumulate_gemm_chunked(  # pragma: no cover
    X, m, CaT, C, ncmax, gamma, bounds, chunk, labels, mind, psums, pcounts, pinert
):
    """Large-D assign + accumulate, scikit-learn's way: each row group is
    processed by one thread, ``chunk`` rows at a time -- centre the rows into
    a small buffer ``[x - m, 1]`` (chunk, D+1), one *single-threaded* BLAS
    product ``CaT @ xb.T`` with ``CaT = [-2 c_c, |c_c|^2]`` (K, D+1) into a
    cache-resident, *transposed* (K, chunk) buffer, then the argmin and the
    float64 accumulation while the block is still in cache.  The caller
    limits BLAS to one thread around this call.

    Why transposed: the row minimum over K centres is a horizontal reduction
    that numba/LLVM does not vectorise (measured ~0.6 cycles per entry, half
    the kernel's time at K = 256).  With centres along the slow axis the
    argmin becomes an element-wise running (min, second min, index) update
    over the chunk's rows, which vectorises, and one pass gives both the
    winner and the near-tie test of :func:`_gemm_row` (``second > lim`` is
    "exactly one candidate").  Labels and distances are those of
    :func:`_gemm_row` bit for bit.

    bounds (G+1,) group boundaries and ``chunk`` are fixed from the shape
    only, each group accumulates sequentially into psums[g] (K, D) float64 /
    pcounts[g] / pinert[g], so the results do not depend on the thread count.
    """
    D = X.shape[1]
    K = C.shape[0]
    G = bounds.shape[0] - 1
    for g in prange(G):
        xb = np.zeros((chunk, D + 1), dtype=X.dtype)  # (chunk, D+1) centred rows + 1 (stale rows past r stay finite)
        gb = np.empty((K, chunk), dtype=X.dtype)  # (K, chunk) products e_k, transposed
        nxb = np.empty(chunk, dtype=np.float64)  # (chunk,) |x_c|^2
        m1 = np.empty(chunk, dtype=X.dtype)  # (chunk,) smallest e_k
        m2 = np.empty(chunk, dtype=X.dtype)  # (chunk,) second smallest (with multiplicity)
        ix = np.empty(chunk, dtype=np.int32)  # (chunk,) index of the smallest (first on ties; int32: 16 lanes like the floats)
        acc = 0.0
        for s in range(bounds[g], bounds[g + 1], chunk):
            r = min(chunk, bounds[g + 1] - s)
            for i in range(r):
                for j in range(D):
                    xb[i, j] = X[s + i, j] - m[j]
                xb[i, D] = 1.0
                nxb[i] = _sumsq_bound(xb, i, D)
            np.dot(CaT, xb.T, gb)  # (K, chunk); whole chunk (numba's dot needs contiguous operands)
            for i in range(r):
                m1[i] = gb[0, i]
                m2[i] = np.inf
                ix[i] = 0
            # element-wise over rows (vectorised), four centres per sweep so
            # that the running (min, second, index) stay in registers across
            # them: a quarter of the loads and stores of one centre per sweep
            K4 = 1 + (K - 1) // 4 * 4
            for k in range(1, K4, 4):
                for i in range(r):
                    a = m1[i]
                    b = m2[i]
                    c = ix[i]
                    for u in range(4):  # centres k .. k+3 in order (same result as one at a time)
                        v = gb[k + u, i]
                        lt = v < a
                        b = min(b, max(v, a))
                        a = v if lt else a
                        c = np.int32(k + u) if lt else c
                    m1[i] = a
                    m2[i] = b
                    ix[i] = c
            for k in range(K4, K):
                for i in range(r):
                    v = gb[k, i]
                    a = m1[i]
                    lt = v < a
                    m2[i] = min(m2[i], max(v, a))
                    m1[i] = v if lt else a
                    ix[i] = np.int32(k) if lt else ix[i]
            for i in range(r):
                xi = s + i
                lim = m1[i] + 2.0 * gamma * (nxb[i] + ncmax)
                if m2[i] > lim:  # one candidate (almost every row)
                    bk = ix[i]
                    best = _dist_row(X, xi, C, bk)
                else:  # a near tie (or an overflowed product): the direct formula decides
                    bk, best = _closest_candidate(gb[:, i], lim, X, xi, C)
                labels[xi] = bk
                mind[xi] = best
                acc += best
                pcounts[g, bk] += 1
                for j in range(D):
                    psums[g, bk, j] += X[xi, j]
        pinert[g] = acc


# --------------------------------------------------------------------------
# distance matrices
# --------------------------------------------------------------------------


@njit(**_OPTS)
def _sqdist_row(X, TT, out, i):  # pragma: no cover
    D = X.shape[1]
    P = TT.shape[1]
    x0 = X[i, 0]
    for j in range(P):
        t = x0 - TT[0, j]
        out[i, j] = t * t
    for d in range(1, D):
        xd = X[i, d]
        for j in range(P):
            t = xd - TT[d, j]
            out[i, j] += t * t


@njit(parallel=True, **_OPTS)
def sqdist_direct(X, TT, out):  # pragma: no cover
    """out[i, j] = sum_d (X[i, d] - TT[d, j])**2, rows in parallel, inner loop over j vectorised."""
    for i in prange(X.shape[0]):
        _sqdist_row(X, TT, out, i)


@njit(**_OPTS)
def sqdist_direct_serial(X, TT, out):  # pragma: no cover
    """The same on the calling thread (small outputs)."""
    for i in range(X.shape[0]):
        _sqdist_row(X, TT, out, i)


@njit(**_OPTS)
def prepare_right(T, c, Ta, nt, finite):  # pragma: no cover
    """Centre ``T`` (P, D) on the mean of its finite rows and build the right
    factor ``Ta = [-2 (T - c), 1, ||T - c||^2]`` (P, D+2) and ``nt`` (P,) in two
    serial passes (replaces ~10 small torch ops).  ``finite`` (P,) gets the
    rows whose norm is safe for the expansion (``4 nt`` finite, see
    ``distances._unsafe_norms``); returns how many are."""
    P, D = T.shape
    acc = np.zeros(D, dtype=np.float64)
    nf = 0
    for i in range(P):
        ok = True
        for j in range(D):
            if not np.isfinite(T[i, j]):
                ok = False
        finite[i] = ok
        if ok:
            nf += 1
            for j in range(D):
                acc[j] += T[i, j]
    for j in range(D):
        c[j] = acc[j] / nf if nf else 0.0
    for i in range(P):
        s = 0.0
        for j in range(D):
            v = T[i, j] - c[j]
            Ta[i, j] = -2 * v
            s += v * v
        Ta[i, D] = 1.0
        Ta[i, D + 1] = s
        nt[i] = Ta[i, D + 1]
        q = nt[i] + nt[i]  # 4 nt in T's dtype
        finite[i] = np.isfinite(q + q)
    return np.count_nonzero(finite)


@njit(**_OPTS)
def augment(X, c, Xa, nx):  # pragma: no cover
    """Xa[:, :D] = X - c, Xa[:, D] = nx = ||X - c||^2, Xa[:, D+1] = 1 in one pass;
    returns the number of rows whose norm is unsafe for the expansion (NaN, Inf
    or ``4 nx`` overflowing, see ``distances._unsafe_norms``)."""
    n, D = X.shape
    bad = 0
    for i in range(n):  # serial: O(n D) work is not worth a thread barrier
        s = 0.0
        for j in range(D):
            v = X[i, j] - c[j]
            Xa[i, j] = v
            s += v * v
        Xa[i, D] = s
        Xa[i, D + 1] = 1.0
        nx[i] = Xa[i, D]
        q = nx[i] + nx[i]  # 4 nx in X's dtype
        if not np.isfinite(q + q):
            bad += 1
    return bad


@njit(parallel=True, **_OPTS)
def gemm_fixup(d, nx, tnt, tau, X, T):  # pragma: no cover
    """One pass over a gemm block d (n, P) = |x_c|^2 + |t_c|^2 - 2 x_c.t_c.

    An entry below ``tau * nx[i] + tnt[j]`` (``tnt = tau * nt``) may have lost
    its digits to cancellation: it is recomputed directly from the original
    rows (exact 0 for identical rows, never negative).  Every other entry is
    >= that threshold, so it is non-negative already and needs no clamp.  Each
    row is first scanned read-only with a branch-free count (vectorised); only
    rows with a hit take the slow loop.  Returns the number of recomputed entries.
    """
    n, P = d.shape
    D = X.shape[1]
    cnt = 0
    for i in prange(n):
        ti = tau * nx[i]
        hits = 0
        for j in range(P):
            hits += d[i, j] < ti + tnt[j]
        if hits:
            for j in range(P):
                if d[i, j] < ti + tnt[j]:
                    v = 0.0
                    for k in range(D):
                        t = X[i, k] - T[j, k]
                        v += t * t
                    d[i, j] = v
            cnt += hits
    return cnt


@njit(parallel=True, **_OPTS)
def gemm_min(d, nx, tnt, tau, X, T, dmin, imin):  # pragma: no cover
    """:func:`gemm_fixup` of a gemm block d (n, P), then every row's smallest entry
    ``dmin[i]`` and the index of its first occurrence ``imin[i]`` (NaN first, as
    ``torch.min``): the nearest row of T without a second pass over the block.
    Returns the number of recomputed entries."""
    cnt = gemm_fixup(d, nx, tnt, tau, X, T)
    n, P = d.shape
    for i in prange(n):
        m = d[i, 0]
        at = 0
        for j in range(1, P):
            v = d[i, j]
            if m != m:
                break
            if v < m or v != v:
                m = v
                at = j
        dmin[i] = m
        imin[i] = at
    return cnt
