"""One Lloyd step: assign + accumulate on any backend, and the centre update with the empty-cluster policy.

Assignment (:func:`assign_accumulate`): every point goes to its nearest
centre -- the argmin of the *exact* squared distances (ties: smallest index),
whatever kernel runs: the compiled CPU kernels, Triton, or the torch code
below, which ranks the centres with one product on centred data and re-checks
ambiguous rows by the direct formula (:mod:`sqdist._numerics`).  Sums and
counts are accumulated in float64 in a fixed order.

Empty clusters (:func:`update_centers`): a centre that receives no point is
moved to the point farthest from its own (old) centre, and that point is
removed from its old cluster's sums and counts, exactly as scikit-learn's
``_relocate_empty_clusters``.  Several empty clusters (in increasing index
order) take the farthest points in decreasing distance order (ties: lower row
index).  A point is only taken when its distance is positive and its old
cluster keeps at least one point, so no centre ever becomes NaN or lands at
the origin; an empty cluster for which no such point exists keeps its old
centre.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import _chunking, _cpu_kernels, _sparse
from ._backend import triton_kernels
from ._numerics import assign_margin, centre, ordered_sum, segment_add
from ._sparse import CSR
from ._validation import compute_dtype

__all__ = ["Stats", "assign_accumulate", "assign_labels", "max_shift", "order_far", "plan_relocation", "relocation_pending",
           "update_centers", "with_far"]

# target size of one (n, K) block of the torch assignment: small blocks stay in cache
_CACHE_BYTES = 2 * 2**20


class Stats(NamedTuple):
    """Result of assigning rows (one chunk, or all of them reduced over chunks and ranks) to the centres.

    The farthest-point candidates (``far_*``, at most K, farthest first) are
    kept only when a cluster is empty: the empty-cluster policy needs them.
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
    weight: torch.Tensor | None = None  # (K,) float64 total sample weight per cluster; None: unit weights (counts)
    far_w: torch.Tensor | None = None  # (m,) float64 sample weights of the candidates; None: unit weights

    def cluster_weight(self) -> torch.Tensor:
        """(K,) float64 weight of every cluster: the sample weights' sum, or the counts."""
        return self.counts.to(torch.float64) if self.weight is None else self.weight

    def empty(self) -> torch.Tensor:
        """(K,) bool: clusters without weight (no point, or only points of weight 0)."""
        return self.counts == 0 if self.weight is None else self.weight == 0


def _assign_rows(Xb: torch.Tensor, C: torch.Tensor, Cc: torch.Tensor, c: torch.Tensor, nt: torch.Tensor,
                 gamma: float, budget: int) -> torch.Tensor:
    """Exact nearest-centre index of every row of ``Xb`` (n, D); ties go to the lowest index.

    One product on centred data gives ``s[i, j] = ||t_j - c||^2 - 2 (x_i - c).(t_j - c)``,
    which orders the centres like the distances.  A row whose second-best centre
    lies within ``2 gamma (||x_i - c||^2 + max_j ||t_j - c||^2)`` of the best
    (``gamma`` from :func:`sqdist._numerics.assign_margin`) is ambiguous and is
    recomputed with the direct formula ``sum((x - t)**2)``; all other rows'
    argmin is that of the direct formula.
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
    c = centre(C)  # (D,) centring: norms of the spread, not of the offset
    Cc = C - c  # (K, D)
    nt = (Cc * Cc).sum(1)  # (K,)
    gamma = assign_margin(cdtype, D)
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
        segment_add(sums, lab, X[sl].to(torch.float64))
        if ones is None or ones.shape[0] != lab.shape[0]:
            ones = torch.ones(lab.shape[0], dtype=torch.int64, device=X.device)
        segment_add(counts, lab, ones)
        segment_add(per_cluster, lab, md.to(torch.float64))
    inertia = ordered_sum(per_cluster)  # K values, summed in order
    return labels, mind, sums, counts, inertia


def assign_accumulate(X: torch.Tensor, centers: torch.Tensor, *, budget: int, backend: str, offset: int = 0,
                      out: tuple[torch.Tensor, torch.Tensor] | None = None,
                      weights: torch.Tensor | None = None) -> Stats:
    """Assign the rows of ``X`` (n, D) to ``centers`` (K, D) and accumulate the update.

    ``backend`` is already resolved ("torch" or "triton").  ``offset`` is the
    global index of ``X``'s first row (for chunks of a larger data set); it
    only shifts ``far_idx``.  ``out``: optional (labels, mind) buffers of shape
    (n,) the compiled CPU kernel writes into (reused across Lloyd iterations).
    ``weights``: optional (n,) sample weights (finite, >= 0): the sums, the
    clusters' weights and the inertia are then weighted (one more ordered
    float64 pass over the chunk); labels and distances do not depend on them.
    Trusts its inputs: 2-D, same device, finite, ``centers`` in the compute dtype.
    """
    if isinstance(X, CSR):  # sparse rows (sqdist._sparse): never densified, weights applied in its ordered sums
        labels, mind, sums, counts, inertia = _sparse.assign(X, centers, budget, weights)
        weight = None if weights is None else segment_add(
            torch.zeros(centers.shape[0], dtype=torch.float64, device=X.device), labels,
            weights.to(device=X.device, dtype=torch.float64))
        return with_far(X, centers, labels, mind, sums, counts, inertia, offset, weight=weight, weights=weights)
    if backend == "triton":
        labels, mind, sums, counts, inertia = triton_kernels().assign_accumulate_triton(X, centers)
    elif _cpu_kernels.supports(X, centers):
        lo, mo = out if out is not None else (None, None)
        labels, mind, sums, counts, inertia = _cpu_kernels.assign_accumulate(X, centers, labels_out=lo, mind_out=mo,
                                                                             budget=budget)
    else:
        labels, mind, sums, counts, inertia = _assign_torch(X, centers, budget)
    weight = None
    if weights is not None:  # weighted sums, cluster weights and inertia, in row order
        K, D = centers.shape
        w = weights.to(device=X.device, dtype=torch.float64)  # (n,)
        sums = segment_add(torch.zeros((K, D), dtype=torch.float64, device=X.device), labels, X.to(torch.float64) * w[:, None])
        weight = segment_add(torch.zeros(K, dtype=torch.float64, device=X.device), labels, w)
        inertia = ordered_sum(mind.to(torch.float64) * w)
    inertia = torch.as_tensor(inertia, dtype=torch.float64, device=X.device)
    return with_far(X, centers, labels, mind, sums, counts, inertia, offset, weight=weight, weights=weights)


def assign_labels(X: torch.Tensor, centers: torch.Tensor, *, budget: int, backend: str) -> torch.Tensor:
    """The labels of :func:`assign_accumulate` (n,) alone (``predict``): on the CPU without the
    sums, counts, inertia and farthest points it also computes.  Inputs as its, rows finite."""
    if not isinstance(X, CSR) and backend == "torch" and _cpu_kernels.supports(X, centers):
        return _cpu_kernels.assign_labels(X, centers, budget=budget)
    return assign_accumulate(X, centers, budget=budget, backend=backend).labels


def with_far(X, centers, labels, mind, sums, counts, inertia, offset: int = 0, *, weight: torch.Tensor | None = None,
             weights: torch.Tensor | None = None) -> Stats:
    """:class:`Stats` of one assignment; farthest-point candidates only when a cluster is empty
    (without points, or with only points of weight 0: ``weight`` (K,), ``weights`` (n,) the rows')."""
    K = centers.shape[0]
    if weight is None:
        empty = int(counts.numpy().min()) == 0 if counts.device.type == "cpu" else bool((counts == 0).any())
    else:
        empty = bool((weight == 0).any())
    if not empty:  # no candidates needed (a few cheap allocations instead of ~10 indexing ops)
        i0 = torch.empty(0, dtype=torch.int64, device=X.device)
        f0 = torch.empty(0, dtype=torch.float64, device=X.device)
        return Stats(labels, mind, sums, counts, inertia, f0, i0,
                     torch.empty((0, X.shape[1]), dtype=centers.dtype, device=X.device), i0,
                     weight, None if weights is None else f0)
    far = _top_far(mind, K)  # (m,)
    return Stats(
        labels, mind, sums, counts, inertia,
        mind[far].to(torch.float64), far + offset, X[far].to(centers.dtype), labels[far],
        weight, None if weights is None else weights[far].to(device=X.device, dtype=torch.float64),
    )


def order_far(d: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
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


def plan_relocation(stats: Stats) -> tuple[torch.Tensor, torch.Tensor]:
    """Which empty clusters take which candidate points.

    Returns ``(targets, cand)``: empty cluster ids (ascending) and positions
    into ``stats.far_*`` (farthest first).  A candidate is usable when its
    distance is positive and its old cluster keeps at least one point after
    the candidates taken before it from the same cluster -- with sample
    weights: its weight is positive and its old cluster keeps a positive
    weight (a cluster whose points all weigh 0 is empty, as in scikit-learn).
    """
    counts = stats.counts
    if stats.far_d.numel() == 0:
        # no cluster was empty in any chunk (no candidates are kept then):
        # nothing to plan, and no device sync on CUDA
        return counts[:0], counts[:0]
    if stats.weight is None and counts.device.type == "cpu" and int(counts.numpy().min()) > 0:
        return counts[:0], counts[:0]  # no empty cluster (without 3 torch ops)
    empty = stats.empty().nonzero().flatten()  # (e,)
    if empty.numel() == 0:
        return empty[:0], empty[:0]
    lab = stats.far_label  # (m,)
    m = lab.shape[0]
    same = lab[:, None] == lab[None, :]  # (m, m), m <= K
    earlier = torch.ones((m, m), dtype=torch.bool, device=lab.device).tril(-1)
    if stats.weight is None:
        rank = (same & earlier).sum(1)  # (m,) earlier candidates from the same cluster
        ok = (stats.far_d > 0) & (rank < counts[lab] - 1)  # (m,)
    else:
        taken = ((same & earlier).to(torch.float64) * stats.far_w[None, :]).sum(1)  # (m,) weight taken before
        ok = (stats.far_d > 0) & (stats.far_w > 0) & (taken + stats.far_w < stats.weight[lab])  # (m,)
    cand = ok.nonzero().flatten()[: empty.numel()]
    return empty[: cand.numel()], cand


def relocation_pending(stats: Stats) -> bool:
    """Whether the empty-cluster policy would move a centre (cheap when no cluster is empty)."""
    return stats.far_d.numel() > 0 and plan_relocation(stats)[0].numel() > 0


def update_centers(stats: Stats, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """New centres (K, D) in ``centers.dtype``, relocated cluster ids, cluster weights after relocation
    (the counts for unit weights)."""
    sums = stats.sums.clone()  # (K, D) float64
    weight = stats.counts.clone() if stats.weight is None else stats.weight.clone()  # (K,)
    targets, cand = plan_relocation(stats)
    if targets.numel():
        x = stats.far_x[cand].to(torch.float64)  # (r, D)
        donors = stats.far_label[cand]  # (r,)
        if stats.weight is None:
            w = torch.ones_like(donors)
        else:
            w = stats.far_w[cand]  # (r,) float64
            x = x * w[:, None]  # (r, D) the weighted contribution
        segment_add(sums, donors, -x)
        segment_add(weight, donors, -w)
        sums[targets] = x
        weight[targets] = w
    nonempty = weight > 0  # (K,)
    denom = weight.clamp_min(1).to(torch.float64) if stats.weight is None else torch.where(nonempty, weight, 1.0)
    means = sums / denom[:, None]  # (K, D)
    new = torch.where(nonempty[:, None], means.to(centers.dtype), centers)  # (K, D)
    return new, targets, weight


def max_shift(C_new: torch.Tensor, C: torch.Tensor) -> tuple[float, float]:
    """Largest Euclidean move ``max_k ||C_new[k] - C[k]||`` and the sum of the squared moves, in float64.

    Up to 4 features the squares are added in feature order (the results of
    earlier versions, which also had a compiled loop, stay bit-identical);
    torch's row sum uses a vectorised order beyond that.
    """
    d = C_new.to(torch.float64) - C.to(torch.float64)  # (K, D)
    sq = d * d  # (K, D)
    if sq.shape[1] <= 4:
        s = sq[:, 0]
        for j in range(1, sq.shape[1]):  # at most 3 features
            s = s + sq[:, j]
    else:
        s = sq.sum(1)  # (K,)
    if not s.numel():
        return 0.0, 0.0
    # math.sqrt is correctly rounded (torch's vectorised float64 sqrt measured 1 ulp off);
    # the squared moves are added in cluster order
    return math.sqrt(float(s.max())), float(sum(s.tolist()))
