"""The k-means estimator :class:`KMeans`: scikit-learn's interface over :func:`sqdist.kmeans`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from . import _chunking, _model_io
from ._backend import resolve_backend
from ._results import KMeansResult
from ._sources import is_out_of_core
from ._step import assign_accumulate
from ._validation import SqdistError, as_tensor, check_finite_rows, compute_dtype, describe, to_output
from .clustering import kmeans, kmeans_stream
from .distances import sqdist

__all__ = ["KMeans"]


class KMeans:
    """k-means estimator with scikit-learn's interface: a thin shell over :func:`sqdist.kmeans`.

    Parameters
    ----------
    n_clusters : int or None, default 8
        ``None`` takes K from an explicit ``init`` (indices or centres).
    init, n_init, max_iter, tol, seed, working_memory, backend
        As in :func:`kmeans`.
    device : str or torch.device, optional
        Move the data there before fitting (e.g. ``"cuda"``); the fitted
        attributes are then tensors on that device.  ``None``: where X is.

    Attributes
    ----------
    cluster_centers_ : of shape (K, D)
    labels_ : int64 of shape (N,)
    inertia_ : float
    n_iter_ : int
    converged_ : bool
    history_ : list of Iteration
        See :class:`sqdist.KMeansResult`.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    >>> km = sqdist.KMeans(2, init=[0, 2]).fit(X)
    >>> km.cluster_centers_.tolist(), km.inertia_
    ([[0.0, 0.5], [10.0, 0.5]], 1.0)
    >>> km.predict(np.array([[9.0, 0.0], [1.0, 1.0]])).tolist()
    [1, 0]
    >>> km.transform(np.array([[0.0, 0.5]])).tolist()
    [[0.0, 100.0]]
    """

    _PARAMS = ("n_clusters", "init", "n_init", "max_iter", "tol", "seed", "working_memory", "backend", "device")

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        seed: Any = None,
        working_memory: float | None = None,
        backend: str = "auto",
        device: Any = None,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self.working_memory = working_memory
        self.backend = backend
        self.device = device

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={getattr(self, k)!r}" for k in self._PARAMS if not isinstance(getattr(self, k), (np.ndarray, torch.Tensor))
        )
        return f"KMeans({args})"

    # -- parameters ---------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters as a dict."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params: Any) -> KMeans:
        """Set constructor parameters; unknown names raise SqdistError."""
        for k, v in params.items():
            if k not in self._PARAMS:
                raise SqdistError(f"set_params: unknown parameter {k!r}; expected one of {', '.join(self._PARAMS)}")
            setattr(self, k, v)
        return self

    # -- fitting ------------------------------------------------------------
    def _to_device(self, X: Any) -> Any:
        if self.device is None:
            return X
        Xt, _ = as_tensor(X, "X")
        return Xt.to(torch.device(self.device))

    def fit(self, X: Any, y: Any = None) -> KMeans:
        """Run k-means on X (N, D); returns self."""
        if is_out_of_core(X):  # a file / memmap / chunks: streamed, each chunk moved to ``device``
            r = kmeans_stream(X, self.n_clusters, init=self.init, n_init=self.n_init, max_iter=self.max_iter, tol=self.tol,
                              seed=self.seed, working_memory=self.working_memory, backend=self.backend, device=self.device)
        else:
            r = kmeans(
                self._to_device(X), self.n_clusters, init=self.init, n_init=self.n_init, max_iter=self.max_iter,
                tol=self.tol, seed=self.seed, working_memory=self.working_memory, backend=self.backend,
            )
        self._set_result(r)
        return self

    @classmethod
    def from_result(cls, result: KMeansResult, **params: Any) -> KMeans:
        """A fitted estimator from a :class:`~sqdist.KMeansResult` (e.g. of :func:`sqdist.kmeans_stream`)
        and constructor ``params``: ``predict``, ``transform``, ``score`` and ``save`` then work on it.

        Examples
        --------
        >>> import numpy as np, sqdist
        >>> r = sqdist.kmeans_stream([np.zeros((3, 1)), np.ones((3, 1))], init=[0, 5])
        >>> sqdist.KMeans.from_result(r, init=[0, 5]).predict(np.array([[0.9]])).tolist()
        [1]
        """
        km = cls(int(result.centers.shape[0]), **params)
        km._set_result(result)
        return km

    def _set_result(self, r: KMeansResult) -> None:
        self.result_ = r
        self.cluster_centers_ = r.centers
        self.labels_ = r.labels
        self.inertia_ = r.inertia
        self.n_iter_ = r.n_iter
        self.converged_ = r.converged
        self.history_ = r.history
        self.n_features_in_ = int(r.centers.shape[1])

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """Fit and return the labels of X."""
        return self.fit(X).labels_

    def _check_fitted(self, X: Any, name: str) -> tuple[torch.Tensor, bool, torch.Tensor]:
        if not hasattr(self, "cluster_centers_"):
            raise SqdistError(f"{name}: this KMeans is not fitted yet; call fit(X) first")
        Xt, was_numpy = as_tensor(self._to_device(X), "X")
        if Xt.ndim != 2 or Xt.shape[1] != self.n_features_in_:
            raise SqdistError(f"X: expected shape (n, {self.n_features_in_}) (the features seen in fit), got {describe(Xt)}")
        check_finite_rows(Xt, "X")
        C = self.cluster_centers_
        C = torch.as_tensor(C) if isinstance(C, np.ndarray) else C
        C = C.to(device=Xt.device, dtype=compute_dtype(torch.promote_types(Xt.dtype, C.dtype)))
        return Xt, was_numpy, C

    def predict(self, X: Any) -> Any:
        """Index of the nearest centre of every row of X (ties: lowest index)."""
        Xt, was_numpy, C = self._check_fitted(X, "predict")
        budget = _chunking.resolve_budget(self.working_memory)
        backend = resolve_backend(self.backend, Xt.device)
        return to_output(assign_accumulate(Xt, C, budget=budget, backend=backend).labels, was_numpy)

    def transform(self, X: Any) -> Any:
        """Squared Euclidean distances of X (n, D) to the centres: (n, K)."""
        Xt, was_numpy, C = self._check_fitted(X, "transform")
        return to_output(sqdist(Xt, C, working_memory=self.working_memory), was_numpy)

    def score(self, X: Any, y: Any = None) -> float:
        """Minus the inertia of X with respect to the fitted centres."""
        Xt, _, C = self._check_fitted(X, "score")
        budget = _chunking.resolve_budget(self.working_memory)
        backend = resolve_backend(self.backend, Xt.device)
        return -float(assign_accumulate(Xt, C, budget=budget, backend=backend).inertia)

    # -- persistence --------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the parameters and fitted state to ``path`` (.npz, no pickle).

        The file is written under a temporary name in the same folder and
        renamed, so an interrupted save never leaves a half-written model.
        """
        if not hasattr(self, "cluster_centers_"):
            raise SqdistError("save: this KMeans is not fitted yet; call fit(X) first")
        _model_io.save(path, self.get_params(), self.result_)

    @classmethod
    def load(cls, path: str | os.PathLike) -> KMeans:
        """Read a model written by :meth:`save` (``allow_pickle=False``: no code runs on load)."""
        params, r = _model_io.load(path)
        km = cls(**params)
        km._set_result(r)
        return km
