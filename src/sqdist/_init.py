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
from ._sparse import CSR, as_csr, is_sparse, sqdist_into
from ._validation import SqdistError, check_positive_int, check_seed, describe, host_array, make_generator

__all__ = ["INITS", "as_generator", "call_init", "check_random_state", "draws", "initial_centers", "kmeans_plusplus",
           "n_clusters_of", "parse_init"]

INITS = ("k-means++", "random")

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def as_generator(random_state: Any, name: str = "random_state") -> torch.Generator:
    """The private ``torch.Generator`` all randomness of a fit comes from.

    ``None``: freshly seeded; an int: that seed; a ``torch.Generator``: used
    as is; a NumPy ``Generator`` or ``RandomState``: one seed drawn from it
    (as scikit-learn draws from the ``RandomState`` it is given).  The global
    RNGs of torch and NumPy are never read or advanced.
    """
    if isinstance(random_state, np.random.Generator):
        return make_generator(int(random_state.integers(0, 2**63 - 1)), name)
    if isinstance(random_state, np.random.RandomState):
        return make_generator(int(random_state.randint(0, 2**63 - 1, dtype=np.int64)), name)
    return make_generator(random_state, name)


def draws(init: Any) -> bool:
    """Whether an ``init`` (as the user gave it) draws random numbers: a name or a callable; fixed
    row indices and explicit centres draw none."""
    return isinstance(init, str) or callable(init)


def check_random_state(random_state: Any, name: str = "random_state") -> None:
    """Validate ``random_state`` as :func:`as_generator` does, without building a generator or
    drawing from the one given (for fits whose init draws nothing: a fresh generator costs ~15 us,
    3 % of a whole fit at the exercise's size)."""
    if random_state is None or isinstance(random_state, (torch.Generator, np.random.Generator, np.random.RandomState)):
        return
    check_seed(random_state, name)


def parse_init(init: Any, n_clusters: int | None, N: int, D: int, device: torch.device) -> tuple[Any, int]:
    """Validate ``init`` for data of N rows and D features; returns ``(init, K)`` where ``init`` is
    a name from :data:`INITS`, an int64 tensor of row indices on ``device``, or ``("centers", C)``
    with C the caller's tensor or a float64 NumPy copy of the caller's centres."""
    if isinstance(init, str):
        if init not in INITS:
            raise SqdistError(
                f"init: expected 'k-means++', 'random', a list of row indices or a (K, D) array of centres, got {init!r}"
            )
        if n_clusters is None:
            raise SqdistError(f"n_clusters: required with init={init!r}, got None")
        K = check_positive_int(n_clusters, "n_clusters")
        if K > N:
            raise SqdistError(f"n_clusters: expected at most the number of points {N} "
                              f"(n_samples={N} should be >= n_clusters={K}), got {K}")
        return init, K
    arr = (
        host_array(init) if isinstance(init, torch.Tensor)
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
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise SqdistError(
            f"init: expected a 1-D list of integer row indices or centres of shape (K, {D}), got {describe(init)}"
        )
    K = arr.shape[0]
    if arr.shape[1] != D:
        raise SqdistError(f"init: expected centres of shape (K, {D}), got {describe(init)} (The shape of the initial "
                          f"centers {arr.shape} does not match the number of features of the data {D})")
    if n_clusters is not None and check_positive_int(n_clusters, "n_clusters") != K:
        raise SqdistError(f"init: {K} centres given but n_clusters={n_clusters} (The shape of the initial centers "
                          f"{arr.shape} does not match the number of clusters {n_clusters})")
    if K > N:
        raise SqdistError(f"n_clusters: expected at most the number of points {N}, got {K} initial centres")
    # (a finite sum proves every entry finite: one reduction, no mask -- an overflowing sum of
    # finite entries takes the exact test)
    if arr.dtype.kind == "f" and not math.isfinite(np.add.reduce(arr, axis=None)) and not np.isfinite(arr).all():
        raise SqdistError("init: the initial centres contain NaN or Inf")
    # a tensor stays one (its device); anything else becomes a float64 array that never aliases the caller's
    C = init if isinstance(init, torch.Tensor) else np.array(arr, dtype=np.float64)
    return ("centers", C), K


def call_init(init: Callable, arg: Any, K: int, N: int, D: int, device: torch.device,
              gen: torch.Generator) -> tuple[str, Any]:
    """One run's centres from a callable init, called as scikit-learn calls it: ``init(arg, K,
    random_state=rs)``, ``rs`` a NumPy RandomState seeded from ``gen`` (a new seed every call);
    sparse centres are densified, as scikit-learn does.  Returns ``("centers", C)``, checked as
    explicit centres for data of N rows and D features are (:func:`parse_init`)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    out = init(arg, K, random_state=np.random.RandomState(seed))
    out = as_csr(out, "init").dense() if is_sparse(out) else out
    arr = host_array(out) if isinstance(out, torch.Tensor) else np.asarray(out)
    if arr.ndim != 2:
        raise SqdistError(f"init: the callable returned {describe(out)}; expected centres of shape ({K}, D)")
    return parse_init(arr, K, N, D, device)[0]


def n_clusters_of(init: Any, n_clusters: Any) -> int:
    """K from ``n_clusters`` or from an explicit init (needed before streamed data is scanned)."""
    if not isinstance(init, str):
        arr = host_array(init) if isinstance(init, torch.Tensor) else np.asarray(init)
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
    if isinstance(X, CSR):  # sparse rows: the sparse product path, C dense (never X densified)
        chunk = _chunking.rows_per_chunk(N, C.shape[0] * (item + 8) * 2, budget, what="k-means++")
        for sl in _chunking.row_slices(N, chunk):
            yield sl, sqdist_into(X[sl], C, torch.empty((sl.stop - sl.start, C.shape[0]), dtype=cdtype,
                                                        device=C.device), budget)
        return
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


def kmeans_plusplus(X: torch.Tensor, K: int, gen: torch.Generator, budget: int, cdtype: torch.dtype,
                    weights: torch.Tensor | None = None, n_local_trials: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy k-means++ as scikit-learn: ``2 + floor(log K)`` local trials per centre.

    With ``weights`` (n,) the first centre is drawn with probability
    proportional to the weight and the candidates with probability
    proportional to ``weight * distance``; the potential is weighted.
    Returns ``(centres (K, D), indices (K,) into X)``.
    """
    N = X.shape[0]
    dev = gen.device
    n_trials = 2 + int(math.log(K)) if n_local_trials is None else n_local_trials
    w = None if weights is None else weights.to(device=X.device, dtype=torch.float64)  # (N,)
    if w is None:
        first = int(torch.randint(N, (1,), generator=gen, device=dev))
    else:
        first = int(torch.multinomial(w.to(dev), 1, generator=gen))
    idx = [first]
    centers = [X[first].to(cdtype)]
    closest = torch.cat([d[:, 0] for _, d in _dist_to_rows(X, centers[0][None], budget)]).to(torch.float64)  # (N,)
    pot = float(_col_sums(_weighted(closest[:, None], w))[0])
    for _ in range(1, K):
        r = torch.rand(n_trials, generator=gen, dtype=torch.float64, device=dev).to(X.device) * pot  # (L,)
        cum = torch.cumsum(closest if w is None else closest * w, 0)  # (N,) sequential scan
        cand = torch.searchsorted(cum, r).clamp_max(N - 1)  # (L,)
        C = X[cand].to(cdtype)  # (L, D)
        pots = torch.zeros(n_trials, dtype=torch.float64, device=X.device)
        for sl, d in _dist_to_rows(X, C, budget):
            pots += _col_sums(_weighted(torch.minimum(closest[sl, None], d.to(torch.float64)), None if w is None else w[sl]))
        best = int(torch.argmin(pots))
        pot = float(pots[best])
        for sl, d in _dist_to_rows(X, C[best : best + 1], budget):
            closest[sl] = torch.minimum(closest[sl], d[:, 0].to(torch.float64))
        centers.append(C[best])
        idx.append(int(cand[best]))
    return torch.stack(centers), torch.tensor(idx, dtype=torch.int64)  # (K, D), (K,)


def _weighted(A: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Rows of A (n, c) times their weights (n,); A itself for unit weights."""
    return A if w is None else A * w[:, None]


def initial_centers(init: Any, K: int, rows_at: Callable[[torch.Tensor], torch.Tensor],
                    sample: Callable[[], tuple[torch.Tensor, torch.Tensor | None]], gen: torch.Generator, budget: int,
                    cdtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Initial centres (K, D) in ``cdtype`` on ``device``; ``init`` as parsed by :func:`parse_init`.

    ``rows_at(idx)`` returns the data rows at global indices ``idx`` (fixed
    indices); ``sample()`` the rows that "random" and "k-means++" draw from
    and their sample weights or None (all rows in memory; a seeded sample of
    a streamed data set).  A callable init arrives as ``("callable", f)``:
    ``f(gen)`` calls the user's callable for this run and returns its centres
    as ``("centers", C)`` (:func:`sqdist.kmeans`).
    """
    if isinstance(init, tuple) and init[0] == "callable":  # this run's centres from the user's callable
        init = init[1](gen)  # ("centers", C), checked as explicit centres
    if isinstance(init, tuple):  # explicit centres: a float64 array, or the caller's tensor
        C = init[1]
        if isinstance(C, np.ndarray):
            if device.type == "cpu" and cdtype in _NUMPY_DTYPES:
                # NumPy's conversion (a copy): the same rounding as ``Tensor.to``, without a torch op
                # (measured 31 against 6 us inside a whole fit at the exercise's size, 5 % of the fit)
                return torch.from_numpy(C.astype(_NUMPY_DTYPES[cdtype]))
            C = torch.from_numpy(C)
        elif device.type == "cpu" and cdtype in _NUMPY_DTYPES and C.is_cpu and C.dtype in _NUMPY_DTYPES \
                and not C.requires_grad:
            return torch.from_numpy(C.numpy().astype(_NUMPY_DTYPES[cdtype]))
        return C.to(device=device, dtype=cdtype, copy=True)
    if isinstance(init, torch.Tensor):  # row indices
        return rows_at(init).to(device=device, dtype=cdtype)
    S, w = sample()  # (m, D), (m,) or None
    if S.shape[0] < K:
        raise SqdistError(f"n_clusters: the initialisation sample has {S.shape[0]} rows, fewer than n_clusters={K}")
    if init == "random":
        if w is None:
            idx = torch.randperm(S.shape[0], generator=gen, device=gen.device)[:K].to(S.device)
        else:  # K distinct rows, drawn with probability proportional to their weight (as scikit-learn)
            idx = torch.multinomial(w.to(device=gen.device, dtype=torch.float64), K, replacement=False,
                                    generator=gen).to(S.device)
        return S[idx].to(device=device, dtype=cdtype)
    return kmeans_plusplus(S, K, gen, budget, cdtype, w)[0].to(device)
