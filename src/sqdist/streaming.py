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
feature maximum), one for the initial assignment and -- only when labels are
asked for -- one that writes the labels of the final centres.

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
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _chunking
from ._validation import SqdistError, as_tensor, check_positive_int, compute_dtype, describe

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
    if isinstance(X, (np.ndarray, torch.Tensor)) or hasattr(X, "__array__") or hasattr(X, "__array_interface__"):
        return False  # arrays and array-likes (DataFrames, ...) are in memory
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(_is_chunk(c) for c in X)
    return isinstance(X, Iterable) and not isinstance(X, (bytes, dict))


_TRIM: list = []


def _malloc_trim() -> None:
    """Call glibc's ``malloc_trim(0)`` (nothing on other C libraries).

    glibc raises its mmap threshold after large blocks are freed, so the
    chunk-sized temporaries of a long pass end up in the heap and stay
    there; trimming after every chunk hands them back, which keeps the
    resident set of a streamed pass at a few chunks (measured: without it a
    96 MB file grew the peak resident set by 150 MB, with it by 17 MB).
    """
    if not _TRIM:
        fn = None
        if sys.platform.startswith("linux"):
            import ctypes

            try:
                fn = ctypes.CDLL(None).malloc_trim
                fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):  # not glibc
                fn = None
        _TRIM.append(fn)
    if _TRIM[0] is not None:
        _TRIM[0](0)


class _Source:
    """Rows of a data set, readable by global row ranges (files, arrays) or sequentially (iterables)."""

    n_rows: int | None
    n_features: int
    dtype: torch.dtype  # dtype of the tensors produced
    numpy_out: bool
    random_access = True

    def rows(self, a: int, b: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def take(self, idx: np.ndarray, max_rows: int) -> torch.Tensor:
        """Rows at sorted global indices ``idx``, read in spans of at most ``max_rows`` rows."""
        parts = []
        i = 0
        while i < len(idx):  # one span per iteration: at most len(idx) spans
            a = int(idx[i])
            j = int(np.searchsorted(idx, a + max_rows, side="left"))
            b = int(idx[j - 1]) + 1
            parts.append(self.rows(a, b)[torch.from_numpy(idx[i:j] - a)])
            i = j
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
                raise SqdistError(f"{name}: {path!r} is not a valid .npy array file ({exc})") from None
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
        # pages are only released from read-only or shared maps ("r", "r+"): never from a
        # copy-on-write map ("c"), whose private changes would be lost
        releasable = mm.flags.c_contiguous and getattr(mm, "mode", None) in ("r", "r+")
        self._mmap = getattr(mm, "_mmap", None) if releasable else None
        self._base = None
        if self._mmap is not None and hasattr(self._mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._base = np.frombuffer(self._mmap, dtype=np.uint8).ctypes.data
        self._row_bytes = mm.dtype.itemsize * self.n_features

    def rows(self, a: int, b: int) -> torch.Tensor:
        chunk = np.array(self.mm[a:b], dtype=self.np_dtype, order="C")  # copy out of the map
        self._advise(mmap.MADV_DONTNEED if self._base is not None else None, a, b)  # release what was read
        self._advise(getattr(mmap, "MADV_WILLNEED", None), b, min(b + (b - a), self.n_rows))  # read ahead
        return torch.from_numpy(chunk)

    def _advise(self, option: int | None, a: int, b: int) -> None:
        if option is None or self._base is None or b <= a:
            return
        start = self.mm.ctypes.data + a * self._row_bytes - self._base
        stop = start + (b - a) * self._row_bytes
        lo = (start // _PAGE) * _PAGE
        hi = min(-(-stop // _PAGE) * _PAGE, len(self._mmap))
        if hi > lo:
            self._mmap.madvise(option, lo, hi - lo)


class _IterSource(_Source):
    """A re-iterable of (n_i, D) chunks (each element converted like any array input)."""

    random_access = False

    def __init__(self, X: Any, name: str):
        it = iter(X)
        if it is X:
            raise SqdistError(
                f"{name}: got a one-shot iterator ({type(X).__name__}); k-means reads the data once per "
                f"iteration, so pass a re-iterable (a list of chunks, or an object whose __iter__ returns a "
                f"fresh iterator each time)"
            )
        self.X = X
        self.name = name
        self.n_rows = None
        first = next(it, None)
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
    if isinstance(X, _Source):
        return X
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
    dtype: Any = None  # dtype the chunks are cast to (None: the source's)

    def chunks(self, device: torch.device) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(global chunk id, global first row, rows on device)`` for this rank's chunks."""
        src = self.source
        trim = _malloc_trim if isinstance(src, _NpySource) else None  # out-of-core: keep the heap small
        if src.random_access:
            for c in range(self.c_lo, self.c_hi):
                a, b = c * self.R, min((c + 1) * self.R, self.n_rows)
                yield c, a, src.rows(a, b).to(device=device, dtype=src.dtype if self.dtype is None else self.dtype)
                if trim is not None:
                    trim()
        else:
            c, a = self.c_lo, self.r_lo
            for piece in src.pieces(self.R):  # type: ignore[attr-defined]
                yield c, a, piece.to(device=device, dtype=src.dtype if self.dtype is None else self.dtype)
                c += 1
                a += piece.shape[0]


def _chunk_rows(budget: int, K: int, D: int, itemsize: int) -> int:
    """Rows per chunk: the distance block (n, K) with its temporaries, the copy and its float64 view."""
    per_row = K * (2 * itemsize + 1) + (D + 2) * itemsize + D * (itemsize + 8) + 32
    return _chunking.rows_per_chunk(CHUNK_ROWS_MAX, per_row, budget, what="k-means")  # at most CHUNK_ROWS_MAX


def _scan(source: _Source, R: int, comm: Any) -> tuple[_Shard, torch.Tensor]:
    """Shard the data and validate this rank's rows (finite) in one pass; returns the shard and max|x_d| (D,)."""
    D = source.n_features
    # validate where the data already is: a CUDA tensor on its GPU (no copy to the host), files on the CPU
    where = source.t.device if isinstance(source, _ArraySource) else torch.device("cpu")
    if source.random_access:
        N = int(source.n_rows)  # type: ignore[arg-type]
        C = max(1, -(-N // R))
        c_lo, c_hi = C * comm.rank // comm.world, C * (comm.rank + 1) // comm.world
        shard = _Shard(source, R, N, C, c_lo, c_hi, min(c_lo * R, N), min(c_hi * R, N))
        pieces = ((a, x) for _, a, x in shard.chunks(where))
    else:  # this rank's own chunks, counted in this pass and placed after the lower ranks' afterwards
        shard = None
        pieces = _numbered(source.pieces(R))  # type: ignore[attr-defined]
    bound = torch.zeros(D, dtype=torch.float64, device=where)
    bad = None  # first non-finite row, local to this rank's rows
    n_loc = c_loc = 0
    for a, x in pieces:
        n_loc, c_loc = a + x.shape[0], c_loc + 1
        finite = torch.isfinite(x).all(dim=1)  # (n,)
        if not bool(finite.all()):
            bad = a + int((~finite).nonzero()[0, 0])
            break
        if x.shape[0]:
            bound = torch.maximum(bound, x.abs().amax(dim=0).to(device=where, dtype=torch.float64))
    if shard is None:
        counts = comm.all_gather_fixed(torch.tensor([n_loc, c_loc], dtype=torch.int64), "counting rows").tolist()
        r_lo = sum(n for n, _ in counts[: comm.rank])
        c_lo = sum(c for _, c in counts[: comm.rank])
        shard = _Shard(source, R, sum(n for n, _ in counts), sum(c for _, c in counts), c_lo, c_lo + c_loc,
                       r_lo, r_lo + n_loc)
        if bad is not None:
            bad += r_lo
    comm.agree_error(None if bad is None else f"X: row {bad} contains NaN or Inf; k-means needs finite data",
                     "validating the data")
    bound = comm.all_reduce_max(bound.cpu(), "validating the data")  # (D,), one small copy
    return shard, bound


def _numbered(pieces: Iterator[torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
    a = 0
    for x in pieces:
        yield a, x
        a += x.shape[0]


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
# one pass over this rank's chunks, reduced over the ranks
# --------------------------------------------------------------------------


def _sum_f64(v: torch.Tensor) -> float:
    """Deterministic float64 sum of a 1-D tensor (NumPy's pairwise sum; same array -> same bits)."""
    return float(np.sum(v.detach().to(torch.float64).cpu().numpy()))


def _keep_far(d, idx, x, lab, K):
    """The K farthest candidates (distance descending, then global row ascending)."""
    from .kmeans import _order_far

    sel = _order_far(d, idx)[:K]
    return d[sel], idx[sel], x[sel], lab[sel]


def _pass(shard: _Shard, C: torch.Tensor, K: int, budget: int, backend: str, device: torch.device, comm: Any,
          sink: Any = None):
    """Assign this rank's chunks to ``C`` and reduce over ranks: a ``_Stats`` without labels.

    Sums are added as exact fixed-point integers, the inertia per chunk in
    global chunk order, the farthest-point candidates by (distance, row) --
    all independent of how the chunks are spread over ranks.  ``sink(a,
    labels)`` receives the labels of the chunk starting at global row ``a``.
    """
    from .kmeans import _assign_accumulate, _Stats

    D = shard.source.n_features
    sums_q = torch.zeros((K, D), dtype=torch.int64, device=device)  # (K, D)
    counts = torch.zeros(K, dtype=torch.int64, device=device)  # (K,)
    inertias = []
    far = (torch.zeros(0, dtype=torch.float64, device=device), torch.zeros(0, dtype=torch.int64, device=device),
           torch.zeros((0, D), dtype=C.dtype, device=device), torch.zeros(0, dtype=torch.int64, device=device))
    for _, a, x in shard.chunks(device):
        st = _assign_accumulate(x, C, budget=budget, backend=backend, offset=a)
        sums_q += _quantise(st.sums, shard.scale)
        counts += st.counts
        inertias.append(st.inertia.reshape(1))
        far = _keep_far(torch.cat([far[0], st.far_d]), torch.cat([far[1], st.far_idx]),
                        torch.cat([far[2], st.far_x]), torch.cat([far[3], st.far_label]), K)
        if sink is not None:
            sink(a, st.labels)
    local_in = torch.cat(inertias).cpu() if inertias else torch.zeros(0, dtype=torch.float64)
    packed = comm.all_reduce_sum(torch.cat([sums_q.flatten(), counts]).cpu(), "the per-cluster sums")  # (K*D + K,)
    tot_sums = packed[: K * D].reshape(K, D).to(torch.float64) * shard.grid  # (K, D)
    tot_counts = packed[K * D :]
    inertia = _sum_f64(torch.cat(comm.all_gather_rows(local_in, "the inertia")))  # global chunk order
    if comm.active and bool((tot_counts == 0).any()):  # empty clusters: everyone needs the global farthest points
        rows = torch.cat([far[0][:, None], far[1][:, None].double(), far[3][:, None].double(),
                          far[2].double()], 1).cpu()  # (m, 3 + D)
        allc = torch.cat(comm.all_gather_rows(rows, "the farthest points"))
        far = _keep_far(allc[:, 0], allc[:, 1].long(), allc[:, 3:].to(C.dtype), allc[:, 2].long(), K)
        far = tuple(t.to(device) for t in far)
    none = torch.zeros(0, dtype=torch.int64, device=device)
    return _Stats(none, none.to(C.dtype), tot_sums.to(device), tot_counts.to(device),
                  torch.tensor(inertia, dtype=torch.float64), far[0], far[1], far[2], far[3])


# --------------------------------------------------------------------------
# initialisation (from a seeded sample of global row indices: rank-count independent)
# --------------------------------------------------------------------------


def _sample_indices(N: int, m: int, g: torch.Generator) -> np.ndarray:
    """Sorted distinct global row indices: all rows when N <= m, else m draws with replacement, deduplicated."""
    if N <= m:
        return np.arange(N, dtype=np.int64)
    draws = torch.randint(0, N, (m,), generator=g, dtype=torch.int64)
    return np.unique(draws.numpy())


def _gather_rows(shard: _Shard, idx: np.ndarray, comm: Any) -> torch.Tensor:
    """Rows at sorted global indices ``idx``, on every rank (random access, or one pass + all_gather)."""
    src = shard.source
    if src.random_access:
        return src.take(idx, shard.R).to(shard.dtype)
    lo, hi = np.searchsorted(idx, [shard.r_lo, shard.r_hi])
    mine = idx[lo:hi]
    parts = []
    pos = 0
    for _, a, x in shard.chunks(torch.device("cpu")):
        j = int(np.searchsorted(mine, a + x.shape[0]))
        if j > pos:
            parts.append(x[torch.from_numpy(mine[pos:j] - a)])
            pos = j
    local = torch.cat(parts) if parts else torch.empty((0, src.n_features), dtype=shard.dtype)
    return torch.cat(comm.all_gather_rows(local, "gathering the initialisation sample"))


def _n_clusters_of(init: Any, n_clusters: Any) -> int:
    """K from ``n_clusters`` or from an explicit init (needed before the data is scanned)."""
    if not isinstance(init, str):
        arr = init.detach().cpu().numpy() if isinstance(init, torch.Tensor) else np.asarray(init)
        if arr.ndim in (1, 2) and arr.shape[0] > 0:
            return int(arr.shape[0])
    if n_clusters is None:
        raise SqdistError(f"n_clusters: required with init={init!r}, got None")
    return check_positive_int(n_clusters, "n_clusters")


def _initial_centers(shard: _Shard, init: Any, K: int, gen: torch.Generator, comm: Any, budget: int,
                     cdtype: torch.dtype) -> torch.Tensor:
    """Initial centres (K, D), identical on every rank; ``init`` as parsed by ``kmeans._parse_init``."""
    from .kmeans import _initial_centers as _init_in_memory

    if isinstance(init, tuple):  # explicit centres
        return init[1].to(cdtype).clone()
    if isinstance(init, torch.Tensor):  # global row indices
        arr = init.cpu().numpy()
        order = np.argsort(arr, kind="stable")
        rows = _gather_rows(shard, arr[order], comm)
        out = torch.empty_like(rows)
        out[torch.from_numpy(order)] = rows
        return out.to(cdtype)
    idx = _sample_indices(shard.n_rows, max(SAMPLE_MIN, 20 * K), gen)
    S = _gather_rows(shard, idx, comm)  # (m, D): all rows when N <= m -> the in-memory initialisation
    if S.shape[0] < K:
        raise SqdistError(f"n_clusters: the initialisation sample has {S.shape[0]} rows, fewer than n_clusters={K}")
    return _init_in_memory(S, init, K, gen, budget, cdtype)


# --------------------------------------------------------------------------
# the Lloyd loop over chunks
# --------------------------------------------------------------------------


def _lloyd(shard, C, *, K, max_iter, tol, budget, backend, device, comm, was_numpy, state, checkpoint,
           checkpoint_every, ckpt_fields):
    """As ``kmeans._lloyd`` (same stopping rule, same history), one pass per iteration."""
    from . import _checkpoint
    from .kmeans import _history_entry, _max_shift, _plan_relocation, _update_centers

    t0 = time.perf_counter()
    stats = _pass(shard, C, K, budget, backend, device, comm)
    if state is None:
        history = [_history_entry(0, C, stats, 0.0, torch.zeros(0, dtype=torch.int64), time.perf_counter() - t0,
                                  was_numpy)]
        start, converged = 0, False
    else:
        history, start, converged = state["history"], state["iteration"], state["converged"]
    n_iter = start
    for it in range(start + 1, max_iter + 1):
        if converged:
            break
        t0 = time.perf_counter()
        C_new, relocated, _ = _update_centers(stats, C)
        max_shift = _max_shift(C_new, C)  # the in-memory loop's rule, bit for bit
        new = _pass(shard, C_new, K, budget, backend, device, comm)
        # the assignment did not change -> same sums and counts (and vice versa, but for exact ties)
        fixed = bool(torch.equal(new.counts, stats.counts) and torch.equal(new.sums, stats.sums))
        C, stats = C_new, new
        n_iter = it
        history.append(_history_entry(it, C, stats, max_shift, relocated, time.perf_counter() - t0, was_numpy))
        converged = (max_shift < tol or fixed) and _plan_relocation(stats)[0].numel() == 0
        if checkpoint is not None and comm.rank == 0 and (it % checkpoint_every == 0 or converged or it == max_iter):
            _checkpoint.save(checkpoint, centers=C, iteration=it, converged=converged, history=history, **ckpt_fields)
    return C, stats, n_iter, converged, history


def _labels_pass(shard, C, K, budget, backend, device, comm, labels_out, keep):
    """Labels of the final centres: into ``labels_out`` (.npy, every rank writes its rows) and/or memory."""
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
    mem = torch.empty(shard.r_hi - shard.r_lo, dtype=torch.int64) if keep else None

    def sink(a: int, lab: torch.Tensor) -> None:
        lab = lab.cpu()
        if fd is not None:
            os.pwrite(fd, lab.numpy().tobytes(), header + 8 * a)
        if mem is not None:
            mem[a - shard.r_lo : a - shard.r_lo + lab.shape[0]] = lab

    try:
        _pass(shard, C, K, budget, backend, device, comm, sink=sink)
    finally:
        if fd is not None:
            os.fsync(fd)
            os.close(fd)
    if mem is not None and comm.active:
        mem = torch.cat(comm.all_gather_rows(mem, "the labels"))
    if tmp is not None:
        comm.barrier("writing the labels file")
        if comm.rank == 0:
            os.replace(tmp, labels_out)
        comm.barrier("renaming the labels file")
    return mem


def _open_shard(source: _Source, K: int, budget: int, dtype: Any, dev: torch.device, comm: Any) -> _Shard:
    """Chunk grid, this rank's shard, validation scan and the fixed-point grid: ready for ``_pass``."""
    D = source.n_features
    ddtype = source.dtype if dtype is None else dtype
    R = _chunk_rows(budget, K, D, torch.finfo(compute_dtype(ddtype)).bits // 8)
    shard, bound = _scan(source, R, comm)
    shard.dtype = ddtype
    if shard.n_rows == 0 or D == 0:
        raise SqdistError(f"X: expected at least one point and one feature, got {shard.n_rows} x {D}")
    e = _grid_exponents(shard.n_rows, bound)
    shard.grid = torch.ldexp(torch.ones(D, dtype=torch.float64), e.double())  # (D,) 2**e_d
    shard.scale = torch.ldexp(torch.ones(D, dtype=torch.float64), (-e).double()).to(dev)  # (D,) 2**-e_d
    return shard


def _fit(X, n_clusters, *, init, n_init, max_iter, tol, seed, working_memory, backend, device, dtype, labels_out,
         checkpoint, checkpoint_every, resume, keep_labels=None):
    """Validated streaming / distributed k-means; returns a ``KMeansResult``."""
    from . import _checkpoint
    from .distances import _resolve_backend
    from .distributed import _Comm
    from .kmeans import KMeansResult, _parse_init, _runs, _warn_if_empty
    from ._validation import check_positive_number, make_generator

    K = _n_clusters_of(init, n_clusters)
    n_init = check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive_number(tol, "tol", allow_zero=True)
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    budget = _chunking.resolve_budget(working_memory)
    source = as_source(X)
    in_memory = isinstance(source, _ArraySource)
    dev = torch.device(device) if device is not None else (source.t.device if in_memory else torch.device("cpu"))
    backend = _resolve_backend(backend, dev)
    comm = _Comm()
    if comm.active and comm.backend == "nccl" and dev.type != "cuda":
        raise SqdistError(f"device: the process group uses NCCL, so compute on CUDA (device='cuda'), got {dev}")
    shard = _open_shard(source, K, budget, dtype, dev, comm)
    N, D, R, ddtype = shard.n_rows, source.n_features, shard.R, shard.dtype
    cdtype = compute_dtype(ddtype)
    init_k, K = _parse_init(init, n_clusters, torch.zeros((1, D), dtype=ddtype).expand(N, D))
    n_init = _runs(init_k, n_init, stacklevel=4)
    if n_init != 1 and (checkpoint is not None or resume is not None):
        raise SqdistError(f"n_init: checkpoints and resume need n_init=1, got n_init={n_init}")
    gen = make_generator(seed)
    was_numpy = source.numpy_out
    fp = {"n_rows": N, "n_features": D, "n_clusters": K, "dtype": str(cdtype), "tol": tol, "chunk_rows": R}
    best = None
    for _ in range(n_init):
        state = None
        if resume is not None:
            state = _checkpoint.load(resume, fp, was_numpy)
            C0 = state["init_centers"].to(device=dev, dtype=cdtype)
            C = state["centers"].to(device=dev, dtype=cdtype)
            if state["rng_state"] is not None:
                gen.set_state(state["rng_state"])
        else:
            C0 = _initial_centers(shard, init_k, K, gen, comm, budget, cdtype).to(dev)
            C = C0
        ckpt = {"rng_state": gen.get_state(), "fingerprint": fp, "init_centers": C0}
        C, stats, n_iter, converged, history = _lloyd(
            shard, C, K=K, max_iter=max_iter, tol=tol, budget=budget, backend=backend, device=dev, comm=comm,
            was_numpy=was_numpy, state=state, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
            ckpt_fields=ckpt)
        if best is None or float(stats.inertia) < float(best[1].inertia):
            best = (C, stats, n_iter, converged, history, C0)
    C, stats, n_iter, converged, history, C0 = best
    _warn_if_empty(stats.counts, K, stacklevel=4)
    keep = in_memory if keep_labels is None else keep_labels
    labels = None
    if keep or labels_out is not None:
        labels = _labels_pass(shard, C, K, budget, backend, dev, comm, labels_out, keep)
    if labels is None and labels_out is not None:
        labels = np.load(os.fspath(labels_out), mmap_mode="r")
    elif labels is not None:
        labels = labels.numpy() if was_numpy else labels.to(dev)
    conv = (lambda t: t.cpu().numpy()) if was_numpy else (lambda t: t)
    return KMeansResult(centers=conv(C), labels=labels, inertia=float(stats.inertia), n_iter=n_iter,
                        converged=converged, history=history, init_centers=conv(C0))


def kmeans_stream(
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
    device: Any = None,
    labels_out: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: str | os.PathLike | None = None,
) -> Any:
    """Lloyd k-means over data streamed in chunks, on one process or on every rank of a process group.

    :func:`sqdist.kmeans` calls this for a path, memory map or re-iterable
    of chunks, and whenever a ``torch.distributed`` process group is
    initialised; call it directly for the options below.  Same algorithm,
    stopping rule, empty-cluster policy and history as :func:`sqdist.kmeans`.

    Parameters
    ----------
    X : str, os.PathLike, np.memmap, re-iterable of arrays of shape (n_i, D), or array of shape (N, D)
        A ``.npy`` path or memory map is read chunk by chunk: resident memory
        is bounded by ``working_memory``, not by N.  Under ``torch.distributed``
        a path, memory map or array is the *global* data (each rank reads its
        contiguous slice of whole chunks), a re-iterable is *this rank's*
        shard (the ranks' shards in rank order make the global data).
    n_clusters, init, n_init, max_iter, tol, seed, working_memory, backend
        As in :func:`sqdist.kmeans`.  ``"k-means++"`` and ``"random"`` run on a
        seeded sample of ``max(65536, 20 K)`` global row indices (all rows when
        N is smaller -- then the initial centres are those of
        :func:`sqdist.kmeans`), the same on every rank.
    device : str or torch.device, optional
        Where chunks are computed (default: the data's device; CPU for files).
    labels_out : path, optional
        Write the final labels (int64 ``.npy``, atomically).  Under
        ``torch.distributed`` each rank writes its rows, so the folder must be
        shared (as the data file is).  Without it, labels are returned only
        for in-memory input; ``labels`` is then None.
    checkpoint : path, optional
        Rank 0 writes the state every ``checkpoint_every`` iterations and at the
        end (``.npz``, temporary file + rename).
    resume : path, optional
        Continue from a checkpoint of the same data and settings; the result
        equals that of an uninterrupted run.

    Returns
    -------
    KMeansResult
        NumPy for file / NumPy input, tensors for tensor input.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> X = np.r_[np.zeros((50, 2)), np.full((50, 2), 10.0)]
    >>> chunks = [X[:30], X[30:70], X[70:]]            # any re-iterable of (n_i, D) blocks
    >>> r = sqdist.kmeans_stream(chunks, 2, init=[0, 99])
    >>> r.centers.tolist(), r.inertia, r.n_iter, r.converged
    ([[0.0, 0.0], [10.0, 10.0]], 0.0, 1, True)
    """
    return _fit(X, n_clusters, init=init, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed,
                working_memory=working_memory, backend=backend, device=device, dtype=None, labels_out=labels_out,
                checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume)


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
        del x, d, j
        if isinstance(source, _NpySource):
            _malloc_trim()
    d = torch.cat(ds) if ds else torch.empty((0, k), dtype=torch.promote_types(source.dtype, Tt.dtype))
    j = torch.cat(js) if js else torch.empty((0, k), dtype=torch.int64)
    if source.numpy_out and not isinstance(T, torch.Tensor):
        return d.cpu().numpy(), j.cpu().numpy()
    return d, j
