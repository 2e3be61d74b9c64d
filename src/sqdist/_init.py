"""k-means initialisation: validating ``init``, fixed indices, explicit centres, random rows, k-means++."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from . import _chunking
from ._dense import bytes_per_row, gemm_rows, prepare
from ._numerics import segment_add
from ._validation import SqdistError, check_positive_int, describe

__all__ = ["INITS", "initial_centers", "kmeans_plusplus", "n_clusters_of", "parse_init"]

INITS = ("k-means++", "random")


def parse_init(init: Any, n_clusters: int | None, N: int, D: int, device: torch.device) -> tuple[Any, int]:
    """Validate ``init`` for data of N rows and D features; returns ``(init, K)`` where ``init`` is
    a name from :data:`INITS`, an int64 tensor of row indices on ``device``, or ``("centers", C)``."""
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
    arr = (
        init.detach().cpu().numpy() if isinstance(init, torch.Tensor)
        else np.asarray(init) if not isinstance(init, np.ndarray)
        else init
    )
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
        return torch.as_tensor(arr.astype(np.int64), device=device), K
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


def n_clusters_of(init: Any, n_clusters: Any) -> int:
    """K from ``n_clusters`` or from an explicit init (needed before streamed data is scanned)."""
    if not isinstance(init, str):
        arr = init.detach().cpu().numpy() if isinstance(init, torch.Tensor) else np.asarray(init)
        if arr.ndim in (1, 2) and arr.shape[0] > 0:
            return int(arr.shape[0])
    if n_clusters is None:
        raise SqdistError(f"n_clusters: required with init={init!r}, got None")
    return check_positive_int(n_clusters, "n_clusters")


def _dist_to_rows(X: torch.Tensor, C: torch.Tensor, budget: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(slice, d)`` with d (n, c) the exact distances of X's row chunks to C."""
    cdtype = C.dtype
    item = torch.finfo(cdtype).bits // 8
    N, D = X.shape
    chunk = _chunking.rows_per_chunk(N, C.shape[0] * (item + 8) + bytes_per_row("gemm", C.shape[0], D, item), budget,
                                     what="k-means++")
    prep = prepare(C, cdtype)
    for sl in _chunking.row_slices(N, chunk):
        yield sl, gemm_rows(X[sl], prep, None, budget)


def _col_sums(A: torch.Tensor) -> torch.Tensor:
    """Column sums of A (n, c) in float64, summed row after row (thread-count independent)."""
    out = torch.zeros((1, A.shape[1]), dtype=torch.float64, device=A.device)
    idx = torch.zeros(A.shape[0], dtype=torch.int64, device=A.device)
    return segment_add(out, idx, A.to(torch.float64))[0]


def kmeans_plusplus(X: torch.Tensor, K: int, gen: torch.Generator, budget: int, cdtype: torch.dtype) -> torch.Tensor:
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


def initial_centers(init: Any, K: int, rows_at: Callable[[torch.Tensor], torch.Tensor],
                    sample: Callable[[], torch.Tensor], gen: torch.Generator, budget: int, cdtype: torch.dtype,
                    device: torch.device) -> torch.Tensor:
    """Initial centres (K, D) in ``cdtype`` on ``device``; ``init`` as parsed by :func:`parse_init`.

    ``rows_at(idx)`` returns the data rows at global indices ``idx`` (fixed
    indices); ``sample()`` the rows that "random" and "k-means++" draw from
    (all rows in memory; a seeded sample of a streamed data set).
    """
    if isinstance(init, tuple):  # explicit centres
        return init[1].to(device=device, dtype=cdtype).clone()
    if isinstance(init, torch.Tensor):  # row indices
        return rows_at(init).to(device=device, dtype=cdtype)
    S = sample()  # (m, D)
    if S.shape[0] < K:
        raise SqdistError(f"n_clusters: the initialisation sample has {S.shape[0]} rows, fewer than n_clusters={K}")
    if init == "random":
        idx = torch.randperm(S.shape[0], generator=gen, device=gen.device)[:K].to(S.device)
        return S[idx].to(device=device, dtype=cdtype)
    return kmeans_plusplus(S, K, gen, budget, cdtype).to(device)
