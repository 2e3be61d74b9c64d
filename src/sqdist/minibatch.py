"""Mini-batch k-means, :class:`MiniBatchKMeans`: scikit-learn's estimator on sqdist's exact assignment,
fed from arrays, tensors on any device, or out-of-core sources, on one process or across ranks."""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import torch

from . import _chunking
from ._backend import resolve_backend
from ._comm import Comm
from ._init import as_generator, call_init, initial_centers, parse_init
from ._minibatch_step import (
    BatchSampler,
    CentreCache,
    Convergence,
    Reassignment,
    StepOptions,
    StepResult,
    broadcast0,
    step,
    take_rows,
)
from ._numerics import block_moments, merge_moments
from ._sources import as_source, chunk_rows, is_out_of_core
from ._sparse import CSR, is_sparse
from ._sparse import check_points as sparse_points
from ._sparse import mean_variance as sparse_mean_variance
from ._step import assign_accumulate
from ._validation import (
    SqdistError,
    as_tensor,
    check_finite_rows,
    check_positive_int,
    check_positive_number,
    compute_dtype,
    describe,
    make_generator,
    resolve_device,
    to_output,
)
from .clustering import FixedInitWarning, check_sample_weight
from .estimator import _BaseKMeans

__all__ = ["MiniBatchKMeans"]


def _sparse_out(S: CSR, was_numpy: bool) -> Any:
    """Sparse rows as the caller gave them: a SciPy CSR matrix, or a torch sparse CSR tensor."""
    if not was_numpy:
        return S.torch_csr(S.dtype)
    import scipy.sparse as sp

    return sp.csr_matrix((S.data.cpu().numpy(), S.indices.cpu().numpy(), S.indptr.cpu().numpy()), shape=S.shape)


class _Loop(NamedTuple):
    """What a run of mini-batch steps ends with."""

    centers: torch.Tensor  # (K, D)
    weights: torch.Tensor  # (K,) float64 accumulated weights
    steps: int  # steps done so far (counting those before this run)
    stopped: bool  # by the stopping rules
    rows: int  # rows stepped in this run (all ranks)
    inertia: float  # sum of the batches' inertias, each against the centres before its step


class MiniBatchKMeans(_BaseKMeans):
    """Mini-batch k-means: scikit-learn's ``MiniBatchKMeans`` with sqdist's exact assignment.

    Same parameters, attributes and algorithm as scikit-learn's estimator:
    the initial centres come from ``n_init`` initialisations on samples of
    ``init_size`` rows (the best on a validation sample of ``init_size``
    rows); then every step draws ``batch_size`` rows (with replacement, in
    proportion to ``sample_weight``), assigns them to their nearest centre and
    moves each centre to the mean of all the points it was ever given
    (``C_k <- (C_k W_k + S_k) / (W_k + b_k)``: a per-centre learning rate
    that decays with the centre's accumulated weight ``W_k``); centres of small
    weight (below ``reassignment_ratio * max(W)``) jump to random batch rows
    every ``10 K`` rows.  It stops after ``max_iter`` passes' worth of steps,
    when the smoothed batch inertia stopped improving for
    ``max_no_improvement`` steps, or when one step moved the centres less than
    ``tol`` (scaled by the data's mean variance).  The assignment is sqdist's
    exact kernel (compiled CPU, Triton on CUDA, or torch): every label is the
    argmin of the exact squared distances.  Same ``random_state``, same
    thread count: same result.

    **Data.**  ``fit`` and ``partial_fit`` take arrays, tensors on any device
    (the fitted attributes are then tensors there), and out-of-core sources
    read chunk by chunk: a ``.npy`` path, a re-iterable of (n_i, D) chunks,
    and what :func:`sqdist._sources.as_source` accepts besides (a
    ``torch.utils.data.DataLoader``, Parquet files).  ``partial_fit(source)``
    runs one step per ``batch_size`` rows of it (its chunks are re-cut to
    batches of exactly ``batch_size`` rows, the last one shorter); the first
    call initialises on the first ``init_size`` rows.  ``fit(source)`` runs up to ``max_iter`` epochs of such
    steps (a ``.npy`` file's pieces in a new random order each epoch); its
    ``init_size`` sample is drawn at random from a ``.npy`` file and is the
    first rows of an iterable (shuffle a DataLoader); ``labels_`` is then None
    and ``inertia_`` (``compute_labels=True``) costs one more pass.
    ``sample_weight`` needs data in memory.  Sparse rows (SciPy CSR / CSC, torch
    sparse) stay sparse: batches are gathered as CSR rows and assigned by
    :mod:`sqdist._sparse` (never densified); same ``random_state``, same fit as
    the dense rows.

    **torch.distributed.**  When a process group is initialised
    (:func:`sqdist.is_distributed`), every rank steps on batches of its own
    data and one ``all_reduce`` per step sums the batches' per-centre sums and
    weights, so all ranks hold the same centres after every step.  An array,
    tensor or ``.npy`` path given to ``fit`` is the *global* data (each rank
    takes its contiguous share of rows), an iterable or DataLoader is *this
    rank's* data, and a ``partial_fit`` batch is always this rank's.  The
    initialisation runs on rank 0's data and is broadcast; every rank draws its
    own batches (rank 0 with ``random_state``'s stream, the others with seeds
    drawn from it).  One step then consumes ``batch_size`` rows *per rank*,
    and a rank's batch weighs in proportion to its share of the data.  Unlike
    full-batch :class:`sqdist.KMeans` (bit-identical on any number of ranks),
    the result therefore depends on the number of ranks.

    Parameters
    ----------
    n_clusters : int, default 8
    init : {"k-means++", "random"}, callable, 1-D int array-like or array of shape (K, D), default "k-means++"
        As :class:`sqdist.KMeans`; a callable is called as
        ``init(X_sample, n_clusters, random_state=RandomState)``.
    max_iter : int, default 100
        Passes over the data (``max_iter * N // batch_size`` steps).
    batch_size : int, default 1024
    verbose : int, default 0
        A positive value prints scikit-learn's progress lines.
    compute_labels : bool, default True
        Compute ``labels_`` and ``inertia_`` on the full data after ``fit``
        (on the batch after ``partial_fit``).
    random_state : None, int, numpy.random.Generator, numpy.random.RandomState or torch.Generator
        The only source of randomness (initialisation, batches, reassignment).
    tol : float, default 0.0
        Stop when one step's sum of squared centre moves is at most
        ``tol * mean(var(X, axis=0))``; 0 disables the rule.
    max_no_improvement : int or None, default 10
    init_size : int, optional
        Rows of the initialisation samples; default ``3 * batch_size``
        (at least ``3 * n_clusters``), at most N.
    n_init : int or "auto", default "auto"
        "auto" is 1 for "k-means++" and fixed inits, 3 otherwise.
    reassignment_ratio : float, default 0.01
    working_memory : float, optional
        MiB budget for temporaries (default :func:`sqdist.get_working_memory`).
    backend : {"auto", "torch", "triton"}, default "auto"
    device : str or torch.device, optional
        Compute there (e.g. ``"cuda"``); ``None``: where X is (CPU for files).
    dtype : {None, "float32", "float64"}, default None
        Compute in this dtype; ``None``: X's own (integers become float64).

    Attributes
    ----------
    cluster_centers_ : of shape (K, D)
    labels_ : int64 of shape (N,), or None for out-of-core data
    inertia_ : float
        With ``compute_labels=False``: the smoothed batch inertia per row
        times the total sample weight (scikit-learn's estimate).
    n_iter_ : int
        Passes over the data started.
    n_steps_ : int
        Mini-batch steps run (``partial_fit`` adds one per batch).
    counts_ : float64 of shape (K,)
        Accumulated weight ``W`` of every centre (the learning rates' denominators).
    init_size_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has feature names (a DataFrame).

    Examples
    --------
    >>> import numpy as np
    >>> from sqdist.minibatch import MiniBatchKMeans
    >>> X = np.r_[np.zeros((50, 2)), np.full((50, 2), 10.0)]
    >>> mbk = MiniBatchKMeans(2, batch_size=20, init=[[1.0, 1.0], [9.0, 9.0]], random_state=0).fit(X)
    >>> np.round(mbk.cluster_centers_, 6).tolist(), mbk.inertia_
    ([[0.0, 0.0], [10.0, 10.0]], 0.0)
    >>> mbk.predict(np.array([[9.0, 8.0]])).tolist()
    [1]
    >>> online = MiniBatchKMeans(2, init=[[1.0, 1.0], [9.0, 9.0]], reassignment_ratio=0.0)
    >>> for chunk in (X[:30], X[30:70], X[70:]):
    ...     online = online.partial_fit(chunk)
    >>> online.n_steps_, online.counts_.tolist()
    (3, [50.0, 50.0])
    """

    def __init__(
        self,
        n_clusters: int | None = 8,
        *,
        init: Any = "k-means++",
        max_iter: int = 100,
        batch_size: int = 1024,
        verbose: int = 0,
        compute_labels: bool = True,
        random_state: Any = None,
        tol: float = 0.0,
        max_no_improvement: int | None = 10,
        init_size: int | None = None,
        n_init: int | str = "auto",
        reassignment_ratio: float = 0.01,
        working_memory: float | None = None,
        backend: str = "auto",
        device: Any = None,
        dtype: Any = None,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.verbose = verbose
        self.compute_labels = compute_labels
        self.random_state = random_state
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio
        self.working_memory = working_memory
        self.backend = backend
        self.device = device
        self.dtype = dtype

    # -- parameters -------------------------------------------------------------
    def _check_params(self) -> None:
        """Validate the constructor's arguments (each error names the parameter)."""
        check_positive_int(self.max_iter, "max_iter")
        check_positive_int(self.batch_size, "batch_size")
        if not isinstance(self.compute_labels, (bool, np.bool_)):
            raise SqdistError(f"compute_labels: expected a bool, got {self.compute_labels!r}")
        check_positive_number(self.tol, "tol", allow_zero=True)
        check_positive_number(self.reassignment_ratio, "reassignment_ratio", allow_zero=True)
        if self.max_no_improvement is not None:
            check_positive_int(self.max_no_improvement, "max_no_improvement", minimum=0)
        if self.init_size is not None:
            check_positive_int(self.init_size, "init_size")
        if self.n_init != "auto":
            check_positive_int(self.n_init, "n_init")
        if not isinstance(self.verbose, (numbers.Integral, bool)) or self.verbose < 0:
            raise SqdistError(f"verbose: expected a bool or an integer >= 0, got {self.verbose!r}")
        if isinstance(self.init, str) and self.init not in ("k-means++", "random"):
            raise SqdistError(f"init: expected 'k-means++', 'random', a callable, row indices or a (K, D) array "
                              f"of centres, got {self.init!r}")

    def _k(self) -> int:
        """K: ``n_clusters``, or the number of explicit initial centres / indices when it is None."""
        if self.n_clusters is None and not isinstance(self.init, str) and not callable(self.init):
            return int(np.shape(self.init)[0]) if np.ndim(self.init) in (1, 2) else 0
        return check_positive_int(self.n_clusters, "n_clusters")

    def _resolve_sizes(self, n_rows: int, K: int) -> None:
        """scikit-learn's ``_batch_size``, ``_init_size`` and ``_n_init`` for data of ``n_rows`` rows."""
        if n_rows < K:
            raise SqdistError(f"n_clusters: expected at most the number of points {n_rows} "
                              f"(n_samples={n_rows} should be >= n_clusters={K}), got {K}")
        self._batch_size = min(self.batch_size, n_rows)
        size = self.init_size
        if size is None:
            size = 3 * self._batch_size if 3 * self._batch_size >= K else 3 * K
        elif size < K:
            warnings.warn(f"init_size={size} should be larger than n_clusters={K}. Setting it to "
                          f"min(3*n_clusters, n_samples)", RuntimeWarning, stacklevel=3)
            size = 3 * K
        self._init_size = self.init_size_ = min(size, n_rows)
        fixed = not isinstance(self.init, str) and not callable(self.init)
        if self.n_init == "auto":
            self._n_init = 1 if fixed or self.init == "k-means++" else 3
        else:
            self._n_init = int(self.n_init)
            if fixed and self._n_init != 1:
                warnings.warn(f"Explicit initial center position passed: performing only one init in "
                              f"{type(self).__name__} instead of n_init={self._n_init}.", FixedInitWarning,
                              stacklevel=3)
                self._n_init = 1

    def _options(self, device: torch.device) -> StepOptions:
        return StepOptions(budget=_chunking.resolve_budget(self.working_memory),
                           backend=resolve_backend(self.backend, device),
                           reassignment_ratio=float(self.reassignment_ratio), verbose=int(self.verbose))

    def _torch_dtype(self) -> torch.dtype | None:
        dt = self._compute_dtype()
        return None if isinstance(dt, list) else {np.float32: torch.float32, np.float64: torch.float64}[dt]

    # -- initialisation -----------------------------------------------------------
    def _init_once(self, X: torch.Tensor, w: torch.Tensor | None, S: torch.Tensor, ws: torch.Tensor | None, K: int,
                   gen: torch.Generator, was_numpy: bool, budget: int) -> torch.Tensor:
        """Initial centres (K, D) from the sample ``S`` (weights ``ws``); fixed indices index ``X``."""
        if callable(self.init):  # called on the sample, once per initialisation
            arg = (S.cpu().numpy() if was_numpy else S) if not isinstance(S, CSR) else _sparse_out(S, was_numpy)
            init_k = call_init(self.init, arg, K, X.shape[0], X.shape[1], X.device, gen)
        else:
            init_k, _ = parse_init(self.init, K, X.shape[0], X.shape[1], X.device)
        if isinstance(init_k, str) and init_k == "random" and ws is not None and int((ws > 0).sum()) < K:
            raise SqdistError(f"sample_weight: init='random' draws {K} distinct points of positive weight, "
                              f"only {int((ws > 0).sum())} have one in the initialisation sample")
        return initial_centers(init_k, K, lambda idx: X[idx], lambda: (S, ws), gen, budget, X.dtype, X.device)

    def _initialise(self, X: torch.Tensor, w: torch.Tensor | None, K: int, gen: torch.Generator, was_numpy: bool,
                    opts: StepOptions) -> torch.Tensor:
        """scikit-learn's choice of initial centres: ``_n_init`` inits on random samples of ``_init_size``
        rows of X, the one with the lowest inertia on a validation sample (drawn first) kept."""
        N = X.shape[0]

        def sample() -> tuple[torch.Tensor, torch.Tensor | None]:
            idx = torch.randint(N, (self._init_size,), generator=gen, device=gen.device).to(X.device)
            return take_rows(X, idx), None if w is None else w[idx]

        Xv, wv = sample()  # the validation sample
        best, best_inertia = None, math.inf
        for i in range(self._n_init):
            if self.verbose:
                print(f"Init {i + 1}/{self._n_init} with method {self.init}")
            S, ws = sample() if self._init_size < N else (X, w)
            C = self._init_once(X, w, S, ws, K, gen, was_numpy, opts.budget)
            inertia = float(assign_accumulate(Xv, C, budget=opts.budget, backend=opts.backend, weights=wv).inertia)
            if self.verbose:
                print(f"Inertia for init {i + 1}/{self._n_init}: {inertia}")
            if best is None or inertia < best_inertia:
                best, best_inertia = C, inertia
        return best

    def _initialise_on_rank0(self, comm: Comm, shape: tuple[int, int], dtype: torch.dtype, device: torch.device,
                             make: Any) -> torch.Tensor:
        """``make()`` on rank 0 (every process when alone), its centres broadcast; an error on rank 0 is
        raised on every rank."""
        if not comm.active:
            return make()
        C, message = None, None
        if comm.rank == 0:
            try:
                C = make()
            except SqdistError as exc:
                message = str(exc)
        comm.agree_error(message, "the mini-batch initialisation")
        C0 = C.to(torch.float64) if C is not None else torch.zeros(shape, dtype=torch.float64, device=device)
        return broadcast0(comm, C0, "the mini-batch initialisation").to(dtype)

    @staticmethod
    def _rank_generator(gen: torch.Generator, comm: Comm) -> torch.Generator:
        """The generator this rank draws its batches from: ``gen`` on rank 0 (and alone), seeds drawn from
        it on the other ranks."""
        if not comm.active:
            return gen
        seeds = torch.randint(0, 2**62, (comm.world,), generator=gen)
        return gen if comm.rank == 0 else make_generator(int(seeds[comm.rank]))

    # -- fitting --------------------------------------------------------------------
    def _points(self, X: Any, reset: bool) -> tuple[torch.Tensor | CSR, bool]:
        """X in memory, validated: a tensor or sparse rows (a :class:`~sqdist._sparse.CSR`, never densified) in
        the compute dtype, at least one row, every value finite; and whether results are NumPy."""
        Xv = self._validate(X, reset=reset)
        if is_sparse(Xv):
            Xt = sparse_points(Xv, "X")
            return Xt.to(compute_dtype(Xt.dtype)), Xt.was_numpy
        Xt, was_numpy = as_tensor(Xv, "X")
        Xt = Xt.to(compute_dtype(Xt.dtype))  # half precision is computed in float32
        check_finite_rows(Xt, "X")
        if Xt.shape[0] == 0:
            raise SqdistError(f"X: expected at least one point, got {describe(Xt)}")
        return Xt, was_numpy

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MiniBatchKMeans:
        """Compute the clustering of X by mini-batch steps; returns self.

        X : array-like or Tensor (N, D), or out-of-core data (see the class docstring).
        sample_weight : array-like of shape (N,), optional (data in memory only).
        """
        self._check_params()
        if is_out_of_core(X):
            return self._fit_source(X, sample_weight)
        comm = Comm()
        Xt, was_numpy = self._points(X, reset=True)
        N = Xt.shape[0]
        w = check_sample_weight(sample_weight, N, Xt.device)
        K = self._k()
        a, b = comm.rank * N // comm.world, (comm.rank + 1) * N // comm.world  # this rank's rows
        Xl, wl = Xt[a:b], None if w is None else w[a:b]
        local_min = int(comm.all_reduce_min(torch.tensor([b - a]), "the shard sizes")[0]) if comm.active else N
        self._resolve_sizes(N, K)
        self._batch_size = min(self.batch_size, max(local_min, 1))
        opts = self._options(Xt.device)
        gen = as_generator(self.random_state)
        tol = self._scaled_tol(Xt)
        C = self._initialise_on_rank0(comm, (K, Xt.shape[1]), Xt.dtype, Xt.device,
                                      lambda: self._initialise(Xl, wl, K, gen, was_numpy, opts))
        rgen = self._rank_generator(gen, comm)
        W = torch.zeros(K, dtype=torch.float64, device=Xt.device)
        total_w = float(w.sum()) if w is not None else float(N)
        share = self._share(wl, b - a, total_w, comm)  # this rank's batches weigh its share of the data
        sampler = BatchSampler(b - a, self._batch_size, wl, rgen)
        n_steps = (self.max_iter * N) // (self._batch_size * comm.world)
        conv = Convergence(N, tol, self.max_no_improvement, self.verbose)
        batches = ((take_rows(Xl, sampler.draw()), share) for _ in range(n_steps))
        self._reassign = Reassignment(K)  # partial_fit continues its schedule
        loop = self._run(batches, C, W, rgen, self._reassign, comm, opts, conv, n_steps)
        C, W, done = loop.centers, loop.weights, loop.steps
        self.n_steps_ = done
        self.n_iter_ = int(math.ceil(done * self._batch_size * comm.world / N))
        self._finish(C, W, rgen, was_numpy)
        if self.compute_labels:
            labels, inertia = self._labels_inertia(Xl, wl, C, opts, comm)
            self.labels_ = to_output(labels, was_numpy)
            self.inertia_ = inertia
        else:
            self.labels_ = None
            self.inertia_ = (conv.ewa or 0.0) * total_w
        return self

    def _scaled_tol(self, X: torch.Tensor) -> float:
        """``tol`` times the mean variance of the features (scikit-learn's ``_tolerance``)."""
        if self.tol == 0:
            return 0.0
        if isinstance(X, CSR):  # scikit-learn's mean_variance_axis: sparse rows are never centred
            return float(self.tol) * sparse_mean_variance(X)
        rows = _chunking.rows_per_chunk(X.shape[0], 3 * 8 * X.shape[1], _chunking.resolve_budget(self.working_memory),
                                        what="the features' variance")
        return float(self.tol) * merge_moments([block_moments(X[sl]) for sl in _chunking.row_slices(X.shape[0], rows)])

    @staticmethod
    def _share(wl: torch.Tensor | None, n_local: int, total: float, comm: Comm) -> torch.Tensor | None:
        """Weight of each row of this rank's batches: its share of the data's weight times the number of
        ranks (None -- unit weights -- alone, or when the shares are equal)."""
        if not comm.active:
            return None
        mine = float(wl.sum()) if wl is not None else float(n_local)
        s = mine * comm.world / total
        return None if s == 1.0 else torch.tensor(s, dtype=torch.float64)

    def _run(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor | None]], C: torch.Tensor, W: torch.Tensor,
             gen: torch.Generator, reassign: Reassignment, comm: Comm, opts: StepOptions, conv: Convergence | None,
             n_steps: int | str, done: int = 0) -> _Loop:
        """The mini-batch loop: one step per batch until the batches end (on every rank) or ``conv`` stops it."""
        rows_per_step = self._batch_size * comm.world
        rows, inertia, stopped = 0, 0.0, False
        opts, cache = replace(opts, shift=conv is not None and conv.tol > 0), CentreCache()
        for Xb, wb in batches:
            if wb is not None and wb.ndim == 0:  # a rank's share: the same weight for every row
                wb = wb.to(Xb.device).expand(Xb.shape[0])
            res: StepResult = step(Xb, wb, C, W, opts, comm, gen, reassign.due(rows_per_step, W), cache)
            if res.rows == 0:  # every rank's data is exhausted
                break
            C = res.centers  # sparse batches: the cache's centres, moved in place from step to step
            done, rows, inertia = done + 1, rows + res.rows, inertia + res.inertia
            if conv is not None:
                if conv.stop(done, n_steps, res.rows, res.shift, res.inertia):
                    stopped = True
                    break
        return _Loop(C, W, done, stopped, rows, inertia)

    def _finish(self, C: torch.Tensor, W: torch.Tensor, gen: torch.Generator, was_numpy: bool) -> None:
        self.cluster_centers_ = to_output(C, was_numpy)
        self.counts_ = to_output(W, was_numpy)
        self._gen = gen
        self._was_numpy = was_numpy

    def _labels_inertia(self, X: torch.Tensor, w: torch.Tensor | None, C: torch.Tensor, opts: StepOptions,
                        comm: Comm) -> tuple[torch.Tensor, float]:
        """Labels of this rank's rows (gathered from every rank) and the total inertia."""
        st = assign_accumulate(X, C, budget=opts.budget, backend=opts.backend, weights=w)
        if not comm.active:
            return st.labels, float(st.inertia)
        inertia = float(comm.all_reduce_sum(st.inertia.reshape(1), "the final inertia")[0])
        return torch.cat(comm.all_gather_rows(st.labels, "the final labels")), inertia

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MiniBatchKMeans:
        """One mini-batch step on X (the first call also initialises); an out-of-core X runs one step per
        chunk.  Returns self."""
        self._check_params()
        if is_out_of_core(X):
            return self._partial_fit_source(X, sample_weight)
        fitted = hasattr(self, "cluster_centers_")
        Xt, was_numpy = self._points(X, reset=not fitted)
        w = check_sample_weight(sample_weight, Xt.shape[0], Xt.device)
        comm = Comm()
        opts = self._options(Xt.device)
        C, W = self._state(Xt, w, comm, opts, was_numpy)
        loop = self._run(iter([(Xt.to(C.dtype), w)]), C, W, self._gen, self._reassign, comm, opts, None, 1)
        C, W = loop.centers, loop.weights
        self.n_steps_ += 1
        self._finish(C, W, self._gen, was_numpy)
        if self.compute_labels:
            st = assign_accumulate(Xt.to(C.dtype), C, budget=opts.budget, backend=opts.backend, weights=w)
            self.labels_, self.inertia_ = to_output(st.labels, was_numpy), float(st.inertia)
        return self

    def _state(self, X: torch.Tensor, w: torch.Tensor | None, comm: Comm, opts: StepOptions,
               was_numpy: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The centres and weights to continue from; the first call initialises them on X (rank 0's)."""
        if hasattr(self, "cluster_centers_"):
            C = self.cluster_centers_
            C = (torch.as_tensor(C) if isinstance(C, np.ndarray) else C).to(X.device)
            W = torch.as_tensor(self.counts_).to(device=X.device, dtype=torch.float64).clone()
            if not hasattr(self, "_gen"):
                self._gen = self._rank_generator(as_generator(self.random_state), comm)
            if not hasattr(self, "_reassign"):
                self._reassign = Reassignment(C.shape[0])
            self.n_steps_ = getattr(self, "n_steps_", 0)
            return C.to(compute_dtype(C.dtype)), W
        K = self._k()
        self._resolve_sizes(X.shape[0], K)
        gen = as_generator(self.random_state)
        n_init, self._n_init = self._n_init, 1  # partial_fit initialises once (as scikit-learn)
        C = self._initialise_on_rank0(comm, (K, X.shape[1]), X.dtype, X.device,
                                      lambda: self._initialise(X, w, K, gen, was_numpy, opts))
        self._n_init = n_init
        self._gen = self._rank_generator(gen, comm)
        self._reassign = Reassignment(K)
        self.n_steps_ = 0
        return C, torch.zeros(K, dtype=torch.float64, device=X.device)

    # -- out-of-core sources -----------------------------------------------------------
    def _open(self, X: Any, sample_weight: Any) -> tuple[Any, torch.device, torch.dtype, StepOptions]:
        if sample_weight is not None:
            raise SqdistError(f"sample_weight: needs data in memory, got out-of-core X ({describe(X)}); "
                              f"pass an array, or fold the weights into the data")
        source = as_source(X)
        dev = resolve_device(self.device, "device") or torch.device("cpu")
        dtype = self._torch_dtype() or compute_dtype(source.dtype)
        return source, dev, dtype, self._options(dev)

    @staticmethod
    def _pieces(source: Any, comm: Comm, gen: torch.Generator | None, dev: torch.device, dtype: torch.dtype,
                rows: int) -> Iterator[torch.Tensor]:
        """This rank's pieces of at most ``rows`` rows, on ``dev`` in ``dtype``, finite-checked.

        A file (random access) is the global data: this rank reads its share of the row range, in a
        random order of pieces when ``gen`` is given; an iterable is this rank's own data, in order.
        """
        if source.random_access:
            N = int(source.n_rows)
            a, b = comm.rank * N // comm.world, (comm.rank + 1) * N // comm.world
            starts = list(range(a, b, rows))
            if gen is not None:
                starts = [starts[i] for i in torch.randperm(len(starts), generator=gen).tolist()]
            it: Iterator[torch.Tensor] = (source.rows(s, min(s + rows, b)) for s in starts)
        else:
            it = source.pieces(rows)
        for i, t in enumerate(it):
            t = t.to(device=dev, dtype=dtype)
            check_finite_rows(t, f"X chunk {i}")
            yield t
            source.release()

    @staticmethod
    def _lockstep(pieces: Iterator[torch.Tensor], comm: Comm, D: int, dtype: torch.dtype,
                  dev: torch.device) -> Iterator[tuple[torch.Tensor, None]]:
        """The pieces as batches; under torch.distributed, empty batches after this rank's last piece (the
        loop ends when every rank's are exhausted)."""
        for t in pieces:
            yield t, None
        if comm.active:
            empty = torch.empty((0, D), dtype=dtype, device=dev)
            while True:
                yield empty, None

    @staticmethod
    def _head(pieces: Iterator[torch.Tensor], n: int) -> list[torch.Tensor]:
        """The first pieces, up to ``n`` rows or the end of the data."""
        head, got = [], 0
        for t in pieces:
            head.append(t)
            got += t.shape[0]
            if got >= n:
                break
        if not head:
            raise SqdistError("X: the data source yielded no rows")
        return head

    def _source_init(self, source: Any, pieces: Iterator[torch.Tensor] | None, K: int, gen: torch.Generator,
                     comm: Comm, dev: torch.device, dtype: torch.dtype, opts: StepOptions, n_init: int | None = None
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Initial centres of out-of-core data, chosen on rank 0 and broadcast: on random rows of a file, or on
        the first rows of an iterable (``pieces``: its pieces then stay buffered for stepping).  Returns
        (centres, buffered pieces)."""
        head: list[torch.Tensor] = []

        def make() -> torch.Tensor:
            if source.random_access and pieces is None:
                self._resolve_sizes(int(source.n_rows), K)
                idx = np.sort(torch.randint(int(source.n_rows), (self._init_size,), generator=gen).numpy())
                S = source.take(idx, max(1, self._batch_size)).to(device=dev, dtype=dtype)
                check_finite_rows(S, "X")
            else:
                it = pieces if pieces is not None else self._pieces(source, comm, None, dev, dtype, self.batch_size)
                head.extend(self._head(it, self.init_size or 3 * max(self.batch_size, K)))
                S = torch.cat(head)
                self._resolve_sizes(S.shape[0], K)
            if n_init is not None:
                self._n_init = n_init
            self._tol_value = self._scaled_tol(S)
            return self._initialise(S, None, K, gen, source.numpy_out, opts)

        C = self._initialise_on_rank0(comm, (K, int(source.n_features)), dtype, dev, make)
        if comm.active:  # the settings rank 0 chose
            vals = torch.tensor([getattr(self, "_init_size", 0), getattr(self, "_n_init", 0),
                                 getattr(self, "_tol_value", 0.0)], dtype=torch.float64)
            vals = broadcast0(comm, vals, "the mini-batch settings").tolist()
            self._init_size = self.init_size_ = int(vals[0])
            self._n_init, self._tol_value = int(vals[1]), vals[2]
        self._batch_size = self.batch_size  # the pieces have at most batch_size rows
        return C, head

    def _fit_source(self, X: Any, sample_weight: Any) -> MiniBatchKMeans:
        """``fit`` on out-of-core data: epochs of one step per piece of ``batch_size`` rows."""
        source, dev, dtype, opts = self._open(X, sample_weight)
        comm = Comm()
        D, K = int(source.n_features), self._k()
        self.n_features_in_ = D
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        gen = as_generator(self.random_state)
        C, _ = self._source_init(source, None, K, gen, comm, dev, dtype, opts)
        rgen = self._rank_generator(gen, comm)
        W = torch.zeros(K, dtype=torch.float64, device=dev)
        reassign = self._reassign = Reassignment(K)
        n_rows = int(source.n_rows) if source.random_access else None  # None: counted in the first epoch
        conv = Convergence(n_rows, self._tol_value, self.max_no_improvement, self.verbose)
        n_steps = "?" if n_rows is None else self.max_iter * -(-n_rows // (self.batch_size * comm.world))
        done, epochs = 0, 0
        while epochs < self.max_iter:
            epochs += 1
            batches = self._lockstep(self._pieces(source, comm, rgen, dev, dtype, self.batch_size), comm, D, dtype, dev)
            loop = self._run(batches, C, W, rgen, reassign, comm, opts, conv, n_steps, done)
            C, W, done = loop.centers, loop.weights, loop.steps
            if conv.n_samples is None:
                conv.n_samples = max(loop.rows, 1)
            if loop.stopped:
                break
        self.n_steps_, self.n_iter_ = done, epochs
        self._finish(C, W, rgen, source.numpy_out)
        self.labels_ = None
        if self.compute_labels:  # one more pass: the inertia of the final centres
            inertia = torch.zeros((), dtype=torch.float64)
            rows = chunk_rows(opts.budget, K, D, torch.finfo(C.dtype).bits // 8)
            for t in self._pieces(source, comm, None, dev, C.dtype, rows):
                inertia += assign_accumulate(t, C, budget=opts.budget, backend=opts.backend).inertia.cpu()
            self.inertia_ = float(comm.all_reduce_sum(inertia.reshape(1), "the final inertia")[0])
        else:
            self.inertia_ = (conv.ewa or 0.0) * (conv.n_samples or 0)
        return self

    def _partial_fit_source(self, X: Any, sample_weight: Any) -> MiniBatchKMeans:
        """``partial_fit`` on out-of-core data: one step per ``batch_size`` rows."""
        source, dev, dtype, opts = self._open(X, sample_weight)
        comm = Comm()
        D = int(source.n_features)
        pieces = self._pieces(source, comm, None, dev, dtype, self.batch_size)
        head: list[torch.Tensor] = []
        if hasattr(self, "cluster_centers_"):
            if D != self.n_features_in_:
                raise SqdistError(f"X has {D} features, but {type(self).__name__} is expecting "
                                  f"{self.n_features_in_} features as input")
            C, W = self._state(torch.empty((0, D), dtype=dtype, device=dev), None, comm, opts, source.numpy_out)
        else:
            self.n_features_in_ = D
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
            K = self._k()
            gen = as_generator(self.random_state)
            C, head = self._source_init(source, pieces, K, gen, comm, dev, dtype, opts, n_init=1)
            W = torch.zeros(K, dtype=torch.float64, device=dev)
            self._gen, self._reassign, self.n_steps_ = self._rank_generator(gen, comm), Reassignment(K), 0
        batches = self._lockstep(itertools.chain(head, pieces), comm, D, C.dtype, dev)
        loop = self._run(batches, C, W, self._gen, self._reassign, comm, opts, None, "?")
        self.n_steps_ += loop.steps
        self._finish(loop.centers, loop.weights, self._gen, source.numpy_out)
        self.labels_ = None
        if self.compute_labels:  # the batches' inertias, each against the centres before its step
            self.inertia_ = loop.inertia
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit and return the labels of X (data in memory)."""
        return self.fit(X, sample_weight=sample_weight).labels_
