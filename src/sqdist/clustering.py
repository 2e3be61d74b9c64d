"""k-means, the functions: :func:`kmeans` for data in memory, :func:`kmeans_stream` for streamed or
distributed data, and :func:`kmeans_plusplus`.

Each validates its arguments and resolves "auto" once, builds one
:class:`~sqdist._engine.FitOptions`, and hands trusted data to the Lloyd
engine (:mod:`sqdist._engine`).

Stopping rule.  ``tol_mode="relative"`` (the default) is scikit-learn's: stop
when the sum over the centres of their squared moves is at most ``tol`` times
the mean variance of the features, so the same ``tol`` means the same on data
of any scale.  ``tol_mode="absolute"`` is the exercise's: stop when *every*
centre moved less than ``tol`` (Euclidean distance in data units).  Either
way a fit also stops at a fixed point, and ``n_iter`` counts the pass that
finds it, as scikit-learn and the exercise do.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from typing import Any

import numpy as np
import torch

from . import _chunking
from ._backend import resolve_backend
from ._comm import Comm, is_distributed
from ._engine import FitOptions, InMemory, Streamed, fit
from ._init import INITS, as_generator, call_init, check_random_state, draws, n_clusters_of, parse_init
from ._init import kmeans_plusplus as kmeans_plusplus_impl
from ._numerics import block_moments, merge_moments
from ._results import KMeansResult
from ._shard import feature_variance, open_shard
from ._sources import ArraySource, as_source, is_out_of_core, is_sparse
from ._sparse import CSR
from ._sparse import check_points as sparse_points
from ._sparse import mean_variance as sparse_mean_variance
from ._validation import (
    ConvergenceWarning,
    SqdistError,
    SqdistWarning,
    as_tensor,
    check_choice,
    check_finite_rows,
    check_no_alias,
    check_output_path,
    check_positive_int,
    check_positive_number,
    compute_dtype,
    describe,
    resolve_device,
)

__all__ = ["INITS", "TOL_MODES", "KMeansResult", "kmeans", "kmeans_plusplus", "kmeans_stream", "resolve_n_init",
           "check_sample_weight"]

TOL_MODES = ("relative", "absolute")


def kmeans(
    X: Any,
    n_clusters: int | None = None,
    *,
    sample_weight: Any = None,
    init: Any = "k-means++",
    n_init: int | str = "auto",
    max_iter: int = 300,
    tol: float = 1e-4,
    tol_mode: str = "relative",
    random_state: Any = None,
    working_memory: float | None = None,
    backend: str = "auto",
) -> KMeansResult:
    """Lloyd k-means with exact distances, sklearn-compatible and reproducible.

    Parameters
    ----------
    X : array-like or Tensor of shape (N, D), or out-of-core data
        Data, float32 / float64 (half precision is computed in float32).
        Rows must be finite.  Arrays and memory maps are data in memory.  A
        ``.npy`` / ``.parquet`` / ``.arrow`` path, a ``DataLoader`` or another
        re-iterable of (n_i, D) batches is streamed chunk by chunk (see
        :func:`sqdist.kmeans_stream`; ``labels`` is then None), and so is any
        data when a ``torch.distributed`` process group is initialised.
    n_clusters : int, optional
        Number of clusters K, ``1 <= K <= N``.  May be omitted when ``init``
        gives the indices or centres.
    sample_weight : array-like of shape (N,), optional
        Non-negative weight of every point (scikit-learn's meaning: centres
        are weighted means, the inertia is weighted, k-means++ and "random"
        draw in proportion to the weights).  Integer weights give the same
        fit as repeating rows.  Default: every point weighs 1.
    init : {"k-means++", "random"}, callable, 1-D int array-like, or array of shape (K, D)
        ``"k-means++"`` -- greedy k-means++ (2 + log K local trials, as
        scikit-learn); ``"random"`` -- K distinct rows drawn with
        ``random_state``; a callable ``init(X, n_clusters, random_state=rs)``
        returning the (K, D) centres, called once per run (``rs`` a NumPy
        RandomState seeded from ``random_state``, a new seed every run);
        integers -- **fixed row indices** into
        X (the exercise's reproducible choice, e.g. ``[0, 50, 100, 150,
        200]``); a 2-D array -- the centres.
    n_init : int or "auto", default "auto"
        Restarts; the run with the lowest inertia is kept (the first one on
        ties).  "auto" is 1 for "k-means++" and fixed inits, 10 for "random"
        and callables (scikit-learn's rule).  A fixed init runs once (with a
        RuntimeWarning when more were asked).
    max_iter : int, default 300
        Maximum number of centre updates.
    tol : float, default 1e-4
        Convergence threshold, see ``tol_mode``; ``tol=0`` runs to the fixed
        point or ``max_iter``.
    tol_mode : {"relative", "absolute"}, default "relative"
        "relative" (scikit-learn's): stop when the sum of the squared centre
        moves is at most ``tol * mean(var(X, axis=0))`` -- the same on data of
        any scale.  "absolute" (the exercise's): stop when every centre moved
        less than ``tol``, in data units.  Both also stop at a fixed point.
    random_state : None, int, numpy.random.Generator, numpy.random.RandomState or torch.Generator
        Source of all randomness (never a global RNG).  Same seed, same
        bits -- across runs and CPU thread counts.  A fixed init (indices or
        centres) draws nothing from it.
    working_memory : float, optional
        MiB budget for one block of the N x K distances.
    backend : {"auto", "torch", "triton"}
        Distance kernels; ``"auto"`` uses Triton for CUDA tensors when installed.

    Returns
    -------
    KMeansResult
        ``centers``, ``labels``, ``inertia``, ``n_iter``, ``converged``,
        ``history``, ``init_centers`` -- NumPy for NumPy input, tensors on
        X's device for tensor input.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    >>> r = sqdist.kmeans(X, init=[0, 2])  # fixed row indices as initial centres
    >>> r.labels.tolist(), r.centers.tolist(), r.inertia
    ([0, 0, 1, 1], [[0.0, 0.5], [10.0, 0.5]], 1.0)
    >>> r.n_iter, r.converged  # the second iteration found that nothing moves
    (2, True)
    >>> sqdist.kmeans(X, init=[0, 2], sample_weight=[3, 1, 1, 1]).centers.tolist()
    [[0.0, 0.25], [10.0, 0.5]]
    """
    if is_out_of_core(X) or is_distributed():  # a path or chunks, or several ranks
        return _fit_streamed(X, n_clusters, sample_weight=sample_weight, init=init, n_init=n_init,
                             max_iter=max_iter, tol=tol, tol_mode=tol_mode, random_state=random_state,
                             working_memory=working_memory, backend=backend)
    Xt, was_numpy = _check_points(X)
    N, D = Xt.shape
    w = check_sample_weight(sample_weight, N, Xt.device)
    if draws(init):
        gen = as_generator(random_state)
    else:  # fixed indices or centres: nothing to draw, so no generator (random_state is still checked)
        check_random_state(random_state)
        gen = None
    if callable(init):  # called once per run, as scikit-learn does (sqdist._init.initial_centers)
        K = check_positive_int(n_clusters, "n_clusters")
        init_k = ("callable", functools.partial(call_init, init, X, K, N, D, Xt.device))
    else:
        init_k, K = parse_init(init, n_clusters, N, D, Xt.device)
    _check_positive_weights(w, K, init_k)
    budget = _chunking.resolve_budget(working_memory)
    tol_mode = check_choice(tol_mode, "tol_mode", TOL_MODES)
    tol = check_positive_number(tol, "tol", allow_zero=True)
    if tol_mode == "relative" and tol > 0:
        tol = tol * _mean_variance(Xt, budget)
    opts = FitOptions(
        n_clusters=K, init=init_k, n_init=_runs(init, init_k, n_init), max_iter=check_positive_int(max_iter, "max_iter"),
        tol=tol, tol_mode=tol_mode, budget=budget, backend=resolve_backend(backend, Xt.device),
        cdtype=compute_dtype(Xt.dtype), was_numpy=was_numpy,
    )
    result, counts = fit(InMemory(Xt, opts, w), opts, gen)
    _warn_if_empty(counts, K)
    return result


def kmeans_plusplus(
    X: Any, n_clusters: int, *, sample_weight: Any = None, x_squared_norms: Any = None, random_state: Any = None,
    n_local_trials: int | None = None, working_memory: float | None = None,
) -> tuple[Any, Any]:
    """Initial centres by greedy k-means++, as ``sklearn.cluster.kmeans_plusplus``.

    Parameters
    ----------
    X : array-like or Tensor of shape (N, D)
    n_clusters : int
        Number of centres, ``1 <= n_clusters <= N``.
    sample_weight : array-like of shape (N,), optional
        Non-negative weights: the first centre is drawn in proportion to them,
        the next candidates in proportion to ``weight * squared distance``.
    x_squared_norms : array-like of shape (N,), optional
        Accepted for scikit-learn compatibility (its length is checked); sqdist
        computes the distances exactly without them.
    random_state : None, int, numpy Generator / RandomState or torch.Generator
    n_local_trials : int, optional
        Candidates tried per centre; default ``2 + floor(log(n_clusters))``.
    working_memory : float, optional
        MiB budget for one block of distances.

    Returns
    -------
    centers : of shape (n_clusters, D)
        Rows of X (exact copies), NumPy for NumPy input, else tensors.
    indices : int64 of shape (n_clusters,)
        ``X[indices] == centers``.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.0, 0.1]])
    >>> centers, idx = sqdist.kmeans_plusplus(X, 2, random_state=0)
    >>> sorted(np.round(centers[:, 0]).tolist()), np.array_equal(X[idx], centers)
    ([0.0, 10.0], True)
    """
    Xt, was_numpy = _check_points(X)
    N = Xt.shape[0]
    K = check_positive_int(n_clusters, "n_clusters")
    if K > N:
        raise SqdistError(f"n_clusters: expected at most the number of points {N}, got {K}")
    if n_local_trials is not None:
        n_local_trials = check_positive_int(n_local_trials, "n_local_trials")
    if x_squared_norms is not None and len(x_squared_norms) != N:
        raise SqdistError(f"x_squared_norms: The length of x_squared_norms ({len(x_squared_norms)}) should be equal to "
                          f"the length of n_samples ({N})")
    w = check_sample_weight(sample_weight, N, Xt.device)
    _check_positive_weights(w, 1, "k-means++")
    C, idx = kmeans_plusplus_impl(Xt, K, as_generator(random_state), _chunking.resolve_budget(working_memory),
                                  compute_dtype(Xt.dtype), w, n_local_trials)
    C = Xt[idx.to(Xt.device)]  # the rows themselves, in X's dtype
    return (C.numpy(), idx.numpy()) if was_numpy else (C, idx.to(Xt.device))


def kmeans_stream(
    X: Any,
    n_clusters: int | None = None,
    *,
    sample_weight: Any = None,
    init: Any = "k-means++",
    n_init: int | str = "auto",
    max_iter: int = 300,
    tol: float = 1e-4,
    tol_mode: str = "relative",
    random_state: Any = None,
    working_memory: float | None = None,
    backend: str = "auto",
    device: Any = None,
    dtype: torch.dtype | None = None,
    labels_out: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: str | os.PathLike | None = None,
) -> KMeansResult:
    """Lloyd k-means over data streamed in chunks, on one process or on every rank of a process group.

    :func:`sqdist.kmeans` calls this for a path, memory map or re-iterable
    of chunks, and whenever a ``torch.distributed`` process group is
    initialised; call it directly for the options below.  Same algorithm,
    stopping rule, empty-cluster policy and history as :func:`sqdist.kmeans`.

    Parameters
    ----------
    X : path, np.memmap, ParquetSource, FeatherSource, DataLoader, re-iterable of batches, or array of shape (N, D)
        A ``.npy``, ``.parquet`` or ``.arrow``/``.feather`` path (the last two
        need ``pyarrow``; :class:`sqdist.ParquetSource` chooses the columns) or
        a memory map is read chunk by chunk: resident memory is bounded by
        ``working_memory``, not by N.  A re-iterable of batches -- a
        ``torch.utils.data.DataLoader``, a list of blocks -- yields (n_i, D)
        arrays or tensors, or ``(x, y, ...)`` tuples whose ``x`` is taken;
        a one-shot generator is refused.  A DataLoader with ``shuffle=True``
        yields another order every pass: sums are then added in another
        order (equal to ~1e-12, not bit for bit), a sampled init depends on
        the loader's shuffling and ``labels_out`` is refused (see
        docs/scaling.md); with ``shuffle=False`` the fit is bit-identical to
        the same rows in an array.  Under ``torch.distributed`` a path,
        memory map or array is the *global* data (each rank reads its
        contiguous slice of whole chunks), a re-iterable is *this rank's*
        shard (the ranks' shards in rank order make the global data).
    n_clusters, init, n_init, max_iter, tol, tol_mode, random_state, working_memory, backend
        As in :func:`sqdist.kmeans`.  ``"k-means++"`` and ``"random"`` run on a
        seeded sample of ``max(65536, 20 K)`` global row indices (all rows when
        N is smaller -- then the initial centres are those of
        :func:`sqdist.kmeans`), the same on every rank.  A callable ``init``
        needs data in memory.  ``tol_mode="relative"`` costs one more pass
        over the data (the features' variance).
    sample_weight : array-like of shape (N,), ``.npy`` path or memory map, optional
        The weight of every global row (for files: a 1-D ``.npy`` beside the
        data, memory-mapped; under ``torch.distributed`` every rank reads the
        weights of its own rows).  Not supported with an iterable of chunks.
    device : str or torch.device, optional
        Where chunks are computed (default: the data's device; CPU for files).
    dtype : torch.dtype, optional
        Cast every chunk to this dtype (default: the data's own).
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
    >>> r.centers.tolist(), r.inertia, r.n_iter, r.converged, r.stopped  # the first update moved nothing
    ([[0.0, 0.0], [10.0, 10.0]], 0.0, 1, True, 'tol')
    """
    return _fit_streamed(X, n_clusters, sample_weight=sample_weight, init=init, n_init=n_init, max_iter=max_iter,
                         tol=tol, tol_mode=tol_mode, random_state=random_state, working_memory=working_memory,
                         backend=backend, device=device, dtype=dtype, labels_out=labels_out, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every, resume=resume)


def _fit_streamed(X: Any, n_clusters: Any, *, sample_weight: Any, init: Any, n_init: Any, max_iter: Any, tol: Any,
                  tol_mode: str, random_state: Any, working_memory: Any, backend: str, device: Any = None,
                  dtype: torch.dtype | None = None, labels_out: Any = None, checkpoint: Any = None,
                  checkpoint_every: Any = 1, resume: Any = None) -> KMeansResult:
    """Validate the streamed fit's arguments, open this rank's shard and run the engine."""
    if callable(init):
        raise SqdistError("init: a callable init needs the data in memory; pass an array (or call it yourself)")
    K = n_clusters_of(init, n_clusters)
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive_number(tol, "tol", allow_zero=True)
    tol_mode = check_choice(tol_mode, "tol_mode", TOL_MODES)
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise SqdistError(f"dtype: expected None or a torch floating dtype, got {dtype!r}")
    budget = _chunking.resolve_budget(working_memory)
    outputs = {k: check_output_path(v, k) for k, v in (("labels_out", labels_out), ("checkpoint", checkpoint))
               if v is not None}
    check_no_alias(outputs, {"X": X, "sample_weight": sample_weight})
    if "labels_out" in outputs:  # a checkpoint may be resumed from and written again; the labels may not
        check_no_alias({"labels_out": outputs["labels_out"]}, {"resume": resume, "checkpoint": checkpoint})
    source = as_source(X)
    if labels_out is not None and getattr(source, "reorders", False):
        raise SqdistError("labels_out: the DataLoader draws a new order every pass (shuffle=True or a random "
                          "sampler), so labels in pass order would match no row; use shuffle=False for labels")
    in_memory = isinstance(source, ArraySource)
    dev = resolve_device(device, "device")
    dev = dev if dev is not None else (source.t.device if in_memory else torch.device("cpu"))
    backend = resolve_backend(backend, dev)
    comm = Comm()
    if comm.active and comm.backend == "nccl" and dev.type != "cuda":
        raise SqdistError(f"device: the process group uses NCCL, so compute on CUDA (device='cuda'), got {dev}")
    shard = open_shard(source, K, budget, dtype, dev, comm, sample_weight)
    init_k, K = parse_init(init, n_clusters, shard.n_rows, source.n_features, torch.device("cpu"))
    n_init = _runs(init, init_k, n_init)
    if n_init != 1 and (checkpoint is not None or resume is not None):
        raise SqdistError(f"n_init: checkpoints and resume need n_init=1, got n_init={n_init}")
    if tol_mode == "relative" and tol > 0:
        tol = tol * feature_variance(shard, comm)
    opts = FitOptions(
        n_clusters=K, init=init_k, n_init=n_init, max_iter=max_iter, tol=tol, tol_mode=tol_mode, budget=budget,
        backend=backend, cdtype=compute_dtype(shard.dtype), was_numpy=source.numpy_out, checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, resume=resume, labels_out=labels_out, keep_labels=in_memory,
    )
    result, counts = fit(Streamed(shard, comm, dev, opts), opts, as_generator(random_state))
    _warn_if_empty(counts, K)
    return result


def _check_points(X: Any) -> tuple[torch.Tensor, bool]:
    """X as a 2-D tensor with at least one point and one feature, every row finite."""
    if is_sparse(X) or isinstance(X, CSR):  # sparse rows (sqdist._sparse): kept sparse, never densified
        Xs = sparse_points(X, "X")
        return Xs, Xs.was_numpy
    Xt, was_numpy = as_tensor(X, "X")
    if Xt.ndim != 2:
        raise SqdistError(f"X: expected shape (N, D), got {describe(Xt)}")
    if Xt.shape[0] == 0 or Xt.shape[1] == 0:
        raise SqdistError(f"X: expected at least one point and one feature, got {describe(Xt)}")
    check_finite_rows(Xt, "X")
    return Xt, was_numpy


def check_sample_weight(sample_weight: Any, N: int, device: torch.device) -> torch.Tensor | None:
    """(N,) float64 weights on ``device`` (finite, >= 0, positive sum), or None for unit weights."""
    if sample_weight is None:
        return None
    w = torch.as_tensor(np.asarray(sample_weight, dtype=np.float64)
                        if not isinstance(sample_weight, torch.Tensor) else sample_weight)
    if w.ndim == 0:  # a scalar weighs every point the same: the fit of unit weights
        w = w.expand(N)
    if w.shape != (N,):
        raise SqdistError(f"sample_weight: expected shape ({N},), one weight per point, got {describe(sample_weight)}")
    w = w.to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise SqdistError("sample_weight: expected finite weights >= 0, got NaN, Inf or a negative weight")
    if not bool((w > 0).any()):
        raise SqdistError("sample_weight: every weight is zero; at least one point must weigh more than 0")
    return None if bool((w == 1).all()) else w  # unit weights: the unweighted (fused) path, same bits


def _check_positive_weights(w: torch.Tensor | None, K: int, init: Any) -> None:
    """"random" draws K distinct rows of positive weight: there must be that many."""
    if w is not None and isinstance(init, str) and init == "random" and int((w > 0).sum()) < K:
        raise SqdistError(f"sample_weight: init='random' draws {K} distinct points of positive weight, "
                          f"only {int((w > 0).sum())} have one")


def _mean_variance(X: torch.Tensor, budget: int) -> float:
    """Mean over the features of their (population) variance, float64, in row blocks within ``budget``."""
    if isinstance(X, CSR):
        return sparse_mean_variance(X)
    N, D = X.shape
    rows = _chunking.rows_per_chunk(N, 3 * 8 * D, budget, what="the features' variance")
    return merge_moments([block_moments(X[sl]) for sl in _chunking.row_slices(N, rows)])


def _caller_level() -> int:
    """``stacklevel`` of the first frame outside sqdist: warnings point at the user's line."""
    frame, level = sys._getframe(1), 1
    pkg = os.path.dirname(os.path.abspath(__file__))
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == pkg:
        frame, level = frame.f_back, level + 1
    return level


class FixedInitWarning(SqdistWarning, RuntimeWarning):
    """More than one run was asked for with a fixed init, which runs once (scikit-learn warns a RuntimeWarning)."""


def resolve_n_init(init: Any, n_init: Any) -> int:
    """How many initialisations a fit runs: "auto" is 1 for "k-means++" and fixed inits (indices,
    centres), 10 for "random" and callables (scikit-learn's rule); a fixed init always runs once."""
    fixed = not isinstance(init, str) and not callable(init)
    if n_init == "auto":
        return 1 if fixed or init == "k-means++" else 10
    n_init = check_positive_int(n_init, "n_init")
    return 1 if fixed else n_init


def _runs(init: Any, init_k: Any, n_init: Any) -> int:
    """:func:`resolve_n_init`, with scikit-learn's warning when a fixed init was asked to run more than once."""
    runs = resolve_n_init(init, n_init)
    if n_init != "auto" and runs != n_init:
        warnings.warn(f"Explicit initial center position passed: performing only one init instead of n_init={n_init} "
                      f"(a fixed init runs once)", FixedInitWarning, stacklevel=_caller_level())
    return runs


def _warn_if_empty(counts: torch.Tensor | np.ndarray, K: int) -> None:
    """ConvergenceWarning when the final clustering has empty clusters (``counts``: a tensor or an array)."""
    n_nonempty = (int(np.count_nonzero(counts)) if isinstance(counts, np.ndarray)
                  else int(np.count_nonzero(counts.numpy())) if counts.is_cpu else int((counts > 0).sum()))
    if n_nonempty < K:
        warnings.warn(
            f"Number of distinct clusters ({n_nonempty}) found smaller than n_clusters ({K}). Possibly due to "
            f"duplicate points in X (k-means ended with {n_nonempty} non-empty clusters).",
            ConvergenceWarning,
            stacklevel=_caller_level(),
        )
