"""Compiled CPU kernels (numba): exactness against float64 brute force, ties,
determinism across thread counts, and the fast distance paths of sqdist."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

import sqdist  # noqa: E402
from sqdist import _ckernels as _ck  # noqa: E402
from sqdist import _cpu_kernels as ck  # noqa: E402
from sqdist import _cpu_product as cp  # noqa: E402
from sqdist._backend import resolve_method  # noqa: E402
from sqdist._dense import prepare  # noqa: E402
from sqdist._step import max_shift  # noqa: E402


@pytest.fixture(autouse=True)
def compiled_kernels(monkeypatch):
    """The compiled kernels sqdist picks by default, whatever SQDIST_CPU_KERNELS the developer set
    (tests that need one implementation set it themselves)."""
    monkeypatch.delenv("SQDIST_CPU_KERNELS", raising=False)


def brute(X: torch.Tensor, C: torch.Tensor):
    """float64 brute force: labels (first index on ties), distances, sums, counts, inertia."""
    d = ((X.double()[:, None, :] - C.double()[None, :, :]) ** 2).sum(-1)  # (n, K)
    m, lab = d.min(1)
    K = C.shape[0]
    sums = torch.zeros(K, X.shape[1], dtype=torch.float64).index_add_(0, lab, X.double())
    return lab, m, sums, torch.bincount(lab, minlength=K), float(m.sum()), d


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "n,D,K,offset",
    [(500, 2, 5, 0.0), (3000, 3, 17, 1000.0), (700, 40, 33, 0.0), (1500, 64, 100, 1000.0), (300, 1, 4, 5e5)],
)
def test_assign_accumulate_matches_brute_force(n, D, K, offset, dtype):
    g = torch.Generator().manual_seed(n + D)
    X = (torch.randn(n, D, generator=g, dtype=torch.float64) + offset).to(dtype)
    C = X[torch.randperm(n, generator=g)[:K]].clone()
    labels, mind, sums, counts, inertia = ck.assign_accumulate(X, C)
    lab, m, s, c, inert, d = brute(X, C)
    assert labels.dtype == torch.int64 and mind.dtype == dtype and sums.dtype == torch.float64 and counts.dtype == torch.int64
    # a label may differ from float64's only where the two distances are equal
    # to within the rounding of the direct formula in X's dtype
    eps = torch.finfo(dtype).eps
    diff = labels != lab
    gap = (d[torch.arange(n), labels] - m).abs()
    assert bool((gap[diff] <= 8 * D * eps * (m[diff] + 1e-30) + 1e-300).all())
    assert diff.float().mean() <= 1e-3
    # distances of the chosen centre: direct formula, relative error ~ eps
    dl = d[torch.arange(n), labels]
    assert torch.allclose(mind.double(), dl, rtol=4 * D * eps, atol=0)
    # sums / counts are exactly those of the returned labels, in float64
    s2 = torch.zeros_like(s).index_add_(0, labels, X.double())
    assert torch.equal(counts, torch.bincount(labels, minlength=K))
    assert torch.allclose(sums, s2, rtol=1e-12, atol=1e-9 * (1 + offset))
    assert inertia == pytest.approx(float(dl.sum()), rel=1e-6)
    assert inertia == pytest.approx(inert, rel=1e-5)


@pytest.mark.parametrize("D", [2, 64])
def test_ties_go_to_the_smallest_index(D):
    X = torch.zeros(6, D)
    X[:, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    C = torch.zeros(4, D)
    C[:, 0] = torch.tensor([1.0, -1.0, 1.0, 5.0])  # centre 2 duplicates centre 0; x=0 ties 0/1/2
    labels, mind, sums, counts, _ = ck.assign_accumulate(X, C)
    assert labels.tolist() == [0, 0, 0, 0, 3, 3]  # x=3 is 2 from 1.0 and 2 from 5.0 -> index 0
    assert mind.tolist() == [1.0, 0.0, 1.0, 4.0, 1.0, 0.0]
    assert counts.tolist() == [4, 0, 0, 2]
    assert sums[0, 0].item() == 6.0 and sums[3, 0].item() == 9.0


def test_identical_rows_and_exact_zero_distances():
    X = torch.randn(200, 70) + 1000
    C = X[[3, 50, 150]].clone()
    labels, mind, *_ = ck.assign_accumulate(X, C)
    assert labels[[3, 50, 150]].tolist() == [0, 1, 2]
    assert mind[[3, 50, 150]].tolist() == [0.0, 0.0, 0.0]
    assert bool((mind >= 0).all())


def test_output_buffers_are_reused():
    X = torch.randn(1000, 2)
    C = X[:4].clone()
    lab = torch.empty(1000, dtype=torch.int64)
    mind = torch.empty(1000)
    out = ck.assign_accumulate(X, C, labels_out=lab, mind_out=mind)
    assert out[0].data_ptr() == lab.data_ptr() and out[1].data_ptr() == mind.data_ptr()
    fresh = ck.assign_accumulate(X, C)  # and the buffers hold the results, not stale memory
    assert torch.equal(lab, fresh[0]) and torch.equal(mind, fresh[1])


DETERMINISM = r"""
import sys, hashlib, numba, torch
sys.path.insert(0, sys.argv[1])
from sqdist import _cpu_kernels as ck
import sqdist
import threadpoolctl
t = int(sys.argv[2]); numba.set_num_threads(t); torch.set_num_threads(t); threadpoolctl.threadpool_limits(t)
g = torch.Generator().manual_seed(0)
h = hashlib.sha256()
for n, D, K in [(70000, 2, 8), (9000, 48, 40), (30000, 96, 300)]:
    X = torch.randn(n, D, generator=g) * 3 + 7
    C = X[:K].clone()
    lab, mind, s, c, inert = ck.assign_accumulate(X, C)
    for a in (lab, mind, s, c):
        h.update(a.numpy().tobytes())
    h.update(repr(inert).encode())
# the small-D distance kernel too (the gemm path's product comes from the
# BLAS, whose last bits may depend on its thread count: not checked here)
h.update(sqdist.sqdist(X[:500, :2], X[:300, :2]).numpy().tobytes())
print(h.hexdigest())
"""


@pytest.mark.parametrize("kernels", ["auto", "numba"])  # auto: the C kernels where built (tests/test_ckernels.py)
def test_deterministic_across_thread_counts(kernels):
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    env = dict(os.environ, SQDIST_CPU_KERNELS=kernels)
    digests = []
    for t in (1, 2):
        r = subprocess.run([sys.executable, "-c", DETERMINISM, src, str(t)], capture_output=True, text=True, timeout=300,
                           env=env)
        assert r.returncode == 0, r.stderr
        digests.append(r.stdout.strip())
    assert digests[0] == digests[1]


def test_update_assign_equals_the_separate_steps():
    """One compiled iteration (update + shift + assignment) gives the bits of
    the centre division, max_shift and assign_accumulate called one by one."""
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        X = torch.cat([torch.randn(50, 2, generator=g) + 6 * i for i in range(5)]).to(dtype)
        C = X[[0, 50, 100, 150, 200]].clone()
        labels, mind = torch.empty(250, dtype=torch.int64), torch.empty(250, dtype=dtype)
        _, _, sums, counts, inertia = ck.assign_accumulate(X, C)
        inertias = [inertia]
        for _ in range(6):
            C2, shift, sumsq, sums2, counts2, inertia2, n_empty = ck.update_assign_step(X, C)(
                X.numpy(), C.numpy(), sums.numpy(), counts.numpy(), labels.numpy(), mind.numpy())
            C2, sums2, counts2 = torch.from_numpy(C2), torch.from_numpy(sums2), torch.from_numpy(counts2)
            want_C = (sums / counts[:, None]).to(dtype)
            assert torch.equal(C2, want_C) and (shift, sumsq) == max_shift(want_C, C)
            l3, m3, s3, c3, i3 = ck.assign_accumulate(X, want_C)
            assert torch.equal(labels, l3) and torch.equal(mind, m3) and torch.equal(sums2, s3)
            assert torch.equal(counts2, c3) and inertia2 == i3 and n_empty == int((c3 == 0).sum())
            C, sums, counts = C2, sums2, counts2
            inertias.append(inertia2)
        assert all(b <= a * (1 + 1e-12) for a, b in zip(inertias, inertias[1:]))  # inertia never increases
    assert ck.update_assign_step(X, C) is not None
    assert ck.update_assign_step(X[:, :1].repeat(1, 5), C.repeat(1, 5)[:, :5]) is None  # D = 5
    assert ck.update_assign_step(X.repeat(70, 1), C) is None  # more than one row group
    assert ck.update_assign_step(X, C.to(torch.float32 if dtype == torch.float64 else torch.float64)) is None
    assert ck.update_assign_step(X.requires_grad_(), C) is None


# ---------------------------------------------------------------- distances


def ref64(X, T):
    return ((X.double()[:, None, :] - T.double()[None, :, :]) ** 2).sum(-1)


def _assert_contract(d, ref):
    """The accuracy contract: never negative, rows 0..9 of X equal rows 0..9 of T give
    exact zeros, median relative error <= 1e-6 and max <= 1e-4 against float64."""
    assert bool((d >= 0).all())
    assert bool((d[torch.arange(10), torch.arange(10)] == 0).all())
    m = ref > 0
    rel = (d.double() - ref).abs()[m] / ref[m]
    assert rel.median() <= 1e-6 and rel.max() <= 1e-4


@pytest.mark.parametrize("D", [1, 2, 5, 16])
@pytest.mark.parametrize("offset", [0.0, 1000.0, 5e5])
def test_small_d_kernel_is_exact(D, offset):
    g = torch.Generator().manual_seed(D)
    X = torch.randn(300, D, generator=g) + offset
    T = torch.randn(200, D, generator=g) + offset
    T[:10] = X[:10]
    assert resolve_method("auto", X, T, "torch") == "_direct"
    d = sqdist.sqdist(X, T)
    ref = ref64(X, T)
    _assert_contract(d, ref)
    # identical to the direct formula in float32 with a float64-free result
    assert torch.allclose(d, sqdist.sqdist(X, T, method="broadcast"), rtol=1e-6, atol=0)


def test_small_d_kernel_numpy_out_batch_and_nonfinite():
    X = np.array([[0.0, 0.0], [np.inf, 0.0], [np.nan, 1.0]])
    T = np.array([[0.0, 0.0], [1.0, 1.0]])
    d = sqdist.sqdist(X, T)
    assert d[0].tolist() == [0.0, 2.0] and np.isinf(d[1]).all() and np.isnan(d[2]).all()
    out = np.empty((3, 2))
    assert sqdist.sqdist(X, T, out=out) is out and np.array_equal(out, d, equal_nan=True)
    Xb = torch.randn(3, 20, 2)
    Tb = torch.randn(3, 7, 2)
    db = sqdist.sqdist(Xb, Tb)
    for i in range(3):
        assert torch.allclose(db[i].double(), ref64(Xb[i], Tb[i]), rtol=1e-5)
    # autograd records the compiled forward (the bits of the call without it) and the chunked backward
    Xg = torch.randn(4, 2, requires_grad=True)
    assert resolve_method("auto", Xg, Tb[0], "torch") == "_direct"
    dg = sqdist.sqdist(Xg, Tb[0])
    assert dg.requires_grad and torch.equal(dg.detach(), sqdist.sqdist(Xg.detach(), Tb[0]))
    dg.sum().backward()
    want = 2 * (Tb[0].shape[0] * Xg.detach().double() - Tb[0].double().sum(0))  # d/dx sum_j |x - t_j|^2
    torch.testing.assert_close(Xg.grad.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("D", [32, 130])
@pytest.mark.parametrize("offset", [0.0, 1000.0, 5e5])
def test_gemm_fixup_path_accuracy(D, offset):
    g = torch.Generator().manual_seed(D)
    X = torch.randn(400, D, generator=g) + offset
    T = torch.randn(300, D, generator=g) + offset
    T[:10] = X[:10]
    T[10] = X[11] + 1e-3  # a close pair
    # "auto" takes the product path for problems beyond 2^22 multiply-adds (smaller ones: the direct kernel)
    assert resolve_method("auto", torch.empty(2000, D), torch.empty(3000, D), "torch") == "gemm"
    small = X.shape[0] * T.shape[0] * D <= 2**22 and ck.kernels() is _ck
    assert resolve_method("auto", X, T, "torch") == ("_direct" if small else "gemm")
    d = sqdist.sqdist(X, T, method="gemm")
    ref = ref64(X, T)
    _assert_contract(d, ref)
    # float64 stays float64-accurate
    d64 = sqdist.sqdist(X.double(), T.double(), method="gemm")
    assert torch.allclose(d64, ref, rtol=1e-10, atol=1e-9)


def test_gemm_fixup_nonfinite_rows_and_small_blocks():
    X = torch.randn(50, 40)
    T = torch.randn(30, 40)
    X[3, 5] = float("nan")
    T[7, 1] = float("inf")
    with sqdist.working_memory(0.01):  # many row blocks
        d = sqdist.sqdist(X, T)
    assert torch.isnan(d[3]).all()
    assert torch.isinf(d[torch.arange(50) != 3, 7]).all()
    ok = torch.ones(50, dtype=torch.bool)
    ok[3] = False
    cols = torch.ones(30, dtype=torch.bool)
    cols[7] = False
    assert torch.allclose(d[ok][:, cols].double(), ref64(X[ok], T[cols]), rtol=1e-5)


def test_gemm_fixup_recomputes_close_pairs():
    X = torch.randn(20, 50) + 100
    T = X.clone()
    T[:, 0] += 1e-3
    d = torch.empty(20, 20)
    prep = prepare(T, torch.float32)
    Xa, nx, bad = cp.augment(X, prep.c)
    ck.product_nt(Xa, prep.Ta, d)
    n = cp.gemm_fixup(d, nx, prep.nt * prep.tau, prep.tau, X, prep.T)
    assert bad == 0 and n >= 20  # at least the diagonal
    assert torch.allclose(d.diagonal().double(), ref64(X, T).diagonal(), rtol=1e-3)


def test_chunked_gemm_path_equals_block_path_and_brute_force(monkeypatch):
    """Large D: the per-thread chunked kernel (single-threaded BLAS per chunk)
    and the block kernel give the same labels and distances (both the direct
    formula's), sums equal to float64 up to summation order; near ties (rows
    equidistant from two centres) follow the direct formula."""
    if ck._one_thread_blas() is None:
        pytest.skip("needs scipy + threadpoolctl")
    monkeypatch.setenv("SQDIST_CPU_KERNELS", "numba")  # the chunked kernel is numba's (the C path uses blocks)
    g = torch.Generator().manual_seed(3)
    n, D, K = 9000, 50, 70  # 3 row groups, chunks of 1 MiB / (K * 4 B) rows, a partial last chunk
    X = torch.randn(n, D, generator=g) + 100.0
    C = X[:K].clone()
    # rows exactly between two centres: the product cannot rank them, the direct formula can
    mid = (C[torch.arange(0, 40, 2)] + C[torch.arange(1, 40, 2)]) / 2
    X[K : K + 20] = mid
    X[K + 20 : K + 40] = mid + 1e-3 * torch.randn(20, D, generator=g)
    calls = []
    real = ck._assign_gemm_chunked
    monkeypatch.setattr(ck, "_assign_gemm_chunked", lambda *a: calls.append(1) or real(*a))
    a = ck.assign_accumulate(X, C)
    assert calls == [1]
    monkeypatch.setattr(ck, "_blas_controller", lambda: None)  # no threadpoolctl: block path
    b = ck.assign_accumulate(X, C)
    assert calls == [1]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[3], b[3])
    assert torch.allclose(a[2], b[2], rtol=1e-12, atol=1e-9) and a[4] == pytest.approx(b[4], rel=1e-12)
    lab, m, s, c, inert, d = brute(X, C)
    # labels as float64's except where the two distances agree to float32 rounding
    dl = d[torch.arange(n), a[0]]
    assert bool((dl <= m * (1 + 8 * D * 2**-23)).all())
    assert (a[0] != lab).float().mean() <= 1e-3
    assert torch.allclose(a[1].double(), dl, rtol=4 * D * 2**-23, atol=0)
    assert torch.equal(torch.bincount(a[0], minlength=K), a[3])
    assert torch.allclose(a[2], s.new_zeros(s.shape).index_add_(0, a[0], X.double()), rtol=1e-12, atol=1e-8)


@pytest.mark.parametrize("D", [8, 48])
def test_working_memory_budget_changes_only_summation_order(D):
    """A small budget shrinks the row groups' partial sums and the product
    blocks; labels, distances and counts stay the same, sums agree to float64."""
    g = torch.Generator().manual_seed(D)
    X = torch.randn(40000, D, generator=g)
    C = X[:300].clone()
    assert ck._group_cap(300, D, 1 << 20) < ck._group_cap(300, D, 256 << 20)
    a = ck.assign_accumulate(X, C)
    b = ck.assign_accumulate(X, C, budget=1 << 20)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[3], b[3])
    assert torch.allclose(a[2], b[2], rtol=1e-12, atol=1e-9) and a[4] == pytest.approx(b[4], rel=1e-12)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ck, "_blas_controller", lambda: None)  # block path with a small budget too
        c = ck.assign_accumulate(X, C, budget=1 << 20)
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])


@pytest.mark.parametrize("n,K", [(5000, 1), (4099, 3), (333, 700)])
def test_chunked_gemm_path_ragged_shapes(n, K):
    """The transposed-product kernel at one centre (no second best), ragged
    chunks and more centres than rows: labels and distances of the direct formula."""
    if ck._one_thread_blas() is None:
        pytest.skip("needs scipy + threadpoolctl")
    g = torch.Generator().manual_seed(n + K)
    D = 37
    X = torch.randn(n, D, generator=g) * 3 - 50
    C = torch.randn(K, D, generator=g) * 3 - 50
    labels, mind, sums, counts, inertia = ck.assign_accumulate(X, C)
    lab, m, s, c, inert, d = brute(X, C)
    dl = d[torch.arange(n), labels]
    assert bool((dl <= m * (1 + 8 * D * 2**-23)).all())
    assert torch.allclose(mind.double(), dl, rtol=4 * D * 2**-23, atol=0)
    assert torch.equal(counts, torch.bincount(labels, minlength=K))
    assert torch.allclose(sums, torch.zeros_like(s).index_add_(0, labels, X.double()), rtol=1e-12, atol=1e-8)


def test_chunked_gemm_path_overflowing_products_follow_the_direct_formula():
    """float32 rows so large that the products overflow (NaN/Inf e_k): every
    centre is compared by the direct formula, which gives inf for all of them,
    so the label is the first centre -- exactly what the float32 formula says."""
    if ck._one_thread_blas() is None:
        pytest.skip("needs scipy + threadpoolctl")
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 40, generator=g) * 1e19
    C = X[:3].clone()
    labels, mind, *_ = ck.assign_accumulate(X, C)
    direct = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)  # (50, 3) float32, inf where it overflows
    ref = torch.where(torch.isinf(direct).all(1), torch.zeros(50, dtype=torch.int64), direct.argmin(1))
    assert torch.equal(labels, ref)
    assert bool(torch.isinf(mind[torch.isinf(direct).all(1)]).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,D,K", [(1000, 3, 40), (1300, 16, 32), (700, 30, 17), (20000, 2, 9), (4099, 3, 300), (257, 1, 5)])
def test_direct_kernel_is_the_sequential_formula_bit_for_bit(n, D, K, dtype):
    """The chunked, transposed direct kernel computes sum_j (x_j - c_kj)^2 with
    the features added in order, in the input's precision, smallest index on ties:
    the same bits as the element-wise torch formula evaluated in that order (ragged
    chunks -- rows in register-held vectors and the leftover rows --, several row
    groups, duplicated centres for exact ties)."""
    g = torch.Generator().manual_seed(n * D + K)
    X = (torch.randn(n, D, generator=g) * 10 + 300).to(dtype)
    C = X[torch.randperm(n, generator=g)[:K]].clone()
    C[K // 2] = C[0]  # an exact tie: centre 0 must win
    assert ck._direct_assign(D, K)  # the direct kernel runs
    labels, mind, sums, counts, inertia = ck.assign_accumulate(X, C)
    d = (X[:, None, 0] - C[None, :, 0]) ** 2  # (n, K), feature 0
    for j in range(1, D):
        d = d + (X[:, None, j] - C[None, :, j]) ** 2  # features added in order
    ref_m, ref_l = d.min(1)  # first index of the minimum
    assert torch.equal(labels, ref_l) and torch.equal(mind, ref_m)
    assert not bool((labels == K // 2).any())
    assert torch.equal(counts, torch.bincount(ref_l, minlength=K))
    # float64 sums and inertia: row by row in row order within each fixed row group, the
    # groups then added in group order
    bounds = ck._groups(n, ck._GROUP_ROWS, ck._group_cap(K, D, ck.BLOCK_BYTES))
    Xd, ld, md = X.double().numpy(), ref_l.numpy(), ref_m.double().numpy()
    ref_sums, ref_inertia = None, None
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        gs = np.zeros((K, D))
        np.add.at(gs, ld[lo:hi], Xd[lo:hi])  # unbuffered: one row after the other
        gi = 0.0
        for v in md[lo:hi]:
            gi += float(v)
        ref_sums = gs if ref_sums is None else ref_sums + gs
        ref_inertia = gi if ref_inertia is None else ref_inertia + gi
    assert np.array_equal(sums.numpy(), ref_sums) and inertia == ref_inertia


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 2000), D=st.integers(1, 64), K=st.integers(1, 200), offset=st.sampled_from([0.0, 1000.0]),
       seed=st.integers(0, 2**31), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_assign_accumulate_property(n, D, K, offset, seed, dtype):
    """Any shape, either path (direct or product), either dtype: labels are a
    nearest centre up to the direct formula's rounding, distances are the
    direct formula's, counts/sums belong to the labels."""
    g = torch.Generator().manual_seed(seed)
    X = (torch.randn(n, D, generator=g, dtype=torch.float64) * 3 + offset).to(dtype)
    C = (torch.randn(K, D, generator=g, dtype=torch.float64) * 3 + offset).to(dtype)
    labels, mind, sums, counts, inertia = ck.assign_accumulate(X, C)
    lab, m, s, c, inert, d = brute(X, C)
    eps = torch.finfo(dtype).eps
    dl = d[torch.arange(n), labels]  # float64 distance of the chosen centre
    assert bool((dl <= m + 8 * (D + 2) * eps * (m + (X.double() - X.double().mean(0)).pow(2).sum(1) + 1e-300)).all())
    assert torch.allclose(mind.double(), dl, rtol=4 * D * eps, atol=0)
    assert torch.equal(counts, torch.bincount(labels, minlength=K))
    assert torch.allclose(sums, torch.zeros_like(s).index_add_(0, labels, X.double()), rtol=1e-12, atol=1e-9 * (1 + offset) * n)
    assert inertia == pytest.approx(float(mind.double().sum()), rel=1e-6)
