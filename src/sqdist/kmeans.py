"""Exact, reproducible Lloyd k-means built on sqdist's distances.

Algorithm (the exercise's Task 3, with scikit-learn's conventions)
------------------------------------------------------------------
1. Start from initial centres ``T`` (fixed indices into ``X``, an explicit
   ``(K, D)`` array, ``"random"`` distinct rows or greedy ``"k-means++"``).
2. **Assign** every point to its nearest centre -- ``argmin`` over the centre
   axis of the exact squared distances, computed in row chunks so the
   ``N x K`` matrix never exceeds the working-memory budget; ties go to the
   smallest centre index.  One matrix product on centred data ranks the
   centres; rows whose best two centres are closer than the product's
   rounding-error bound are recomputed with the direct formula, so the
   argmin is that of the exact distances (see ``_assign_rows``).
3. **Update** every centre to the mean of its points (sums and counts in
   float64, accumulated with ``index_add_`` in row order: no one-hot matrix,
   no loop over clusters, bit-identical for any thread count on the CPU).
4. Stop after ``max_iter`` updates, or when **every** centre moved less than
   ``tol``: ``||T_old[j] - T_new[j]||_2 < tol`` for all ``j`` (Euclidean norm,
   in the units of the data), or when the assignment did not change (a fixed
   point: the next update would not move any centre).

Each iteration is one update followed by one assignment to the *new*
centres, plus one assignment of the initial centres before the loop, so the
returned ``labels`` and ``inertia`` always belong to the returned
``centers``.  The cost is ``n_iter + 1`` assignments, the same as
scikit-learn's (which re-runs the assignment once at the end).

Differences from scikit-learn's ``tol``: scikit-learn scales ``tol`` by the
mean feature variance and compares the *sum of squared* shifts,
``sum_j ||T_old[j] - T_new[j]||**2 <= tol * mean(var(X, axis=0))``; sqdist
compares the largest *unsquared* shift with ``tol`` in data units.  With
``tol=0`` both stop exactly at the fixed point, so labels agree.

Empty clusters
--------------
A centre that receives no point is moved to the point farthest from its own
(old) centre, that point is removed from its old cluster's sums and counts,
exactly as scikit-learn's ``_relocate_empty_clusters``.  Several empty
clusters (in increasing index order) take the farthest points in decreasing
distance order (ties: lower row index).  A point is only taken when its
distance is positive and its old cluster keeps at least one point, so no
centre ever becomes NaN or lands at the origin; an empty cluster for which
no such point exists keeps its old centre.  Whenever ``X`` has at least
``K`` distinct rows this leaves no empty cluster at a fixed point; with
fewer distinct rows a :class:`~sqdist.ConvergenceWarning` is emitted.
Relocations are recorded in ``history``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from . import _chunking
from ._atomic import atomic_write
from ._validation import (
    ConvergenceWarning,
    SqdistError,
    SqdistWarning,
    as_tensor,
    check_finite_rows,
    check_positive_int,
    check_positive_number,
    compute_dtype,
    describe,
    make_generator,
    to_output,
)
from .distances import _bytes_per_row, _gemm_block, _Prepared, _resolve_backend

__all__ = ["kmeans", "KMeans", "KMeansResult", "INITS"]

INITS = ("k-means++", "random")

# target size of one (n, K) block of the assignment: small blocks stay in cache
_CACHE_BYTES = 2 * 2**20


# --------------------------------------------------------------------------
# statistics of one assignment pass (mergeable across chunks / workers)
# --------------------------------------------------------------------------


class _Stats(NamedTuple):
    """Result of assigning a chunk of rows to the centres.

    Stats of consecutive chunks combine with :meth:`merge` (sums, counts and
    inertia add; labels / mind concatenate; the farthest-point candidates
    keep the ``K`` largest) -- deterministic, float64, fixed order.
    """

    labels: torch.Tensor  # (n,) int64
    mind: torch.Tensor  # (n,) compute dtype, squared distance to the assigned centre
    sums: torch.Tensor  # (K, D) float64
    counts: torch.Tensor  # (K,) int64
    inertia: torch.Tensor  # () float64
    far_d: torch.Tensor  # (m,) float64, m <= K, descending: largest mind values
    far_idx: torch.Tensor  # (m,) int64, global row indices of those points
    far_x: torch.Tensor  # (m, D) compute dtype, the points themselves
    far_label: torch.Tensor  # (m,) int64, their assigned cluster
    changed: int | None = None  # labels that differ from the previous iteration's, when the kernel counted them

    def merge(self, other: "_Stats") -> "_Stats":
        """Stats of ``self``'s rows followed by ``other``'s rows."""
        K = self.sums.shape[0]
        d = torch.cat([self.far_d, other.far_d])
        idx = torch.cat([self.far_idx, other.far_idx])
        sel = _order_far(d, idx)[:K]
        return _Stats(
            torch.cat([self.labels, other.labels]),
            torch.cat([self.mind, other.mind]),
            self.sums + other.sums,
            self.counts + other.counts,
            self.inertia + other.inertia,
            d[sel],
            idx[sel],
            torch.cat([self.far_x, other.far_x])[sel],
            torch.cat([self.far_label, other.far_label])[sel],
        )

    @staticmethod
    def combine(parts: "list[_Stats]") -> "_Stats":
        """Merge a list of chunk stats in order."""
        if not parts:
            raise SqdistError("parts: expected at least one _Stats")
        out = parts[0]
        for p in parts[1:]:
            out = out.merge(p)
        return out


def _order_far(d: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Permutation sorting candidates by distance descending, then row index ascending."""
    o = torch.sort(idx, stable=True).indices  # (m,)
    o2 = torch.sort(d[o], descending=True, stable=True).indices  # (m,)
    return o[o2]


def _top_far(mind: torch.Tensor, m: int) -> torch.Tensor:
    """Row positions of the ``m`` largest positive entries of ``mind``, deterministic order."""
    n = mind.shape[0]
    m = min(m, n)
    if m == 0:
        return torch.zeros(0, dtype=torch.int64, device=mind.device)
    thr = torch.topk(mind, m).values[-1]  # m-th largest value
    sel = ((mind >= thr) & (mind > 0)).nonzero().flatten()  # (s,) ascending rows; ties all kept
    order = torch.sort(mind[sel], descending=True, stable=True).indices[:m]
    return sel[order]


def _segment_add(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``out[index[i]] += src[i]`` in row order.

    On the CPU ``index_add_`` along dim 0 adds the rows sequentially, so the
    result is independent of the thread count.  On CUDA ``index_put_`` with
    ``accumulate=True`` uses the sort-based kernel.
    """
    if out.device.type == "cpu":
        return out.index_add_(0, index, src)
    return out.index_put_((index,), src, accumulate=True)


_MISSING: set[str] = set()


def _optional_module(name: str):
    """Import an optional sqdist kernel module; None when that module does not exist
    (remembered, so the file system is searched once per process)."""
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    if name in _MISSING:
        return None
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            _MISSING.add(name)
            return None
        raise


def _assign_rows(Xb: torch.Tensor, C: torch.Tensor, Cc: torch.Tensor, c: torch.Tensor, nt: torch.Tensor,
                 gamma: float, budget: int) -> torch.Tensor:
    """Exact nearest-centre index of every row of ``Xb`` (n, D); ties go to the lowest index.

    One product on centred data gives ``s[i, j] = ||t_j - c||^2 - 2 (x_i - c).(t_j - c)``,
    which orders the centres like the distances.  Its rounding error is below
    ``gamma * (||x_i - c||^2 + max_j ||t_j - c||^2)`` (a generous multiple of the
    dot-product bound ``D * eps``).  A row whose second-best centre lies within
    twice that bound of the best is ambiguous and is recomputed with the direct
    formula ``sum((x - t)**2)``; all other rows' argmin is provably exact.
    """
    Xc = Xb - c  # (n, D)
    s = torch.addmm(nt, Xc, Cc.T, beta=1, alpha=-2)  # (n, K)
    smin, lab = s.min(dim=1)  # (n,), (n,)
    limit = (Xc * Xc).sum(1).add_(nt.max()).mul_(2 * gamma).add_(smin)  # (n,)
    s.scatter_(1, lab[:, None], math.inf)  # (n, K): best centre masked out
    amb = (s.amin(dim=1) <= limit).nonzero().flatten()  # (a,) second best within the bound
    del s
    if amb.numel():
        D, K = C.shape[1], C.shape[0]
        step = max(1, budget // max(1, 2 * K * D * Xb.element_size()))
        for st in range(0, amb.numel(), step):
            rows = amb[st : st + step]
            diff = Xb[rows][:, None, :] - C[None, :, :]  # (r, K, D)
            lab[rows] = (diff * diff).sum(-1).argmin(dim=1)  # first index on ties
    return lab


def _assign_torch(X: torch.Tensor, centers: torch.Tensor, budget: int):
    """Chunked exact assignment + float64 accumulation with torch ops."""
    N, D = X.shape
    K = centers.shape[0]
    cdtype = compute_dtype(centers.dtype)
    labels = torch.empty(N, dtype=torch.int64, device=X.device)
    mind = torch.empty(N, dtype=cdtype, device=X.device)
    sums = torch.zeros((K, D), dtype=torch.float64, device=X.device)
    counts = torch.zeros(K, dtype=torch.int64, device=X.device)
    per_cluster = torch.zeros(K, dtype=torch.float64, device=X.device)
    if N == 0:
        return labels, mind, sums, counts, per_cluster.sum()
    C = centers.to(cdtype)  # (K, D)
    c = C.mean(0)  # (D,) centring: norms of the spread, not of the offset
    Cc = C - c  # (K, D)
    nt = (Cc * Cc).sum(1)  # (K,)
    gamma = 4.0 * (D + 4) * torch.finfo(cdtype).eps
    item = torch.finfo(cdtype).bits // 8
    row_bytes = 3 * K * item + K + 3 * D * item + D * 8
    chunk = _chunking.rows_per_chunk(N, row_bytes, budget, what="k-means assignment")
    chunk = min(chunk, max(256, _CACHE_BYTES // (K * item)))  # keep the (n, K) block cache-sized
    ones = None
    for sl in _chunking.row_slices(N, chunk):
        Xb = X[sl].to(cdtype)  # (n, D)
        lab = _assign_rows(Xb, C, Cc, c, nt, gamma, budget)  # (n,)
        diff = Xb - C[lab]  # (n, D)
        md = (diff * diff).sum(1)  # (n,) direct, exact distance to the assigned centre
        del diff
        labels[sl] = lab
        mind[sl] = md
        _segment_add(sums, lab, X[sl].to(torch.float64))
        if ones is None or ones.shape[0] != lab.shape[0]:
            ones = torch.ones(lab.shape[0], dtype=torch.int64, device=X.device)
        _segment_add(counts, lab, ones)
        _segment_add(per_cluster, lab, md.to(torch.float64))
    # K values: summed sequentially below the parallel grain size
    inertia = _segment_add(torch.zeros(1, dtype=torch.float64, device=X.device),
                           torch.zeros(K, dtype=torch.int64, device=X.device), per_cluster)[0]
    return labels, mind, sums, counts, inertia


def _assign_accumulate(X: torch.Tensor, centers: torch.Tensor, *, budget: int, backend: str, offset: int = 0,
                       out: tuple[torch.Tensor, torch.Tensor] | None = None, prev: torch.Tensor | None = None) -> _Stats:
    """Assign the rows of ``X`` (n, D) to ``centers`` (K, D) and accumulate the update.

    ``backend`` is already resolved ("torch" or "triton").  ``offset`` is the
    global index of ``X``'s first row (for chunks of a larger data set); it
    only shifts ``far_idx``.  ``out``: optional (labels, mind) buffers of shape
    (n,) the compiled CPU kernel writes into (reused across Lloyd iterations).
    ``prev``: the previous labels (n,); the compiled CPU kernel then counts the
    changed labels as it writes them (``_Stats.changed``; None elsewhere).
    Trusts its inputs: 2-D, same device, finite, ``centers`` in the compute dtype.

    The farthest-point candidates (an O(n) top-k) are only needed by the
    empty-cluster policy, so they are computed only when a cluster of this
    chunk is empty; a cluster empty after :meth:`_Stats.merge` is empty in
    every chunk, so merged stats still carry every candidate they need.
    """
    changed = None
    if backend == "triton":
        from ._triton import assign_accumulate_triton

        labels, mind, sums, counts, inertia = assign_accumulate_triton(X, centers)
    else:
        cpu = _optional_module("sqdist._cpu_kernels") if X.device.type == "cpu" else None
        if cpu is not None and cpu.available() and cpu.supports(X, centers):
            lo, mo = out if out is not None else (None, None)
            if prev is not None and prev.shape == (X.shape[0],) and prev.dtype == torch.int64 and prev.device.type == "cpu":
                labels, mind, sums, counts, inertia, changed = cpu.assign_accumulate(
                    X, centers, labels_out=lo, mind_out=mo, budget=budget, prev_labels=prev)
            else:
                labels, mind, sums, counts, inertia = cpu.assign_accumulate(X, centers, labels_out=lo, mind_out=mo, budget=budget)
        else:
            labels, mind, sums, counts, inertia = _assign_torch(X, centers, budget)
    inertia = torch.as_tensor(inertia, dtype=torch.float64, device=X.device)
    return _with_far(X, centers, labels, mind, sums, counts, inertia, offset, changed)


def _with_far(X, centers, labels, mind, sums, counts, inertia, offset: int = 0, changed: int | None = None) -> _Stats:
    """:class:`_Stats` of one assignment; farthest-point candidates only when a cluster is empty."""
    K = centers.shape[0]
    empty = int(counts.numpy().min()) == 0 if counts.device.type == "cpu" else bool((counts == 0).any())
    if not empty:  # no candidates needed (a few cheap allocations instead of ~10 indexing ops)
        i0 = torch.empty(0, dtype=torch.int64, device=X.device)
        return _Stats(labels, mind, sums, counts, inertia, torch.empty(0, dtype=torch.float64, device=X.device), i0,
                      torch.empty((0, X.shape[1]), dtype=centers.dtype, device=X.device), i0, changed)
    far = _top_far(mind, K)  # (m,)
    return _Stats(
        labels, mind, sums, counts, inertia,
        mind[far].to(torch.float64), far + offset, X[far].to(centers.dtype), labels[far], changed,
    )


# --------------------------------------------------------------------------
# centre update with the empty-cluster policy
# --------------------------------------------------------------------------


def _plan_relocation(stats: _Stats) -> tuple[torch.Tensor, torch.Tensor]:
    """Which empty clusters take which candidate points.

    Returns ``(targets, cand)``: empty cluster ids (ascending) and positions
    into ``stats.far_*`` (farthest first).  A candidate is usable when its
    distance is positive and its old cluster keeps at least one point after
    the candidates taken before it from the same cluster.
    """
    counts = stats.counts
    if stats.far_d.numel() == 0:
        # no cluster was empty in any chunk (_with_far keeps no candidates then):
        # nothing to plan, and no device sync on CUDA
        return counts[:0], counts[:0]
    if counts.device.type == "cpu" and int(counts.numpy().min()) > 0:
        return counts[:0], counts[:0]  # no empty cluster (without 3 torch ops)
    empty = (counts == 0).nonzero().flatten()  # (e,)
    if empty.numel() == 0:
        return empty[:0], empty[:0]
    lab = stats.far_label  # (m,)
    m = lab.shape[0]
    same = lab[:, None] == lab[None, :]  # (m, m), m <= K
    earlier = torch.ones((m, m), dtype=torch.bool, device=lab.device).tril(-1)
    rank = (same & earlier).sum(1)  # (m,) earlier candidates from the same cluster
    ok = (stats.far_d > 0) & (rank < counts[lab] - 1)  # (m,)
    cand = ok.nonzero().flatten()[: empty.numel()]
    return empty[: cand.numel()], cand


def _update_centers(stats: _Stats, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """New centres (K, D) in ``centers.dtype``, relocated cluster ids, counts after relocation."""
    sums = stats.sums.clone()  # (K, D) float64
    counts = stats.counts.clone()  # (K,)
    targets, cand = _plan_relocation(stats)
    if targets.numel():
        x = stats.far_x[cand].to(torch.float64)  # (r, D)
        donors = stats.far_label[cand]  # (r,)
        _segment_add(sums, donors, -x)
        _segment_add(counts, donors, -torch.ones_like(donors))
        sums[targets] = x
        counts[targets] = 1
    nonempty = counts > 0  # (K,)
    means = sums / counts.clamp_min(1).to(torch.float64)[:, None]  # (K, D)
    new = torch.where(nonempty[:, None], means.to(centers.dtype), centers)  # (K, D)
    return new, targets, counts


# --------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------


def _dist_to_rows(X: torch.Tensor, C: torch.Tensor, budget: int):
    """Yield ``(slice, d)`` with d (n, c) the exact distances of X's row chunks to C."""
    cdtype = C.dtype
    item = torch.finfo(cdtype).bits // 8
    N, D = X.shape
    chunk = _chunking.rows_per_chunk(N, C.shape[0] * (item + 8) + _bytes_per_row("gemm", C.shape[0], D, item), budget, what="k-means++")
    prep = _Prepared(C, cdtype)
    for sl in _chunking.row_slices(N, chunk):
        yield sl, _gemm_block(X[sl], prep, None, budget)


def _col_sums(A: torch.Tensor) -> torch.Tensor:
    """Column sums of A (n, c) in float64, summed row after row (thread-count independent)."""
    out = torch.zeros((1, A.shape[1]), dtype=torch.float64, device=A.device)
    idx = torch.zeros(A.shape[0], dtype=torch.int64, device=A.device)
    return _segment_add(out, idx, A.to(torch.float64))[0]


def _kmeans_plusplus(X: torch.Tensor, K: int, gen: torch.Generator, budget: int, cdtype: torch.dtype) -> torch.Tensor:
    """Greedy k-means++ as scikit-learn: 2 + floor(log K) local trials per centre."""
    N = X.shape[0]
    dev = gen.device
    n_trials = 2 + int(math.log(K))
    first = int(torch.randint(N, (1,), generator=gen, device=dev))
    centers = [X[first].to(cdtype)]
    closest = torch.cat([d[:, 0] for _, d in _dist_to_rows(X, centers[0][None], budget)]).to(torch.float64)  # (N,)
    pot = float(_col_sums(closest[:, None])[0])
    for _ in range(1, K):
        r = torch.rand(n_trials, generator=gen, dtype=torch.float64, device=dev).to(X.device) * pot  # (L,)
        cum = torch.cumsum(closest, 0)  # (N,) sequential scan
        cand = torch.searchsorted(cum, r).clamp_max(N - 1)  # (L,)
        C = X[cand].to(cdtype)  # (L, D)
        pots = torch.zeros(n_trials, dtype=torch.float64, device=X.device)
        for sl, d in _dist_to_rows(X, C, budget):
            pots += _col_sums(torch.minimum(closest[sl, None], d.to(torch.float64)))  # (L,)
        best = int(torch.argmin(pots))
        pot = float(pots[best])
        for sl, d in _dist_to_rows(X, C[best : best + 1], budget):
            closest[sl] = torch.minimum(closest[sl], d[:, 0].to(torch.float64))
        centers.append(C[best])
    return torch.stack(centers)  # (K, D)


def _parse_init(init: Any, n_clusters: int | None, X: torch.Tensor) -> tuple[Any, int]:
    """Validate ``init``; returns (kind-or-tensor, K).  Tensor init = explicit centres (K, D)."""
    N, D = X.shape
    if isinstance(init, str):
        if init not in INITS:
            raise SqdistError(
                f"init: expected 'k-means++', 'random', a list of row indices or a (K, D) array of centres, got {init!r}"
            )
        if n_clusters is None:
            raise SqdistError(f"n_clusters: required with init={init!r}, got None")
        K = check_positive_int(n_clusters, "n_clusters")
        if K > N:
            raise SqdistError(f"n_clusters: expected at most the number of points {N}, got {K}")
        return init, K
    arr = init.detach().cpu().numpy() if isinstance(init, torch.Tensor) else np.asarray(init) if not isinstance(init, np.ndarray) else init
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise SqdistError(f"init: expected row indices or a (K, D) array of centres, got {describe(init)} of dtype {arr.dtype}")
    if arr.ndim == 1 and arr.size == 0:
        raise SqdistError("init: got an empty list of indices; expected K >= 1 row indices")
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        K = arr.shape[0]
        if n_clusters is not None and check_positive_int(n_clusters, "n_clusters") != K:
            raise SqdistError(f"init: {K} indices given but n_clusters={n_clusters}")
        bad = (arr < 0) | (arr >= N)
        if bad.any():
            raise SqdistError(f"init: index {int(arr[bad][0])} is out of range for X with {N} rows (expected 0 <= i < {N})")
        uniq, cnt = np.unique(arr, return_counts=True)
        if (cnt > 1).any():
            raise SqdistError(f"init: index {int(uniq[cnt > 1][0])} is repeated; expected {K} distinct row indices")
        if K > N:
            raise SqdistError(f"n_clusters: expected at most the number of points {N}, got {K}")
        return torch.as_tensor(arr.astype(np.int64), device=X.device), K
    if arr.ndim != 2 or arr.shape[1] != D or arr.shape[0] == 0:
        raise SqdistError(
            f"init: expected a 1-D list of integer row indices or centres of shape (K, {D}), got {describe(init)}"
        )
    K = arr.shape[0]
    if n_clusters is not None and check_positive_int(n_clusters, "n_clusters") != K:
        raise SqdistError(f"init: {K} centres given but n_clusters={n_clusters}")
    if K > N:
        raise SqdistError(f"n_clusters: expected at most the number of points {N}, got {K} initial centres")
    C = init if isinstance(init, torch.Tensor) else torch.from_numpy(np.array(arr, dtype=np.float64))
    if not torch.isfinite(C).all():
        raise SqdistError("init: the initial centres contain NaN or Inf")
    return ("centers", C), K


def _initial_centers(X: torch.Tensor, init: Any, K: int, gen: torch.Generator, budget: int, cdtype: torch.dtype) -> torch.Tensor:
    if isinstance(init, tuple):  # explicit centres
        return init[1].to(device=X.device, dtype=cdtype).clone()
    if isinstance(init, torch.Tensor):  # row indices
        return X[init].to(cdtype)
    if init == "random":
        idx = torch.randperm(X.shape[0], generator=gen, device=gen.device)[:K].to(X.device)
        return X[idx].to(cdtype)
    return _kmeans_plusplus(X, K, gen, budget, cdtype)


# --------------------------------------------------------------------------
# Lloyd iterations
# --------------------------------------------------------------------------


@dataclass
class KMeansResult:
    """Outcome of :func:`kmeans`.

    Attributes
    ----------
    centers : of shape (K, D)
        Final centres (dtype of X; float32 for half-precision X).
    labels : int64 of shape (N,)
        Index of the nearest final centre of every point.
    inertia : float
        Sum of squared distances of the points to their final centres.
    n_iter : int
        Number of centre updates run.
    converged : bool
        True when the stopping rule fired before ``max_iter``.
    history : list of dict
        One entry per state, starting with the initial centres (iteration 0):
        ``iteration``, ``centers`` (K, D), ``inertia``, ``max_shift`` (largest
        Euclidean centre move into this state; 0 for iteration 0), ``sizes``
        (K,) cluster sizes of the assignment to these centres, ``relocated``
        (cluster ids moved by the empty-cluster policy in this update) and
        ``time`` (seconds spent on this iteration).
    init_centers : of shape (K, D)
        The initial centres of the returned run.
    """

    centers: Any
    labels: Any
    inertia: float
    n_iter: int
    converged: bool
    history: list = field(default_factory=list)
    init_centers: Any = None


def _history_entry(it, C, stats, shift, relocated, t, was_numpy):
    return {
        "iteration": it,
        "centers": C.detach().cpu().numpy().copy() if was_numpy else C.detach().clone(),
        "inertia": float(stats.inertia),
        "max_shift": shift,
        "sizes": stats.counts.cpu().numpy().copy(),
        "relocated": [int(j) for j in relocated.cpu().tolist()],
        "time": t,
    }


def _max_shift(C_new: torch.Tensor, C: torch.Tensor) -> float:
    """Largest Euclidean move ``max_k ||C_new[k] - C[k]||`` in float64.

    Up to 4 features the squares are added in feature order, exactly as the
    compiled loop (``_cpu_nb.lloyd_continue``) does, so both paths give the
    same bits; torch's row sum uses a vectorised order beyond that.
    """
    d = C_new.to(torch.float64) - C.to(torch.float64)  # (K, D)
    sq = d * d  # (K, D)
    if sq.shape[1] <= 4:
        s = sq[:, 0]
        for j in range(1, sq.shape[1]):  # at most 3 features
            s = s + sq[:, j]
    else:
        s = sq.sum(1)  # (K,)
    # math.sqrt is correctly rounded (torch's vectorised float64 sqrt measured 1 ulp off)
    return math.sqrt(float(s.max())) if s.numel() else 0.0


def _other(bufs, labels):
    """The buffer pair of ``bufs`` that does not hold ``labels`` (None without buffers)."""
    if bufs[0] is None:
        return None
    return bufs[1] if bufs[0][0].data_ptr() == labels.data_ptr() else bufs[0]


def _same_labels(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the assignment did not change.

    On the CPU through NumPy (one thread): a parallel torch op here leaves torch's
    OpenMP workers spinning for a while afterwards, and on a machine with few cores
    they then steal the cores the compiled (numba) assignment runs on next -- seen
    here as 7.1 instead of 4.1 ms per iteration at N=1e5, D=16, K=32 on 2 cores.
    """
    if a.device.type == "cpu":
        return bool(np.array_equal(a.numpy(), b.numpy()))
    return bool(torch.equal(a, b))


def _lloyd(X, C, max_iter, tol, budget, backend, was_numpy):
    """Lloyd iterations from centres C (K, D, compute dtype); trusts its inputs."""
    t0 = time.perf_counter()
    cpu = _optional_module("sqdist._cpu_kernels") if X.device.type == "cpu" and backend == "torch" else None
    cpu = cpu if cpu is not None and cpu.supports(X, C) else None
    # two (labels, mind) buffer pairs, alternated: the previous labels stay
    # readable for the fixed-point test, and no iteration allocates O(N)
    bufs = [(torch.empty(X.shape[0], dtype=torch.int64), torch.empty(X.shape[0], dtype=C.dtype)) for _ in range(2)] if cpu else [None, None]
    stats = _assign_accumulate(X, C, budget=budget, backend=backend, out=bufs[0])
    empty = torch.zeros(0, dtype=torch.int64)
    history = [_history_entry(0, C, stats, 0.0, empty, time.perf_counter() - t0, was_numpy)]
    # tiny problems: whole runs of iterations in one compiled call with the
    # same arithmetic, histories and stopping rule (sqdist._cpu_nb.lloyd_continue);
    # only an empty cluster comes back here for the relocation policy
    small = cpu is not None and getattr(cpu, "lloyd_continue_supports", lambda X, C: False)(X, C)
    converged = False
    n_iter = 0
    while n_iter < max_iter:
        t0 = time.perf_counter()
        if small and bool((stats.counts > 0).all()):
            C = C.clone()
            labels, mind = stats.labels, stats.mind  # updated in place by the kernel
            done, status, sums, counts, hc, hi, hs, hz, hf = cpu.lloyd_continue(
                X, C, stats.sums, stats.counts, labels, mind, max_iter - n_iter, tol)
            dt = (time.perf_counter() - t0) / done
            for r in range(done):
                history.append({
                    "iteration": n_iter + r + 1,
                    "centers": hc[r].copy() if was_numpy else torch.from_numpy(hc[r].copy()),
                    "inertia": float(hi[r]), "max_shift": float(hs[r]), "sizes": hz[r].copy(),
                    "relocated": [], "time": dt,
                })
            n_iter += done
            inertia = torch.tensor(float(hi[done - 1]), dtype=torch.float64)
            stats = _with_far(X, C, labels, mind, sums, counts, inertia)
            max_shift, fixed = float(hs[done - 1]), bool(hf[done - 1])
        else:
            C_new, relocated, _ = _update_centers(stats, C)
            max_shift = _max_shift(C_new, C)
            new = _assign_accumulate(X, C_new, budget=budget, backend=backend, out=_other(bufs, stats.labels),
                                     prev=stats.labels if cpu is not None else None)
            fixed = new.changed == 0 if new.changed is not None else _same_labels(new.labels, stats.labels)
            C, stats = C_new, new
            n_iter += 1
            history.append(_history_entry(n_iter, C, stats, max_shift, relocated, time.perf_counter() - t0, was_numpy))
        if (max_shift < tol or fixed) and _plan_relocation(stats)[0].numel() == 0:
            converged = True
            break
    return C, stats, n_iter, converged, history


def kmeans(
    X: Any,
    n_clusters: int | None = None,
    *,
    init: Any = "k-means++",
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: Any = None,
    working_memory: float | None = None,
    backend: str = "auto",
) -> KMeansResult:
    """Lloyd k-means with exact distances, sklearn-compatible and reproducible.

    Parameters
    ----------
    X : array-like or Tensor of shape (N, D), or out-of-core data
        Data, float32 / float64 (half precision is computed in float32).
        Rows must be finite.  A ``.npy`` path, a ``np.memmap`` or a
        re-iterable of (n_i, D) chunks is streamed chunk by chunk (see
        :func:`sqdist.kmeans_stream`; ``labels`` is then None), and so is any
        data when a ``torch.distributed`` process group is initialised.
    n_clusters : int, optional
        Number of clusters K, ``1 <= K <= N``.  May be omitted when ``init``
        gives the indices or centres.
    init : {"k-means++", "random"}, 1-D int array-like, or array of shape (K, D)
        ``"k-means++"`` -- greedy k-means++ (2 + log K local trials, as
        scikit-learn); ``"random"`` -- K distinct rows drawn with ``seed``;
        integers -- **fixed row indices** into X (the exercise's reproducible
        choice, e.g. ``[0, 50, 100, 150, 200]``); a 2-D array -- the centres.
    n_init : int, default 1
        Restarts for the random inits; the run with the lowest inertia is
        kept (the first one on ties).  Ignored (with a warning) for fixed inits.
    max_iter : int, default 300
        Maximum number of centre updates.
    tol : float, default 1e-4
        Stop when every centre moved less than ``tol`` (Euclidean distance in
        data units, *not* scikit-learn's variance-scaled squared sum); the
        run also stops at a fixed point (assignment unchanged).  ``tol=0``
        runs to the fixed point or ``max_iter``.
    seed : int, torch.Generator or None
        Source of all randomness (never the global RNG).  Same seed, same
        bits -- across runs and CPU thread counts.
    working_memory : float, optional
        MiB budget for one block of the N x K distances.
    backend : {"auto", "torch", "triton"}
        Distance kernels; ``"auto"`` uses Triton for CUDA tensors when installed.

    Returns
    -------
    KMeansResult
        ``centers``, ``labels``, ``inertia``, ``n_iter``, ``converged``,
        ``history``, ``init_centers`` -- NumPy for NumPy input, tensors on
        X's device for tensor input.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    >>> r = sqdist.kmeans(X, init=[0, 2])  # fixed row indices as initial centres
    >>> r.labels.tolist(), r.centers.tolist(), r.inertia
    ([0, 0, 1, 1], [[0.0, 0.5], [10.0, 0.5]], 1.0)
    >>> r.n_iter, r.converged
    (1, True)
    """
    from . import distributed, streaming

    if streaming.is_out_of_core(X) or distributed.is_distributed():  # file / memmap / chunks, or several ranks
        return streaming._fit(
            X, n_clusters, init=init, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed,
            working_memory=working_memory, backend=backend, device=None, dtype=None, labels_out=None,
            checkpoint=None, checkpoint_every=1, resume=None,
        )
    Xt, was_numpy = as_tensor(X, "X")
    if Xt.ndim != 2:
        raise SqdistError(f"X: expected shape (N, D), got {describe(Xt)}")
    if Xt.shape[0] == 0 or Xt.shape[1] == 0:
        raise SqdistError(f"X: expected at least one point and one feature, got {describe(Xt)}")
    check_finite_rows(Xt, "X")
    init_k, K = _parse_init(init, n_clusters, Xt)
    n_init = check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive_number(tol, "tol", allow_zero=True)
    gen = make_generator(seed)
    backend = _resolve_backend(backend, Xt.device)
    budget = _chunking.resolve_budget(working_memory)
    n_init = _runs(init_k, n_init, stacklevel=3)
    return _kmeans_impl(Xt, init_k, K, n_init, max_iter, tol, gen, budget, backend, was_numpy)


def _runs(init: Any, n_init: int, stacklevel: int) -> int:
    """How many initialisations to run: a fixed init runs once (with a warning when more were asked)."""
    if not isinstance(init, str) and n_init != 1:
        warnings.warn(f"n_init={n_init} with a fixed init: running once", SqdistWarning, stacklevel=stacklevel)
        return 1
    return n_init


def _warn_if_empty(counts: torch.Tensor, K: int, stacklevel: int) -> None:
    """ConvergenceWarning when the final clustering has empty clusters."""
    n_nonempty = int((counts > 0).sum())
    if n_nonempty < K:
        warnings.warn(
            f"k-means ended with {n_nonempty} non-empty clusters out of n_clusters={K}: "
            f"X probably has fewer than {K} distinct points",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )


def _kmeans_impl(X, init, K, n_init, max_iter, tol, gen, budget, backend, was_numpy) -> KMeansResult:
    cdtype = compute_dtype(X.dtype)
    best = None
    for _ in range(n_init):
        C0 = _initial_centers(X, init, K, gen, budget, cdtype)
        C, stats, n_iter, converged, history = _lloyd(X, C0, max_iter, tol, budget, backend, was_numpy)
        if best is None or float(stats.inertia) < float(best[1].inertia):
            best = (C, stats, n_iter, converged, history, C0)
    C, stats, n_iter, converged, history, C0 = best
    _warn_if_empty(stats.counts, K, stacklevel=4)
    return KMeansResult(
        centers=to_output(C, was_numpy),
        labels=to_output(stats.labels, was_numpy),
        inertia=float(stats.inertia),
        n_iter=n_iter,
        converged=converged,
        history=history,
        init_centers=to_output(C0, was_numpy),
    )


# --------------------------------------------------------------------------
# estimator
# --------------------------------------------------------------------------

_FORMAT = "sqdist.KMeans/1"


class KMeans:
    """k-means estimator with scikit-learn's interface: a thin shell over :func:`kmeans`.

    Parameters
    ----------
    n_clusters : int or None, default 8
        ``None`` takes K from an explicit ``init`` (indices or centres).
    init, n_init, max_iter, tol, seed, working_memory, backend
        As in :func:`kmeans`.
    device : str or torch.device, optional
        Move the data there before fitting (e.g. ``"cuda"``); the fitted
        attributes are then tensors on that device.  ``None``: where X is.

    Attributes
    ----------
    cluster_centers_ : of shape (K, D)
    labels_ : int64 of shape (N,)
    inertia_ : float
    n_iter_ : int
    converged_ : bool
    history_ : list of dict
        See :class:`KMeansResult`.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    >>> km = sqdist.KMeans(2, init=[0, 2]).fit(X)
    >>> km.cluster_centers_.tolist(), km.inertia_
    ([[0.0, 0.5], [10.0, 0.5]], 1.0)
    >>> km.predict(np.array([[9.0, 0.0], [1.0, 1.0]])).tolist()
    [1, 0]
    >>> km.transform(np.array([[0.0, 0.5]])).tolist()
    [[0.0, 100.0]]
    """

    _PARAMS = ("n_clusters", "init", "n_init", "max_iter", "tol", "seed", "working_memory", "backend", "device")

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        seed: Any = None,
        working_memory: float | None = None,
        backend: str = "auto",
        device: Any = None,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self.working_memory = working_memory
        self.backend = backend
        self.device = device

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._PARAMS if not isinstance(getattr(self, k), (np.ndarray, torch.Tensor)))
        return f"KMeans({args})"

    # -- parameters ---------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters as a dict."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params: Any) -> "KMeans":
        """Set constructor parameters; unknown names raise SqdistError."""
        for k, v in params.items():
            if k not in self._PARAMS:
                raise SqdistError(f"set_params: unknown parameter {k!r}; expected one of {', '.join(self._PARAMS)}")
            setattr(self, k, v)
        return self

    # -- fitting ------------------------------------------------------------
    def _to_device(self, X: Any) -> Any:
        if self.device is None:
            return X
        Xt, _ = as_tensor(X, "X")
        return Xt.to(torch.device(self.device))

    def fit(self, X: Any, y: Any = None) -> "KMeans":
        """Run k-means on X (N, D); returns self."""
        from .streaming import is_out_of_core, kmeans_stream

        if is_out_of_core(X):  # a file / memmap / chunks: streamed, each chunk moved to ``device``
            r = kmeans_stream(X, self.n_clusters, init=self.init, n_init=self.n_init, max_iter=self.max_iter, tol=self.tol,
                              seed=self.seed, working_memory=self.working_memory, backend=self.backend, device=self.device)
        else:
            r = kmeans(
                self._to_device(X), self.n_clusters, init=self.init, n_init=self.n_init, max_iter=self.max_iter,
                tol=self.tol, seed=self.seed, working_memory=self.working_memory, backend=self.backend,
            )
        self._set_result(r)
        return self

    def _set_result(self, r: KMeansResult) -> None:
        self.result_ = r
        self.cluster_centers_ = r.centers
        self.labels_ = r.labels
        self.inertia_ = r.inertia
        self.n_iter_ = r.n_iter
        self.converged_ = r.converged
        self.history_ = r.history
        self.n_features_in_ = int(r.centers.shape[1])

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """Fit and return the labels of X."""
        return self.fit(X).labels_

    def _check_fitted(self, X: Any, name: str) -> tuple[torch.Tensor, bool, torch.Tensor]:
        if not hasattr(self, "cluster_centers_"):
            raise SqdistError(f"{name}: this KMeans is not fitted yet; call fit(X) first")
        Xt, was_numpy = as_tensor(self._to_device(X), "X")
        if Xt.ndim != 2 or Xt.shape[1] != self.n_features_in_:
            raise SqdistError(f"X: expected shape (n, {self.n_features_in_}) (the features seen in fit), got {describe(Xt)}")
        check_finite_rows(Xt, "X")
        C = self.cluster_centers_
        C = torch.as_tensor(C) if isinstance(C, np.ndarray) else C
        C = C.to(device=Xt.device, dtype=compute_dtype(torch.promote_types(Xt.dtype, C.dtype)))
        return Xt, was_numpy, C

    def predict(self, X: Any) -> Any:
        """Index of the nearest centre of every row of X (ties: lowest index)."""
        Xt, was_numpy, C = self._check_fitted(X, "predict")
        budget = _chunking.resolve_budget(self.working_memory)
        backend = _resolve_backend(self.backend, Xt.device)
        return to_output(_assign_accumulate(Xt, C, budget=budget, backend=backend).labels, was_numpy)

    def transform(self, X: Any) -> Any:
        """Squared Euclidean distances of X (n, D) to the centres: (n, K)."""
        from .distances import sqdist

        Xt, was_numpy, C = self._check_fitted(X, "transform")
        return to_output(sqdist(Xt, C, working_memory=self.working_memory), was_numpy)

    def score(self, X: Any, y: Any = None) -> float:
        """Minus the inertia of X with respect to the fitted centres."""
        Xt, _, C = self._check_fitted(X, "score")
        budget = _chunking.resolve_budget(self.working_memory)
        backend = _resolve_backend(self.backend, Xt.device)
        return -float(_assign_accumulate(Xt, C, budget=budget, backend=backend).inertia)

    # -- persistence --------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the parameters and fitted state to ``path`` (.npz, no pickle).

        The file is written under a temporary name in the same folder and
        renamed, so an interrupted save never leaves a half-written model.
        """
        if not hasattr(self, "cluster_centers_"):
            raise SqdistError("save: this KMeans is not fitted yet; call fit(X) first")
        params = {k: getattr(self, k) for k in self._PARAMS}
        arrays: dict[str, np.ndarray] = {}
        init = params["init"]
        if not isinstance(init, str):
            a = init.detach().cpu().numpy() if isinstance(init, torch.Tensor) else np.asarray(init)
            arrays["init"] = a
            params["init"] = {"array": True}
        if isinstance(params["seed"], torch.Generator):
            params["seed"] = None
        if params["device"] is not None:
            params["device"] = str(params["device"])
        def _np(t):
            return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        arrays["cluster_centers"] = _np(self.cluster_centers_)
        if self.labels_ is not None:  # None after an out-of-core fit (labels not kept in memory)
            arrays["labels"] = _np(self.labels_)
        arrays["init_centers"] = _np(self.result_.init_centers)
        state = {
            "format": _FORMAT, "params": params, "inertia": self.inertia_, "n_iter": self.n_iter_,
            "converged": self.converged_, "torch": isinstance(self.cluster_centers_, torch.Tensor),
            "history": [
                {k: (v.tolist() if k == "sizes" else v) for k, v in h.items() if k != "centers"} for h in self.history_
            ],
        }
        arrays["history_centers"] = np.stack([_np(h["centers"]) for h in self.history_])
        arrays["state_json"] = np.frombuffer(json.dumps(state).encode("utf-8"), dtype=np.uint8)
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KMeans":
        """Read a model written by :meth:`save` (``allow_pickle=False``: no code runs on load)."""
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise SqdistError(f"path: {os.fspath(path)!r} is not a sqdist KMeans file ({exc})") from None
        try:
            state = json.loads(arrays["state_json"].tobytes().decode("utf-8"))
            if state.get("format") != _FORMAT:
                raise ValueError(f"format {state.get('format')!r}")
            params = state["params"]
            if isinstance(params["init"], dict):
                params["init"] = arrays["init"]
            km = cls(**params)
            as_t = state["torch"]
            conv = (lambda a: torch.from_numpy(a)) if as_t else (lambda a: a)
            history = []
            for h, c in zip(state["history"], arrays["history_centers"]):
                h = dict(h)
                h["centers"] = conv(c)
                h["sizes"] = np.asarray(h["sizes"], dtype=np.int64)
                history.append(h)
            r = KMeansResult(
                centers=conv(arrays["cluster_centers"]), labels=conv(arrays["labels"]) if "labels" in arrays else None, inertia=float(state["inertia"]),
                n_iter=int(state["n_iter"]), converged=bool(state["converged"]), history=history,
                init_centers=conv(arrays["init_centers"]),
            )
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise SqdistError(f"path: {os.fspath(path)!r} is not a valid sqdist KMeans file ({type(exc).__name__}: {exc})") from None
        km._set_result(r)
        return km


# --------------------------------------------------------------------------
# command line: sqdist kmeans
# --------------------------------------------------------------------------


def _parse_init_arg(text: str) -> Any:
    if text in INITS:
        return text
    try:
        return [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise SqdistError(f"--init: expected 'k-means++', 'random' or comma-separated row indices like 0,50,100, got {text!r}") from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``sqdist kmeans``."""
    parser.add_argument("--data", metavar="FILE", help="points as .npy or .csv (with or without a header); default: the exercise's 5 blobs x 50 points")
    parser.add_argument("-k", "--n-clusters", type=int, default=None, metavar="K", help="number of clusters (default 5, or the number of --init indices)")
    parser.add_argument("--init", default=None, help="k-means++, random, or row indices like 0,50,100 (default: evenly spaced fixed indices)")
    parser.add_argument("--n-init", type=int, default=1, help="restarts for random inits (default 1)")
    parser.add_argument("--max-iter", type=int, default=300, help="maximum number of iterations M (default 300)")
    parser.add_argument("--tol", type=float, default=1e-4, help="stop when every centre moved less than this (data units, default 1e-4)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data and random inits (default 0)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--plot", metavar="PNG", help="save a figure: data with initial and converged centres, trajectories, inertia")
    parser.add_argument("--save", metavar="MODEL", help="save the fitted model (.npz, loadable with sqdist.KMeans.load)")
    parser.add_argument("--labels", metavar="NPY", help="save the labels as an int64 .npy array")
    parser.add_argument("--working-memory", type=float, default=None, metavar="MIB")
    from . import distributed

    distributed.add_arguments(parser)  # --checkpoint, --checkpoint-every, --resume, --timeout


def _cli_resolve_init(init: Any, K: int | None, n_rows: int) -> tuple[Any, int | None]:
    """CLI default: the exercise's fixed indices for K (5 if not given), else k-means++."""
    from . import datasets

    if init is None:
        k = 5 if K is None else K
        if isinstance(k, int) and 1 <= k <= n_rows:
            init = datasets.exercise_init_indices(k, n_rows)
        else:
            init, K = "k-means++", k
    if isinstance(init, str) and K is None:
        K = 5
    return init, K


def _print_summary(data_desc: str, r: KMeansResult, init: Any, sizes: np.ndarray, args: argparse.Namespace) -> None:
    """The CLI's summary of a fit (shared by the in-memory and the streamed/distributed runs)."""
    init_desc = init if isinstance(init, str) else "indices " + ",".join(str(i) for i in init)
    print(f"data: {data_desc}")
    print(f"k-means: K={r.centers.shape[0]}, init {init_desc}, max_iter {args.max_iter}, tol {args.tol:g}")
    print(f"iterations: {r.n_iter} ({'converged' if r.converged else 'not converged'})")
    print(f"inertia: {r.inertia:.10g}")
    print("cluster sizes: " + " ".join(str(int(s)) for s in sizes))
    relocs = sum(len(h["relocated"]) for h in r.history)
    if relocs:
        print(f"empty-cluster relocations: {relocs}")


def run(args: argparse.Namespace) -> int:
    """Run ``sqdist kmeans``; prints a summary."""
    from . import datasets, distributed

    if distributed.wants_streaming(args):  # .npy data, torchrun, checkpoints: streamed (and distributed) path
        return distributed.run_kmeans_cli(args)
    if args.data is not None:
        X = datasets.load_points(args.data)
        truth = None
    else:
        X, truth = datasets.make_blobs(seed=args.seed)
    X = X.astype(args.dtype)
    init = _parse_init_arg(args.init) if args.init is not None else None
    K = args.n_clusters
    init, K = _cli_resolve_init(init, K, X.shape[0])
    data = X if args.device is None else torch.from_numpy(X).to(torch.device(args.device))
    km = KMeans(K, init=init, n_init=args.n_init, max_iter=args.max_iter, tol=args.tol, seed=args.seed,
                working_memory=args.working_memory)
    km.fit(data)
    r = km.result_
    labels = r.labels.cpu().numpy() if isinstance(r.labels, torch.Tensor) else r.labels
    sizes = np.bincount(labels, minlength=int(r.centers.shape[0]))
    src = args.data if args.data is not None else f"blobs (5 x 50, 2-D, seed {args.seed})"
    _print_summary(f"{src}, {X.shape[0]} points x {X.shape[1]} features", r, init, sizes, args)
    if args.labels:
        atomic_write(args.labels, lambda f: np.save(f, labels.astype(np.int64)))
        print(f"labels -> {args.labels}")
    if args.save:
        km.save(args.save)
        print(f"model -> {args.save}")
    if args.plot:
        from . import plotting

        fig = plotting.plot_kmeans_summary(X, r, truth=truth)
        plotting.save_figure(fig, args.plot)
        print(f"plot -> {args.plot}")
    return 0
