"""Gradients of ``sqdist.sqdist`` (and ``sqdist.rbf``): the custom autograd Function of
:mod:`sqdist._autograd` -- exact forward, backward in row blocks within the budget.

Oracles: torch's finite differences (``gradcheck`` / ``gradgradcheck`` in float64),
autograd of the naive broadcasting formula ``((X[:, None] - T[None]) ** 2).sum(-1)``
in float64, and the hand-derived gradient ``2 * sum_j G_ij (x_i - t_j)``.
"""

from __future__ import annotations

import pytest
import torch

import sqdist
from sqdist._autograd import distance_grads

# budgets that force many row blocks in the backward (a row of G costs 2 * P * 8 bytes in float64)
TINY = 0.0005  # MiB


def naive(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    return ((X[:, None, :] - T[None, :, :]) ** 2).sum(-1)


def data(n: int, p: int, d: int, seed: int, offset: float = 0.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = (torch.randn(n, d, generator=g, dtype=torch.float64) + offset).to(dtype)
    T = (torch.randn(p, d, generator=g, dtype=torch.float64) + offset).to(dtype)
    return X, T


@pytest.mark.parametrize("method", ["auto", "gemm", "broadcast"])
@pytest.mark.parametrize("wm", [None, TINY])
def test_gradcheck_with_coincident_points(method, wm):
    """Finite differences agree, also where d = 0 (coincident rows, repeated rows)."""
    X, T = data(6, 5, 3, seed=1)
    T[1] = X[2]
    T[3] = X[2]  # two rows of T on the same point of X
    X[4] = X[0]  # repeated rows of X
    X.requires_grad_(True)
    T.requires_grad_(True)
    f = lambda a, b: sqdist.sqdist(a, b, method=method, working_memory=wm)  # noqa: E731
    assert torch.autograd.gradcheck(f, (X, T))
    assert torch.autograd.gradgradcheck(f, (X, T))


def test_gradcheck_same_tensor_both_sides_and_batches():
    X, T = data(5, 4, 3, seed=2)
    X.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: sqdist.sqdist(a, a), (X,))
    Xb = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    Tb = torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: sqdist.sqdist(a, b, working_memory=TINY), (Xb, Tb))


@pytest.mark.parametrize("offset", [0.0, 1000.0])
@pytest.mark.parametrize("wm", [None, TINY])
def test_matches_autograd_of_the_naive_formula(offset, wm):
    """float64: gradients of sum(W * d) equal those of the broadcasting formula, also far from the origin."""
    X, T = data(40, 30, 7, seed=3, offset=offset)
    W = torch.rand(40, 30, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    grads = []
    for fn in (lambda a, b: sqdist.sqdist(a, b, working_memory=wm), naive):
        a, b = X.clone().requires_grad_(True), T.clone().requires_grad_(True)
        (fn(a, b) * W).sum().backward()
        grads.append((a.grad, b.grad))
    (gx, gt), (rx, rt) = grads
    scale = float(rx.abs().max())
    torch.testing.assert_close(gx, rx, rtol=1e-10, atol=1e-10 * scale)
    torch.testing.assert_close(gt, rt, rtol=1e-10, atol=1e-10 * scale)


def test_float32_far_from_origin_is_centred():
    """float32 at offset 1e4: the centred backward stays close to the float64 gradient
    (uncentred, x * rowsum(G) - G @ T would cancel ~1e4 against ~1e4)."""
    X, T = data(64, 48, 5, seed=5, offset=1e4, dtype=torch.float32)
    W = torch.rand(64, 48, generator=torch.Generator().manual_seed(6))
    a, b = X.clone().requires_grad_(True), T.clone().requires_grad_(True)
    (sqdist.sqdist(a, b) * W).sum().backward()
    a64, b64 = X.double().requires_grad_(True), T.double().requires_grad_(True)
    (naive(a64, b64) * W.double()).sum().backward()
    scale = float(a64.grad.abs().max())
    assert float((a.grad.double() - a64.grad).abs().max()) <= 1e-4 * scale
    assert float((b.grad.double() - b64.grad).abs().max()) <= 1e-4 * scale


def test_hand_solved_gradient_and_exact_zero_at_a_coincident_pair():
    """d = [[0, 25]] for x = (3, 4), t = (3, 4), (0, 0): dd/dx = 2 (x - t) per pair;
    the pair at d = 0 contributes exactly 0.0 (its subgradient), the other 2 * (3, 4)."""
    X = torch.tensor([[3.0, 4.0]], requires_grad=True)
    T = torch.tensor([[3.0, 4.0], [0.0, 0.0]], requires_grad=True)
    d = sqdist.sqdist(X, T)
    assert d.tolist() == [[0.0, 25.0]]
    d[:, 0].sum().backward(retain_graph=True)
    assert X.grad.tolist() == [[0.0, 0.0]] and T.grad.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    X.grad = T.grad = None
    d.sum().backward()
    assert X.grad.tolist() == [[6.0, 8.0]] and T.grad.tolist() == [[0.0, 0.0], [-6.0, -8.0]]


def test_only_the_inputs_that_need_it_get_gradients():
    X, T = data(5, 4, 2, seed=7)
    X.requires_grad_(True)
    d = sqdist.sqdist(X, T)
    d.sum().backward()
    assert T.grad is None and X.grad is not None
    torch.testing.assert_close(X.grad, 2 * (4 * X.detach() - T.sum(0)))  # sum_j 2 (x_i - t_j)
    X2, T2 = data(5, 4, 2, seed=7)
    T2.requires_grad_(True)
    sqdist.sqdist(X2, T2).sum().backward()
    torch.testing.assert_close(T2.grad, -2 * (X2.sum(0) - 5 * T2.detach()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_gradient_dtypes_follow_the_inputs(dtype):
    X, T = data(6, 5, 3, seed=8, dtype=dtype)
    X.requires_grad_(True)
    T64 = T.double().requires_grad_(True)  # mixed: the result is float64
    d = sqdist.sqdist(X, T64)
    assert d.dtype == torch.float64
    d.sum().backward()
    assert X.grad.dtype == dtype and T64.grad.dtype == torch.float64
    want = 2 * (5 * X.detach().double() - T.double().sum(0))
    torch.testing.assert_close(X.grad.double(), want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("D", [2, 20, 40])  # the compiled direct formula (2, 20) and the product path (40)
def test_forward_is_the_exact_no_autograd_path(D):
    """The recorded forward gives the same bits as the call without autograd (the
    accuracy contract: exact zeros, never negative), far from the origin too."""
    X, T = data(50, 40, D, seed=9, offset=1000.0, dtype=torch.float32)
    T[:5] = X[:5]
    want = sqdist.sqdist(X, T)
    got = sqdist.sqdist(X.clone().requires_grad_(True), T)
    assert got.requires_grad and torch.equal(got.detach(), want)
    assert (got.detach().diagonal()[:5] == 0).all() and (got.detach() >= 0).all()


def test_rbf_gradient_goes_through_the_function():
    X, T = data(7, 6, 3, seed=10)
    X.requires_grad_(True)
    T.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: sqdist.rbf(a, b, 0.7, working_memory=TINY), (X, T))


def test_distance_grads_blocks_do_not_change_the_result():
    """Any block height gives the same gradients up to the last bits (G expanded from a scalar too)."""
    X, T = data(33, 17, 4, seed=11)
    G = torch.rand(33, 17, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    one = distance_grads(X, T, G, True, True, 2**30)
    for budget in (17 * 16, 5 * 17 * 16):  # one row, five rows per block
        many = distance_grads(X, T, G, True, True, budget)
        torch.testing.assert_close(many[0], one[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(many[1], one[1], rtol=1e-12, atol=1e-12)
    gx, gt = distance_grads(X, T, torch.ones(()).expand(33, 17).double(), True, False, 17 * 16)
    assert gt is None
    torch.testing.assert_close(gx, 2 * (17 * X - T.sum(0)))
