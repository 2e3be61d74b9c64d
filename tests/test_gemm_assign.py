"""The k-means assignment on the own product's register tiles (``assign_gemm_f32`` in
``_ckernels_gemm.h``): bit for bit the transposed path's labels, distances, sums, counts and
inertia (the same products, decisions and subgroup order, without the stored (K, r) blocks)
on any thread count, sqdist's accuracy contract against float64, overflowing products decided
by the direct formula, and the dispatch that sends float32 problems there (beyond 64 features,
and the large ones up to 64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sqdist import _ckernels, _cpu_kernels

pytestmark = pytest.mark.skipif(not (_ckernels.library() is not None and _ckernels.gemm_supported()),
                                reason="needs the C kernels on an AVX2 + FMA CPU")


@pytest.fixture(autouse=True)
def c_kernels(monkeypatch):
    monkeypatch.setenv("SQDIST_CPU_KERNELS", "c")


def run(path: str, X: torch.Tensor, C: torch.Tensor, budget: int = _cpu_kernels.BLOCK_BYTES):
    n = X.shape[0]
    labels, mind = torch.full((n,), -1, dtype=torch.int64), torch.full((n,), np.nan, dtype=X.dtype)
    return getattr(_cpu_kernels, path)(X, C, labels, mind, budget)


def assert_same_bits(a, b) -> None:
    (la, ma, sa, ca, ia), (lb, mb, sb, cb, ib) = a, b
    assert torch.equal(la, lb) and torch.equal(ca, cb)
    assert torch.equal(ma.view(torch.int32), mb.view(torch.int32))  # bits, not values
    assert torch.equal(sa.view(torch.int64), sb.view(torch.int64)) and ia == ib


def data(n: int, D: int, K: int, seed: int, offset: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, D, generator=g) * 3 + offset  # (n, D)
    C = X[torch.randperm(n, generator=g)[:K]].clone()  # (K, D)
    if K > 2:
        C[K - 1] = C[0]  # a duplicate centre: every row nearest to it is a near tie
    return X, C


# (n, D, K, budget): tile edges in points (n % 16, n % 128) and centres (K % 6), the widest single
# k block (D + 1 = 384), several blocks of rows with a short last one and several subgroups
SHAPES = [(97, 130, 33, 64 << 20), (3000, 65, 37, 64 << 20), (777, 383, 50, 64 << 20),
          (20000, 100, 300, 1 << 20), (5001, 128, 1024, 4 << 20), (40000, 70, 40, 64 << 20),
          (30000, 16, 300, 64 << 20), (5000, 5, 64, 64 << 20)]  # the small-D problems it takes from the fused step


@pytest.mark.parametrize("n,D,K,budget", SHAPES)
def test_equals_the_transposed_path_bit_for_bit_on_any_thread_count(n, D, K, budget):
    X, C = data(n, D, K, seed=n + D + K, offset=50.0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ref = run("_assign_gemm_transposed", X, C, budget)
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            assert_same_bits(run("_assign_own_gemm", X, C, budget), ref)
    finally:
        torch.set_num_threads(threads)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(32, 400), D=st.integers(1, 200), K=st.integers(8, 90), dup=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_equals_the_transposed_path_property(n, D, K, dup, seed):
    rng = np.random.default_rng(seed)
    X = torch.from_numpy((rng.standard_normal((n, D)) * 10.0 ** rng.integers(-2, 3)).astype(np.float32))
    C = torch.from_numpy(rng.standard_normal((K, D)).astype(np.float32))
    if dup:
        C[rng.integers(1, K, K // 2)] = C[0].clone()  # many duplicates: many near ties
        X[: n // 3] = C[rng.integers(0, K, n // 3)]  # rows on centres: zero distances
    assert_same_bits(run("_assign_own_gemm", X, C), run("_assign_gemm_transposed", X, C))


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_meets_the_accuracy_contract_against_float64(offset):
    X, C = data(4000, 96, 200, seed=7, offset=offset)
    X[:40] = (C[0:80:2] + C[1:80:2]) / 2  # rows between two centres: the products cannot rank them
    labels, mind, sums, counts, inertia = run("_assign_own_gemm", X, C)
    d = ((X.double()[:, None, :] - C.double()[None, :, :]) ** 2).sum(-1)  # (n, K)
    dl = d[torch.arange(4000), labels]
    assert bool((dl <= d.min(1).values * (1 + 8 * 96 * 2**-23)).all())  # nearest up to the direct rounding
    direct = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)  # float32 direct formula
    assert torch.allclose(mind, direct[torch.arange(4000), labels], rtol=1e-5, atol=0)
    assert bool((mind[X.eq(C[labels]).all(1)] == 0).all())  # rows on a centre: exact zeros
    assert torch.equal(counts, torch.bincount(labels, minlength=200))
    ref = torch.zeros(200, 96, dtype=torch.float64).index_add_(0, labels, X.double())
    assert torch.allclose(sums, ref, rtol=1e-12, atol=1e-9 * (1 + offset))
    assert inertia == pytest.approx(float(mind.double().sum()), rel=1e-6)
    assert int(labels[C.shape[0] - 1 :].eq(C.shape[0] - 1).sum()) == 0  # the duplicate's ties go to index 0


def test_overflowing_products_are_decided_by_the_direct_formula():
    """A centre far out (its |c|^2 overflows float32): its products are NaN; a row on it is
    still assigned to it, at distance 0, by the direct formula over every centre."""
    X, C = data(600, 80, 40, seed=3)
    C[5, 0], C[6, 0] = 3e19, -3e19  # the centring vector's coordinate 0 stays finite
    X[:4] = C[5]
    X[4:8] = C[6]
    labels, mind, *_ = run("_assign_own_gemm", X, C)
    assert labels[:8].tolist() == [5] * 4 + [6] * 4 and mind[:8].tolist() == [0.0] * 8
    d = ((X.double()[:, None, :] - C.double()[None, :, :]) ** 2).sum(-1)
    assert torch.equal(labels[8:], d[8:].argmin(1))


def spy(monkeypatch):
    calls = []
    for name in ("_assign_own_gemm", "_assign_gemm_transposed", "_assign_fused"):
        real = getattr(_cpu_kernels, name)
        monkeypatch.setattr(_cpu_kernels, name, lambda *a, _n=name, _r=real: calls.append(_n) or _r(*a))
    return calls


@pytest.mark.parametrize("n,D,K,dtype,path", [
    (2000, 65, 64, torch.float32, "_assign_own_gemm"), (2000, 383, 32, torch.float32, "_assign_own_gemm"),
    (2000, 384, 64, torch.float32, "_assign_gemm_transposed"),  # beyond one k block
    (2000, 128, 31, torch.float32, "_assign_gemm_transposed"),  # fewer centres than a product's columns
    (2000, 128, 64, torch.float64, "_assign_gemm_transposed"),
    (2000, 64, 64, torch.float32, "_assign_fused"),  # up to 64 features, small problems keep the fused step
    (20000, 32, 64, torch.float32, "_assign_own_gemm"), (20000, 32, 64, torch.float64, "_assign_fused")])
def test_dispatch(n, D, K, dtype, path, monkeypatch):
    calls = spy(monkeypatch)
    X, C = data(n, D, K, seed=1)
    labels = _cpu_kernels.assign_accumulate(X.to(dtype), C.to(dtype))[0]
    assert calls == [path]
    d = ((X.double()[:, None, :] - C.double()[None, :, :]) ** 2).sum(-1)
    assert float(labels.ne(d.argmin(1)).float().mean()) <= 1e-3


def test_products_that_misrank_two_close_centres_defer_to_the_direct_formula():
    """Far from the origin the products' rounding (~|x|^2 eps, here hundreds) swamps the gap
    between two close centres (~1), in either lane order: the second smallest product must come
    from every lane, so that each such row is re-checked by the direct formula."""
    g = torch.Generator().manual_seed(11)
    D, offset = 100, 1e4
    base = torch.randn(D, generator=g, dtype=torch.float64) + offset
    delta = torch.randn(D, generator=g, dtype=torch.float64) * 0.05
    far = base + 50 * torch.randn(30, D, generator=g, dtype=torch.float64)  # never competitive
    X = (base + torch.randn(3000, D, generator=g, dtype=torch.float64)).float()
    for order in ([0, 1], [1, 0], [17, 3]):  # the two close centres in lanes 0 and 1, and across panels
        C = far.clone()
        C = torch.cat([C[:2], C]) if max(order) < 2 else torch.cat([C[:18], C])
        C[order[0]], C[order[1]] = base, base + delta
        C = C.float()
        labels, mind, *_ = run("_assign_own_gemm", X, C)
        d = ((X.double()[:, None, :] - C.double()[None, :, :]) ** 2).sum(-1)
        assert torch.equal(labels, d.argmin(1))  # gaps ~1, the direct formula's rounding ~1e-3
        assert_same_bits((labels, mind, *_), run("_assign_gemm_transposed", X, C))


def test_nan_products_take_the_transposed_paths_decisions():
    """NaN products (here the kernels' input: one centre's |c_c|^2 entry, at the first centre, inside
    a panel and in the last one) meet the same running (min, second, index), hence the same
    decisions, as the transposed path's scan over the centres in order."""
    X, C = data(500, 80, 40, seed=5)
    Xn, Cn = X.numpy(), C.numpy()
    m = C.mean(0)
    Cc = C - m
    A = torch.cat([-2.0 * Cc, (Cc * Cc).sum(1, keepdim=True)], dim=1).contiguous().numpy()  # (K, D+1)
    xa = np.ascontiguousarray(torch.cat([X - m, torch.ones(500, 1)], dim=1).numpy())  # (n, D+1)
    ncmax, gamma, sub = float((Cc * Cc).sum(1).max()), 1e-4, np.array([0, 500], np.int64)
    for k in (0, 7, 39):
        Ak = A.copy()
        Ak[k, -1] = np.nan
        outs = []
        for path in ("own", "transposed"):
            labels, mind = np.full(500, -1, np.int64), np.zeros(500, np.float32)
            psums, pcounts, pinert = np.zeros((1, 40, 80)), np.zeros((1, 40), np.int64), np.zeros(1)
            if path == "own":
                _ckernels.assign_accumulate_gemm(Xn, m.numpy(), Ak, Cn, ncmax, gamma, 500, sub, sub, labels, mind,
                                                 psums, pcounts, pinert)
            else:
                GT = np.empty((40, 500), np.float32)
                _ckernels.sgemm_nt(Ak, xa, GT)  # (K, n) transposed products
                _ckernels.argmin_accumulate_gemm_t(GT, Xn, m.numpy(), Cn, ncmax, gamma, sub, labels, mind, psums,
                                                   pcounts, pinert, Xn[:0], np.empty((0, 81), np.float32))
            outs.append((labels, mind.view(np.int32), psums, pcounts, pinert))
        for a, b in zip(*outs):
            assert np.array_equal(a, b)
