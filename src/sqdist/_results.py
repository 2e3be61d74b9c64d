"""The result types of k-means: one record per Lloyd iteration, and the fit's result."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["Iteration", "KMeansResult"]


@dataclass(eq=False)
class Iteration(Mapping):
    """The state after one Lloyd iteration (iteration 0: the initial centres).

    A dataclass that also reads as a mapping (``h["inertia"]``, ``dict(h)``),
    so code written against the earlier list-of-dicts history keeps working.

    Attributes
    ----------
    iteration : int
    centers : array or Tensor of shape (K, D)
        The centres of this state (NumPy for NumPy input, else tensors).
    inertia : float
        Sum of squared distances of the points to their nearest of ``centers``.
    max_shift : float
        Largest Euclidean centre move into this state (0 for iteration 0).
    sizes : int64 ndarray of shape (K,)
        Cluster sizes of the assignment to ``centers``.
    relocated : list of int
        Cluster ids moved by the empty-cluster policy in this update.
    time : float
        Seconds spent on this iteration.
    """

    iteration: int
    centers: Any
    inertia: float
    max_shift: float
    sizes: Any
    relocated: list = field(default_factory=list)
    time: float = 0.0

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class KMeansResult:
    """Outcome of :func:`sqdist.kmeans` and :func:`sqdist.kmeans_stream`.

    Attributes
    ----------
    centers : of shape (K, D)
        Final centres (dtype of X; float32 for half-precision X).
    labels : int64 of shape (N,)
        Index of the nearest final centre of every point (None for streamed
        data without ``labels_out``).
    inertia : float
        Sum of squared distances of the points to their final centres.
    n_iter : int
        Number of centre updates run.
    converged : bool
        True when the stopping rule fired before ``max_iter``.
    history : list of Iteration
        One :class:`~sqdist._results.Iteration` per state, starting with the
        initial centres (iteration 0): ``iteration``, ``centers`` (K, D),
        ``inertia``, ``max_shift`` (largest Euclidean centre move into this
        state; 0 for iteration 0), ``sizes`` (K,) cluster sizes of the
        assignment to these centres, ``relocated`` (cluster ids moved by the
        empty-cluster policy in this update) and ``time`` (seconds spent on
        this iteration).  Each entry also reads as a dict.
    init_centers : of shape (K, D)
        The initial centres of the returned run.
    stopped : {"tol", "fixed point", "max_iter"}
        Why the run stopped: the centres moved less than the tolerance, an
        update left every cluster unchanged, or ``max_iter`` was reached.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> X = np.array([[0.0, 0.0], [0.0, 2.0], [9.0, 0.0], [9.0, 2.0]])
    >>> r = sqdist.kmeans(X, init=[0, 2])
    >>> r.centers.tolist(), r.labels.tolist(), r.inertia, r.stopped
    ([[0.0, 1.0], [9.0, 1.0]], [0, 0, 1, 1], 4.0, 'fixed point')
    >>> [(h.iteration, h.inertia, h.sizes.tolist()) for h in r.history]  # one entry per state
    [(0, 8.0, [2, 2]), (1, 4.0, [2, 2]), (2, 4.0, [2, 2])]
    >>> r.history[1]["max_shift"], r.history[0]["centers"].tolist()  # entries read as dicts too
    (1.0, [[0.0, 0.0], [9.0, 0.0]])
    """

    centers: Any
    labels: Any
    inertia: float
    n_iter: int
    converged: bool
    history: list = field(default_factory=list)
    init_centers: Any = None
    stopped: str = "max_iter"
