"""The k-means estimator :class:`KMeans`: a scikit-learn estimator over :func:`sqdist.kmeans`."""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning as _SklearnConvergenceWarning
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.utils.validation import validate_data

from . import _chunking, _model_io
from ._backend import resolve_backend
from ._results import KMeansResult
from ._sources import is_out_of_core
from ._sparse import CSR, as_csr, is_sparse
from ._sparse import check_points as sparse_points
from ._step import assign_accumulate, assign_labels
from ._validation import (
    ConvergenceWarning,
    SqdistError,
    as_tensor,
    check_choice,
    check_finite_rows,
    compute_dtype,
    describe,
    resolve_device,
    to_output,
)
from .clustering import check_sample_weight, kmeans, kmeans_stream, resolve_n_init
from .distances import sqdist

__all__ = ["KMeans", "KMeansConvergenceWarning", "NotFittedError"]

ALGORITHMS = ("lloyd", "elkan")


class NotFittedError(SqdistError, _SklearnNotFittedError):
    """The estimator is used before ``fit``: both sqdist's error and scikit-learn's ``NotFittedError``."""


class KMeansConvergenceWarning(ConvergenceWarning, _SklearnConvergenceWarning):
    """The estimator's convergence warnings: sqdist's and scikit-learn's ``ConvergenceWarning`` at once."""


def _check_fitted(est: KMeans, what: str) -> None:
    if not hasattr(est, "cluster_centers_"):
        raise NotFittedError(f"{what}: this {type(est).__name__} instance is not fitted yet; call 'fit' first")


class _BaseKMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """What :class:`KMeans` and :class:`sqdist.MiniBatchKMeans` share: input validation and the use of
    fitted centres (``predict``, ``transform``, ``score``: sqdist's exact assignment), dense or sparse."""

    # -- input ----------------------------------------------------------------
    def _compute_dtype(self) -> Any:
        if self.dtype is None:
            return [np.float64, np.float32]
        names = {"float32": np.float32, "float64": np.float64, torch.float32: np.float32, torch.float64: np.float64,
                 np.float32: np.float32, np.float64: np.float64}
        try:
            return names[self.dtype]
        except (KeyError, TypeError):
            raise SqdistError(f"dtype: expected None, 'float32' or 'float64', got {self.dtype!r}") from None

    def _validate(self, X: Any, reset: bool) -> Any:
        """scikit-learn's validation for array-likes (feature names, n_features_in_); tensors stay tensors."""
        if isinstance(X, torch.Tensor):
            Xt = as_csr(X, "X") if X.layout != torch.strided else as_tensor(X, "X")[0]  # sparse rows stay sparse
            if Xt.ndim != 2:
                raise SqdistError(f"X: expected shape (N, D), got {describe(Xt)}")
            if reset:
                self.n_features_in_ = int(Xt.shape[1])
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            elif Xt.shape[1] != self.n_features_in_:
                raise SqdistError(f"X has {Xt.shape[1]} features, but {type(self).__name__} is expecting {self.n_features_in_} "
                                  f"features as input")
            if not reset:  # fit: sqdist.kmeans checks the rows itself (one pass, not two)
                sparse_points(Xt, "X") if isinstance(Xt, CSR) else check_finite_rows(Xt, "X")
            dt = self._compute_dtype()
            if not isinstance(dt, list):
                Xt = Xt.to({np.float32: torch.float32, np.float64: torch.float64}[dt])
        else:
            Xt = validate_data(self, X, accept_sparse=("csr", "csc"), dtype=self._compute_dtype(), order="C",
                               copy=False, reset=reset)
        device = resolve_device(self.device, "device")
        if device is None:
            return Xt
        return replace(as_csr(Xt).to(device), was_numpy=False) if is_sparse(Xt) else as_tensor(Xt, "X")[0].to(device)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # scipy.sparse CSR/CSC (and torch sparse): computed sparse, never densified
        return tags

    @property
    def _n_features_out(self) -> int:
        """Number of transformed output features (one distance per centre)."""
        return int(self.cluster_centers_.shape[0])

    # -- using the fit ------------------------------------------------------------
    def _centres_for(self, X: Any) -> tuple[Any, bool, torch.Tensor]:
        _check_fitted(self, "X")
        Xv = self._validate(X, reset=False)
        if is_sparse(Xv):  # sparse rows (scipy.sparse, torch sparse): never densified
            Xt = as_csr(Xv)
            was_numpy = Xt.was_numpy
        else:
            Xt, was_numpy = as_tensor(Xv, "X")
        C = self.cluster_centers_
        C = torch.as_tensor(np.require(C, requirements='W')) if isinstance(C, np.ndarray) else C  # read-only: a copy
        C = C.to(device=Xt.device, dtype=compute_dtype(torch.promote_types(Xt.dtype, C.dtype)))
        return Xt, was_numpy, C

    def _assign(self, X: Any, sample_weight: Any = None):
        Xt, was_numpy, C = self._centres_for(X)
        w = check_sample_weight(sample_weight, Xt.shape[0], Xt.device)
        budget = _chunking.resolve_budget(self.working_memory)
        st = assign_accumulate(Xt.to(C.dtype), C, budget=budget, backend=resolve_backend(self.backend, Xt.device),
                               weights=w)
        return st, was_numpy

    def predict(self, X: Any) -> Any:
        """Index of the nearest centre of every row of X (ties: lowest index)."""
        Xt, was_numpy, C = self._centres_for(X)
        labels = assign_labels(Xt.to(C.dtype), C, budget=_chunking.resolve_budget(self.working_memory),
                               backend=resolve_backend(self.backend, Xt.device))
        return to_output(labels, was_numpy)

    def transform(self, X: Any) -> Any:
        """Euclidean distances of X (n, D) to the centres: (n, K) (scikit-learn's meaning)."""
        d = self.transform_squared(X)
        return np.sqrt(d) if isinstance(d, np.ndarray) else d.sqrt()

    def transform_squared(self, X: Any) -> Any:
        """Exact squared Euclidean distances of X (n, D) to the centres: (n, K)."""
        Xt, was_numpy, C = self._centres_for(X)
        return to_output(sqdist(Xt.to(C.dtype), C, working_memory=self.working_memory), was_numpy)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Minus the (weighted) inertia of X with respect to the fitted centres."""
        st, _ = self._assign(X, sample_weight)
        return -float(st.inertia)


class KMeans(_BaseKMeans):
    """k-means clustering with exact distances: a scikit-learn estimator, a thin shell over :func:`sqdist.kmeans`.

    It drops into ``Pipeline``, ``GridSearchCV``, ``cross_val_score`` and
    ``clone`` and passes scikit-learn's ``check_estimator``; it also takes
    torch tensors (on any device: the fitted attributes are then tensors
    there), ``.npy`` paths and iterables of chunks (streamed, see
    :func:`sqdist.kmeans_stream`; ``labels_`` is then None).

    Parameters
    ----------
    n_clusters : int or None, default 8
        ``None`` takes K from an explicit ``init`` (indices or centres).
    init : {"k-means++", "random"}, callable, 1-D int array-like or array of shape (K, D), default "k-means++"
        As in :func:`sqdist.kmeans`: fixed row indices are the exercise's
        reproducible initialisation.
    n_init : int or "auto", default "auto"
        Restarts; "auto" is 1 for "k-means++" and fixed inits, 10 otherwise.
    max_iter : int, default 300
    tol : float, default 1e-4
    verbose : int, default 0
        A positive value prints the run's history after ``fit`` (initialisation, inertia
        per iteration, why it stopped), in scikit-learn's words.
    random_state : None, int, numpy.random.Generator, numpy.random.RandomState or torch.Generator
        The only source of randomness.
    copy_x : bool, default True
        Accepted for scikit-learn compatibility; sqdist never modifies X.
    algorithm : {"lloyd", "elkan"}, default "lloyd"
        Accepted for scikit-learn compatibility; both run sqdist's exact
        Lloyd iterations (Elkan's method reaches the same fixed point).
    tol_mode : {"relative", "absolute"}, default "relative"
        "relative": scikit-learn's rule (the sum of the squared centre moves
        at most ``tol * mean(var(X, axis=0))``); "absolute": the exercise's
        (every centre moved less than ``tol`` in data units).
    working_memory : float, optional
        MiB budget for temporaries (default :func:`sqdist.get_working_memory`).
    backend : {"auto", "torch", "triton"}, default "auto"
    device : str or torch.device, optional
        Move the data there before fitting (e.g. ``"cuda"``); the fitted
        attributes are then tensors on that device.  ``None``: where X is.
    dtype : {None, "float32", "float64"}, default None
        Compute in this dtype (float32 is faster); ``None``: X's own
        (integers become float64).

    Attributes
    ----------
    cluster_centers_ : of shape (K, D)
    labels_ : int64 of shape (N,)
    inertia_ : float
        Sum of (weighted) squared distances of the points to their centre.
    n_iter_ : int
        Iterations run, counted as scikit-learn and the exercise count them.
    converged_ : bool
    history_ : list of Iteration
        See :class:`sqdist.KMeansResult`.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has feature names (a DataFrame).

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    >>> km = sqdist.KMeans(2, init=[0, 2]).fit(X)
    >>> km.cluster_centers_.tolist(), km.inertia_, km.n_iter_
    ([[0.0, 0.5], [10.0, 0.5]], 1.0, 2)
    >>> km.predict(np.array([[9.0, 0.0], [1.0, 1.0]])).tolist()
    [1, 0]
    >>> km.transform(np.array([[0.0, 0.5]])).tolist()  # Euclidean distances, as scikit-learn
    [[0.0, 10.0]]
    >>> km.transform_squared(np.array([[0.0, 0.5]])).tolist()
    [[0.0, 100.0]]
    """

    def __init__(
        self,
        n_clusters: int | None = 8,
        *,
        init: Any = "k-means++",
        n_init: int | str = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        verbose: int = 0,
        random_state: Any = None,
        copy_x: bool = True,
        algorithm: str = "lloyd",
        tol_mode: str = "relative",
        working_memory: float | None = None,
        backend: str = "auto",
        device: Any = None,
        dtype: Any = None,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.tol_mode = tol_mode
        self.working_memory = working_memory
        self.backend = backend
        self.device = device
        self.dtype = dtype

    # -- fitting ----------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> KMeans:
        """Compute the clustering of X (N, D), optionally weighted; returns self."""
        check_choice(self.algorithm, "algorithm", ALGORITHMS)
        if not isinstance(self.copy_x, (bool, np.bool_)):
            raise SqdistError(f"copy_x: expected a bool, got {self.copy_x!r}")
        if self.algorithm == "elkan" and self.n_clusters == 1:
            warnings.warn("algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead.",
                          RuntimeWarning, stacklevel=2)
        self._n_init = resolve_n_init(self.init, self.n_init)
        kw = dict(sample_weight=sample_weight, init=self.init, n_init=self.n_init, max_iter=self.max_iter,
                  tol=self.tol, tol_mode=self.tol_mode, random_state=self.random_state,
                  working_memory=self.working_memory, backend=self.backend)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if is_out_of_core(X):  # a path or chunks: streamed, each chunk moved to ``device``
                dt = self._compute_dtype()
                dtype = None if isinstance(dt, list) else {np.float32: torch.float32, np.float64: torch.float64}[dt]
                r = kmeans_stream(X, self.n_clusters, device=resolve_device(self.device, "device"), dtype=dtype, **kw)
                self.n_features_in_ = int(r.centers.shape[1])
            else:
                r = kmeans(self._validate(X, reset=True), self.n_clusters, **kw)
        for w in caught:  # again, from here: convergence warnings as scikit-learn's class too
            cat = KMeansConvergenceWarning if issubclass(w.category, ConvergenceWarning) else w.category
            warnings.warn(str(w.message), cat, stacklevel=2)
        self._set_result(r)
        if self.verbose:
            self._print_history(r)
        return self

    def _init_centroids(self, X: Any, x_squared_norms: Any, init: Any, random_state: Any, sample_weight: Any,
                        init_size: int | None = None, n_centroids: int | None = None) -> np.ndarray:
        """Initial centres as scikit-learn's private method of the same name computes them (its own test
        suite calls it): "k-means++", "random", a callable or an array, weighted by ``sample_weight``.
        ``x_squared_norms`` and ``init_size`` are accepted and not needed."""
        K = self.n_clusters if n_centroids is None else n_centroids
        r = kmeans(X, K, sample_weight=sample_weight, init=init, n_init=1, max_iter=1, random_state=random_state,
                   working_memory=self.working_memory, backend=self.backend)
        return np.asarray(r.init_centers)

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit and return the labels of X."""
        return self.fit(X, sample_weight=sample_weight).labels_

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
        km.n_features_in_ = int(result.centers.shape[1])
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

    def _print_history(self, r: KMeansResult) -> None:
        print("Initialization complete")
        for h in r.history:
            print(f"Iteration {h['iteration']}, inertia {h['inertia']}.")
        if r.stopped == "fixed point":
            print(f"Converged at iteration {r.n_iter}: strict convergence.")
        elif r.stopped == "tol":
            print(f"Converged at iteration {r.n_iter}: center shift {r.history[-1]['max_shift']} within tolerance "
                  f"{self.tol} ({self.tol_mode}).")

    # -- persistence --------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the parameters and fitted state to ``path`` (.npz, no pickle).

        The file is written under a temporary name in the same folder and
        renamed, so an interrupted save never leaves a half-written model.
        """
        _check_fitted(self, "save")
        _model_io.save(path, self.get_params(), self.result_)

    @classmethod
    def load(cls, path: str | os.PathLike) -> KMeans:
        """Read a model written by :meth:`save` (``allow_pickle=False``: no code runs on load)."""
        params, r = _model_io.load(path, set(cls._get_param_names()))
        km = cls(**params)
        km.n_features_in_ = int(r.centers.shape[1])
        km._set_result(r)
        return km
