"""Mini-batch k-means: one step, the batch draws and the stopping rules, as scikit-learn's ``MiniBatchKMeans``.

One step (:func:`step`) on a batch ``B`` with sample weights ``w`` and the
centres ``C`` with their accumulated weights ``W`` (one per centre):

1. assign ``B`` to ``C`` with sqdist's exact kernels
   (:func:`sqdist._step.assign_accumulate`): the nearest centre of every row,
   and per centre the weighted sum ``S_k`` (float64) and weight ``b_k`` of its
   batch rows, and the batch's inertia (measured *before* the update, as
   scikit-learn reports it);
2. under ``torch.distributed`` ``S``, ``b``, the inertia and the batch sizes
   are summed over the ranks in one ``all_reduce``: every rank then holds the
   same numbers and computes the same centres;
3. every centre given batch weight moves to ``(C_k W_k + S_k) / (W_k + b_k)``
   and ``W_k += b_k``: the weighted mean of every point it was ever given, i.e.
   a per-centre learning rate ``b_k / (W_k + b_k)`` that decays as the centre
   collects points (computed in float64, stored in the centres' dtype);
4. when a reassignment is due (:class:`Reassignment`: every ``10 K`` rows, or
   at once when a centre has weight 0), the centres with
   ``W_k < reassignment_ratio * max(W)`` (at most half the batch) jump to
   distinct batch rows drawn uniformly, and their ``W_k`` becomes the smallest
   weight of the others -- scikit-learn's rule, "hack" included.  Under
   ``torch.distributed`` the rows come from rank 0's batch, broadcast.

:class:`Convergence` is scikit-learn's early stopping: an exponentially
weighted average (EWA) of the batch inertia per row that has not improved for
``max_no_improvement`` steps, or (``tol > 0``) a sum of the squared centre
moves of one step at most ``tol`` (already scaled by the data's variance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch

from . import _sparse
from ._comm import Comm
from ._numerics import segment_add
from ._sparse import CSR
from ._step import assign_accumulate

__all__ = ["BatchSampler", "CentreCache", "Convergence", "Reassignment", "StepOptions", "StepResult", "broadcast0",
           "squared_shift", "step", "take_rows"]


@dataclass(frozen=True)
class StepOptions:
    """Validated settings of the steps of one fit (or partial fit)."""

    budget: int  # bytes of working memory for the assignment
    backend: str  # resolved: "torch" or "triton"
    reassignment_ratio: float
    verbose: int = 0
    shift: bool = False  # compute StepResult.shift (the tol rule)


class StepResult(NamedTuple):
    centers: torch.Tensor  # (K, D) the new centres, in the old centres' dtype and device
    inertia: float  # weighted inertia of the batch (all ranks) against the centres before the step
    rows: int  # rows of the batch (all ranks)
    weight: float  # total sample weight of the batch (all ranks)
    n_reassigned: int
    shift: float = 0.0  # sum of the squared centre moves (StepOptions.shift), else 0.0


class CentreCache:
    """The centres of a run of sparse steps on one process, kept between the steps.

    :meth:`bind` takes the step's centres ``C``: the centres this cache
    returned last time go on as they are; any other tensor is copied (the
    cache owns its copy: the steps move its rows in place) and prepared for
    the compiled CSR assignment (:class:`sqdist._sparse.Centres`: a float64
    copy, its transpose, the norms).  A step then costs O(nnz K + m D) for
    ``m`` centres that move instead of O(K D): few centres take the rows of a
    sparse batch.
    """

    def __init__(self) -> None:
        self.C: torch.Tensor | None = None
        self.prep: _sparse.Centres | None = None

    def bind(self, C: torch.Tensor) -> torch.Tensor:
        if self.C is not C:
            self.C = C.detach().clone().contiguous()
            self.prep = _sparse.Centres(self.C if C.dtype == torch.float64 else self.C.to(torch.float64))
        return self.C

    def set_rows(self, idx: torch.Tensor, rows: torch.Tensor) -> None:
        """Centres ``idx`` (m,) become ``rows`` (m, D) in the centres' dtype."""
        if self.C.dtype != torch.float64:
            self.C.index_copy_(0, idx, rows)
        self.prep.set_rows(idx, rows.to(torch.float64))  # C64 is C itself in float64


def broadcast0(comm: Comm, t: torch.Tensor, what: str) -> torch.Tensor:
    """Rank 0's ``t`` on every rank (an all-reduce of ``t`` and zeros: exact); ``t`` itself on one process."""
    if not comm.active:
        return t
    return comm.all_reduce_sum(t if comm.rank == 0 else torch.zeros_like(t), what)


def _batch_stats(Xb: torch.Tensor, wb: torch.Tensor | None, C: torch.Tensor, opts: StepOptions
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sums (K, D), batch weight (K,), inertia ()) of this process's batch, float64 (fresh tensors: the step
    overwrites the sums with the new centres)."""
    K, D = C.shape
    if Xb.shape[0] == 0:  # a rank whose shard is exhausted still takes part in the reduction
        z = torch.zeros((), dtype=torch.float64, device=C.device)
        return torch.zeros((K, D), dtype=torch.float64, device=C.device), torch.zeros(K, dtype=torch.float64,
                                                                                      device=C.device), z
    if isinstance(Xb, CSR):  # sparse rows: the sums straight from the CSR kernels (no far-point candidates)
        labels, _, sums, counts, inertia = _sparse.assign(Xb, C, opts.budget, wb)
        bw = counts.to(torch.float64) if wb is None else segment_add(
            torch.zeros(K, dtype=torch.float64, device=C.device), labels, wb.to(device=C.device, dtype=torch.float64))
        return sums, bw, inertia
    st = assign_accumulate(Xb, C, budget=opts.budget, backend=opts.backend, weights=wb)
    return st.sums, st.cluster_weight(), st.inertia


def step(Xb: torch.Tensor, wb: torch.Tensor | None, C: torch.Tensor, W: torch.Tensor, opts: StepOptions,
         comm: Comm, gen: torch.Generator, reassign: bool, cache: CentreCache | None = None) -> StepResult:
    """One mini-batch step (see the module docstring); ``W`` (K,) float64 is updated in place.

    ``Xb`` (n, D) in ``C``'s dtype and device (n may be 0 on a rank whose data
    is exhausted), ``wb`` (n,) float64 or None for unit weights.  With a
    ``cache``, a sparse batch on one process (CPU, compiled kernels) steps the
    cache's centres in place (:func:`_cached_step`, the same numbers) and
    returns them: ``C`` is then not to be kept as the centres before the step.
    """
    if (cache is not None and isinstance(Xb, CSR) and not comm.active and Xb.shape[0] > 0
            and _sparse.can_prepare(Xb) and C.device == Xb.device):
        return _cached_step(Xb, wb, cache.bind(C), W, opts, comm, gen, reassign, cache)
    K, D = C.shape
    sums, bw, inertia = _batch_stats(Xb, wb, C, opts)
    n = Xb.shape[0]
    if comm.active:  # one reduction: sums, weights, inertia, rows, rank 0's rows
        sizes = torch.tensor([n, n if comm.rank == 0 else 0], dtype=torch.float64, device=C.device)
        packed = comm.all_reduce_sum(torch.cat([sums.flatten(), bw, inertia.reshape(1), sizes]), "a mini-batch step")
        sums, bw = packed[: K * D].reshape(K, D), packed[K * D : K * D + K]
        inertia, rows, n0 = packed[-3], int(packed[-2]), int(packed[-1])
    else:
        rows = n0 = n
    has = bw > 0  # (K,)
    W_new = W + bw  # (K,)
    C64 = C.to(torch.float64)
    act, idle = has.nonzero().flatten(), (~has).nonzero().flatten()
    moved = sums  # (K, D) in place: (S_k + W_k c_k) / W'_k on the rows with batch weight (often few, sparse rows)
    if idle.numel() == 0:
        _move(moved, C64, W, W_new)
    else:  # centres without batch weight stay where they are
        part = _move(sums.index_select(0, act), C64.index_select(0, act), W[act], W_new[act])
        moved.index_copy_(0, act, part).index_copy_(0, idle, C64.index_select(0, idle))
    C_new = moved.to(C.dtype)  # (K, D)
    W.copy_(W_new)
    n_re = 0
    if reassign and opts.reassignment_ratio > 0:
        to, new = _reassign(Xb, W, n0, opts, comm, gen, C.shape[1], C.device)
        if to is not None:
            C_new, n_re = C_new.clone(), new.shape[0]
            C_new[to] = new.to(C.dtype)
    shift = squared_shift(C_new, C) if opts.shift else 0.0
    return StepResult(C_new, float(inertia), rows, float(bw.sum()), n_re, shift)


def _move(S: torch.Tensor, C64: torch.Tensor, W: torch.Tensor, W_new: torch.Tensor) -> torch.Tensor:
    """The centres that got batch weight, in place on their batch sums ``S`` (m, D) float64:
    ``(S_k + W_k c_k) / W'_k`` with ``C64`` (m, D), ``W`` / ``W_new`` (m,) their weights before and after."""
    return S.addcmul_(C64, W[:, None]).div_(W_new[:, None])


def _cached_step(Xb: CSR, wb: torch.Tensor | None, C: torch.Tensor, W: torch.Tensor, opts: StepOptions, comm: Comm,
                 gen: torch.Generator, reassign: bool, cache: CentreCache) -> StepResult:
    """:func:`step` on one process for a sparse batch, in place on ``C`` (the cache's centres): only the
    centres with batch weight and the reassigned ones are computed, written and (``opts.shift``) measured."""
    P = cache.prep
    bw, act, sums, inertia = _sparse.assign_active(Xb, P, C.dtype, wb)
    W_new = W + bw  # (K,)
    idx, new = act, _move(sums, P.C64.index_select(0, act), W[act], W_new[act]).to(C.dtype)
    W.copy_(W_new)
    n_re = 0
    if reassign and opts.reassignment_ratio > 0:
        to, rows = _reassign(Xb, W, Xb.shape[0], opts, comm, gen, C.shape[1], C.device)
        if to is not None:  # the reassigned rows replace the moved ones
            keep = ~to[act]
            idx, new = torch.cat([act[keep], to.nonzero().flatten()]), torch.cat([new[keep], rows.to(C.dtype)])
            n_re = rows.shape[0]
    old = P.C64.index_select(0, idx) if opts.shift else None
    cache.set_rows(idx, new)
    shift = squared_shift(new, old) if old is not None else 0.0  # the other centres did not move
    return StepResult(C, float(inertia), Xb.shape[0], float(bw.sum()), n_re, shift)


def _reassign(Xb: torch.Tensor, W: torch.Tensor, n0: int, opts: StepOptions, comm: Comm, gen: torch.Generator,
              D: int, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Which centres of small weight jump, ``to`` (K,) bool (None: none), and the random rows of (rank 0's)
    batch they jump to, (r, D) float64 (``n0`` the batch's rows); ``W`` of the jumping centres is set."""
    to = W < opts.reassignment_ratio * W.max()  # (K,)
    if int(to.sum()) > 0.5 * n0:  # at most half the batch: the smallest weights keep their flag
        keep = torch.sort(W, stable=True).indices[int(0.5 * n0):]
        to[keep] = False
    r = int(to.sum())
    if r == 0:
        return None, torch.zeros((0, D), dtype=torch.float64, device=device)
    rows = torch.zeros((r, D), dtype=torch.float64, device=device)
    if comm.rank == 0:  # distinct rows, uniformly (scikit-learn: choice(n, r, replace=False))
        pick = torch.randperm(n0, generator=gen, device=gen.device)[:r].to(Xb.device)
        rows = Xb[pick].to(device=device, dtype=torch.float64)
    rows = broadcast0(comm, rows, "a mini-batch reassignment")
    if opts.verbose:
        print(f"[MiniBatchKMeans] Reassigning {r} cluster centers.")
    if bool((~to).any()):  # not too small a weight, or they would be reassigned at once
        W[to] = W[~to].min()
    return to, rows


def take_rows(X: torch.Tensor | CSR, idx: torch.Tensor) -> torch.Tensor | CSR:
    """The rows of ``X`` at ``idx`` (m,) in that order (repeats allowed): a dense tensor's rows, or a
    :class:`~sqdist._sparse.CSR` of a sparse ``X``'s rows (kept sparse: O(their stored values))."""
    idx = idx.to(device=X.device, dtype=torch.int64)
    if not isinstance(X, CSR):
        return X.index_select(0, idx)
    ptr = X.indptr.to(torch.int64)
    lo = ptr.index_select(0, idx)  # (m,) index_select: much faster than advanced indexing on the CPU
    cnt = ptr.index_select(0, idx + 1) - lo
    indptr = torch.zeros(idx.shape[0] + 1, dtype=torch.int64, device=X.device)
    torch.cumsum(cnt, 0, out=indptr[1:])
    s = int(indptr[-1])
    q = torch.repeat_interleave(lo - indptr[:-1], cnt, output_size=s) + torch.arange(s, device=X.device)  # (s,)
    return replace(X, indptr=indptr, indices=X.indices.index_select(0, q), data=X.data.index_select(0, q))


class Reassignment:
    """When a reassignment is due: once ``10 K`` rows were stepped since the last, or a centre has weight 0."""

    def __init__(self, n_clusters: int, since: int = 0):
        self.n_clusters = n_clusters
        self.since = since

    def due(self, rows: int, W: torch.Tensor) -> bool:
        self.since += rows
        if bool((W == 0).any()) or self.since >= 10 * self.n_clusters:
            self.since = 0
            return True
        return False


class BatchSampler:
    """Indices of batches of an in-memory data set: uniform with replacement, or in proportion to the
    sample weights (one cumulative sum up front, a binary search per draw: O(batch log N) per batch)."""

    def __init__(self, n_rows: int, batch: int, weights: torch.Tensor | None, gen: torch.Generator):
        self.n_rows, self.batch, self.gen = n_rows, batch, gen
        self.cum = None
        if weights is not None:
            w = weights.to(device="cpu", dtype=torch.float64)
            self.cum = torch.cumsum(w, 0)  # (N,) sequential: thread-count independent
            self.last = int((w > 0).nonzero().max())  # u * total may round up to the total

    def draw(self) -> torch.Tensor:
        """(batch,) int64 row indices on the CPU."""
        if self.cum is None:
            return torch.randint(self.n_rows, (self.batch,), generator=self.gen, device=self.gen.device).cpu()
        u = torch.rand(self.batch, generator=self.gen, dtype=torch.float64, device=self.gen.device).cpu()
        return torch.searchsorted(self.cum, u * self.cum[-1], right=True).clamp_max_(self.last)


class Convergence:
    """scikit-learn's ``_mini_batch_convergence``: EWA of the batch inertia per row, and the centre moves.

    ``n_samples`` sets the EWA's weight ``alpha = 2 rows / (n_samples + 1)``
    (None while it is unknown -- the first epoch over an iterable: the rows
    stepped so far stand in for it); the first step is ignored (its inertia is
    that of the initial centres).
    """

    def __init__(self, n_samples: int | None, tol: float, max_no_improvement: int | None, verbose: int):
        self.n_samples, self.tol, self.patience, self.verbose = n_samples, tol, max_no_improvement, verbose
        self.seen = 0
        self.ewa: float | None = None
        self.ewa_min: float | None = None
        self.no_improvement = 0

    def stop(self, step_no: int, n_steps: int | str, rows: int, sq_shift: float, batch_inertia: float) -> bool:
        """Whether to stop after step ``step_no`` (counted from 1)."""
        batch_inertia /= max(rows, 1)
        self.seen += rows
        if step_no == 1:
            if self.verbose:
                print(f"Minibatch step {step_no}/{n_steps}: mean batch inertia: {batch_inertia}")
            return False
        if self.ewa is None:
            self.ewa = batch_inertia
        else:
            n = self.seen if self.n_samples is None else self.n_samples
            alpha = min(rows * 2.0 / (n + 1), 1.0)
            self.ewa = self.ewa * (1 - alpha) + batch_inertia * alpha
        if self.verbose:
            print(f"Minibatch step {step_no}/{n_steps}: mean batch inertia: {batch_inertia}, ewa inertia: {self.ewa}")
        if self.tol > 0.0 and sq_shift <= self.tol:
            if self.verbose:
                print(f"Converged (small centers change) at step {step_no}/{n_steps}")
            return True
        if self.ewa_min is None or self.ewa < self.ewa_min:
            self.no_improvement, self.ewa_min = 0, self.ewa
        else:
            self.no_improvement += 1
        if self.patience is not None and self.no_improvement >= self.patience:
            if self.verbose:
                print(f"Converged (lack of improvement in inertia) at step {step_no}/{n_steps}")
            return True
        return False


def squared_shift(C_new: torch.Tensor, C: torch.Tensor) -> float:
    """Sum of the squared centre moves of one step, float64, added in a fixed order."""
    d = C_new.to(torch.float64) - C.to(torch.float64)
    return math.fsum((d * d).sum(1).tolist())
