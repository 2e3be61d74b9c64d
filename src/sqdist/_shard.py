"""The chunk grid of streamed data, this rank's shard of it, and exact order-independent sums.

Every rank holds a *shard*: a contiguous range of whole global chunks of
``R`` rows (:func:`sqdist._sources.chunk_rows`, fixed by the data and the
budget, never by the number of ranks).

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

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._comm import Comm
from ._files import open_npy
from ._numerics import block_moments, merge_moments
from ._sources import ArraySource, Source, chunk_rows
from ._validation import SqdistError, compute_dtype

__all__ = ["Shard", "feature_variance", "gather_rows", "open_shard", "quantise", "sample_indices"]


@dataclass
class Shard:
    """This rank's chunks: global chunk ids ``[c_lo, c_hi)`` and rows ``[r_lo, r_hi)``."""

    source: Source
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
    weights: Any = None  # (N,) global sample weights (array, memory map or tensor), None for unit weights
    wgrid: float = 1.0  # value of one fixed-point unit of the clusters' weights
    wscale: float = 1.0  # its inverse
    weights_digest: str | None = None  # SHA-256 of the global weights (None: unit weights)

    def weights_of(self, a: int, b: int, device: torch.device) -> torch.Tensor | None:
        """float64 sample weights of global rows ``[a, b)`` on ``device``, or None for unit weights."""
        if self.weights is None:
            return None
        w = self.weights[a:b]
        if not isinstance(w, torch.Tensor):  # a copy: memory-mapped slices are read-only
            w = torch.from_numpy(np.array(w, dtype=np.float64))
        return w.to(device=device, dtype=torch.float64)

    def weights_at(self, idx: np.ndarray) -> torch.Tensor | None:
        """float64 sample weights of the global rows ``idx`` (CPU), or None for unit weights."""
        if self.weights is None:
            return None
        if isinstance(self.weights, torch.Tensor):
            return self.weights[torch.from_numpy(idx).to(self.weights.device)].to(device="cpu", dtype=torch.float64)
        return torch.from_numpy(np.array(self.weights[idx], dtype=np.float64))

    def chunks(self, device: torch.device) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(global chunk id, global first row, rows on device)`` for this rank's chunks."""
        src = self.source
        if src.random_access:
            for c in range(self.c_lo, self.c_hi):
                a, b = c * self.R, min((c + 1) * self.R, self.n_rows)
                yield c, a, src.rows(a, b).to(device=device, dtype=src.dtype if self.dtype is None else self.dtype)
                src.release()  # out-of-core: keep the heap small
        else:
            c, a = self.c_lo, self.r_lo
            for piece in src.pieces(self.R):  # type: ignore[attr-defined]
                yield c, a, piece.to(device=device, dtype=src.dtype if self.dtype is None else self.dtype)
                c += 1
                a += piece.shape[0]


def scan(source: Source, R: int, comm: Comm) -> tuple[Shard, torch.Tensor]:
    """Shard the data and validate this rank's rows (finite) in one pass; returns the shard and max|x_d| (D,).

    The same pass fingerprints the content (``shard.content``, a hex SHA-256
    that a checkpoint stores and a resume compares): for random-access data
    (files, memory maps, arrays) a SHA-256 of every global chunk's bytes,
    combined in global chunk order -- independent of the number of ranks; for
    an iterable of chunks a running SHA-256 of each rank's rows, combined in
    rank order.  The shape, dtype and chunk rows are hashed with them.
    """
    D = source.n_features
    # validate where the data already is: a CUDA tensor on its GPU (no copy to the host), files on the CPU
    where = source.t.device if isinstance(source, ArraySource) else torch.device("cpu")
    if source.random_access:
        N = int(source.n_rows)  # type: ignore[arg-type]
        C = max(1, -(-N // R))
        c_lo, c_hi = C * comm.rank // comm.world, C * (comm.rank + 1) // comm.world
        shard = Shard(source, R, N, C, c_lo, c_hi, min(c_lo * R, N), min(c_hi * R, N))
        pieces = ((a, x) for _, a, x in shard.chunks(where))
    else:  # this rank's own chunks, counted in this pass and placed after the lower ranks' afterwards
        shard = None
        pieces = _numbered(source.pieces(R))  # type: ignore[attr-defined]
    bound = torch.zeros(D, dtype=torch.float64, device=where)
    bad = None  # first non-finite row, local to this rank's rows
    n_loc = c_loc = 0
    running = hashlib.sha256()  # iterables: this rank's rows, whatever their split into pieces
    digests = []  # random access: one digest per global chunk
    for a, x in pieces:
        n_loc, c_loc = a + x.shape[0], c_loc + 1
        finite = torch.isfinite(x).all(dim=1)  # (n,)
        if not bool(finite.all()):
            bad = a + int((~finite).nonzero()[0, 0])
            break
        if x.shape[0]:
            bound = torch.maximum(bound, x.abs().amax(dim=0).to(device=where, dtype=torch.float64))
        raw = x.detach().contiguous().cpu().view(torch.uint8).numpy() if x.numel() else b""
        if source.random_access:
            digests.append(hashlib.sha256(raw).digest())
        else:
            running.update(raw)
    if shard is None:
        counts = comm.all_gather_fixed(torch.tensor([n_loc, c_loc], dtype=torch.int64), "counting rows").tolist()
        r_lo = sum(n for n, _ in counts[: comm.rank])
        c_lo = sum(c for _, c in counts[: comm.rank])
        shard = Shard(source, R, sum(n for n, _ in counts), sum(c for _, c in counts), c_lo, c_lo + c_loc,
                       r_lo, r_lo + n_loc)
        if bad is not None:
            bad += r_lo
    comm.agree_error(None if bad is None else f"X: row {bad} contains NaN or Inf; k-means needs finite data",
                     "validating the data")
    bound = comm.all_reduce_max(bound.cpu(), "validating the data")  # (D,), one small copy
    mine = digests if source.random_access else [running.digest()]
    local = torch.from_numpy(np.frombuffer(b"".join(mine), dtype=np.int64).reshape(-1, 4).copy())  # (m, 4)
    every = torch.cat(comm.all_gather_rows(local, "fingerprinting the data"))  # rank order = global chunk order
    scheme = f"chunks of {R}" if source.random_access else f"ranks {comm.world}"
    head = f"sqdist data {shard.n_rows}x{D} {source.dtype} {scheme}\n".encode()
    shard.content = hashlib.sha256(head + every.numpy().tobytes()).hexdigest()
    return shard, bound


def _numbered(pieces: Iterator[torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
    a = 0
    for x in pieces:
        yield a, x
        a += x.shape[0]


def grid_exponents(N: int, bound: torch.Tensor) -> torch.Tensor:
    """Per-feature exponent ``e_d`` with ``N * bound_d <= 2**(e_d + 61)`` (clamped to a finite range)."""
    exps = [math.frexp(N * b)[1] - 61 if b > 0 else 0 for b in bound.tolist()]
    return torch.tensor(exps, dtype=torch.int64).clamp_(-960, 960)  # (D,)


def quantise(sums: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float64 (K, D) -> int64 multiples of 2**e_d (scale = 2**-e_d, exact powers of two)."""
    return torch.round(sums * scale).to(torch.int64)  # (K, D)


def sample_indices(N: int, m: int, g: torch.Generator) -> np.ndarray:
    """Sorted distinct global row indices: all rows when N <= m, else m draws with replacement, deduplicated."""
    if N <= m:
        return np.arange(N, dtype=np.int64)
    draws = torch.randint(0, N, (m,), generator=g, dtype=torch.int64)
    return np.unique(draws.numpy())


def gather_rows(shard: Shard, idx: np.ndarray, comm: Comm) -> torch.Tensor:
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


def open_shard(source: Source, K: int, budget: int, dtype: Any, dev: torch.device, comm: Comm,
               sample_weight: Any = None) -> Shard:
    """Chunk grid, this rank's shard, validation scan and the fixed-point grid: ready for a pass."""
    D = source.n_features
    ddtype = source.dtype if dtype is None else dtype
    R = chunk_rows(budget, K, D, torch.finfo(compute_dtype(ddtype)).bits // 8)
    shard, bound = scan(source, R, comm)
    shard.dtype = ddtype
    if shard.n_rows == 0 or D == 0:
        raise SqdistError(f"X: expected at least one point and one feature, got {shard.n_rows} x {D}")
    if sample_weight is not None:
        wmax = _open_weights(shard, sample_weight, comm)
        if shard.weights is not None:  # weighted sums: |sum_i w_i x_id| <= N max(w) max|x_d|
            bound = bound * wmax
            ew = grid_exponents(shard.n_rows, torch.tensor([wmax], dtype=torch.float64))[0]
            shard.wgrid, shard.wscale = math.ldexp(1.0, int(ew)), math.ldexp(1.0, -int(ew))
    e = grid_exponents(shard.n_rows, bound)
    shard.grid = torch.ldexp(torch.ones(D, dtype=torch.float64), e.double())  # (D,) 2**e_d
    shard.scale = torch.ldexp(torch.ones(D, dtype=torch.float64), (-e).double()).to(dev)  # (D,) 2**-e_d
    return shard


def _open_weights(shard: Shard, sample_weight: Any, comm: Comm) -> float:
    """Attach the global sample weights to ``shard`` after checking them (finite, >= 0, some weight
    positive) and taking their digest (checkpoints refuse other weights); unit weights are dropped
    (the unweighted path, same bits).  Returns the largest weight."""
    if not shard.source.random_access:
        raise SqdistError("sample_weight: not supported with an iterable of chunks; pass the data as a .npy file "
                          "or an array, with the weights as an array or a .npy file of one weight per row")
    w = sample_weight
    if isinstance(w, (str, os.PathLike)):
        w = open_npy(w, "sample_weight", mmap=True)
    elif not isinstance(w, (np.ndarray, torch.Tensor)):
        w = np.asarray(w, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != shard.n_rows or (isinstance(w, np.ndarray) and w.dtype.kind not in "fiub"):
        raise SqdistError(f"sample_weight: expected {shard.n_rows} numeric weights, one per row, got "
                          f"{type(w).__name__} of shape {tuple(w.shape)}")
    shard.weights = w
    bad, wmax, unit = False, 0.0, True
    digest = hashlib.sha256()  # of every weight in global order: the same on every rank (weights are global)
    for a in range(0, shard.n_rows, 1 << 20):  # N floats, read by every rank
        v = shard.weights_of(a, min(a + (1 << 20), shard.n_rows), torch.device("cpu"))
        digest.update(v.numpy().tobytes())
        if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
            bad = True
            break
        if v.numel():
            wmax = max(wmax, float(v.max()))
            unit = unit and bool((v == 1).all())
    comm.agree_error("sample_weight: expected finite weights >= 0, got NaN, Inf or a negative weight" if bad else None,
                     "validating the sample weights")
    flags = comm.all_reduce_max(torch.tensor([wmax, 0.0 if unit else 1.0], dtype=torch.float64),
                                "validating the sample weights")
    if float(flags[0]) <= 0:
        raise SqdistError("sample_weight: every weight is zero; at least one point must weigh more than 0")
    if float(flags[1]) == 0:  # every weight is 1
        shard.weights = None
    else:
        shard.weights_digest = digest.hexdigest()
    return float(flags[0])


def feature_variance(shard: Shard, comm: Comm) -> float:
    """Mean over the features of their population variance, by one pass over every rank's chunks.

    Per-chunk moments (rows, mean, sum of squared deviations; float64) are
    gathered and merged in global chunk order, so the value does not depend
    on the number of ranks.
    """
    D = shard.source.n_features
    rows = []
    for _, _, x in shard.chunks(torch.device("cpu")):
        n, m, m2 = block_moments(x)
        rows.append(torch.cat([torch.tensor([float(n)], dtype=torch.float64), m, m2]))
    local = torch.stack(rows) if rows else torch.zeros((0, 1 + 2 * D), dtype=torch.float64)
    allc = torch.cat(comm.all_gather_rows(local, "the features' variance"))  # (chunks, 1 + 2D) in global order
    return merge_moments([(int(r[0]), r[1 : 1 + D], r[1 + D :]) for r in allc])
