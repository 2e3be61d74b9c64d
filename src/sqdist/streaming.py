"""Out-of-core data: ``.npy`` files, memory maps and re-iterable chunks, streamed in fixed chunks.

Data that does not fit in memory is read one *chunk* of rows at a time:

* a path to a ``.npy`` file (opened with ``np.load(mmap_mode="r")``) or a
  ``np.memmap``: chunk ``c`` holds rows ``c * R : (c + 1) * R``.  After a
  chunk is copied out, its pages are released from this process
  (``madvise(MADV_DONTNEED)``: the data stays in the OS page cache, but is no
  longer counted in the process's resident set), so resident memory stays
  bounded by the working-memory budget, not by the file size;
* any re-iterable of (n_i, D) arrays or tensors (a list, or an object whose
  ``__iter__`` returns a fresh iterator -- not a one-shot generator): each
  element is split into pieces of at most ``R`` rows;
* an in-memory array or tensor (views, no copy).

``R`` (``chunk_rows``) is ``min(65536, rows that fit the working memory)``: it
depends on the budget, the number of clusters and features, never on the
number of processes -- which is what makes distributed runs bit-identical to
one process (see :mod:`sqdist.distributed`).

Streaming k-means (:func:`kmeans_stream`) makes one pass over the data per
Lloyd iteration, plus one pass to validate the data (finite values, per
feature maximum) and one final pass that gives the labels and inertia of the
final centres.

Exact, order-independent sums
-----------------------------
Each chunk's per-cluster sums are accumulated in ``float64`` and then rounded
to a fixed-point grid ``2**e_d`` per feature chosen from the data bound
(``N * max|x_d| <= 2**(e_d + 61)``), and added as ``int64``.  Integer addition
is associative, so the total does not depend on the order in which chunks (or
ranks) are combined; the rounding error of a centre coordinate is at most
``2**-62 * N * max|x_d|`` -- for N = 10**9 that is ``2e-10 * max|x_d|``, far
below one float32 ulp of any coordinate above ``0.004 * max|x_d|`` and below
the worst-case error of sequential float64 summation.  The inertia is summed
per chunk in ``float64`` and the chunk values are added in global chunk order.
"""

from __future__ import annotations

import math
import mmap
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import _chunking
from ._validation import SqdistError, as_tensor, check_positive_int, check_positive_number, compute_dtype, describe

__all__ = ["kmeans_stream", "is_out_of_core"]

# Largest chunk (rows): a fixed cap so that, for any budget large enough, the
# chunk grid -- and therefore every floating-point result -- is the same.
CHUNK_ROWS_MAX = 1 << 16
# Rows drawn (with the seed) for the k-means++ / random initialisation.
SAMPLE_MIN = 1 << 16
_PAGE = mmap.PAGESIZE


# --------------------------------------------------------------------------
# data sources
# --------------------------------------------------------------------------


def _is_chunk(x: Any) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 2


def is_out_of_core(X: Any) -> bool:
    """True for data that sqdist streams instead of loading: a path, a memory map, or chunks.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> sqdist.is_out_of_core(np.zeros((3, 2))), sqdist.is_out_of_core([np.zeros((3, 2))])
    (False, True)
    """
    if isinstance(X, (str, os.PathLike, np.memmap)):
        return True
    if isinstance(X, (np.ndarray, torch.Tensor)):
        return False
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(_is_chunk(c) for c in X)
    return isinstance(X, Iterable) and not isinstance(X, (bytes, dict))


class _Source:
    """Rows of a data set, readable by global row ranges (files, arrays) or sequentially (iterables)."""

    n_rows: int | None
    n_features: int
    dtype: torch.dtype  # dtype of the tensors produced
    numpy_out: bool
    random_access = True

    def rows(self, a: int, b: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def take(self, idx: np.ndarray) -> torch.Tensor:
        """Rows at sorted global indices ``idx`` (read range by range, pages released after each)."""
        parts = []
        for s in range(0, len(idx), 4096):
            sel = idx[s : s + 4096]
            a, b = int(sel[0]), int(sel[-1]) + 1
            if b - a <= 4 * CHUNK_ROWS_MAX:
                parts.append(self.rows(a, b)[torch.from_numpy(sel - a)])
            else:
                parts.append(torch.cat([self.rows(int(i), int(i) + 1) for i in sel]))
        if not parts:
            return torch.empty((0, self.n_features), dtype=self.dtype)
        return torch.cat(parts)


class _ArraySource(_Source):
    def __init__(self, t: torch.Tensor, numpy_out: bool):
        if t.ndim != 2:
            raise SqdistError(f"X: expected a 2-D array (n, d), got {describe(t)}")
        self.t = t
        self.n_rows, self.n_features = t.shape
        self.dtype = t.dtype
        self.numpy_out = numpy_out

    def rows(self, a: int, b: int) -> torch.Tensor:
        return self.t[a:b]


class _NpySource(_Source):
    """A memory-mapped ``.npy`` file; pages are released once a range is copied out."""

    def __init__(self, X: Any, name: str):
        if isinstance(X, np.memmap):
            mm = X
            self.label = f"memory map of {getattr(X, 'filename', None) or 'a file'}"
        else:
            path = os.fspath(X)
            self.label = repr(path)
            if not os.path.exists(path):
                raise FileNotFoundError(2, "No such file or directory", path)
            try:
                mm = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as exc:
                if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
                    raise
                raise SqdistError(f"{name}: {path!r} is not a readable .npy array file ({exc})") from None
            if not isinstance(mm, np.ndarray):
                raise SqdistError(f"{name}: {path!r} holds an archive, expected one .npy array")
        if mm.ndim != 2:
            raise SqdistError(f"{name}: expected a 2-D array (n, d) in {self.label}, got shape {mm.shape}")
        kind = mm.dtype.kind
        if kind not in "fiub":
            raise SqdistError(f"{name}: expected numeric data in {self.label}, got dtype {mm.dtype}")
        self.mm = mm
        self.n_rows, self.n_features = mm.shape
        np_dtype = np.dtype(np.float64) if kind in "iub" else mm.dtype.newbyteorder("=")
        self.np_dtype = np_dtype
        self.dtype = torch.from_numpy(np.zeros(0, np_dtype)).dtype
        self.numpy_out = True
        self._mmap = getattr(mm, "_mmap", None) if mm.flags.c_contiguous else None
        self._base = None
        if self._mmap is not None and hasattr(self._mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._base = np.frombuffer(self._mmap, dtype=np.uint8).ctypes.data
        self._row_bytes = mm.dtype.itemsize * self.n_features

    def rows(self, a: int, b: int) -> torch.Tensor:
        chunk = np.array(self.mm[a:b], dtype=self.np_dtype, order="C")  # copy out of the map
        self._release(a, b)
        return torch.from_numpy(chunk)

    def _release(self, a: int, b: int) -> None:
        if self._base is None or b <= a:
            return
        start = self.mm.ctypes.data + a * self._row_bytes - self._base
        stop = start + (b - a) * self._row_bytes
        lo = (start // _PAGE) * _PAGE
        hi = min(-(-stop // _PAGE) * _PAGE, len(self._mmap))
        if hi > lo:
            self._mmap.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


class _IterSource(_Source):
    """A re-iterable of (n_i, D) chunks (each element converted like any array input)."""

    random_access = False

    def __init__(self, X: Any, name: str):
        if iter(X) is X:
            raise SqdistError(
                f"{name}: got a one-shot iterator ({type(X).__name__}); k-means reads the data once per "
                f"iteration, so pass a re-iterable (a list of chunks, or an object whose __iter__ returns a "
                f"fresh iterator each time)"
            )
        self.X = X
        self.name = name
        self.n_rows = None
        first = next(iter(X), None)
        if first is None:
            raise SqdistError(f"{name}: the iterable of chunks is empty")
        t, was_numpy = as_tensor(first, f"{name} chunk 0")
        if t.ndim != 2:
            raise SqdistError(f"{name}: expected chunks of shape (n_i, d), got chunk 0 as {describe(t)}")
        self.n_features = t.shape[1]
        self.dtype = t.dtype
        self.numpy_out = was_numpy

    def pieces(self, rows: int) -> Iterator[torch.Tensor]:
        for i, c in enumerate(self.X):
            t, _ = as_tensor(c, f"{self.name} chunk {i}")
            if t.ndim != 2 or t.shape[1] != self.n_features or t.dtype != self.dtype:
                raise SqdistError(
                    f"{self.name}: every chunk must have shape (n_i, {self.n_features}) and dtype {self.dtype} "
                    f"like chunk 0, got chunk {i} as {describe(t)}"
                )
            for s in range(0, t.shape[0], rows):
                yield t[s : s + rows]


def as_source(X: Any, name: str = "X") -> _Source:
    """Wrap any accepted data in a source."""
    if isinstance(X, (str, os.PathLike, np.memmap)):
        return _NpySource(X, name)
    if isinstance(X, (np.ndarray, torch.Tensor)):
        t, was_numpy = as_tensor(X, name)
        return _ArraySource(t, was_numpy)
    if is_out_of_core(X):
        return _IterSource(X, name)
    t, was_numpy = as_tensor(X, name)
    return _ArraySource(t, was_numpy)


# --------------------------------------------------------------------------
# the chunk grid and this rank's shard
# --------------------------------------------------------------------------


@dataclass
class _Shard:
    """This rank's chunks: global chunk ids ``[c_lo, c_hi)`` and rows ``[r_lo, r_hi)``."""

    source: _Source
    R: int  # chunk rows
    n_rows: int  # global
    n_chunks: int  # global
    c_lo: int
    c_hi: int
    r_lo: int
    r_hi: int
    grid: Any = None  # (D,) float64 2**e_d: value of one fixed-point unit per feature
    scale: Any = None  # (D,) float64 2**-e_d, on the compute device

    def chunks(self, device: torch.device) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(global chunk id, global first row, rows on device)`` for this rank's chunks."""
        src = self.source
        if src.random_access:
            for c in range(self.c_lo, self.c_hi):
                a, b = c * self.R, min((c + 1) * self.R, self.n_rows)
                yield c, a, src.rows(a, b).to(device)
        else:
            c, a = self.c_lo, self.r_lo
            for piece in src.pieces(self.R):  # type: ignore[attr-defined]
                yield c, a, piece.to(device)
                c += 1
                a += piece.shape[0]


def _chunk_rows(budget: int, K: int, D: int, itemsize: int) -> int:
    """Rows per chunk: the distance block (n, K) with its temporaries, the copy and its float64 view."""
    per_row = K * (2 * itemsize + 1) + (D + 2) * itemsize + D * (itemsize + 8) + 32
    return min(CHUNK_ROWS_MAX, _chunking.rows_per_chunk(CHUNK_ROWS_MAX, per_row, budget, what="k-means"))


def _scan(source: _Source, R: int, comm: Any) -> tuple[_Shard, torch.Tensor]:
    """Shard the data and validate this rank's rows (finite); returns the shard and max|x_d| (D,)."""
    D = source.n_features
    if source.random_access:
        N = int(source.n_rows)  # type: ignore[arg-type]
        C = max(1, -(-N // R))
        c_lo, c_hi = C * comm.rank // comm.world, C * (comm.rank + 1) // comm.world
        shard = _Shard(source, R, N, C, c_lo, c_hi, min(c_lo * R, N), min(c_hi * R, N))
    else:  # this rank's own chunks: count them, then place them after the lower ranks'
        n_loc = c_loc = 0
        for piece in source.pieces(R):  # type: ignore[attr-defined]
            n_loc += piece.shape[0]
            c_loc += 1
        counts = comm.all_gather_fixed(torch.tensor([n_loc, c_loc], dtype=torch.int64), "counting rows").tolist()
        r_lo = sum(n for n, _ in counts[: comm.rank])
        c_lo = sum(c for _, c in counts[: comm.rank])
        N = sum(n for n, _ in counts)
        C = sum(c for _, c in counts)
        shard = _Shard(source, R, N, C, c_lo, c_lo + c_loc, r_lo, r_lo + n_loc)
    bound = torch.zeros(D, dtype=torch.float64)
    bad: str | None = None
    for _, a, x in shard.chunks(torch.device("cpu")):
        finite = torch.isfinite(x).all(dim=1)  # (n,)
        if not bool(finite.all()):
            row = a + int((~finite).nonzero()[0, 0])
            bad = f"X: row {row} contains NaN or Inf; k-means needs finite data"
            break
        if x.shape[0]:
            bound = torch.maximum(bound, x.abs().amax(dim=0).to(torch.float64))
    comm.agree_error(bad, "validating the data")
    bound = comm.all_reduce_max(bound, "validating the data")
    return shard, bound


# --------------------------------------------------------------------------
# exact fixed-point accumulation
# --------------------------------------------------------------------------


def _grid_exponents(N: int, bound: torch.Tensor) -> torch.Tensor:
    """Per-feature exponent ``e_d`` with ``N * bound_d <= 2**(e_d + 61)`` (clamped to a finite range)."""
    exps = [math.frexp(N * b)[1] - 61 if b > 0 else 0 for b in bound.tolist()]
    return torch.tensor(exps, dtype=torch.int64).clamp_(-960, 960)  # (D,)


def _quantise(sums: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float64 (K, D) -> int64 multiples of 2**e_d (scale = 2**-e_d, exact powers of two)."""
    return torch.round(sums * scale).to(torch.int64)  # (K, D)


# --------------------------------------------------------------------------
# per-chunk assignment and statistics
# --------------------------------------------------------------------------


@dataclass
class _Candidates:
    """Farthest points from their centres (for empty-cluster relocation), largest first, ties by index."""

    mind: torch.Tensor  # (m,) float64
    index: torch.Tensor  # (m,) int64, global row
    label: torch.Tensor  # (m,) int64
    rows: torch.Tensor  # (m, D)

    @staticmethod
    def empty(D: int, dtype: torch.dtype) -> "_Candidates":
        return _Candidates(
            torch.empty(0, dtype=torch.float64), torch.empty(0, dtype=torch.int64),
            torch.empty(0, dtype=torch.int64), torch.empty((0, D), dtype=dtype),
        )

    def merge(self, other: "_Candidates", keep: int) -> "_Candidates":
        mind = torch.cat([self.mind, other.mind])
        index = torch.cat([self.index, other.index])
        o = torch.argsort(index, stable=True)
        o = o[torch.argsort(mind[o], descending=True, stable=True)][:keep]
        return _Candidates(mind[o], index[o], torch.cat([self.label, other.label])[o], torch.cat([self.rows, other.rows])[o])


def _top_far(mind: torch.Tensor, keep: int) -> torch.Tensor:
    """Positions of the ``keep`` largest entries of ``mind``, ties broken by position (deterministic)."""
    keep = min(keep, mind.numel())
    if keep == 0:
        return torch.empty(0, dtype=torch.int64, device=mind.device)
    thr = torch.topk(mind, keep).values[-1]
    gt = (mind > thr).nonzero().flatten()
    eq = (mind == thr).nonzero().flatten()[: keep - gt.numel()]
    return torch.cat([gt, eq])


def _assign_chunk(x: torch.Tensor, centers: torch.Tensor, budget: int, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of every row: (mind (n,), labels (n,))."""
    from .distances import _nearest_impl

    d, j = _nearest_impl(x, centers, 1, backend, budget)  # (n, 1), (n, 1)
    return d[:, 0], j[:, 0]


def _chunk_sums(x: torch.Tensor, labels: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster float64 sums (K, D) (rows added in row order) and int64 counts (K,)."""
    sums = torch.zeros((K, x.shape[1]), dtype=torch.float64, device=x.device)
    sums.index_add_(0, labels, x.to(torch.float64))  # (K, D)
    counts = torch.bincount(labels, minlength=K)  # (K,)
    return sums, counts


def _sum_f64(v: torch.Tensor) -> float:
    """Deterministic float64 sum (independent of the thread count): NumPy's pairwise sum on the CPU."""
    if v.device.type == "cpu":
        return float(np.sum(v.to(torch.float64).numpy()))
    return float(v.to(torch.float64).sum())


# --------------------------------------------------------------------------
# initialisation (from a seeded sample of global row indices: rank-count independent)
# --------------------------------------------------------------------------


def _generator(seed: Any) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(check_positive_int(seed, "seed", minimum=0))
    return g


def _sample_indices(N: int, m: int, g: torch.Generator) -> np.ndarray:
    """Sorted distinct global row indices: all rows when N <= m, else m draws with replacement, deduplicated."""
    if N <= m:
        return np.arange(N, dtype=np.int64)
    draws = torch.randint(0, N, (m,), generator=g, dtype=torch.int64)
    return np.unique(draws.numpy())


def _gather_rows(shard: _Shard, idx: np.ndarray, comm: Any) -> torch.Tensor:
    """Rows at sorted global indices ``idx`` on every rank (random access or one pass + all_gather)."""
    src = shard.source
    if src.random_access:
        return src.take(idx)
    lo, hi = np.searchsorted(idx, [shard.r_lo, shard.r_hi])
    mine = idx[lo:hi]
    parts = []
    pos = 0
    for _, a, x in shard.chunks(torch.device("cpu")):
        b = a + x.shape[0]
        j = np.searchsorted(mine, b)
        if j > pos:
            parts.append(x[torch.from_numpy(mine[pos:j] - a)])
            pos = j
    local = torch.cat(parts) if parts else torch.empty((0, src.n_features), dtype=src.dtype)
    return torch.cat(comm.all_gather_rows(local, "gathering the initialisation sample"))


def _kmeans_plusplus(X: torch.Tensor, K: int, g: torch.Generator, budget: int, backend: str) -> torch.Tensor:
    """Greedy k-means++ (as scikit-learn: 2 + log K local trials) on the rows of ``X`` (m, D)."""
    from .distances import _sqdist_2d

    m = X.shape[0]
    trials = 2 + int(math.log(K))
    centers = X.new_empty((K, X.shape[1]))
    first = int(torch.randint(0, m, (1,), generator=g))
    centers[0] = X[first]
    dist = lambda A: _sqdist_2d(A, X, "gemm", backend, torch.empty((A.shape[0], m), dtype=X.dtype), budget)  # noqa: E731
    closest = dist(X[first : first + 1])[0].to(torch.float64)  # (m,)
    for c in range(1, K):
        pot = closest.sum()
        r = torch.rand(trials, generator=g, dtype=torch.float64) * pot  # (t,)
        cand = torch.searchsorted(torch.cumsum(closest, 0), r).clamp_(max=m - 1)  # (t,)
        d = torch.minimum(closest[None, :], dist(X[cand]).to(torch.float64))  # (t, m)
        best = int(torch.argmin(d.sum(1)))
        closest = d[best]
        centers[c] = X[cand[best]]
    return centers


def _init_centers(shard: _Shard, K: int, init: Any, g: torch.Generator, comm: Any, budget: int, backend: str) -> torch.Tensor:
    N, D = shard.n_rows, shard.source.n_features
    if isinstance(init, str):
        if init not in ("k-means++", "random"):
            raise SqdistError(f"init: expected 'k-means++', 'random', a list of row indices or a ({K}, {D}) array, got {init!r}")
        m = max(SAMPLE_MIN, 20 * K)
        idx = _sample_indices(N, m, g)
        S = _gather_rows(shard, idx, comm)  # (m', D)
        if S.shape[0] < K:
            raise SqdistError(f"n_clusters: the initialisation sample has {S.shape[0]} distinct rows, fewer than n_clusters={K}")
        if init == "random":
            pick = torch.randperm(S.shape[0], generator=g)[:K]
            return S[pick].clone()
        return _kmeans_plusplus(S.to(compute_dtype(S.dtype)), K, g, budget, backend).to(S.dtype)
    arr = init.detach().cpu().numpy() if isinstance(init, torch.Tensor) else np.asarray(init)
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        if arr.shape[0] != K or len(np.unique(arr)) != K or arr.min() < 0 or arr.max() >= N:
            raise SqdistError(
                f"init: expected {K} distinct row indices in [0, {N}), got {arr.tolist() if arr.size <= 20 else describe(arr)}"
            )
        order = np.argsort(arr, kind="stable")
        rows = _gather_rows(shard, arr[order].astype(np.int64), comm)
        out = torch.empty_like(rows)
        out[torch.from_numpy(order)] = rows
        return out
    if arr.ndim == 2 and arr.shape == (K, D) and arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise SqdistError("init: the initial centres contain NaN or Inf")
        return torch.as_tensor(arr).to(shard.source.dtype).clone()
    raise SqdistError(
        f"init: expected 'k-means++', 'random', {K} row indices or a ({K}, {D}) float array, got {describe(arr)}"
    )


# --------------------------------------------------------------------------
# the Lloyd loop over chunks
# --------------------------------------------------------------------------


@dataclass
class StreamResult:
    """Result of :func:`kmeans_stream` (same fields as the in-memory k-means result).

    ``labels`` is None unless ``labels_out`` was given (then a read-only
    memory map of that ``.npy`` file) or the data was an in-memory array.
    """

    centers: Any
    labels: Any
    inertia: float
    n_iter: int
    converged: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def _one_pass(shard, centers, K, budget, backend, device, keep_far):
    """Assignment over this rank's chunks: (int64 sums+counts, chunk inertias, candidates)."""
    D = shard.source.n_features
    sums_q = torch.zeros((K, D), dtype=torch.int64)
    counts = torch.zeros(K, dtype=torch.int64)
    inertias = []
    far = _Candidates.empty(D, shard.source.dtype)
    scale = shard.scale
    for _, a, x in shard.chunks(device):
        mind, labels = _assign_chunk(x, centers, budget, backend)  # (n,), (n,)
        s, n = _chunk_sums(x, labels, K)
        sums_q += _quantise(s, scale).cpu()
        counts += n.cpu()
        inertias.append(_sum_f64(mind))
        if keep_far:
            p = _top_far(mind, keep_far)
            cand = _Candidates(mind[p].to(torch.float64).cpu(), (p + a).cpu(), labels[p].cpu(), x[p].cpu())
            far = far.merge(cand, keep_far)
    return sums_q, counts, torch.tensor(inertias, dtype=torch.float64), far


def _reduce(comm, shard, sums_q, counts, inertias):
    K, D = sums_q.shape
    packed = comm.all_reduce_sum(torch.cat([sums_q.flatten(), counts]), "the per-cluster sums")  # (K*D + K,)
    tot_sums = packed[: K * D].reshape(K, D).to(torch.float64) * shard.grid  # (K, D) float64
    tot_counts = packed[K * D :]
    all_in = torch.cat(comm.all_gather_rows(inertias, "the inertia"))  # (C,) in global chunk order
    return tot_sums, tot_counts, _sum_f64(all_in)


def _relocate(comm, sums, counts, far):
    """Empty clusters take the farthest points (from their own centres), removed from their clusters."""
    empty = (counts == 0).nonzero().flatten()  # (e,)
    if empty.numel() == 0:
        return sums, counts, []
    if comm.active:
        K = counts.numel()
        parts = comm.all_gather_rows(
            torch.cat([far.mind[:, None], far.index[:, None].double(), far.label[:, None].double(),
                       far.rows.double()], 1), "the farthest points")
        allc = torch.cat(parts)
        far = _Candidates.empty(far.rows.shape[1], far.rows.dtype).merge(
            _Candidates(allc[:, 0], allc[:, 1].long(), allc[:, 2].long(), allc[:, 3:].to(far.rows.dtype)), K)
    sums, counts = sums.clone(), counts.clone()
    relocated = []
    taken = 0
    for j in empty.tolist():  # few empty clusters; each takes the next farthest point whose cluster keeps one
        while taken < far.index.numel() and counts[int(far.label[taken])] <= 1:
            taken += 1
        if taken >= far.index.numel():
            break
        x = far.rows[taken].to(torch.float64)
        lab = int(far.label[taken])
        sums[lab] -= x
        counts[lab] -= 1
        sums[j] = x
        counts[j] = 1
        relocated.append(j)
        taken += 1
    return sums, counts, relocated


def _lloyd(shard, centers, *, K, max_iter, tol, budget, backend, device, comm, start_iter, history,
           converged, checkpoint, checkpoint_every, ckpt_fields):
    from . import _checkpoint

    it = start_iter
    while not converged and it < max_iter:
        t0 = time.perf_counter()
        sums_q, counts, inertias, far = _one_pass(shard, centers, K, budget, backend, device, keep_far=K)
        sums, counts, inertia = _reduce(comm, shard, sums_q, counts, inertias)
        sums, counts, relocated = _relocate(comm, sums, counts, far)
        nonempty = counts > 0
        new = centers.to(torch.float64).cpu().clone()  # (K, D)
        new[nonempty] = sums[nonempty] / counts[nonempty, None].to(torch.float64)
        shift = ((new - centers.to(torch.float64).cpu()) ** 2).sum(1).sqrt()  # (K,)
        max_shift = float(shift.max())
        centers = new.to(centers.dtype).to(centers.device)
        it += 1
        history.append({
            "iteration": it, "inertia": inertia, "max_shift": max_shift, "sizes": counts.tolist(),
            "relocated": relocated, "seconds": time.perf_counter() - t0,
        })
        converged = max_shift < tol or max_shift == 0.0
        if not bool(nonempty.all()):
            warnings.warn(
                f"k-means: {int((~nonempty).sum())} cluster(s) stayed empty: the data has fewer distinct points "
                f"than n_clusters={K}", RuntimeWarning, stacklevel=4)
        if checkpoint is not None and comm.rank == 0 and (it % checkpoint_every == 0 or converged or it == max_iter):
            _checkpoint.save(checkpoint, centers=centers, iteration=it, converged=converged, history=history,
                             **ckpt_fields)
    return centers, it, converged


def _final_pass(shard, centers, K, budget, backend, device, comm, labels_out, keep_labels):
    """Labels and inertia of the final centres; labels to memory or written into ``labels_out``."""
    fd = tmp = None
    header = 0
    if labels_out is not None:
        labels_out = os.fspath(labels_out)
        folder, base = os.path.split(os.path.abspath(labels_out))
        tmp = os.path.join(folder, f".{base}.partial")
        if comm.rank == 0:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int64, shape=(shard.n_rows,)).flush()
        comm.barrier("creating the labels file")
        header = np.load(tmp, mmap_mode="r").offset
        fd = os.open(tmp, os.O_WRONLY)
    labels_mem = torch.empty(shard.r_hi - shard.r_lo, dtype=torch.int64) if keep_labels else None
    inertias = []
    try:
        for _, a, x in shard.chunks(device):
            mind, labels = _assign_chunk(x, centers, budget, backend)
            inertias.append(_sum_f64(mind))
            lab = labels.cpu()
            if fd is not None:
                os.pwrite(fd, lab.numpy().tobytes(), header + 8 * a)
            if labels_mem is not None:
                labels_mem[a - shard.r_lo : a - shard.r_lo + lab.shape[0]] = lab
    finally:
        if fd is not None:
            os.fsync(fd)
            os.close(fd)
    all_in = torch.cat(comm.all_gather_rows(torch.tensor(inertias, dtype=torch.float64), "the final inertia"))
    if keep_labels and comm.active:
        labels_mem = torch.cat(comm.all_gather_rows(labels_mem, "the labels"))
    if tmp is not None:
        comm.barrier("writing the labels file")
        if comm.rank == 0:
            os.replace(tmp, labels_out)
        comm.barrier("renaming the labels file")
    return labels_mem, _sum_f64(all_in)


def kmeans_stream(
    X: Any,
    n_clusters: int,
    *,
    init: Any = "k-means++",
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: Any = None,
    working_memory: float | None = None,
    device: Any = None,
    backend: str = "auto",
    labels_out: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: str | os.PathLike | None = None,
) -> StreamResult:
    """Lloyd k-means over data streamed in chunks, on one process or on every rank of a process group.

    Parameters
    ----------
    X : str, os.PathLike, np.memmap, re-iterable of arrays of shape (n_i, D), or array of shape (N, D)
        A ``.npy`` path or memory map is read chunk by chunk (resident memory
        bounded by ``working_memory``, not by N).  Under ``torch.distributed``,
        a path, memory map or array is the *global* data (each rank reads its
        contiguous slice), while a re-iterable is *this rank's* shard (ranks in
        rank order make the global data).
    n_clusters : int
        Number of clusters K.
    init : {"k-means++", "random"}, sequence of K row indices, or array of shape (K, D)
        ``"k-means++"`` (greedy, as scikit-learn) and ``"random"`` run on a
        seeded sample of ``max(65536, 20 K)`` global row indices (all rows when
        N is smaller), the same on every rank.
    max_iter, tol : int, float
        Stop after ``max_iter`` iterations or when every centre moved less than
        ``tol`` (Euclidean distance, data units) -- or did not move at all.
    seed : int or torch.Generator, optional
    working_memory : float, optional
        MiB budget for one chunk and its temporaries (default 256).
    device : str or torch.device, optional
        Where the chunks are computed (default: the data's device, CPU for files).
    backend : {"auto", "torch", "triton"}
    labels_out : path, optional
        Write the final labels (int64) to this ``.npy`` file (atomically; under
        ``torch.distributed`` each rank writes its rows -- the folder must be
        shared, as the data is).  Without it, labels are kept only for
        in-memory input.
    checkpoint : path, optional
        Write a checkpoint every ``checkpoint_every`` iterations (rank 0,
        atomically); ``resume`` continues from one and ends with the same
        result as an uninterrupted run.

    Returns
    -------
    StreamResult
        ``centers`` (K, D) (NumPy for NumPy/file input), ``labels``, ``inertia``
        (of the final centres), ``n_iter``, ``converged``, ``history``.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> X = np.r_[np.zeros((50, 2)), np.ones((50, 2)) * 10]
    >>> chunks = [X[:30], X[30:70], X[70:]]
    >>> res = sqdist.kmeans_stream(chunks, 2, init=[0, 99])
    >>> res.centers
    array([[ 0.,  0.],
           [10., 10.]])
    >>> res.n_iter, res.converged, res.inertia
    (1, True, 0.0)
    """
    from . import _checkpoint
    from .distances import _resolve_backend
    from .distributed import _Comm

    K = check_positive_int(n_clusters, "n_clusters")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive_number(tol, "tol", allow_zero=True)
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    budget = _chunking.resolve_budget(working_memory)
    source = as_source(X)
    in_memory = isinstance(source, _ArraySource)
    if device is None:
        dev = source.t.device if in_memory else torch.device("cpu")  # type: ignore[attr-defined]
    else:
        dev = torch.device(device)
    backend = _resolve_backend(backend, dev)
    comm = _Comm()
    if comm.active and comm.backend == "nccl" and dev.type != "cuda":
        raise SqdistError(f"device: the process group uses NCCL, so compute on CUDA (device='cuda'), got {dev}")
    D = source.n_features
    cdt = compute_dtype(source.dtype)
    R = _chunk_rows(budget, K, D, torch.finfo(cdt).bits // 8)
    shard, bound = _scan(source, R, comm)
    N = shard.n_rows
    if K > N:
        raise SqdistError(f"n_clusters: expected at most the number of rows ({N}), got {K}")
    e = _grid_exponents(N, bound)
    shard.grid = torch.ldexp(torch.ones(D, dtype=torch.float64), e.double())  # (D,) 2**e_d
    shard.scale = torch.ldexp(torch.ones(D, dtype=torch.float64), (-e).double()).to(dev)  # (D,) 2**-e_d
    g = _generator(seed)
    fingerprint = {"n_rows": N, "n_features": D, "n_clusters": K, "dtype": str(source.dtype), "tol": tol,
                   "chunk_rows": R}
    if resume is not None:
        state = _checkpoint.load(resume, fingerprint)
        centers = state["centers"].to(source.dtype).to(dev)
        start, history, converged = state["iteration"], state["history"], state["converged"]
        if state["rng_state"] is not None:
            g.set_state(state["rng_state"])
    else:
        centers = _init_centers(shard, K, init, g, comm, budget, backend).to(dev)
        start, history, converged = 0, [], False
    rng_state = g.get_state()
    centers, n_iter, converged = _lloyd(
        shard, centers, K=K, max_iter=max_iter, tol=tol, budget=budget, backend=backend, device=dev, comm=comm,
        start_iter=start, history=history, converged=converged, checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, ckpt_fields={"rng_state": rng_state, "fingerprint": fingerprint},
    )
    labels, inertia = _final_pass(shard, centers, K, budget, backend, dev, comm, labels_out, keep_labels=in_memory)
    numpy_out = source.numpy_out
    if labels_out is not None and labels is None:
        labels = np.load(os.fspath(labels_out), mmap_mode="r")
    elif labels is not None and numpy_out:
        labels = labels.numpy()
    elif labels is not None:
        labels = labels.to(dev)
    out_centers = centers.cpu().numpy() if numpy_out else centers
    return StreamResult(out_centers, labels, inertia, n_iter, converged, history)


# --------------------------------------------------------------------------
# nearest over streamed data
# --------------------------------------------------------------------------


def _nearest_stream(X: Any, T: Any, k: int, working_memory: float | None, backend: str) -> tuple[Any, Any]:
    """``sqdist.nearest`` for a path, memory map or chunks: outputs (N, k) in memory, input streamed."""
    from .distances import _nearest_impl, _resolve_backend

    source = as_source(X)
    Tt, _ = as_tensor(T, "T")
    if Tt.ndim != 2 or Tt.shape[1] != source.n_features:
        raise SqdistError(f"T: expected shape (P, {source.n_features}) to match X's features, got {describe(Tt)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= Tt.shape[0]:
        raise SqdistError(f"k: expected an integer in [1, {Tt.shape[0]}] (the number of rows of T), got {k!r}")
    dev = Tt.device
    backend = _resolve_backend(backend, dev)
    budget = _chunking.resolve_budget(working_memory)
    item = torch.finfo(compute_dtype(source.dtype)).bits // 8
    R = _chunk_rows(budget, Tt.shape[0], source.n_features, item)
    if source.random_access:
        pieces = (source.rows(a, min(a + R, source.n_rows)) for a in range(0, source.n_rows, R))
    else:
        pieces = source.pieces(R)  # type: ignore[attr-defined]
    ds, js = [], []
    for x in pieces:
        d, j = _nearest_impl(x.to(dev), Tt, int(k), backend, budget)  # (n, k), (n, k)
        ds.append(d)
        js.append(j)
    d = torch.cat(ds) if ds else torch.empty((0, k), dtype=torch.promote_types(source.dtype, Tt.dtype))
    j = torch.cat(js) if js else torch.empty((0, k), dtype=torch.int64)
    if source.numpy_out and not isinstance(T, torch.Tensor):
        return d.cpu().numpy(), j.cpu().numpy()
    return d, j
