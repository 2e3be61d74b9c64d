"""The C kernels on torch's OpenMP pool (sqdist._ckernels): exactness against float64
references and the numba kernels, bit-identical results across thread counts, one
OpenMP runtime (torch's) and no extra threads, and the fallbacks when the library
is missing or stale."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import sqdist
from sqdist import _ckernels, _cpu_kernels, _cpu_product
from sqdist._backend import resolve_method

pytestmark = pytest.mark.skipif(_ckernels.library() is None,
                                reason="C kernels not built or not on torch's OpenMP runtime (see setup.py)")
HAS_NUMBA = importlib.util.find_spec("numba") is not None
SRC = os.path.join(os.path.dirname(__file__), "..", "src")


@pytest.fixture(autouse=True)
def c_kernels(monkeypatch):
    """The C kernels, whatever SQDIST_CPU_KERNELS the developer set (tests that compare with
    another implementation set it themselves)."""
    monkeypatch.setenv("SQDIST_CPU_KERNELS", "c")


@pytest.fixture
def use(monkeypatch):
    """Force a kernel implementation: use("c"), use("numba"), use("torch")."""
    def set_kind(kind: str):
        if kind == "numba":
            pytest.importorskip("numba")
        monkeypatch.setenv("SQDIST_CPU_KERNELS", kind)
    return set_kind


def brute(X: torch.Tensor, C: torch.Tensor):
    d = ((X.double()[:, None, :] - C.double()[None, :, :]) ** 2).sum(-1)  # (n, K)
    return d, d.argmin(1)


def assign(kind: str, X, C, monkeypatch, **kw):
    monkeypatch.setenv("SQDIST_CPU_KERNELS", kind)
    return _cpu_kernels.assign_accumulate(X, C, **kw)


def test_dispatch_follows_the_environment(use):
    use("c")
    assert _cpu_kernels.kernels() is _ckernels and _cpu_kernels.available()
    use("auto")
    assert _cpu_kernels.kernels() is _ckernels  # preferred when built
    use("torch")
    assert _cpu_kernels.kernels() is None and not _cpu_kernels.available()
    use("numba")
    assert _cpu_kernels.kernels().__name__ == "sqdist._cpu_nb"
    use("fastest")
    with pytest.raises(sqdist.SqdistError, match="SQDIST_CPU_KERNELS.*'fastest'.*auto, c, numba, torch"):
        _cpu_kernels.kernels()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,D,K,offset", [(40000, 2, 8, 0.0), (3000, 3, 17, 1e3), (2000, 16, 40, 0.0),
                                          (5000, 64, 100, 1e3), (700, 40, 33, 0.0), (333, 37, 700, -50.0),
                                          (9000, 12, 100, 1e3), (1200, 16, 300, 0.0), (100, 7, 2000, 5.0),
                                          (600, 130, 90, 1e3)])
def test_assign_matches_float64_and_numba(n, D, K, offset, dtype, monkeypatch):
    g = torch.Generator().manual_seed(n + D + K)
    X = (torch.randn(n, D, generator=g, dtype=torch.float64) * 3 + offset).to(dtype)
    C = X[torch.randperm(n, generator=g)[:K]].clone() if K <= n else (torch.randn(K, D, generator=g) * 3 + offset).to(dtype)
    labels, mind, sums, counts, inertia = assign("c", X, C, monkeypatch)
    d, lab = brute(X, C)
    rows = torch.arange(n)
    dl = d[rows, labels]
    eps = torch.finfo(dtype).eps
    # the chosen centre is the nearest up to the direct formula's rounding; its distance is the direct one
    assert bool((dl <= d.min(1).values * (1 + 8 * D * eps) + 1e-300).all())
    assert (labels != lab).float().mean() <= 1e-3
    assert torch.allclose(mind.double(), dl, rtol=4 * D * eps, atol=0)
    assert torch.equal(counts, torch.bincount(labels, minlength=K))
    ref_sums = torch.zeros(K, D, dtype=torch.float64).index_add_(0, labels, X.double())
    assert torch.allclose(sums, ref_sums, rtol=1e-12, atol=1e-9 * (1 + abs(offset)))
    assert inertia == pytest.approx(float(mind.double().sum()), rel=1e-6)
    if HAS_NUMBA:
        nl, nm, ns, nc, ni = assign("numba", X, C, monkeypatch)
        assert torch.equal(labels, nl) and torch.equal(counts, nc)
        if _cpu_kernels._direct_assign(D, K):  # the direct kernel: the same additions in the same order
            assert torch.equal(mind, nm) and torch.equal(sums, ns) and inertia == ni
        else:  # product path: direct-formula distances, float64 squares added in another order
            assert torch.allclose(mind, nm, rtol=4 * D * eps, atol=0)


@pytest.mark.parametrize("D,path", [(2, "_assign_direct"), (12, "_assign_fused"), (130, "_assign_gemm_transposed"),
                                    (130, "_assign_own_gemm")])
def test_ties_go_to_the_smallest_index_and_identical_rows_give_zero(D, path, monkeypatch):
    if path == "_assign_own_gemm":  # every call on the own product's tiles, however small
        if not _ckernels.gemm_supported():
            pytest.skip("the own product needs AVX2 + FMA")
        monkeypatch.setattr(_cpu_kernels, "_OWN_GEMM_MIN_ROWS", 1)
        monkeypatch.setattr(_cpu_kernels, "_OWN_GEMM_MIN_COLS", 1)
    elif path == "_assign_gemm_transposed":
        monkeypatch.setattr(_cpu_kernels, "_OWN_ASSIGN_MAX_D", 0)
    calls = []
    real = getattr(_cpu_kernels, path)
    monkeypatch.setattr(_cpu_kernels, path, lambda *a: calls.append(1) or real(*a))
    X = torch.zeros(6, D)
    X[:, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    C = torch.zeros(4, D)
    C[:, 0] = torch.tensor([1.0, -1.0, 1.0, 5.0])  # centre 2 duplicates centre 0; x=0 ties 0/1/2
    labels, mind, sums, counts, _ = assign("c", X, C, monkeypatch)
    assert labels.tolist() == [0, 0, 0, 0, 3, 3]
    assert mind.tolist() == [1.0, 0.0, 1.0, 4.0, 1.0, 0.0]
    assert counts.tolist() == [4, 0, 0, 2]
    C = torch.cat([C, torch.full((96, D), 1e3)])  # K = 100: the product paths for D > 4
    labels, mind, sums, counts, _ = assign("c", X, C, monkeypatch)
    assert labels.tolist() == [0, 0, 0, 0, 3, 3] and mind.tolist() == [1.0, 0.0, 1.0, 4.0, 1.0, 0.0]
    Y = torch.randn(300, D) + 1000
    labels, mind, *_ = assign("c", Y, torch.cat([Y[[3, 50, 150]], Y[[3, 50, 150]] + 0.5] * 25), monkeypatch)
    assert labels[[3, 50, 150]].tolist() == [0, 1, 2] and mind[[3, 50, 150]].tolist() == [0.0] * 3
    assert len(calls) == {2: 3, 12: 2, 130: 3}[D]  # the path under test served its calls (K = 4 at D = 12: direct)


def test_near_ties_follow_the_direct_formula(monkeypatch):
    """Rows exactly between two centres far from the origin: the product cannot rank them."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(3000, 50, generator=g) + 100.0
    C = X[:70].clone()
    mid = (C[torch.arange(0, 40, 2)] + C[torch.arange(1, 40, 2)]) / 2
    X[70:90] = mid
    labels, mind, *_ = assign("c", X, C, monkeypatch)
    direct = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)  # (n, K) float32 direct formula
    d, _ = brute(X, C)
    dl = d[torch.arange(3000), labels]
    assert bool((dl <= d.min(1).values * (1 + 8 * 50 * 2**-23)).all())
    assert torch.allclose(mind, direct[torch.arange(3000), labels], rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,P,D,offset", [(300, 200, 2, 0.0), (500, 300, 16, 100.0), (400, 350, 64, 1e3),
                                          (1100, 70, 5, -3.0)])
def test_sqdist_and_nearest_meet_the_accuracy_contract(N, P, D, offset, dtype, use):
    g = torch.Generator().manual_seed(N + D)
    X = (torch.randn(N, D, generator=g, dtype=torch.float64) + offset).to(dtype)
    T = (torch.randn(P, D, generator=g, dtype=torch.float64) + offset).to(dtype)
    T[:5] = X[:5]  # identical rows: exact zeros
    ref, _ = brute(X, T)
    use("c")
    d = sqdist.sqdist(X, T)
    assert d.dtype == dtype and bool((d >= 0).all())
    assert bool(((d.double() - ref).abs() <= 1e-4 * ref + 1e-300).all())
    assert d[torch.arange(5), torch.arange(5)].tolist() == [0.0] * 5
    dist, idx = sqdist.nearest(X, T)  # (N, 1) each
    assert bool((ref[torch.arange(N), idx[:, 0]] <= ref.min(1).values * (1 + 1e-4)).all())
    assert bool(((dist[:, 0].double() - ref.min(1).values).abs() <= 1e-4 * ref.min(1).values + 1e-300).all())
    if not HAS_NUMBA:
        return
    use("numba")
    dn = sqdist.sqdist(X, T)
    assert torch.allclose(d, dn, rtol=1e-5, atol=0)
    if D <= 16:  # the direct kernels: the same bits
        assert torch.equal(d, dn)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,P,D", [(64, 40, 64), (30, 20, 300), (8, 4, 1024), (256, 10, 64)])
def test_small_problems_take_the_direct_kernel_at_any_d(N, P, D, dtype, use):
    """Up to 2^22 multiply-adds and D <= 1024 "auto" is the direct kernel: within the contract
    against float64 far from the origin (its sum of D positive terms is within D u), exact zeros
    for identical rows, NaN / inf as IEEE says, and nearest on the same values."""
    use("c")
    g = torch.Generator().manual_seed(N + D)
    X = (torch.randn(N, D, generator=g, dtype=torch.float64) + 1e3).to(dtype)
    T = (torch.randn(P, D, generator=g, dtype=torch.float64) + 1e3).to(dtype)
    T[:3] = X[:3]
    X[3, 1] = float("nan")
    X[4, 0] = float("inf")
    assert resolve_method("auto", X, T, "torch") == "_direct"
    wide = torch.empty(2, 1025, dtype=dtype)
    assert resolve_method("auto", wide, wide, "torch") == "gemm"  # D beyond 1024: the product path
    d = sqdist.sqdist(X, T)
    ref, _ = brute(X, T)
    ok = torch.ones(N, dtype=torch.bool)
    ok[3:5] = False
    assert bool((d[ok] >= 0).all()) and d[torch.arange(3), torch.arange(3)].tolist() == [0.0] * 3
    assert bool(((d[ok].double() - ref[ok]).abs() <= 1e-4 * ref[ok] + 1e-300).all())
    assert bool(torch.isnan(d[3]).all()) and bool(torch.isinf(d[4]).all())
    dist, idx = sqdist.nearest(X[ok], T)
    v, i = d[ok].min(1)
    assert torch.equal(dist[:, 0], v) and torch.equal(idx[:, 0], i)


def test_nonfinite_rows_propagate_like_the_numba_path(use):
    X = torch.randn(300, 40)
    T = torch.randn(200, 40)
    X[7, 3] = float("nan")
    T[11, 0] = float("inf")
    X[9] = 1e20  # the expansion would overflow: direct formula
    use("c")
    d = sqdist.sqdist(X, T)
    use("numba")
    dn = sqdist.sqdist(X, T)
    assert torch.equal(torch.isnan(d), torch.isnan(dn)) and torch.equal(torch.isinf(d), torch.isinf(dn))
    ok = torch.isfinite(d)
    assert torch.allclose(d[ok], dn[ok], rtol=1e-5, atol=0)
    assert bool(torch.isnan(d[7]).all()) and bool(torch.isinf(d[9]).all())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prepare_right_and_augment_equal_numba_bit_for_bit(dtype):
    nb = pytest.importorskip("sqdist._cpu_nb")
    rng = np.random.default_rng(0)
    T = (rng.standard_normal((77, 9)) * 5 + 3).astype(dtype)
    T[3, 0], T[8, 2] = np.nan, np.inf
    T[12] = 1e19 if dtype == np.float32 else 3e153  # 4 |t - c|^2 overflows (the centre moves far less)
    X = rng.standard_normal((500, 9)).astype(dtype)
    out = []
    for mod in (_ckernels, nb):
        c = np.empty(9, dtype)
        Ta, nt, fin = np.empty((77, 11), dtype), np.empty(77, dtype), np.empty(77, np.bool_)
        k = mod.prepare_right(T, c, Ta, nt, fin)
        Xa, nx = np.empty((500, 11), dtype), np.empty(500, dtype)
        bad = mod.augment(X, c, Xa, nx)
        out.append((k, c, Ta, nt, fin, bad, Xa, nx))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)
    assert out[0][0] == 74 and out[0][5] == 0


DETERMINISM = r"""
import sys, hashlib, torch, numpy as np
sys.path.insert(0, sys.argv[1])
import sqdist
from sqdist import _cpu_kernels as ck
assert ck.kernels().__name__ == "sqdist._ckernels"
torch.set_num_threads(int(sys.argv[2]))
g = torch.Generator().manual_seed(0)
h = hashlib.sha256()
for n, D, K in [(70000, 2, 8), (20000, 12, 200), (9000, 48, 40), (30000, 96, 300)]:  # direct, fused x2, blocks
    X = torch.randn(n, D, generator=g) * 3 + 7
    lab, mind, s, c, inert = ck.assign_accumulate(X, X[:K].clone())
    for a in (lab, mind, s, c):
        h.update(a.numpy().tobytes())
    h.update(repr(inert).encode())
X = torch.randn(3000, 8, generator=g)
h.update(sqdist.sqdist(X, X[:2000]).numpy().tobytes())
rng = np.random.default_rng(1)
Y = rng.normal(size=(50000, 3)) * np.arange(1, 4)
r = sqdist.kmeans(Y, 6, random_state=3, max_iter=5, tol=0)
h.update(r.centers.tobytes() + r.labels.tobytes() + np.float64(r.inertia).tobytes())
print(h.hexdigest())
"""


def test_bit_identical_across_thread_counts():
    env = dict(os.environ, SQDIST_CPU_KERNELS="c")
    digests = []
    for t in ("1", "2"):
        r = subprocess.run([sys.executable, "-c", DETERMINISM, SRC, t], capture_output=True, text=True, timeout=300,
                           env=env)
        assert r.returncode == 0, r.stderr
        digests.append(r.stdout.strip())
    assert len(digests[0]) == 64 and digests[0] == digests[1]


ONE_POOL = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(2)
from sqdist import _ckernels, _cpu_kernels as ck
torch.mm(torch.randn(512, 512), torch.randn(512, 512))  # torch's pool is up
tasks = len(os.listdir("/proc/self/task"))
X = torch.randn(60000, 3)
ck.assign_accumulate(X, X[:9].clone())  # parallel C kernel (4 row groups)
ck.sqdist_small(X[:3000], X[:500], torch.empty(3000, 500))
print(_ckernels.library().sq_team_size(2), tasks, len(os.listdir("/proc/self/task")))
print(sorted(_ckernels.omp_runtimes()))
print(_ckernels.torch_omp_runtime(_ckernels.library()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_one_openmp_runtime_and_no_extra_threads():
    """After C kernel calls, the process maps one OpenMP runtime -- torch's own
    -- and has no thread beyond those torch's matrix product started."""
    env = dict(os.environ, SQDIST_CPU_KERNELS="c")
    r = subprocess.run([sys.executable, "-c", ONE_POOL, SRC], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    sizes, runtimes, torch_rt = r.stdout.strip().splitlines()
    team, before, after = map(int, sizes.split())
    assert team == 2
    assert after == before, "the C kernels started threads of their own"
    assert eval(runtimes) == [torch_rt] and "libgomp" in torch_rt


def test_fallback_when_the_library_is_missing_or_stale(monkeypatch):
    lib_cache = [_ckernels.library, _cpu_kernels._kernels_for]
    try:
        for f in lib_cache:
            f.cache_clear()
        monkeypatch.setattr(_ckernels, "library_path", lambda: None)
        assert _ckernels.library() is None
        monkeypatch.setenv("SQDIST_CPU_KERNELS", "auto")
        fallback = _cpu_kernels.kernels()
        assert fallback is None or fallback.__name__ == "sqdist._cpu_nb"
        monkeypatch.setenv("SQDIST_CPU_KERNELS", "c")
        with pytest.raises(sqdist.SqdistError, match="SQDIST_CPU_KERNELS.*'c'.*not built"):
            _cpu_kernels.kernels()
        monkeypatch.setenv("SQDIST_CPU_KERNELS", "auto")
        X = torch.randn(500, 3)
        d = sqdist.sqdist(X, X[:40])  # still correct on the fallback path
        assert torch.allclose(d.double(), brute(X, X[:40])[0], rtol=1e-5, atol=1e-6)
        monkeypatch.undo()
        for f in lib_cache:
            f.cache_clear()
        monkeypatch.setattr(_ckernels, "ABI", _ckernels.ABI + 1)  # a library built from an older source
        assert _ckernels.library() is None
    finally:
        monkeypatch.undo()
        for f in lib_cache:
            f.cache_clear()
    assert _ckernels.library() is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_problem_entry_point_equals_the_ctypes_call_and_numba(dtype, monkeypatch):
    """The CPython entry point of the fused small-problem iteration gives the ctypes call's
    bits (and numba's), and refuses arrays of the wrong dtype or shape."""
    rng = np.random.default_rng(5)
    X = (rng.normal(scale=4.0, size=(5, 2))[rng.integers(0, 5, 250)] + rng.normal(size=(250, 2))).astype(dtype)
    C = X[:5].copy()
    sums = np.zeros((5, 2))
    counts = np.zeros(5, np.int64)
    np.add.at(sums, np.arange(250) % 5, X)
    np.add.at(counts, np.arange(250) % 5, 1)
    runs = []
    for entry in (True, False):
        if not entry:
            monkeypatch.setattr(_ckernels, "entry_point", lambda: None)
        labels, mind = np.empty(250, np.int64), np.empty(250, dtype)
        runs.append((*_ckernels.update_assign_direct(X, C, sums, counts, 64, labels, mind), labels, mind))
    if HAS_NUMBA:
        from sqdist import _cpu_nb
        labels, mind = np.empty(250, np.int64), np.empty(250, dtype)
        runs.append((*_cpu_nb.update_assign_direct(X, C, sums, counts, 64, labels, mind), labels, mind))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    Cn = runs[0][0]
    np.testing.assert_array_equal(Cn, (sums / counts[:, None]).astype(dtype))  # the centres' means
    d = ((X[:, None, :].astype(np.float64) - Cn[None].astype(np.float64)) ** 2).sum(-1)
    assert (runs[0][-2] == d.argmin(1)).mean() >= 0.99
    monkeypatch.undo()
    mod = _ckernels.entry_point()
    if mod is None:
        pytest.skip("library built without the CPython entry point")
    with pytest.raises(ValueError, match="counts has the wrong dtype"):
        mod.update_assign(64, X, C, sums, counts.astype(np.float64), labels, mind)
    with pytest.raises(ValueError, match="C has the wrong dtype or shape"):
        mod.update_assign(64, X, C[:, :1].copy(), sums, counts, labels, mind)
    with pytest.raises(ValueError, match="C has the wrong dtype or shape"):
        mod.update_assign(64, X, C.astype(np.float64 if dtype == np.float32 else np.float32), sums, counts, labels, mind)
    with pytest.raises(ValueError, match="labels is not C-contiguous"):
        mod.update_assign(64, X, C, sums, counts, np.empty(500, np.int64)[::2], mind)
    with pytest.raises(ValueError, match="mind is read-only"):
        ro = np.empty(250, dtype)
        ro.flags.writeable = False
        mod.update_assign(64, X, C, sums, counts, labels, ro)
    with pytest.raises(ValueError, match="sums must be a NumPy array, got list"):
        mod.update_assign(64, X, C, sums.tolist(), counts, labels, mind)
    with pytest.raises(ValueError, match="X must be a 2-D float32 or float64 array"):
        mod.update_assign(64, X.astype(np.float16), C, sums, counts, labels, mind)
    with pytest.raises(ValueError, match="chunk must be positive"):
        mod.update_assign(0, X, C, sums, counts, labels, mind)
    with pytest.raises(TypeError, match="takes 7 arguments"):
        mod.update_assign(64, X, C, sums, counts, labels)
    # the results are new arrays every call (a fit's history keeps them)
    a, b = mod.update_assign(64, X, C, sums, counts, labels, mind), mod.update_assign(64, X, C, sums, counts, labels, mind)
    for x, y in ((a[0], b[0]), (a[3], b[3]), (a[4], b[4])):
        assert not np.shares_memory(x, y) and x.flags.c_contiguous and x.flags.writeable
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_direct_equals_the_matrix_row_minimum(dtype, monkeypatch):
    """The one-pass direct nearest (labels and distances, no (n, P) matrix) gives the bits of the
    direct matrix's ``min(1)``: values, first index on exact ties, NaN first (in X or in T), +-inf
    -- for row counts that end inside a block, 1 and 2 threads, and numba's kernel alike."""
    rng = np.random.default_rng(11)
    nan_rows = tie_rows = 0  # rows whose minimum is NaN, rows whose minimum occurs twice
    for trial in range(60):
        n, P, D = int(rng.integers(1, 2000)), int(rng.integers(1, 40)), int(rng.integers(1, 25))
        X = np.round(rng.normal(size=(n, D)), 1).astype(dtype)
        T = np.round(rng.normal(size=(P, D)), 1).astype(dtype)
        if trial % 3 == 0 and P > 2:
            T[P - 1] = T[0]  # exact ties
            X[: n // 3] = T[rng.integers(0, P, n // 3)]  # exact zeros
        if trial % 4 == 1:
            X[rng.integers(0, n, 3), rng.integers(0, D)] = np.nan
        if trial % 5 == 2:
            T[rng.integers(0, P), rng.integers(0, D)] = np.nan
        if trial % 7 == 3:
            X[rng.integers(0, n), 0] = np.inf
            T[rng.integers(0, P), 0] = -np.inf
        Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)
        full = _cpu_kernels.sqdist_small(Xt, Tt, torch.empty((n, P), dtype=Xt.dtype))
        v, j = full.min(1)
        nan_rows += int(v.isnan().sum())
        tie_rows += int(((full == v[:, None]).sum(1) > 1).sum())
        outs = []
        for threads in (1, 2):
            with monkeypatch.context() as mp:
                mp.setattr(_ckernels, "_threads", lambda t=threads: t)
                mp.setattr(_ckernels, "_PARALLEL_ROWS_WORK", 0)  # every size in parallel
                dmin, imin = torch.empty(n, dtype=Xt.dtype), torch.empty(n, dtype=torch.int64)
                _cpu_kernels.nearest_small(Xt, Tt, dmin, imin)
                outs.append((dmin, imin))
        if HAS_NUMBA:
            from sqdist import _cpu_nb
            labels, mind = np.empty(n, np.int64), np.empty(n, dtype)
            _cpu_nb.nearest_direct(X, T, 64, labels, mind)
            outs.append((torch.from_numpy(mind), torch.from_numpy(labels)))
        for dmin, imin in outs:
            assert torch.equal(imin, j), trial
            np.testing.assert_array_equal(dmin.numpy(), v.numpy())  # NaN where NaN
    assert nan_rows > 0 and tie_rows > 0  # the NaN-first and first-index rules were exercised


def test_nearest_small_d_half_precision_rounds_as_the_block_path():
    """float16 in: computed in float32 by the one-pass kernel, the distances rounded to float16 as
    the direct matrix's minimum is."""
    g = torch.Generator().manual_seed(2)
    X, T = torch.randn(500, 3, generator=g).half(), torch.randn(7, 3, generator=g).half()
    d, i = sqdist.nearest(X, T)
    v, j = sqdist.sqdist(X.float(), T.float()).min(1, keepdim=True)
    assert d.dtype == torch.float16 and torch.equal(i, j) and torch.equal(d, v.half())


def _fixup_min_reference(d, nx, tnt, tau, X, T):
    """numba's gemm_fixup on a copy, then torch.min (NaN first, first index on ties)."""
    nb = pytest.importorskip("sqdist._cpu_nb")
    ref = d.copy()
    cnt = nb.gemm_fixup(ref, nx, tnt, tau, X, T)
    v, i = torch.from_numpy(ref).min(1)
    return cnt, ref, v.numpy(), i.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_min_equals_fixup_then_torch_min(dtype):
    """The fused fix-up + row minimum: ties (first index), NaN (first NaN wins), +-inf, rows
    shorter than a vector and not a multiple of one, recomputed entries -- against numba's
    fix-up followed by torch.min, and numba's own gemm_min."""
    nb = pytest.importorskip("sqdist._cpu_nb")
    rng = np.random.default_rng(5)
    for _ in range(120):
        n, P, D = int(rng.integers(1, 30)), int(rng.integers(1, 130)), 3
        X = rng.standard_normal((n, D)).astype(dtype)
        T = rng.standard_normal((P, D)).astype(dtype)
        d = (rng.integers(0, 4, size=(n, P)) + 2).astype(dtype)  # many exact ties
        for _ in range(int(rng.integers(0, 5))):
            d[rng.integers(n), rng.integers(P)] = rng.choice([np.nan, np.inf, -np.inf, 0.5])
        nx = rng.random(n).astype(dtype)
        tnt = (rng.random(P) * 4).astype(dtype)  # some entries fall below tau * nx + tnt: recomputed
        cnt, ref, v, i = _fixup_min_reference(d, nx, tnt, 1.0, X, T)
        for mod in (_ckernels, nb):
            got, dmin, imin = d.copy(), np.empty(n, dtype), np.empty(n, np.int64)
            assert mod.gemm_min(got, nx, tnt, 1.0, X, T, dmin, imin) == cnt
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_array_equal(imin, i)
            np.testing.assert_array_equal(dmin, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fixup_screen_keeps_the_exact_float64_test(dtype):
    """Entries a few ulps either side of the float64 threshold tau * nx + tnt (norms from
    subnormal to large): the C kernel's screen in the block's dtype flags every entry the
    exact test does -- the same count and bits as numba's kernel."""
    nb = pytest.importorskip("sqdist._cpu_nb")
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(60):
        n, P, D = int(rng.integers(1, 20)), int(rng.integers(1, 100)), 4
        X = rng.standard_normal((n, D)).astype(dtype)
        T = rng.standard_normal((P, D)).astype(dtype)
        tau = float(rng.choice([0.27, 1e-3, 3e-7]))
        nx = (rng.random(n) * 10.0 ** rng.integers(-45, 5, size=n)).astype(dtype)
        tnt = (rng.random(P) * 10.0 ** rng.integers(-45, 5, size=P)).astype(dtype)
        d = (tau * nx.astype(np.float64)[:, None] + tnt.astype(np.float64)[None, :]).astype(dtype)
        step = rng.integers(-2, 3, size=d.shape)
        for _ in range(2):
            d = np.where(step > 0, np.nextafter(d, np.inf), np.where(step < 0, np.nextafter(d, -np.inf), d))
        d = d.astype(dtype)
        a, b = d.copy(), d.copy()
        ca = _ckernels.gemm_fixup(a, nx, tnt, tau, X, T)
        assert ca == nb.gemm_fixup(b, nx, tnt, tau, X, T)
        np.testing.assert_array_equal(a, b)
        hits += ca
    assert hits > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nearest_fused_path_equals_the_matrix_min(dtype, monkeypatch):
    """sqdist.nearest on the compiled product path (sub-blocks of products, fix-up and row
    minimum in one pass) gives the values and indices of the full matrix's min(1): duplicated
    rows (exact zeros, first index), far offsets, several sub-blocks with a short last one."""
    from sqdist import _dense

    g = torch.Generator().manual_seed(2)
    X = (torch.randn(700, 40, generator=g, dtype=torch.float64) + 300.0).to(dtype)
    T = (torch.randn(260, 40, generator=g, dtype=torch.float64) + 300.0).to(dtype)
    T[5] = T[3]  # a duplicated target: the first index wins
    X[:4] = T[:4]
    calls = []
    real = _cpu_product.gemm_min
    monkeypatch.setattr(_cpu_product, "gemm_min", lambda *a: calls.append(a[0].shape) or real(*a))
    monkeypatch.setattr(_dense, "_NEAREST_SUB_BYTES", 128 * 260 * X.element_size())  # 128-row sub-blocks
    dist, idx = sqdist.nearest(X, T)
    assert calls and all(s[0] <= 128 for s in calls) and len(calls) == 6
    full = sqdist.sqdist(X, T)
    v, i = full.min(1)
    assert torch.equal(idx[:, 0], i) and torch.equal(dist[:, 0], v)
    assert dist[:4, 0].tolist() == [0.0] * 4 and idx[:4, 0].tolist() == [0, 1, 2, 3]
    ref, _ = brute(X, T)
    assert bool((ref[torch.arange(700), idx[:, 0]] <= ref.min(1).values * (1 + 1e-4) + 1e-300).all())


def test_nearest_fused_path_leaves_unsafe_rows_to_the_general_path(monkeypatch):
    X = torch.randn(700, 40)  # 700 x 200 x 40 > 2^22 multiply-adds: the product path
    T = torch.randn(200, 40)
    X[7, 3] = float("nan")
    X[9] = 1e20  # |x - c|^2 overflows: the direct formula
    calls, general = [], []
    real, real_rows = _cpu_product.gemm_min, _cpu_product.gemm_distances
    monkeypatch.setattr(_cpu_product, "gemm_min", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(_cpu_product, "gemm_distances", lambda *a: general.append(1) or real_rows(*a))
    dist, idx = sqdist.nearest(X, T)
    assert not calls and general  # the general product path served this block
    full = sqdist.sqdist(X, T)
    v, i = full.min(1)
    assert torch.equal(idx[:, 0], i) and torch.allclose(dist[:, 0], v, rtol=0, atol=0, equal_nan=True)
    assert bool(torch.isnan(dist[7, 0])) and bool(torch.isinf(dist[9, 0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_sqdist_direct_register_tiles_equal_the_plain_feature_order_sum(dtype, threads):
    """The distance matrix's register tiles (rows x vectors of columns, stored once) and the rows and
    columns left over give, bit for bit, the plain sum (x_0 - t_0)^2 + (x_1 - t_1)^2 + ... in the
    input dtype, feature by feature -- what NumPy computes one IEEE operation at a time -- at shapes
    that end inside a tile, an odd row, one column and one feature; and the same on 1 and 2 threads."""
    rng = np.random.default_rng(11)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n, P, D in [(1, 1, 1), (2, 32, 1), (3, 33, 2), (5, 17, 16), (64, 100, 7), (257, 1000, 13), (9, 4101, 3)]:
            X = (rng.normal(size=(n, D)) * 3 + 100).astype(dtype)
            T = (rng.normal(size=(P, D)) * 3 + 100).astype(dtype)
            T[P // 2] = X[n // 2]  # an identical pair: exactly 0
            TT = np.ascontiguousarray(T.T)
            out = np.full((n, P), np.nan, dtype=dtype)
            _ckernels.sqdist_direct(X, TT, out)
            ref = (X[:, :1] - TT[:1]) ** 2  # (n, P), in dtype
            for d in range(1, D):
                ref = ref + (X[:, d : d + 1] - TT[d : d + 1]) ** 2
            assert ref.dtype == dtype and out.tobytes() == ref.tobytes(), (n, P, D)
            assert out[n // 2, P // 2] == 0.0
    finally:
        torch.set_num_threads(old)
