"""sqdist.rbf: exp(-d / gamma) on the exact distances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sqdist
from sqdist import SqdistError


def ref_rbf(X, T, gamma):
    X, T = np.asarray(X, dtype=np.float64), np.asarray(T, dtype=np.float64)
    return np.exp(-((X[:, None, :] - T[None, :, :]) ** 2).sum(-1) / gamma)


def data(n=30, p=20, D=4, offset=0.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return ((torch.randn(n, D, generator=g, dtype=torch.float64) + offset).to(dtype),
            (torch.randn(p, D, generator=g, dtype=torch.float64) + offset).to(dtype))


@pytest.mark.parametrize("gamma", [0.3, 1.0, 7.5])
def test_rbf_is_exp_of_minus_d_over_gamma(gamma):
    X, T = data()
    k = sqdist.rbf(X.numpy(), T.numpy(), gamma)
    assert isinstance(k, np.ndarray) and k.shape == (30, 20) and k.dtype == np.float64
    np.testing.assert_allclose(k, ref_rbf(X, T, gamma), rtol=1e-12, atol=0)
    np.testing.assert_allclose(k, np.exp(-sqdist.sqdist(X.numpy(), T.numpy()) / gamma), rtol=1e-14)


def test_rbf_equals_sklearn_with_inverse_gamma():
    pairwise = pytest.importorskip("sklearn.metrics.pairwise")
    X, T = data(seed=1)
    np.testing.assert_allclose(sqdist.rbf(X.numpy(), T.numpy(), 2.5),
                               pairwise.rbf_kernel(X.numpy(), T.numpy(), gamma=1 / 2.5), rtol=1e-10, atol=1e-300)


def test_rbf_float32_far_from_the_origin_and_identical_rows():
    X, T = data(offset=1000.0, seed=2, dtype=torch.float32)
    T[3] = X[5]
    k = sqdist.rbf(X, T, 4.0)
    assert k.dtype == torch.float32 and isinstance(k, torch.Tensor)
    assert k[5, 3] == 1.0
    np.testing.assert_allclose(k.numpy(), ref_rbf(X.numpy(), T.numpy(), 4.0), rtol=1e-5, atol=1e-30)
    assert ((k > 0) & (k <= 1)).all()


def test_rbf_half_precision():
    X, T = data(seed=3, dtype=torch.float16)
    k = sqdist.rbf(X, T, 2.0)
    assert k.dtype == torch.float16
    np.testing.assert_allclose(k.double().numpy(), ref_rbf(X.double().numpy(), T.double().numpy(), 2.0),
                               rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("gamma", [0, -1.0, float("nan"), float("inf"), True, "1", None, torch.tensor(1.0)])
def test_rbf_bad_gamma(gamma):
    with pytest.raises(SqdistError, match=r"gamma: expected .*" + ("" if isinstance(gamma, torch.Tensor) else "got")):
        sqdist.rbf(np.ones((2, 2)), np.ones((3, 2)), gamma)


def test_rbf_bad_gamma_message_names_the_value():
    with pytest.raises(SqdistError, match=r"gamma: expected a number > 0, got -2\.0"):
        sqdist.rbf(np.ones((2, 2)), np.ones((3, 2)), -2.0)


def test_rbf_bad_inputs():
    with pytest.raises(SqdistError, match="2-D"):
        sqdist.rbf(np.ones((2, 3, 2)), np.ones((3, 2)), 1.0)
    with pytest.raises(SqdistError, match="same number of features"):
        sqdist.rbf(np.ones((2, 3)), np.ones((3, 2)), 1.0)


def test_rbf_gradcheck_float64():
    X, T = data(4, 5, 3, seed=4)
    X.requires_grad_(True)
    T.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: sqdist.rbf(a, b, 1.7), (X, T))


def test_rbf_gradient_finite_at_coincident_points():
    X, T = data(5, 4, 3, offset=1000.0, seed=5, dtype=torch.float32)
    T[0] = X[0]
    T[2] = X[3]
    X.requires_grad_(True)
    T.requires_grad_(True)
    k = sqdist.rbf(X, T, 3.0)
    assert k[0, 0] == 1.0 and k[3, 2] == 1.0
    k.sum().backward()
    assert torch.isfinite(X.grad).all() and torch.isfinite(T.grad).all()
    # d/dx_i sum_j exp(-|x_i - t_j|^2 / g) = sum_j k_ij * (-2 / g) (x_i - t_j), in float64
    Xd, Td = X.detach().double(), T.detach().double()
    diff = Xd[:, None, :] - Td[None, :, :]
    kd = torch.exp(-(diff**2).sum(-1) / 3.0)
    torch.testing.assert_close(X.grad.double(), (kd[:, :, None] * diff).sum(1) * (-2 / 3.0), rtol=1e-3, atol=1e-4)
    # the gradient of a coincident pair alone is exactly zero
    Xs = X.detach()[:1].clone().requires_grad_(True)
    sqdist.rbf(Xs, T.detach()[:1], 3.0).sum().backward()
    assert torch.equal(Xs.grad, torch.zeros_like(Xs))
