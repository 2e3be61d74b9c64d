"""The RBF (Gaussian) kernel built on the exact squared distances."""

from __future__ import annotations

from typing import Any

import torch

from . import _chunking
from ._backend import resolve_backend, resolve_method
from ._dense import prepare_inputs, sqdist_2d
from ._sparse import is_sparse, pair_sqdist, prepare_pair
from ._validation import SqdistError, check_positive_number, describe, to_output

__all__ = ["rbf"]


def rbf(X: Any, T: Any, gamma: float, *, working_memory: float | None = None) -> Any:
    """RBF kernel ``phi[i, j] = exp(-||X[i] - T[j]||**2 / gamma)`` (the exercise's convention).

    Parameters
    ----------
    X : array-like or Tensor of shape (N, D)
    T : array-like or Tensor of shape (P, D)
    gamma : float
        Length-scale parameter, ``gamma > 0``; *divides* the squared distance.
        scikit-learn's ``rbf_kernel(X, T, gamma=g)`` computes ``exp(-g * d)``,
        so ``sqdist.rbf(X, T, gamma)`` equals ``rbf_kernel(X, T, gamma=1 / gamma)``.
    working_memory : float, optional
        MiB budget for temporaries (default 256).

    Returns
    -------
    ndarray or Tensor of shape (N, P)
        Values in (0, 1]; exactly 1 for identical rows.  Differentiable with
        respect to both inputs; gradients are finite at coincident points
        (the distance is computed directly there, whose gradient is 0).

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> sqdist.rbf(np.array([[0.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 1.0]]), gamma=2.0)
    array([[1.        , 0.36787944]])
    """
    gamma = check_positive_number(gamma, "gamma")
    if is_sparse(X) or is_sparse(T):  # sparse rows: the sparse product path (sqdist._sparse), dense output
        pair = prepare_pair(X, T)
        d = _chunking.empty_output((pair.X.shape[0], pair.T.shape[0]), pair.dtype, pair.X.device)
        return to_output(pair_sqdist(pair, d, _chunking.resolve_budget(working_memory)).div_(-gamma).exp_(),
                         pair.was_numpy)
    Xt, Tt, was_numpy, dtype = prepare_inputs(X, T)
    if Xt.ndim != 2 or Tt.ndim != 2:
        raise SqdistError(f"X and T: rbf takes 2-D inputs (N, D) and (P, D), got X {describe(Xt)} and T {describe(Tt)}")
    backend = resolve_backend("auto", Xt.device)
    method = resolve_method("auto", Xt, Tt, backend)  # the same path as sqdist()
    out = _chunking.empty_output((Xt.shape[0], Tt.shape[0]), dtype, Xt.device)
    d = sqdist_2d(Xt, Tt, method, backend, out, _chunking.resolve_budget(working_memory))
    if d.requires_grad:
        k = torch.exp(d / -gamma)
    else:
        k = d.div_(-gamma).exp_()
    return to_output(k, was_numpy)
