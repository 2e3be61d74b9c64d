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

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._comm import Comm
from ._sources import ArraySource, Source, chunk_rows
from ._validation import SqdistError, compute_dtype

__all__ = ["Shard", "gather_rows", "open_shard", "quantise", "sample_indices"]


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
    """Shard the data and validate this rank's rows (finite) in one pass; returns the shard and max|x_d| (D,)."""
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
        shard = Shard(source, R, sum(n for n, _ in counts), sum(c for _, c in counts), c_lo, c_lo + c_loc,
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


def open_shard(source: Source, K: int, budget: int, dtype: Any, dev: torch.device, comm: Comm) -> Shard:
    """Chunk grid, this rank's shard, validation scan and the fixed-point grid: ready for a pass."""
    D = source.n_features
    ddtype = source.dtype if dtype is None else dtype
    R = chunk_rows(budget, K, D, torch.finfo(compute_dtype(ddtype)).bits // 8)
    shard, bound = scan(source, R, comm)
    shard.dtype = ddtype
    if shard.n_rows == 0 or D == 0:
        raise SqdistError(f"X: expected at least one point and one feature, got {shard.n_rows} x {D}")
    e = grid_exponents(shard.n_rows, bound)
    shard.grid = torch.ldexp(torch.ones(D, dtype=torch.float64), e.double())  # (D,) 2**e_d
    shard.scale = torch.ldexp(torch.ones(D, dtype=torch.float64), (-e).double()).to(dev)  # (D,) 2**-e_d
    return shard
