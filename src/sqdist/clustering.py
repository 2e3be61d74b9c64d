"""k-means, the functions: :func:`kmeans` for data in memory, :func:`kmeans_stream` for streamed or distributed data.

Each validates its arguments and resolves "auto" once, builds one
:class:`~sqdist._engine.FitOptions`, and hands trusted data to the Lloyd
engine (:mod:`sqdist._engine`).  Differences from scikit-learn's ``tol``:
scikit-learn scales ``tol`` by the mean feature variance and compares the
*sum of squared* shifts, ``sum_j ||T_old[j] - T_new[j]||**2 <= tol *
mean(var(X, axis=0))``; sqdist compares the largest *unsquared* shift with
``tol`` in data units.  With ``tol=0`` both stop exactly at the fixed point,
so labels agree.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import torch

from . import _chunking
from ._backend import resolve_backend
from ._comm import Comm, is_distributed
from ._engine import FitOptions, InMemory, Streamed, fit
from ._init import INITS, n_clusters_of, parse_init
from ._results import KMeansResult
from ._shard import open_shard
from ._sources import ArraySource, as_source, is_out_of_core
from ._validation import (
    ConvergenceWarning,
    SqdistError,
    SqdistWarning,
    as_tensor,
    check_finite_rows,
    check_positive_int,
    check_positive_number,
    compute_dtype,
    describe,
    make_generator,
)

__all__ = ["INITS", "KMeansResult", "kmeans", "kmeans_stream"]


def kmeans(
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
) -> KMeansResult:
    """Lloyd k-means with exact distances, sklearn-compatible and reproducible.

    Parameters
    ----------
    X : array-like or Tensor of shape (N, D), or out-of-core data
        Data, float32 / float64 (half precision is computed in float32).
        Rows must be finite.  A ``.npy`` path, a ``np.memmap`` or a
        re-iterable of (n_i, D) chunks is streamed chunk by chunk (see
        :func:`sqdist.kmeans_stream`; ``labels`` is then None), and so is any
        data when a ``torch.distributed`` process group is initialised.
    n_clusters : int, optional
        Number of clusters K, ``1 <= K <= N``.  May be omitted when ``init``
        gives the indices or centres.
    init : {"k-means++", "random"}, 1-D int array-like, or array of shape (K, D)
        ``"k-means++"`` -- greedy k-means++ (2 + log K local trials, as
        scikit-learn); ``"random"`` -- K distinct rows drawn with ``seed``;
        integers -- **fixed row indices** into X (the exercise's reproducible
        choice, e.g. ``[0, 50, 100, 150, 200]``); a 2-D array -- the centres.
    n_init : int, default 1
        Restarts for the random inits; the run with the lowest inertia is
        kept (the first one on ties).  Ignored (with a warning) for fixed inits.
    max_iter : int, default 300
        Maximum number of centre updates.
    tol : float, default 1e-4
        Stop when every centre moved less than ``tol`` (Euclidean distance in
        data units, *not* scikit-learn's variance-scaled squared sum); the
        run also stops at a fixed point (every cluster's sum and count unchanged
        by the update, so no centre can move again).  ``tol=0``
        runs to the fixed point or ``max_iter``.
    seed : int, torch.Generator or None
        Source of all randomness (never the global RNG).  Same seed, same
        bits -- across runs and CPU thread counts.
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
    >>> r.n_iter, r.converged
    (1, True)
    """
    if is_out_of_core(X) or is_distributed():  # file / memmap / chunks, or several ranks
        return _fit_streamed(X, n_clusters, init=init, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed,
                             working_memory=working_memory, backend=backend)
    Xt, was_numpy = as_tensor(X, "X")
    if Xt.ndim != 2:
        raise SqdistError(f"X: expected shape (N, D), got {describe(Xt)}")
    if Xt.shape[0] == 0 or Xt.shape[1] == 0:
        raise SqdistError(f"X: expected at least one point and one feature, got {describe(Xt)}")
    check_finite_rows(Xt, "X")
    init_k, K = parse_init(init, n_clusters, Xt.shape[0], Xt.shape[1], Xt.device)
    n_init = check_positive_int(n_init, "n_init")
    opts = FitOptions(
        n_clusters=K, init=init_k, n_init=_runs(init_k, n_init), max_iter=check_positive_int(max_iter, "max_iter"),
        tol=check_positive_number(tol, "tol", allow_zero=True), budget=_chunking.resolve_budget(working_memory),
        backend=resolve_backend(backend, Xt.device), cdtype=compute_dtype(Xt.dtype), was_numpy=was_numpy,
    )
    gen = make_generator(seed)
    result, counts = fit(InMemory(Xt, opts), opts, gen)
    _warn_if_empty(counts, K)
    return result


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
    >>> r.centers.tolist(), r.inertia, r.n_iter, r.converged
    ([[0.0, 0.0], [10.0, 10.0]], 0.0, 1, True)
    """
    return _fit_streamed(X, n_clusters, init=init, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed,
                         working_memory=working_memory, backend=backend, device=device, dtype=dtype,
                         labels_out=labels_out, checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume)


def _fit_streamed(X: Any, n_clusters: Any, *, init: Any, n_init: Any, max_iter: Any, tol: Any, seed: Any,
                  working_memory: Any, backend: str, device: Any = None, dtype: torch.dtype | None = None,
                  labels_out: Any = None, checkpoint: Any = None, checkpoint_every: Any = 1,
                  resume: Any = None) -> KMeansResult:
    """Validate the streamed fit's arguments, open this rank's shard and run the engine."""
    K = n_clusters_of(init, n_clusters)
    n_init = check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_positive_number(tol, "tol", allow_zero=True)
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise SqdistError(f"dtype: expected None or a torch floating dtype, got {dtype!r}")
    budget = _chunking.resolve_budget(working_memory)
    source = as_source(X)
    in_memory = isinstance(source, ArraySource)
    dev = torch.device(device) if device is not None else (source.t.device if in_memory else torch.device("cpu"))
    backend = resolve_backend(backend, dev)
    comm = Comm()
    if comm.active and comm.backend == "nccl" and dev.type != "cuda":
        raise SqdistError(f"device: the process group uses NCCL, so compute on CUDA (device='cuda'), got {dev}")
    shard = open_shard(source, K, budget, dtype, dev, comm)
    init_k, K = parse_init(init, n_clusters, shard.n_rows, source.n_features, torch.device("cpu"))
    n_init = _runs(init_k, n_init)
    if n_init != 1 and (checkpoint is not None or resume is not None):
        raise SqdistError(f"n_init: checkpoints and resume need n_init=1, got n_init={n_init}")
    opts = FitOptions(
        n_clusters=K, init=init_k, n_init=n_init, max_iter=max_iter, tol=tol, budget=budget, backend=backend,
        cdtype=compute_dtype(shard.dtype), was_numpy=source.numpy_out, checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, resume=resume, labels_out=labels_out, keep_labels=in_memory,
    )
    result, counts = fit(Streamed(shard, comm, dev, opts), opts, make_generator(seed))
    _warn_if_empty(counts, K)
    return result


def _caller_level() -> int:
    """``stacklevel`` of the first frame outside sqdist: warnings point at the user's line."""
    frame, level = sys._getframe(1), 1
    pkg = os.path.dirname(os.path.abspath(__file__))
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == pkg:
        frame, level = frame.f_back, level + 1
    return level


def _runs(init: Any, n_init: int) -> int:
    """How many initialisations to run: a fixed init runs once (with a warning when more were asked)."""
    if not isinstance(init, str) and n_init != 1:
        warnings.warn(f"n_init={n_init} with a fixed init: running once", SqdistWarning, stacklevel=_caller_level())
        return 1
    return n_init


def _warn_if_empty(counts: torch.Tensor, K: int) -> None:
    """ConvergenceWarning when the final clustering has empty clusters."""
    n_nonempty = int((counts > 0).sum())
    if n_nonempty < K:
        warnings.warn(
            f"k-means ended with {n_nonempty} non-empty clusters out of n_clusters={K}: "
            f"X probably has fewer than {K} distinct points",
            ConvergenceWarning,
            stacklevel=_caller_level(),
        )
