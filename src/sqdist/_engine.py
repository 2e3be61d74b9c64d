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

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from . import _checkpoint, _cpu_kernels
from ._comm import Comm
from ._init import initial_centers
from ._results import Iteration, KMeansResult
from ._shard import Shard, gather_rows, quantise, sample_indices
from ._sparse import CSR
from ._step import Stats, assign_accumulate, max_shift, order_far, relocation_pending, update_centers

__all__ = ["FitOptions", "InMemory", "Streamed", "fit", "lloyd"]

# Rows drawn (with the seed) for the k-means++ / random initialisation of streamed data.
SAMPLE_MIN = 1 << 16


class FitOptions(NamedTuple):
    """Validated settings of one fit, built once by the public function (immutable; a NamedTuple,
    which builds in a quarter of a frozen dataclass's time: 1.3 against 5.4 us for these fields,
    ~1 % of a whole fit at the exercise's size)."""

    n_clusters: int
    init: Any  # as parsed by sqdist._init.parse_init
    n_init: int
    max_iter: int
    tol: float  # the threshold itself: data units ("absolute") or squared units ("relative", already scaled)
    budget: int  # bytes
    backend: str  # resolved: "torch" or "triton"
    cdtype: torch.dtype
    was_numpy: bool
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 1
    resume: str | os.PathLike | None = None
    labels_out: str | os.PathLike | None = None
    keep_labels: bool = True
    tol_mode: str = "absolute"  # "absolute": every centre moved < tol; "relative": sum of squared moves <= tol


# --------------------------------------------------------------------------
# data passes
# --------------------------------------------------------------------------


@functools.cache
def _no_far(D: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The empty farthest-point candidates of a step without an empty cluster (made once per shape)."""
    return (torch.empty(0, dtype=torch.float64), torch.empty(0, dtype=torch.int64), torch.empty((0, D), dtype=dtype))


class _Fused(NamedTuple):
    """One compiled step of a small in-memory problem, as NumPy arrays (fresh every step, so the
    history keeps them without copies): the centres it assigned to (and their tensor view), their
    move, and the assignment's sums, counts and inertia (``sums`` None: a cluster emptied).
    :meth:`InMemory.stats` makes the :class:`Stats` when one is needed."""

    C: np.ndarray  # (K, D) compute dtype
    Ct: torch.Tensor  # (K, D) the tensor sharing C's memory
    shift: float
    sumsq: float
    sums: np.ndarray | None  # (K, D) float64
    counts: np.ndarray | None  # (K,) int64
    inertia: float
    labels: np.ndarray  # (n,) int64: the run's buffer, which every step overwrites


class InMemory:
    """Data held as one tensor (N, D) -- or sparse rows (:class:`~sqdist._sparse.CSR`) -- on one process:
    one chunk, label buffers reused."""

    is_root = True

    def __init__(self, X: torch.Tensor, opts: FitOptions, weights: torch.Tensor | None = None):
        self.X = X
        self.weights = weights  # (N,) float64 sample weights, or None
        self.opts = opts
        self.device = X.device
        self.n_rows = X.shape[0]
        self._bufs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._step = None

    def begin_run(self, C: torch.Tensor) -> None:
        """Fresh (labels, mind) buffers for a run: the compiled CPU kernel writes into them every iteration."""
        n = self.n_rows
        dense = not isinstance(self.X, CSR)  # sparse rows: sqdist._sparse assigns them (no buffers, no fused step)
        # small CPU problems without weights: every step is one compiled call on NumPy views made once per run
        self._step = (_cpu_kernels.update_assign_step(self.X, C)
                      if dense and self.weights is None and self.opts.backend == "torch" else None)
        if self._step is not None:  # NumPy buffers; their tensors only when needed (see _buffers)
            labels = np.empty(n, dtype=np.int64)
            mind = np.empty(n, dtype=np.float32 if C.dtype == torch.float32 else np.float64)
            self._views = (_cpu_kernels.numpy_view(self.X), labels, mind)
            self._bufs = None
        else:
            self._bufs = (torch.empty(n, dtype=torch.int64), torch.empty(n, dtype=C.dtype)) \
                if dense and _cpu_kernels.supports(self.X, C) else None

    def _buffers(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The (labels, mind) tensors the kernels write into (for the fused step: its arrays' tensors,
        made on first use -- a fit that never leaves the fused step needs only the labels, at the end)."""
        if self._bufs is None and self._step is not None:
            self._bufs = (torch.from_numpy(self._views[1]), torch.from_numpy(self._views[2]))
        return self._bufs

    def assign(self, C: torch.Tensor) -> Stats | _Fused:
        if self._step is not None and C.is_cpu and not C.requires_grad:
            # one compiled call: the fused step from the state in which every centre is the mean of
            # itself alone (sums = C, counts = 1) -- its update gives C back bit for bit
            Cn = _cpu_kernels.numpy_view(C)
            ones = np.empty(C.shape[0], dtype=np.int64)
            ones.fill(1)  # (np.ones: 2.3 against 0.6 us)
            new = self._fused_step(Cn, Cn.astype(np.float64), ones)
            if new.sums is not None:
                return new
        return assign_accumulate(self.X, C, budget=self.opts.budget, backend=self.opts.backend, out=self._buffers(),
                                 weights=self.weights)

    def _fused_step(self, C: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> _Fused:
        """One compiled call: centres ``sums / counts``, their moves, the assignment to them (``sums``
        None when a cluster emptied: the separate steps then keep the farthest points the relocation needs)."""
        Xn, labels, mind = self._views
        Cn, shift, sumsq, psums, pcounts, inertia, n_empty = self._step(Xn, C, sums, counts, labels, mind)
        Ct = torch.from_numpy(Cn)
        return _Fused(Cn, Ct, shift, sumsq, None, None, 0.0, labels) if n_empty else \
            _Fused(Cn, Ct, shift, sumsq, psums, pcounts, inertia, labels)

    def update_assign(self, stats: Stats | _Fused, C: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, float, float, bool, Stats | _Fused]:
        """One iteration: the centre update and the assignment to the new centres.

        Small CPU problems take one compiled call while no cluster is empty
        (the same bits; the separate steps cost ~10x the arithmetic in Python
        overhead at the exercise's size); everything else the separate steps.
        Returns ``(C_new, relocated, shift, sumsq, fixed, stats)`` (see :func:`_update_then_assign`).
        """
        if not isinstance(stats, _Fused):
            return _update_then_assign(self, stats, C)
        new = self._fused_step(stats.C, stats.sums, stats.counts)
        C_new = new.Ct
        if new.sums is None:  # a cluster emptied: the farthest points are needed for the relocation
            full = assign_accumulate(self.X, C_new, budget=self.opts.budget, backend=self.opts.backend,
                                     out=self._buffers())
            return C_new, _NONE, new.shift, new.sumsq, _fixed(full, self.stats(stats)), full
        # a fixed point: the same sums and counts give the same centres, so nothing can move again
        # (int64 counts: equal bytes iff equal values; float64 sums: equal bytes give equal values,
        # and only unequal bytes -- a signed zero -- need the value test)
        fixed = new.counts.tobytes() == stats.counts.tobytes() and (
            new.sums.tobytes() == stats.sums.tobytes() or bool((new.sums == stats.sums).all()))
        return C_new, _NONE, new.shift, new.sumsq, fixed, new

    def record(self, it: int, C: torch.Tensor, stats: Stats | _Fused, shift: float, relocated: torch.Tensor,
               t: float) -> Iteration:
        """The history entry of this state (a fused step's: its own arrays, fresh every step -- only
        the final centres are also the result's, and :func:`fit` returns a copy of those)."""
        if not isinstance(stats, _Fused) or relocated.numel():
            return _record(it, C, self.stats(stats), shift, relocated, t, self.opts.was_numpy)
        return Iteration(iteration=it, centers=stats.C if self.opts.was_numpy else stats.Ct, inertia=stats.inertia,
                         max_shift=shift, sizes=stats.counts, relocated=[], time=t)

    def pending(self, stats: Stats | _Fused) -> bool:
        """Whether the empty-cluster policy would still move a centre (never after a fused step)."""
        return not isinstance(stats, _Fused) and relocation_pending(stats)

    def stats(self, stats: Stats | _Fused) -> Stats:
        """The :class:`Stats` of an assignment (a fused step's tensors made now, sharing its arrays)."""
        if not isinstance(stats, _Fused):
            return stats
        labels, mind = self._buffers()
        f0, i0, x0 = _no_far(stats.C.shape[1], mind.dtype)
        return Stats(labels, mind, torch.from_numpy(stats.sums), torch.from_numpy(stats.counts),
                     torch.from_numpy(np.array(stats.inertia)), f0, i0, x0, i0)  # (inertia: 0-d float64)

    def rows_at(self, idx: torch.Tensor) -> torch.Tensor:
        return self.X[idx]

    def sample(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.X, self.weights

    def fingerprint(self) -> dict[str, Any]:
        return {"n_rows": self.n_rows, "n_features": self.X.shape[1], "chunk_rows": self.n_rows}

    def final_labels(self, C: torch.Tensor, stats: Stats | _Fused) -> Any:
        if isinstance(stats, _Fused):  # the run's own buffer (a fresh one every run)
            return stats.labels if self.opts.was_numpy else torch.from_numpy(stats.labels)
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

    def update_assign(self, stats: Stats, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, float, bool,
                                                                      Stats]:
        return _update_then_assign(self, stats, C)

    def record(self, it: int, C: torch.Tensor, stats: Stats, shift: float, relocated: torch.Tensor,
               t: float) -> Iteration:
        return _record(it, C, stats, shift, relocated, t, self.opts.was_numpy)

    def pending(self, stats: Stats) -> bool:
        return relocation_pending(stats)

    def stats(self, stats: Stats) -> Stats:
        return stats

    def assign(self, C: torch.Tensor, sink: Callable[[int, torch.Tensor], None] | None = None) -> Stats:
        """Assign this rank's chunks to ``C`` and reduce over ranks: a ``Stats`` without labels.

        Sums are added as exact fixed-point integers, the inertia per chunk in
        global chunk order, the farthest-point candidates by (distance, row) --
        all independent of how the chunks are spread over ranks.  ``sink(a,
        labels)`` receives the labels of the chunk starting at global row ``a``.
        """
        shard, comm, device, K = self.shard, self.comm, self.device, C.shape[0]
        D = shard.source.n_features
        weighted = shard.weights is not None
        sums_q = torch.zeros((K, D), dtype=torch.int64, device=device)  # (K, D)
        counts = torch.zeros(K, dtype=torch.int64, device=device)  # (K,)
        weight_q = torch.zeros(K, dtype=torch.int64, device=device)  # (K,) fixed-point cluster weights
        inertias = []
        f64 = torch.float64
        far = (torch.zeros(0, dtype=f64, device=device), torch.zeros(0, dtype=torch.int64, device=device),
               torch.zeros((0, D), dtype=C.dtype, device=device), torch.zeros(0, dtype=torch.int64, device=device),
               torch.zeros(0, dtype=f64, device=device))
        for _, a, x in shard.chunks(device):
            w = shard.weights_of(a, a + x.shape[0], device)
            st = assign_accumulate(x, C, budget=self.opts.budget, backend=self.opts.backend, offset=a, weights=w)
            sums_q += quantise(st.sums, shard.scale)
            counts += st.counts
            if weighted:
                weight_q += quantise(st.weight[:, None], torch.tensor([shard.wscale], dtype=f64, device=device))[:, 0]
            inertias.append(st.inertia.reshape(1))
            fw = st.far_w if weighted else torch.ones_like(st.far_d)
            far = _keep_far(*(torch.cat([f, g]) for f, g in zip(far, (st.far_d, st.far_idx, st.far_x, st.far_label, fw))),
                            K)
            if sink is not None:
                sink(a, st.labels)
        local_in = torch.cat(inertias).cpu() if inertias else torch.zeros(0, dtype=f64)
        packed = torch.cat([sums_q.flatten(), counts] + ([weight_q] if weighted else [])).cpu()  # (K*D + K [+ K],)
        packed = comm.all_reduce_sum(packed, "the per-cluster sums")
        tot_sums = packed[: K * D].reshape(K, D).to(f64) * shard.grid  # (K, D)
        tot_counts = packed[K * D : K * D + K]
        tot_weight = packed[K * D + K :].to(f64) * shard.wgrid if weighted else None
        # deterministic float64 sum in global chunk order (NumPy's pairwise sum: same array -> same bits)
        inertia = float(np.sum(torch.cat(comm.all_gather_rows(local_in, "the inertia")).numpy()))
        empty = (tot_counts == 0) if tot_weight is None else (tot_weight == 0)
        if comm.active and bool(empty.any()):  # empty clusters: everyone needs the global farthest points
            rows = torch.cat([far[0][:, None], far[1][:, None].double(), far[3][:, None].double(), far[4][:, None],
                              far[2].double()], 1).cpu()  # (m, 4 + D)
            allc = torch.cat(comm.all_gather_rows(rows, "the farthest points"))
            far = _keep_far(allc[:, 0], allc[:, 1].long(), allc[:, 4:].to(C.dtype), allc[:, 2].long(), allc[:, 3], K)
            far = tuple(t.to(device) for t in far)
        none = torch.zeros(0, dtype=torch.int64, device=device)
        return Stats(none, none.to(C.dtype), tot_sums.to(device), tot_counts.to(device),
                     torch.tensor(inertia, dtype=f64), far[0], far[1], far[2], far[3],
                     None if tot_weight is None else tot_weight.to(device), far[4] if weighted else None)

    def rows_at(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows at global indices ``idx`` (any order), on every rank."""
        arr = idx.cpu().numpy()
        order = np.argsort(arr, kind="stable")
        rows = gather_rows(self.shard, arr[order], self.comm)
        out = torch.empty_like(rows)
        out[torch.from_numpy(order)] = rows
        return out

    def sample(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A seeded sample of ``max(65536, 20 K)`` global rows (all rows when N is smaller) and their
        weights, on every rank."""
        idx = sample_indices(self.n_rows, max(SAMPLE_MIN, 20 * self.opts.n_clusters), gen)
        S = gather_rows(self.shard, idx, self.comm)
        return S, self.shard.weights_at(idx)

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must match to resume: shapes, chunk grid, the data's content digest
        (``_shard.scan``) and the sample weights' digest."""
        return {"n_rows": self.n_rows, "n_features": self.shard.source.n_features, "chunk_rows": self.shard.R,
                "content": getattr(self.shard, "content", None), "weights": self.shard.weights_digest}

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
    """The centre update (with the empty-cluster policy), the largest move and the sum of the squared
    moves, the assignment to the new centres; whether it reached a fixed point (see :func:`_fixed`)."""
    C_new, relocated, _ = update_centers(stats, C)
    new = data.assign(C_new)
    return (C_new, relocated, *max_shift(C_new, C), _fixed(data.stats(new), stats), new)


def _fixed(new: Stats, old: Stats) -> bool:
    """A fixed point: the same sums and weights give the same centres, so nothing can move again."""
    return bool(torch.equal(new.counts, old.counts) and torch.equal(new.sums, old.sums)
                and (new.weight is None or torch.equal(new.weight, old.weight)))


_NONE = torch.zeros(0, dtype=torch.int64)  # no relocated clusters


def _keep_far(d, idx, x, lab, w, K):
    """The K farthest candidates (distance descending, then global row ascending), with their weights."""
    sel = order_far(d, idx)[:K]
    return d[sel], idx[sel], x[sel], lab[sel], w[sel]


# --------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------


@dataclass
class _Run:
    """One initialisation's outcome."""

    C: torch.Tensor
    stats: Stats | _Fused  # the data pass's own: inertia, counts (tensor or array), labels
    n_iter: int
    converged: bool
    history: list
    stopped: str
    C0: torch.Tensor


def _host(t: torch.Tensor) -> np.ndarray:
    """A host copy of ``t`` (one conversion for CPU tensors: checking device and grad first costs more)."""
    try:
        return t.numpy().copy()
    except (TypeError, RuntimeError):  # on a GPU, or requires grad
        return t.detach().cpu().numpy()


def _record(it: int, C: torch.Tensor, stats: Stats, shift: float, relocated: torch.Tensor, t: float,
            was_numpy: bool) -> Iteration:
    """The history entry of one state: host copies of the centres (tensors for tensor input) and sizes."""
    return Iteration(
        iteration=it,
        centers=_host(C) if was_numpy else C.detach().clone(),
        inertia=float(stats.inertia),
        max_shift=shift,
        sizes=_host(stats.counts),
        relocated=[int(j) for j in relocated.tolist()] if relocated.numel() else [],
        time=t,
    )


def lloyd(data: InMemory | Streamed, C: torch.Tensor, opts: FitOptions, *, state: dict | None = None,
          on_iteration: Callable[[int, torch.Tensor, bool, list], None] | None = None):
    """Lloyd iterations from centres ``C`` (K, D, compute dtype) over ``data``; the one Lloyd loop of sqdist.

    ``state``: a resumed checkpoint (history, iteration, converged).
    ``on_iteration(it, C, converged, history)`` runs after every iteration
    (checkpoints).  Returns ``(C, stats, n_iter, converged, history, stopped)``,
    ``stats`` the data pass's own record of the last assignment (``data.stats``
    makes a :class:`Stats` of it; ``inertia``, ``counts`` and ``labels`` read
    directly).
    """
    t0 = time.perf_counter()
    stats = data.assign(C)
    if state is None:
        history = [data.record(0, C, stats, 0.0, _NONE, time.perf_counter() - t0)]
        start, converged = 0, False
    else:
        history, start, converged = state["history"], state["iteration"], state["converged"]
    n_iter, stopped = start, ("fixed point" if converged else "max_iter")
    for it in range(start + 1, opts.max_iter + 1):
        if converged:
            break
        t0 = time.perf_counter()
        C_new, relocated, shift, sumsq, fixed, new = data.update_assign(stats, C)
        C, stats, n_iter = C_new, new, it
        history.append(data.record(it, C, stats, shift, relocated, time.perf_counter() - t0))
        small = shift < opts.tol if opts.tol_mode == "absolute" else sumsq <= opts.tol
        converged = (small or fixed) and not data.pending(stats)
        stopped = ("tol" if small else "fixed point") if converged else "max_iter"
        if converged and not small and it < opts.max_iter:
            # the next iteration would move no centre and keep every label: it is the pass that
            # finds convergence, and scikit-learn (and the exercise's rule) count it -- record it
            # without recomputing what it would give
            n_iter = it = it + 1
            history.append(data.record(it, C, stats, 0.0, _NONE, 0.0))
        if on_iteration is not None:
            on_iteration(it, C, converged, history)
    return C, stats, n_iter, converged, history, stopped


def fit(data: InMemory | Streamed, opts: FitOptions, gen: torch.Generator | None) -> tuple[KMeansResult, torch.Tensor]:
    """``opts.n_init`` runs of :func:`lloyd` (or one resumed run); the lowest inertia wins (the first on ties).

    ``gen``: the fit's generator, or None for an in-memory fit whose init draws nothing (fixed
    indices or centres, no checkpoint).

    Returns the result and the final counts (a tensor or an int64 array; for the empty-cluster warning).
    """
    fp = (dict(data.fingerprint(), n_clusters=opts.n_clusters, dtype=str(opts.cdtype), tol=opts.tol)
          if opts.checkpoint is not None or opts.resume is not None else None)  # what a checkpoint must match
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
    # the final centres: a copy (a fused step's history keeps its own arrays, the last of them these)
    if opts.was_numpy:
        centers = _host(best.C)
    else:
        centers = torch.from_numpy(_host(best.C)) if best.C.is_cpu else best.C.detach().clone()
    result = KMeansResult(centers=centers, labels=data.final_labels(best.C, best.stats),
                          inertia=float(best.stats.inertia), n_iter=best.n_iter, converged=best.converged,
                          history=best.history, init_centers=out(best.C0), stopped=best.stopped)
    return result, best.stats.counts
