"""The Lloyd engine: one loop for in-memory, streamed and distributed fits, with restarts, checkpoints and labels.

The loop (:func:`lloyd`) runs on a *data pass*: an object whose
``assign(C)`` returns the :class:`~sqdist._step.Stats` of assigning every
point to the centres ``C``.  Two passes exist:

* :class:`InMemory` -- one tensor on one process: a single chunk, assigned in
  one kernel call whose label buffers are reused across iterations;
* :class:`Streamed` -- this rank's shard of a chunk grid (``.npy`` files,
  memory maps, iterables of chunks, or any data under ``torch.distributed``):
  sums added as exact fixed-point integers and reduced over the ranks, so the
  result does not depend on the number of ranks (:mod:`sqdist._shard`).

Algorithm (the exercise's Task 3, with scikit-learn's conventions): start from
the initial centres and assign every point; then each iteration moves every
centre to the mean of its points (:func:`sqdist._step.update_centers`, with
the empty-cluster policy) and assigns every point to the *new* centres, so the
returned labels and inertia always belong to the returned centres.  Stop after
``max_iter`` updates, when every centre moved less than ``tol`` (Euclidean
norm, data units), or at a fixed point (the update left every cluster's sum and
count unchanged, so no centre can move again) -- unless the empty-cluster
policy still has a cluster to relocate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _checkpoint, _cpu_kernels
from ._comm import Comm
from ._init import initial_centers
from ._results import Iteration, KMeansResult
from ._shard import Shard, gather_rows, quantise, sample_indices
from ._step import Stats, assign_accumulate, max_shift, order_far, plan_relocation, update_centers, with_far

__all__ = ["FitOptions", "InMemory", "Streamed", "fit", "lloyd"]

# Rows drawn (with the seed) for the k-means++ / random initialisation of streamed data.
SAMPLE_MIN = 1 << 16


@dataclass(frozen=True)
class FitOptions:
    """Validated settings of one fit, built once by the public function."""

    n_clusters: int
    init: Any  # as parsed by sqdist._init.parse_init
    n_init: int
    max_iter: int
    tol: float
    budget: int  # bytes
    backend: str  # resolved: "torch" or "triton"
    cdtype: torch.dtype
    was_numpy: bool
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 1
    resume: str | os.PathLike | None = None
    labels_out: str | os.PathLike | None = None
    keep_labels: bool = True


# --------------------------------------------------------------------------
# data passes
# --------------------------------------------------------------------------


class InMemory:
    """Data held as one tensor (N, D) on one process: one chunk, label buffers reused."""

    is_root = True

    def __init__(self, X: torch.Tensor, opts: FitOptions):
        self.X = X
        self.opts = opts
        self.device = X.device
        self.n_rows = X.shape[0]
        self._bufs: tuple[torch.Tensor, torch.Tensor] | None = None

    def begin_run(self, C: torch.Tensor) -> None:
        """Fresh (labels, mind) buffers for a run: the compiled CPU kernel writes into them every iteration."""
        n = self.n_rows
        self._bufs = (torch.empty(n, dtype=torch.int64), torch.empty(n, dtype=C.dtype)) \
            if _cpu_kernels.supports(self.X, C) else None
        self._fused = self.opts.backend == "torch" and _cpu_kernels.update_assign_supports(self.X, C)

    def assign(self, C: torch.Tensor) -> Stats:
        return assign_accumulate(self.X, C, budget=self.opts.budget, backend=self.opts.backend, out=self._bufs)

    def update_assign(self, stats: Stats, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, Stats]:
        """One iteration: the centre update and the assignment to the new centres.

        Small CPU problems with no empty cluster take one compiled call (the
        same bits; the separate steps cost ~10x the arithmetic in Python
        overhead at the exercise's size); everything else the separate steps.
        """
        if not (self._fused and stats.counts.numpy().min() > 0):  # CPU tensors here; no empty cluster
            return _update_then_assign(self, stats, C)
        C_new, shift, labels, mind, sums, counts, inertia = _cpu_kernels.update_assign(
            self.X, C, stats.sums, stats.counts, *self._bufs)
        return C_new, _NONE, shift, with_far(self.X, C_new, labels, mind, sums, counts,
                                             torch.tensor(inertia, dtype=torch.float64))

    def rows_at(self, idx: torch.Tensor) -> torch.Tensor:
        return self.X[idx]

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        return self.X

    def fingerprint(self) -> dict[str, Any]:
        return {"n_rows": self.n_rows, "n_features": self.X.shape[1], "chunk_rows": self.n_rows}

    def final_labels(self, C: torch.Tensor, stats: Stats) -> Any:
        return stats.labels.numpy() if self.opts.was_numpy else stats.labels


class Streamed:
    """This rank's shard of a chunk grid; every pass is reduced over the ranks (exact, order-independent)."""

    def __init__(self, shard: Shard, comm: Comm, device: torch.device, opts: FitOptions):
        self.shard = shard
        self.comm = comm
        self.device = device
        self.opts = opts
        self.n_rows = shard.n_rows
        self.is_root = comm.rank == 0

    def begin_run(self, C: torch.Tensor) -> None:
        pass

    def update_assign(self, stats: Stats, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, Stats]:
        return _update_then_assign(self, stats, C)

    def assign(self, C: torch.Tensor, sink: Callable[[int, torch.Tensor], None] | None = None) -> Stats:
        """Assign this rank's chunks to ``C`` and reduce over ranks: a ``Stats`` without labels.

        Sums are added as exact fixed-point integers, the inertia per chunk in
        global chunk order, the farthest-point candidates by (distance, row) --
        all independent of how the chunks are spread over ranks.  ``sink(a,
        labels)`` receives the labels of the chunk starting at global row ``a``.
        """
        shard, comm, device, K = self.shard, self.comm, self.device, C.shape[0]
        D = shard.source.n_features
        sums_q = torch.zeros((K, D), dtype=torch.int64, device=device)  # (K, D)
        counts = torch.zeros(K, dtype=torch.int64, device=device)  # (K,)
        inertias = []
        far = (torch.zeros(0, dtype=torch.float64, device=device), torch.zeros(0, dtype=torch.int64, device=device),
               torch.zeros((0, D), dtype=C.dtype, device=device), torch.zeros(0, dtype=torch.int64, device=device))
        for _, a, x in shard.chunks(device):
            st = assign_accumulate(x, C, budget=self.opts.budget, backend=self.opts.backend, offset=a)
            sums_q += quantise(st.sums, shard.scale)
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
        # deterministic float64 sum in global chunk order (NumPy's pairwise sum: same array -> same bits)
        inertia = float(np.sum(torch.cat(comm.all_gather_rows(local_in, "the inertia")).numpy()))
        if comm.active and bool((tot_counts == 0).any()):  # empty clusters: everyone needs the global farthest points
            rows = torch.cat([far[0][:, None], far[1][:, None].double(), far[3][:, None].double(),
                              far[2].double()], 1).cpu()  # (m, 3 + D)
            allc = torch.cat(comm.all_gather_rows(rows, "the farthest points"))
            far = _keep_far(allc[:, 0], allc[:, 1].long(), allc[:, 3:].to(C.dtype), allc[:, 2].long(), K)
            far = tuple(t.to(device) for t in far)
        none = torch.zeros(0, dtype=torch.int64, device=device)
        return Stats(none, none.to(C.dtype), tot_sums.to(device), tot_counts.to(device),
                     torch.tensor(inertia, dtype=torch.float64), far[0], far[1], far[2], far[3])

    def rows_at(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows at global indices ``idx`` (any order), on every rank."""
        arr = idx.cpu().numpy()
        order = np.argsort(arr, kind="stable")
        rows = gather_rows(self.shard, arr[order], self.comm)
        out = torch.empty_like(rows)
        out[torch.from_numpy(order)] = rows
        return out

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        """A seeded sample of ``max(65536, 20 K)`` global rows (all rows when N is smaller), on every rank."""
        idx = sample_indices(self.n_rows, max(SAMPLE_MIN, 20 * self.opts.n_clusters), gen)
        return gather_rows(self.shard, idx, self.comm)

    def fingerprint(self) -> dict[str, Any]:
        return {"n_rows": self.n_rows, "n_features": self.shard.source.n_features, "chunk_rows": self.shard.R}

    def final_labels(self, C: torch.Tensor, stats: Stats) -> Any:
        """Labels of the final centres: written to ``labels_out`` and/or kept in memory, by one more pass."""
        opts, shard, comm = self.opts, self.shard, self.comm
        if not (opts.keep_labels or opts.labels_out is not None):
            return None
        fd = tmp = None
        header = 0
        if opts.labels_out is not None:
            folder, base = os.path.split(os.path.abspath(os.fspath(opts.labels_out)))
            tmp = os.path.join(folder, f".{base}.partial")
            if comm.rank == 0:
                np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int64, shape=(shard.n_rows,)).flush()
            comm.barrier("creating the labels file")
            header = np.load(tmp, mmap_mode="r").offset
            fd = os.open(tmp, os.O_WRONLY)
        mem = torch.empty(shard.r_hi - shard.r_lo, dtype=torch.int64) if opts.keep_labels else None

        def sink(a: int, lab: torch.Tensor) -> None:
            lab = lab.cpu()
            if fd is not None:
                os.pwrite(fd, lab.numpy().tobytes(), header + 8 * a)
            if mem is not None:
                mem[a - shard.r_lo : a - shard.r_lo + lab.shape[0]] = lab

        try:
            self.assign(C, sink=sink)
        finally:
            if fd is not None:
                os.fsync(fd)
                os.close(fd)
        if mem is not None and comm.active:
            mem = torch.cat(comm.all_gather_rows(mem, "the labels"))
        if tmp is not None:
            comm.barrier("writing the labels file")
            if comm.rank == 0:
                os.replace(tmp, opts.labels_out)
            comm.barrier("renaming the labels file")
        if mem is None:
            return np.load(os.fspath(opts.labels_out), mmap_mode="r")
        return mem.numpy() if opts.was_numpy else mem.to(self.device)


def _update_then_assign(data: InMemory | Streamed, stats: Stats, C: torch.Tensor):
    """The centre update (with the empty-cluster policy), the largest move, the assignment to the new centres."""
    C_new, relocated, _ = update_centers(stats, C)
    return C_new, relocated, max_shift(C_new, C), data.assign(C_new)


_NONE = torch.zeros(0, dtype=torch.int64)  # no relocated clusters


def _keep_far(d, idx, x, lab, K):
    """The K farthest candidates (distance descending, then global row ascending)."""
    sel = order_far(d, idx)[:K]
    return d[sel], idx[sel], x[sel], lab[sel]


# --------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------


@dataclass
class _Run:
    """One initialisation's outcome."""

    C: torch.Tensor
    stats: Stats
    n_iter: int
    converged: bool
    history: list
    C0: torch.Tensor


def _record(it: int, C: torch.Tensor, stats: Stats, shift: float, relocated: torch.Tensor, t: float,
            was_numpy: bool) -> Iteration:
    return Iteration(
        iteration=it,
        centers=C.detach().cpu().numpy().copy() if was_numpy else C.detach().clone(),
        inertia=float(stats.inertia),
        max_shift=shift,
        sizes=stats.counts.cpu().numpy().copy(),
        relocated=[int(j) for j in relocated.cpu().tolist()],
        time=t,
    )


def lloyd(data: InMemory | Streamed, C: torch.Tensor, opts: FitOptions, *, state: dict | None = None,
          on_iteration: Callable[[int, torch.Tensor, bool, list], None] | None = None):
    """Lloyd iterations from centres ``C`` (K, D, compute dtype) over ``data``; the one Lloyd loop of sqdist.

    ``state``: a resumed checkpoint (history, iteration, converged).
    ``on_iteration(it, C, converged, history)`` runs after every iteration
    (checkpoints).  Returns ``(C, stats, n_iter, converged, history)``.
    """
    t0 = time.perf_counter()
    stats = data.assign(C)
    if state is None:
        history = [_record(0, C, stats, 0.0, _NONE, time.perf_counter() - t0, opts.was_numpy)]
        start, converged = 0, False
    else:
        history, start, converged = state["history"], state["iteration"], state["converged"]
    n_iter = start
    for it in range(start + 1, opts.max_iter + 1):
        if converged:
            break
        t0 = time.perf_counter()
        C_new, relocated, shift, new = data.update_assign(stats, C)
        # fixed point: the same sums and counts give the same centres, so nothing can move again
        fixed = bool(torch.equal(new.counts, stats.counts) and torch.equal(new.sums, stats.sums))
        C, stats, n_iter = C_new, new, it
        history.append(_record(it, C, stats, shift, relocated, time.perf_counter() - t0, opts.was_numpy))
        converged = (shift < opts.tol or fixed) and plan_relocation(stats)[0].numel() == 0
        if on_iteration is not None:
            on_iteration(it, C, converged, history)
    return C, stats, n_iter, converged, history


def fit(data: InMemory | Streamed, opts: FitOptions, gen: torch.Generator) -> tuple[KMeansResult, torch.Tensor]:
    """``opts.n_init`` runs of :func:`lloyd` (or one resumed run); the lowest inertia wins (the first on ties).

    Returns the result and the final counts (for the empty-cluster warning).
    """
    fp = dict(data.fingerprint(), n_clusters=opts.n_clusters, dtype=str(opts.cdtype), tol=opts.tol)
    best = None
    for _ in range(opts.n_init):
        state = None
        if opts.resume is not None:
            state = _checkpoint.load(opts.resume, fp, opts.was_numpy)
            C0 = state["init_centers"].to(device=data.device, dtype=opts.cdtype)
            C = state["centers"].to(device=data.device, dtype=opts.cdtype)
            if state["rng_state"] is not None:
                gen.set_state(state["rng_state"])
        else:
            C0 = initial_centers(opts.init, opts.n_clusters, data.rows_at, lambda: data.sample(gen), gen, opts.budget,
                                 opts.cdtype, data.device)
            C = C0
        hook = None
        if opts.checkpoint is not None and data.is_root:
            fields = {"rng_state": gen.get_state(), "fingerprint": fp, "init_centers": C0}

            def hook(it, C, converged, history, fields=fields):
                if it % opts.checkpoint_every == 0 or converged or it == opts.max_iter:
                    _checkpoint.save(opts.checkpoint, centers=C, iteration=it, converged=converged, history=history,
                                     **fields)
        data.begin_run(C)
        run = _Run(*lloyd(data, C, opts, state=state, on_iteration=hook), C0)
        if best is None or float(run.stats.inertia) < float(best.stats.inertia):
            best = run
    out = (lambda t: t.cpu().numpy()) if opts.was_numpy else (lambda t: t)
    result = KMeansResult(centers=out(best.C), labels=data.final_labels(best.C, best.stats),
                          inertia=float(best.stats.inertia), n_iter=best.n_iter, converged=best.converged,
                          history=best.history, init_centers=out(best.C0))
    return result, best.stats.counts
