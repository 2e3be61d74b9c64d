"""The C kernels' own float32 product (``_ckernels_gemm.h``): within the rounding bound of a
float64 reference on every edge of its register tiles and cache blocks, the same bits on any
thread count, the fused distance epilogue equal bit for bit to the product of the augmented
rows followed by the separate fix-up, and sqdist's accuracy contract on the fused path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sqdist
from sqdist import _ckernels, _cpu_kernels, _cpu_product
from sqdist._dense import prepare

pytestmark = pytest.mark.skipif(not (_ckernels.library() is not None and _ckernels.gemm_supported()),
                                reason="needs the C kernels on an AVX2 + FMA CPU")

U32 = 2.0**-24  # float32 unit roundoff


def check_product(A: np.ndarray, B: np.ndarray, C: np.ndarray) -> None:
    """C within the bound of a K-term float32 dot product: |C - AB^T| <= 1.01 K u |A||B|^T."""
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    ref = A64 @ B64.T
    bound = 1.01 * max(1, A.shape[1]) * U32 * (np.abs(A64) @ np.abs(B64).T)
    assert np.all(np.abs(C - ref) <= bound)


# edges of the 6 x 16 tiles (rows, columns), K beyond one k block (384), tiny and empty
SHAPES = [(1, 1, 1), (5, 15, 3), (6, 16, 8), (7, 17, 130), (13, 33, 383), (12, 32, 384), (11, 47, 385),
          (97, 301, 800), (250, 1000, 129), (0, 5, 4), (5, 0, 4)]


@pytest.mark.parametrize("n,P,K", SHAPES)
def test_product_within_the_rounding_bound(n, P, K):
    rng = np.random.default_rng(n * 1000 + P + K)
    A = (rng.standard_normal((n, K)) * 10.0 ** rng.integers(-3, 4, size=(n, 1))).astype(np.float32)
    B = (rng.standard_normal((P, K)) + 3.0).astype(np.float32)
    C = np.full((n, P), np.nan, dtype=np.float32)
    _ckernels.sgemm_nt(A, B, C)
    check_product(A, B, C)


def test_zero_depth_product_is_zero():
    C = np.full((7, 20), np.nan, dtype=np.float32)
    _ckernels.sgemm_nt(np.empty((7, 0), np.float32), np.empty((20, 0), np.float32), C)
    assert not C.any()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), P=st.integers(1, 70), K=st.integers(1, 450), seed=st.integers(0, 2**31 - 1))
def test_product_property(n, P, K, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, K)).astype(np.float32)
    B = rng.standard_normal((P, K)).astype(np.float32)
    C = np.empty((n, P), dtype=np.float32)
    _ckernels.sgemm_nt(A, B, C)
    check_product(A, B, C)


def test_same_bits_on_any_thread_count():
    """Each entry is one sequential chain in k: the row blocks and column segments the threads
    take change nothing (1, 2 and 3 threads; column segments appear when rows are few)."""
    rng = np.random.default_rng(1)
    before = torch.get_num_threads()
    try:
        for n, P, K in [(1000, 700, 450), (20, 3000, 130)]:
            A = rng.standard_normal((n, K)).astype(np.float32)
            B = rng.standard_normal((P, K)).astype(np.float32)
            out = []
            for t in (1, 2, 3):
                torch.set_num_threads(t)
                C = np.empty((n, P), dtype=np.float32)
                _ckernels.sgemm_nt(A, B, C)
                out.append(C)
            np.testing.assert_array_equal(out[0], out[1])
            np.testing.assert_array_equal(out[0], out[2])
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n,P,D,offset", [(40, 50, 30, 0.0), (301, 203, 128, 100.0), (7, 3001, 64, -50.0),
                                          (64, 100, 500, 1e3), (1, 17, 3, 0.0)])
def test_fused_epilogue_equals_product_then_fixup(n, P, D, offset, monkeypatch):
    """The fused path (product over D columns, nx and nt added in the tile, screen in registers,
    exact fix-up in cache) against the product of the full augmented rows (K = D + 2) and the
    separate fix-up pass: the same bits and the same count of recomputed entries."""
    monkeypatch.setenv("SQDIST_CPU_KERNELS", "c")  # the C passes around the product, whatever the environment says
    g = torch.Generator().manual_seed(n + P + D)
    T = torch.randn(P, D, generator=g) + offset
    X = torch.randn(n, D, generator=g) + offset
    k = min(n, P, 5)
    X[:k] = T[:k]  # identical rows
    if n > k and P > k:
        X[k] = T[k] + 1e-3  # a close pair
    prep = prepare(T, torch.float32)
    Xa, nx, bad = _cpu_product.augment(X, prep.c)
    assert bad == 0
    tnt = prep.nt * prep.tau
    fused = torch.full((n, P), float("nan"))
    c1 = _ckernels.gemm_sqdist(Xa.numpy(), prep.Ta.numpy(), fused.numpy(), nx.numpy(), prep.nt.numpy(), tnt.numpy(),
                               prep.tau, X.numpy(), T.numpy())
    split = torch.empty(n, P)
    _ckernels.sgemm_nt(Xa.numpy(), prep.Ta.numpy(), split.numpy())
    c2 = _cpu_product.gemm_fixup(split, nx, tnt, prep.tau, X, T)
    assert c1 == c2 and c1 >= k
    assert torch.equal(fused, split)
    assert fused[torch.arange(k), torch.arange(k)].tolist() == [0.0] * k


def test_sqdist_on_the_fused_path_meets_the_contract(monkeypatch):
    """sqdist (float32, D above the direct kernels' range) on the own product, against float64:
    relative error within the contract, exact zeros for identical rows, never negative, and
    close to the torch.mm path it replaces."""
    monkeypatch.setenv("SQDIST_CPU_KERNELS", "c")
    assert _cpu_kernels.own_gemm(torch.float32, 500, 300) == (torch.backends.cpu.get_cpu_capability() == "AVX2")
    g = torch.Generator().manual_seed(7)
    X = torch.randn(500, 96, generator=g, dtype=torch.float64) + 1e3
    T = torch.randn(300, 96, generator=g, dtype=torch.float64) + 1e3
    T[:10] = X[:10]
    ref = ((X[:, None, :] - T[None, :, :]) ** 2).sum(-1)  # (500, 300)
    fused = []
    real = _ckernels.gemm_sqdist
    monkeypatch.setattr(_ckernels, "gemm_sqdist", lambda *a: fused.append(1) or real(*a))
    d = sqdist.sqdist(X.float(), T.float())
    assert len(fused) == (1 if _cpu_kernels.own_gemm(torch.float32, 500, 300) else 0)  # the path under test ran
    X32, T32 = X.float().double(), T.float().double()
    ref32 = ((X32[:, None, :] - T32[None, :, :]) ** 2).sum(-1)  # the float32 inputs' exact distances
    assert bool((d >= 0).all())
    assert d[torch.arange(10), torch.arange(10)].tolist() == [0.0] * 10
    assert bool(((d.double() - ref32).abs() <= 1e-4 * ref32 + 1e-300).all())
    assert bool(((d.double() - ref).abs() <= 1e-3 * ref + 1e-2).all())
    monkeypatch.setattr(_cpu_kernels, "_own_gemm_cpu", lambda: False)
    d_mm = sqdist.sqdist(X.float(), T.float())
    assert torch.allclose(d, d_mm, rtol=1e-5, atol=0)


def test_a_nan_row_hides_no_close_pair_in_its_tile(monkeypatch):
    """A row with NaN (or an infinite norm) shares its register tile with rows that have exact
    duplicates in T: the tile's screen still flags those (exact zeros), the bad rows come out
    as the direct formula's NaN / inf, and the other entries meet the contract."""
    monkeypatch.setenv("SQDIST_CPU_KERNELS", "c")
    g = torch.Generator().manual_seed(9)
    T = torch.randn(64, 40, generator=g) + 10
    X = torch.randn(48, 40, generator=g) + 10
    X[:2] = T[:2]  # rows 0..5 are one 6-row tile: duplicates only before the NaN row, so
    X[2, 7] = float("nan")  # a NaN carried into the tile's column minimum would hide them
    X[9] = T[9]
    X[10] = 3e19  # 4 |x|^2 overflows: an unsafe row after row 9's duplicate
    d = sqdist.sqdist(X, T)
    assert [float(d[i, i]) for i in (0, 1, 9)] == [0.0] * 3
    assert bool(torch.isnan(d[2]).all()) and bool(torch.isinf(d[10]).all())
    ok = torch.tensor([i not in (2, 10) for i in range(48)])
    ref = ((X[ok].double()[:, None, :] - T.double()[None, :, :]) ** 2).sum(-1)
    assert bool(((d[ok].double() - ref).abs() <= 1e-4 * ref + 1e-300).all())


def test_thin_products_take_torch_mm(monkeypatch):
    """Fewer than 8 rows or 32 columns pad the register tiles: torch.mm there (measured)."""
    monkeypatch.setenv("SQDIST_CPU_KERNELS", "c")
    monkeypatch.setattr(_cpu_kernels, "_own_gemm_cpu", lambda: True)
    assert _cpu_kernels.own_gemm(torch.float32, 8, 32)
    assert not _cpu_kernels.own_gemm(torch.float32, 7, 4096)
    assert not _cpu_kernels.own_gemm(torch.float32, 4096, 31)
    assert not _cpu_kernels.own_gemm(torch.float64, 4096, 4096)
    calls = []
    monkeypatch.setattr(_ckernels, "sgemm_nt", lambda *a: calls.append(a))
    A, B = torch.randn(5, 40), torch.randn(64, 40)
    assert torch.allclose(_cpu_kernels.product_nt(A, B), A @ B.T)  # 5 rows: torch.mm, not the stub
    assert calls == []


def test_wide_matrices_take_the_own_product_from_16_features(monkeypatch):
    """With the own product the distance matrix against a wide T (P >= 1024) takes the product
    path from D = 16 (measured faster); nearest, narrow T, float64 and CPUs without the own
    product keep the direct kernel up to D = 24 (float32) / 16 (float64)."""
    from sqdist._backend import resolve_method

    monkeypatch.setenv("SQDIST_CPU_KERNELS", "c")
    monkeypatch.setattr(_cpu_kernels, "_own_gemm_cpu", lambda: True)
    X, T = torch.empty(4096, 16), torch.empty(4096, 16)
    assert resolve_method("auto", X, T, "torch") == "gemm"
    assert resolve_method("auto", X, T, "torch", matrix=False) == "_direct"
    assert resolve_method("auto", X[:, :15], T[:, :15], "torch") == "_direct"
    assert resolve_method("auto", torch.empty(10**5, 24), torch.empty(256, 24), "torch") == "_direct"  # narrow T
    assert resolve_method("auto", X.double(), T.double(), "torch") == "_direct"
    monkeypatch.setattr(_cpu_kernels, "_own_gemm_cpu", lambda: False)
    assert resolve_method("auto", X, T, "torch") == "_direct"
    monkeypatch.setattr(_cpu_kernels, "_own_gemm_cpu", lambda: True)
    g = torch.Generator().manual_seed(4)
    Xr = torch.randn(1100, 20, generator=g) + 50
    Tr = torch.randn(1030, 20, generator=g) + 50
    Tr[:5] = Xr[:5]
    d = sqdist.sqdist(Xr, Tr)  # the product path: the contract holds
    ref = ((Xr.double()[:, None, :] - Tr.double()[None, :, :]) ** 2).sum(-1)
    assert d[torch.arange(5), torch.arange(5)].tolist() == [0.0] * 5 and bool((d >= 0).all())
    assert bool(((d.double() - ref).abs() <= 1e-4 * ref + 1e-300).all())
