"""The exercise's solutions, written plainly, as a student would (IN3310 week 2).

Task 1 -- the squared distance matrix ``d[i, j] = ||X[i, :] - T[j, :]||^2``
four ways: two Python for-loops, NumPy broadcasting, PyTorch broadcasting (the
same function runs on the GPU for CUDA tensors) and PyTorch with the expansion
``||x||^2 + ||t||^2 - 2 x.t``.  Task 3 -- k-means in plain PyTorch from fixed
initial rows of X, with the exercise's stopping rule.

Each line carries its shape.  The notebook ``notebooks/exercise.ipynb`` shows
exactly this source (it is generated from it); the library's own, faster and
exact versions are :func:`sqdist.sqdist` and :func:`sqdist.kmeans`.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
import torch

from ._validation import SqdistError

__all__ = [
    "KMeansSolution",
    "check_shapes",
    "distances_loops",
    "distances_numpy",
    "distances_torch",
    "distances_torch_expansion",
    "inertia_torch",
    "kmeans_torch",
]


def check_shapes(X, T) -> None:
    """Raise :class:`sqdist.SqdistError` unless X is (N, D) and T is (P, D).

    Examples
    --------
    >>> import numpy as np
    >>> from sqdist import SqdistError
    >>> check_shapes(np.zeros((3, 2)), np.zeros((4, 2)))
    >>> try:
    ...     check_shapes(np.zeros((3, 2)), np.zeros((4, 5)))
    ... except SqdistError as e:
    ...     print(e)
    T: expected shape (P, 2) like X's (3, 2), got (4, 5)
    """
    if X.ndim != 2:
        raise SqdistError(f"X: expected a 2-D array of shape (N, D), got shape {tuple(X.shape)}")
    if T.ndim != 2 or T.shape[1] != X.shape[1]:
        raise SqdistError(f"T: expected shape (P, {X.shape[1]}) like X's {tuple(X.shape)}, got {tuple(T.shape)}")


def distances_loops(X: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Squared distances with two Python for-loops over the rows of X and T.

    Parameters
    ----------
    X : ndarray of shape (N, D)
    T : ndarray of shape (P, D)

    Returns
    -------
    d : ndarray of shape (N, P), ``d[i, j] = ||X[i, :] - T[j, :]||^2``

    Examples
    --------
    >>> import numpy as np
    >>> distances_loops(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[3.0, 4.0]]))
    array([[25.],
           [13.]])
    """
    X, T = np.asarray(X), np.asarray(T)
    check_shapes(X, T)
    N, P = X.shape[0], T.shape[0]
    d = np.zeros((N, P), dtype=np.result_type(X, T))  # (N, P)
    for i in range(N):
        for j in range(P):
            diff = X[i, :] - T[j, :]  # (D,)
            d[i, j] = np.sum(diff**2)  # scalar
    return d


def distances_numpy(X: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Squared distances with NumPy broadcasting: (N, 1, D) - (1, P, D) -> (N, P, D).

    Needs an N x P x D temporary -- D times the memory of the result.

    Examples
    --------
    >>> import numpy as np
    >>> distances_numpy(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[3.0, 4.0]]))
    array([[25.],
           [13.]])
    """
    X, T = np.asarray(X), np.asarray(T)
    check_shapes(X, T)
    diff = X[:, None, :] - T[None, :, :]  # (N, 1, D) - (1, P, D) -> (N, P, D)
    return (diff**2).sum(axis=2)  # (N, P)


def distances_torch(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Squared distances with PyTorch broadcasting, on X's device.

    The same code is "PyTorch CPU" and "PyTorch GPU": pass CUDA tensors and
    it runs on the GPU.  Like :func:`distances_numpy` it builds an N x P x D
    temporary.

    Examples
    --------
    >>> import torch
    >>> distances_torch(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 4.0]]))
    tensor([[25.],
            [13.]])
    """
    X, T = torch.as_tensor(X), torch.as_tensor(T)
    check_shapes(X, T)
    T = T.to(X.device)  # (P, D) on X's device
    diff = X[:, None, :] - T[None, :, :]  # (N, 1, D) - (1, P, D) -> (N, P, D)
    return (diff**2).sum(dim=2)  # (N, P)


def distances_torch_expansion(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Squared distances as ``||x||^2 + ||t||^2 - 2 x.t``: one matrix product, no N x P x D temporary.

    Fast (the product runs on BLAS / the GPU's matrix units) and small (only
    N x P), but it subtracts large, nearly equal numbers: for points at
    distance R from the origin and distance r from each other the rounding
    error is about ``eps * R**2``, so ``r**2`` loses ``log10(R**2 / r**2)``
    digits -- in float32 (eps ~ 1e-7) points 1e3 apart-from-the-origin and 1
    apart-from-each-other keep only one digit.  Rounding can even make the
    result negative, hence the clamp at 0.  :func:`sqdist.sqdist` avoids this.

    Examples
    --------
    >>> import torch
    >>> distances_torch_expansion(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 4.0]]))
    tensor([[25.],
            [13.]])
    """
    X, T = torch.as_tensor(X), torch.as_tensor(T)
    check_shapes(X, T)
    T = T.to(X.device)  # (P, D) on X's device
    x2 = (X**2).sum(dim=1, keepdim=True)  # (N, 1)
    t2 = (T**2).sum(dim=1)[None, :]  # (1, P)
    d = x2 + t2 - 2 * (X @ T.T)  # (N, 1) + (1, P) - (N, P) -> (N, P)
    return d.clamp(min=0)  # (N, P), rounding can go below 0


class KMeansSolution(NamedTuple):
    """What :func:`kmeans_torch` returns.

    Attributes
    ----------
    centers : Tensor of shape (P, D)
        The converged centres.
    labels : int64 Tensor of shape (N,)
        Index of the nearest final centre of every point.
    n_iter : int
        Iterations run (the pass that finds every move below the threshold counts).
    initial_centers : Tensor of shape (P, D)
        The rows ``X[init_index]``.
    history : list of Tensor of shape (P, D)
        The centres after 0, 1, ..., n_iter iterations (``history[0]`` is the start).
    """

    centers: torch.Tensor
    labels: torch.Tensor
    n_iter: int
    initial_centers: torch.Tensor
    history: list


def inertia_torch(X: torch.Tensor, centers: torch.Tensor) -> float:
    """Sum of the squared distances from every point to its nearest centre.

    Examples
    --------
    >>> import torch
    >>> inertia_torch(torch.tensor([[0.0], [2.0], [10.0]]), torch.tensor([[1.0], [10.0]]))
    2.0
    """
    d = distances_torch(X, centers)  # (N, P)
    return float(d.min(dim=1).values.sum())  # min over the P axis, summed over N


def kmeans_torch(X: torch.Tensor, init_index, max_iter: int = 100, threshold: float = 1e-4) -> KMeansSolution:
    """k-means (Lloyd) in plain PyTorch from fixed initial rows of X, the exercise's way.

    Each iteration assigns every point to its nearest centre
    (:func:`distances_torch`, then ``argmin`` over the P axis) and moves every
    centre to the mean of its points; a centre with no points stays where it
    is.  Stops after ``max_iter`` iterations or when every centre moved less
    than ``threshold`` (Euclidean distance between old and new centre).

    Parameters
    ----------
    X : Tensor of shape (N, D)
        Data (float32 or float64), on any device; the work runs there.
    init_index : sequence of int, length P
        Rows of X used as the initial centres (fixed, so anyone can reproduce the run).
    max_iter : int, default 100
        Maximum number of iterations M (0 returns the initial centres).
    threshold : float, default 1e-4
        Stop once every centre moved less than this, in data units.

    Returns
    -------
    KMeansSolution

    Examples
    --------
    >>> import torch
    >>> X = torch.tensor([[0.0], [1.0], [9.0], [11.0]])
    >>> sol = kmeans_torch(X, [0, 1])
    >>> sol.centers.flatten().tolist(), sol.labels.tolist(), sol.n_iter
    ([0.5, 10.0], [0, 0, 1, 1], 3)
    """
    X = torch.as_tensor(X)
    index = torch.as_tensor(init_index, dtype=torch.long).flatten()
    if X.ndim != 2:
        raise SqdistError(f"X: expected a 2-D tensor of shape (N, D), got shape {tuple(X.shape)}")
    if index.numel() == 0 or bool(((index < 0) | (index >= X.shape[0])).any()):
        raise SqdistError(f"init_index: expected row indices in [0, {X.shape[0]}), got {index.tolist()}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise SqdistError(f"max_iter: expected an integer >= 0, got {max_iter!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not threshold >= 0:
        raise SqdistError(f"threshold: expected a number >= 0, got {threshold!r}")

    T = X[index.to(X.device)].clone()  # (P, D) initial centres: fixed rows of X
    history = [T.clone()]
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        labels = distances_torch(X, T).argmin(dim=1)  # (N, P) -> (N,) nearest centre
        T_new = T.clone()  # (P, D); an empty cluster keeps its centre
        for j in range(T.shape[0]):
            members = X[labels == j]  # (|Ind(j)|, D)
            if members.shape[0] > 0:
                T_new[j] = members.mean(dim=0)  # (D,)
        moved = (T_new - T).norm(dim=1)  # (P,) how far every centre moved
        T = T_new
        history.append(T.clone())
        if bool((moved < threshold).all()):
            break
    labels = distances_torch(X, T).argmin(dim=1)  # (N,) labels of the final centres
    return KMeansSolution(T, labels, n_iter, history[0], history)
