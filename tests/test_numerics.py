"""The accuracy contract (sqdist._numerics): tau, the assignment margin, centring,
the direct formula, unsafe norms, the prepared right operand, ordered sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sqdist import _cpu_kernels, _cpu_product
from sqdist._numerics import (
    assign_margin,
    centre,
    direct_rows,
    prepare_right,
    segment_add,
    tau,
    unsafe_norms,
)


def test_tau_values_and_properties():
    eps32 = torch.finfo(torch.float32).eps
    # 2 sqrt(d + 2) eps / 1e-5 for float32, capped at 1
    assert tau(torch.float32, 2) == pytest.approx(2 * math.sqrt(4) * eps32 / 1e-5, rel=1e-12)
    assert tau(torch.float32, 1000) < 1.0 and tau(torch.float32, 2000) == 1.0
    # the same number of units of roundoff for every dtype: tau does not depend on it
    for d in (1, 16, 90):
        assert tau(torch.float64, d) == pytest.approx(tau(torch.float32, d), rel=1e-12)
        assert tau(torch.float16, d) == pytest.approx(tau(torch.float32, d), rel=1e-12)
    assert all(tau(torch.float32, d) <= tau(torch.float32, d + 1) for d in range(1, 200))


def test_assign_margin_documented_values():
    assert assign_margin(torch.float32, 4) == 2 * 17 * 2.0**-24
    assert assign_margin(torch.float32, 4, "tf32") == 2 * (2 * 2.0**-11 + 17 * 2.0**-24)
    assert assign_margin(torch.float64, 4) == 2 * 17 * 2.0**-53
    # the fast mode's bound is wider, longer rows widen it
    assert all(assign_margin(torch.float32, d, "tf32") > assign_margin(torch.float32, d) for d in (1, 4, 128))
    assert assign_margin(torch.float32, 4) < assign_margin(torch.float32, 128)
    with pytest.raises(KeyError):
        assign_margin(torch.float32, 4, "bf17")


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 200), st.integers(2, 40), st.sampled_from([0.0, 1e3, 1e5]), st.integers(0, 2**31 - 1))
def test_assign_margin_bounds_the_product_error(D, K, offset, seed):
    """Rows whose best two product values are further apart than the margin have the
    argmin of the float32 direct formula: the bound holds on near-tie data far from the origin."""
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(K, D, generator=g) + offset  # (K, D)
    # points half way between two centres (near ties) and near centres
    a = torch.randint(K, (300,), generator=g)
    b = torch.randint(K, (300,), generator=g)
    X = (C[a] + C[b]) / 2 + 1e-3 * torch.randn(300, D, generator=g)  # (n, D)
    c = C.mean(0)
    Xc, Cc = X - c, C - c
    nt = (Cc * Cc).sum(1)  # (K,)
    e = torch.addmm(nt, Xc, Cc.T, beta=1, alpha=-2)  # (n, K) the product path's values
    two = e.topk(2, dim=1, largest=False).values  # (n, 2)
    gamma = assign_margin(torch.float32, D)
    safe = (two[:, 1] - two[:, 0]) > 2 * gamma * ((Xc * Xc).sum(1) + nt.max())
    direct = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)  # (n, K) float32 direct formula
    assert torch.equal(e.argmin(1)[safe], direct.argmin(1)[safe])


def test_centre_uses_finite_rows_only():
    T = torch.tensor([[1.0, 2.0], [3.0, 4.0], [float("nan"), 0.0], [float("inf"), 1.0]])
    assert centre(T).tolist() == [2.0, 3.0]
    assert centre(T[2:]).tolist() == [0.0, 0.0]  # no finite row
    assert centre(torch.zeros(0, 3)).tolist() == [0.0, 0.0, 0.0]


def test_direct_rows_and_unsafe_norms():
    X = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    T = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    assert direct_rows(X, T).tolist() == [[0.0, 2.0], [25.0, 13.0]]
    n = torch.tensor([1.0, float("nan"), float("inf"), 1e38, 3e37], dtype=torch.float32)
    assert unsafe_norms(n).tolist() == [False, True, True, True, False]  # 4 n overflows from 8.5e37 on


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prepare_right_structure_and_compiled_equal(dtype):
    g = torch.Generator().manual_seed(3)
    T = (torch.randn(50, 7, generator=g) + 1000).to(dtype)
    T[4, 2] = float("nan")
    T[9] = 1e19 if dtype == torch.float32 else 1e154  # finite, but its squared norm overflows
    p = prepare_right(T, dtype)
    Tc = T - p.c
    assert torch.equal(p.Tc[~torch.isnan(Tc)], Tc[~torch.isnan(Tc)])  # exact: -0.5 * -2 v == v
    assert torch.equal(p.Ta[:, 7], torch.ones(50, dtype=dtype))
    torch.testing.assert_close(p.Ta[:, 8], p.nt, rtol=0, atol=0, equal_nan=True)
    assert p.bad_cols.tolist() == [4, 9] and p.tau == tau(dtype, 7)
    ref = centre(T)
    assert torch.equal(p.c, ref)
    if _cpu_kernels.available():
        q = _cpu_product.prepare_right(T)
        assert q.bad_cols.tolist() == [4, 9] and q.tau == p.tau
        torch.testing.assert_close(q.c, p.c, rtol=1e-12 if dtype == torch.float64 else 1e-6, atol=0)
        ok = torch.ones(50, dtype=torch.bool)
        ok[[4, 9]] = False
        torch.testing.assert_close(q.Ta[ok], p.Ta[ok], rtol=1e-5, atol=1e-3)


def test_segment_add_in_row_order():
    """Float64 sums added in row order: the result equals a sequential Python loop bit for bit."""
    rng = np.random.default_rng(0)
    src = torch.from_numpy(rng.normal(size=(5000, 3)) * 10.0 ** rng.integers(-8, 8, size=(5000, 1)))
    idx = torch.from_numpy(rng.integers(0, 4, size=5000))
    out = segment_add(torch.zeros(4, 3, dtype=torch.float64), idx, src)
    ref = np.zeros((4, 3))
    for i, k in enumerate(idx.tolist()):
        ref[k] += src[i].numpy()
    assert np.array_equal(out.numpy(), ref)
