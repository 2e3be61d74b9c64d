"""Triton kernels (sqdist._triton) against float64 references.

Without CUDA the kernels run on CPU tensors under Triton's interpreter
(TRITON_INTERPRET=1, set here before Triton is imported); with CUDA the same
tests run compiled on the GPU, plus a few GPU-only ones (larger sizes, tf32).
Shapes are small: the interpreter runs every program instance in Python.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the kernels' definition

pytest.importorskip("triton")

import sqdist  # noqa: E402
from sqdist import SqdistError  # noqa: E402

if "sqdist._triton" in sys.modules:  # imported earlier without the interpreter flag
    importlib.reload(sys.modules["sqdist._triton"])
from sqdist import _triton as tr  # noqa: E402

if not CUDA and not tr._interpreted():
    pytest.skip("Triton was imported before TRITON_INTERPRET=1 was set (tests/conftest.py sets it)",
                allow_module_level=True)

# NaN/Inf inputs make NumPy (the interpreter) warn; the results are what is checked
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

DEV = torch.device("cuda" if CUDA else "cpu")
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA")


def data(n, d, *, seed, offset=1000.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) + offset).to(dtype).to(DEV)


def ref_d(X, T):
    X64, T64 = X.double().cpu(), T.double().cpu()
    return ((X64[:, None, :] - T64[None, :, :]) ** 2).sum(-1)  # (N, P)


def ref_mm64(X, T):
    """float64 distances through the centred expansion (no (N, P, D) temporary): for large GPU checks."""
    c = T.double().mean(0)
    X64, T64 = X.double() - c, T.double() - c
    return ((X64 * X64).sum(1)[:, None] + (T64 * T64).sum(1)[None, :] - 2 * X64 @ T64.T).clamp_min(0).cpu()


SHAPES = [(1, 1, 1), (7, 3, 2), (100, 65, 5), (257, 3, 33), (7, 65, 130), (1, 65, 33), (100, 1, 1), (33, 40, 4)]


@pytest.fixture(params=["direct", "product"])
def matrix_path(request, monkeypatch):
    """float32 distance matrices take the direct formula; force the product path too."""
    if request.param == "product":
        monkeypatch.setattr(tr, "_DIRECT_TAU", 2.0)
    return request.param


@pytest.mark.parametrize("N,P,D", SHAPES)
def test_sqdist_offset_data_matches_float64(N, P, D, matrix_path):
    X, T = data(N, D, seed=N * 7 + D), data(P, D, seed=P * 11 + D + 1)
    out = torch.full((N, P), float("nan"), device=DEV)  # poisoned: every entry must be written
    res = tr.sqdist_triton(X, T, out)
    assert res is out
    ref = ref_d(X, T)
    err = (out.double().cpu() - ref).abs()
    assert bool((err <= 1e-5 * ref + 1e-12).all()), float((err / ref.clamp_min(1e-30)).max())
    # the torch gemm path honours the same contract: both within 1e-5 of each other
    tor = sqdist.sqdist(X, T, backend="torch").double().cpu()
    assert torch.allclose(out.double().cpu(), tor, rtol=2e-5, atol=1e-12)


def test_public_api_routes_numpy_float64():
    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(20, 6)) + 1e4, rng.normal(size=(9, 6)) + 1e4
    got = sqdist.sqdist(X, T, backend="triton") if not CUDA else None
    if got is None:  # numpy arrays are CPU data: on a CUDA machine use tensors
        got = sqdist.sqdist(torch.from_numpy(X).to(DEV), torch.from_numpy(T).to(DEV), backend="triton").cpu().numpy()
    ref = ((X[:, None] - T[None]) ** 2).sum(-1)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-11)


def test_half_input_accumulates_in_float32(matrix_path):
    X, T = data(30, 9, seed=1, offset=3.0, dtype=torch.float16), data(20, 9, seed=2, offset=3.0, dtype=torch.float16)
    out = torch.empty((30, 20), dtype=torch.float16, device=DEV)
    tr.sqdist_triton(X, T, out)
    ref = ref_d(X, T)
    np.testing.assert_allclose(out.double().cpu().numpy(), ref.numpy(), rtol=1e-3)


@pytest.mark.parametrize("D", [3, 33, 130])
def test_identical_rows_give_exact_zero(D, matrix_path):
    X = data(40, D, seed=D)
    X[5] = X[17]
    out = torch.empty((40, 40), device=DEV)
    tr.sqdist_triton(X, X, out)
    assert bool((out.diagonal() == 0).all())
    assert out[5, 17].item() == 0.0 and out[17, 5].item() == 0.0
    assert bool((out >= 0).all())


def test_noncontiguous_out(matrix_path):
    X, T = data(19, 7, seed=3), data(23, 7, seed=4)
    buf = torch.full((23, 19), float("nan"), device=DEV)
    out = buf.T  # (19, 23), strides (1, 19)
    tr.sqdist_triton(X, T, out)
    ref = ref_d(X, T)
    assert torch.allclose(out.double().cpu(), ref, rtol=1e-5)


@pytest.mark.parametrize("D", [2, 9])
def test_nonfinite_rows_propagate_only_to_their_row(D, matrix_path):
    X, T = data(12, D, seed=5), data(10, D, seed=6)
    X[3, 0] = float("nan")
    X[4, 1 % D] = float("inf")
    T[7, 0] = float("-inf")
    T[2, D - 1] = float("nan")
    got = torch.empty((12, 10), device=DEV)
    tr.sqdist_triton(X, T, got)
    want = sqdist.sqdist(X, T, backend="torch")
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    fin = torch.isfinite(want)
    assert torch.allclose(got[fin].double().cpu(), ref_d(X, T)[fin.cpu()], rtol=1e-5)


def test_autograd_is_routed_to_torch_path():
    X = data(6, 5, seed=7).requires_grad_()
    T = data(4, 5, seed=8)
    d = sqdist.sqdist(X, T, backend="triton")
    d.sum().backward()
    want = 2 * 4 * X.detach() - 2 * T.sum(0)  # d/dX sum_ij ||x_i - t_j||^2 with P = 4
    assert torch.allclose(X.grad, want, rtol=1e-4, atol=1e-2)


# --------------------------------------------------------------------------
# nearest
# --------------------------------------------------------------------------


@pytest.mark.parametrize("N,P,D", [(1, 1, 1), (7, 3, 2), (257, 3, 5), (100, 65, 33), (7, 65, 130), (100, 65, 4)])
def test_nearest_matches_float64(N, P, D):
    X, T = data(N, D, seed=N + D, offset=0.0), data(P, D, seed=P + 2 * D, offset=0.0)
    X = X + 1000.0
    T = T + 1000.0
    d, i = tr.nearest_triton(X, T)
    assert d.shape == (N, 1) and i.shape == (N, 1) and i.dtype == torch.int64
    ref = ref_d(X, T)
    rv, ri = ref.min(1)
    assert torch.equal(i[:, 0].cpu(), ri)
    assert torch.allclose(d[:, 0].double().cpu(), rv, rtol=1e-6, atol=1e-12)
    # through the public API
    d2, i2 = sqdist.nearest(X, T, backend="triton")
    assert torch.equal(i2, i) and torch.equal(d2, d)


@pytest.mark.parametrize("D", [3, 6])  # direct path and product path + margin re-check
def test_nearest_ties_go_to_smallest_index(D):
    # integer grid: every distance is exact, many exact ties; duplicates of T[1] in the same
    # register lane (columns 1 + 32k, for tile widths 32, 64, 128) and across lanes
    g = torch.Generator().manual_seed(9)
    T = torch.randint(0, 3, (140, D), generator=g).float()
    for j in (33, 65, 66, 129):
        T[j] = T[1]
    X = torch.cat([torch.randint(0, 3, (50, D), generator=g).float(), T[1:2], T[1:2] + 0.5]).to(DEV)
    T = T.to(DEV)
    d, i = tr.nearest_triton(X, T)
    ref = ref_d(X, T)
    rv = ref.min(1, keepdim=True).values
    first = (ref == rv).float().argmax(1)  # smallest index achieving the minimum
    assert torch.equal(i[:, 0].cpu(), first)
    assert torch.equal(d.double().cpu(), rv)


def test_nearest_nonfinite_matches_torch_path():
    X, T = data(15, 6, seed=10), data(9, 6, seed=11)
    X[2, 3] = float("nan")
    X[8, 0] = float("inf")
    T[4, 1] = float("inf")
    dt, it = tr.nearest_triton(X, T)
    dw, iw = sqdist.nearest(X, T, backend="torch")
    assert torch.equal(it, iw)
    assert torch.allclose(dt, dw, rtol=1e-5, equal_nan=True)
    T[6, 2] = float("nan")  # a NaN centre makes every row's minimum NaN, as torch.min does
    dt, it = tr.nearest_triton(X, T)
    dw, iw = sqdist.nearest(X, T, backend="torch")
    assert bool(torch.isnan(dt).all()) and bool(torch.isnan(dw).all())
    assert torch.equal(it, iw)


@pytest.mark.parametrize("precision", ["ieee", "tf32"])
def test_margin_recheck_keeps_labels(precision):
    X, C = data(90, 12, seed=12, offset=5.0), data(40, 12, seed=13, offset=5.0)
    p = tr._Prep(X, C, torch.float32)
    d0, i0, n0 = tr._nearest_core(p, precision)
    d_all, i_all, n_all = tr._nearest_core(p, precision, gamma=1e9)  # every row re-checked
    d_none, i_none, n_none = tr._nearest_core(p, precision, gamma=-1.0)  # none re-checked
    assert n_all == 90 and n_none == 0 and 0 <= n0 <= 90
    assert torch.equal(i0, i_all) and torch.equal(i0, i_none)
    assert torch.equal(d0, d_all)
    assert torch.equal(i0.cpu(), ref_d(X, C).argmin(1))
    with pytest.raises(SqdistError, match="precision"):
        tr.nearest_triton(X, C, precision="bf17")


# --------------------------------------------------------------------------
# k-means assignment + update
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n,K,D", [(1, 1, 1), (7, 65, 5), (257, 3, 2), (100, 9, 33), (250, 5, 2)])
def test_assign_accumulate_matches_torch(n, K, D):
    X, C = data(n, D, seed=n + K, offset=50.0), data(K, D, seed=K + D, offset=50.0)
    labels, mind, sums, counts, inertia = tr.assign_accumulate_triton(X, C)
    ref = ref_d(X, C)
    rv, ri = ref.min(1)
    assert labels.dtype == torch.int64 and labels.shape == (n,)
    assert torch.equal(labels.cpu(), ri)
    assert torch.allclose(mind.double().cpu(), rv, rtol=1e-6)
    want_sums = torch.zeros(K, D, dtype=torch.float64).index_add_(0, ri, X.double().cpu())
    assert sums.dtype == torch.float64 and sums.shape == (K, D)
    assert torch.allclose(sums.cpu(), want_sums, rtol=1e-13, atol=0)
    assert torch.equal(counts.cpu(), torch.bincount(ri, minlength=K))
    assert inertia.dtype == torch.float64 and inertia.ndim == 0
    assert inertia.item() == pytest.approx(mind.double().sum().item(), rel=1e-15)


def test_kmeans_with_the_triton_backend_matches_torch():
    """sqdist.kmeans(backend="triton") end to end (the assign + accumulate
    kernel inside Lloyd's loop): same labels and iterations as the torch
    backend, centres equal to float64 rounding of the same means."""
    X = data(300, 5, seed=30, offset=20.0)
    C0 = X[:4].clone()
    a = sqdist.kmeans(X, init=C0, max_iter=10, backend="triton")
    b = sqdist.kmeans(X, init=C0, max_iter=10, backend="torch")
    assert a.n_iter == b.n_iter and a.converged == b.converged
    assert torch.equal(a.labels.cpu(), b.labels.cpu())
    assert torch.allclose(a.centers.cpu(), b.centers.cpu(), rtol=1e-6, atol=1e-6)
    assert a.inertia == pytest.approx(b.inertia, rel=1e-6)


def test_assign_accumulate_many_slices_per_cluster():
    # n large enough relative to K for several fixed slices per cluster (G > 1 on CPU tiles)
    X, C = data(1200, 3, seed=20, offset=0.0), data(2, 3, seed=21, offset=0.0)
    labels, _, sums, counts, _ = tr.assign_accumulate_triton(X, C)
    want = torch.zeros(2, 3, dtype=torch.float64).index_add_(0, labels.cpu(), X.double().cpu())
    assert torch.allclose(sums.cpu(), want, rtol=1e-12)
    assert int(counts.sum()) == 1200


def test_results_are_bitwise_deterministic():
    X, C = data(300, 6, seed=14), data(7, 6, seed=15)
    a = tr.assign_accumulate_triton(X, C)
    b = tr.assign_accumulate_triton(X, C)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    o1, o2 = torch.empty((300, 7), device=DEV), torch.empty((300, 7), device=DEV)
    tr.sqdist_triton(X, C, o1)
    tr.sqdist_triton(X, C, o2)
    assert torch.equal(o1, o2)


def test_empty_inputs():
    X = torch.empty((0, 3), device=DEV)
    C = data(4, 3, seed=16)
    labels, mind, sums, counts, inertia = tr.assign_accumulate_triton(X, C)
    assert labels.shape == (0,) and mind.shape == (0,)
    assert bool((sums == 0).all()) and bool((counts == 0).all()) and inertia.item() == 0.0
    d, i = tr.nearest_triton(X, C)
    assert d.shape == (0, 1) and i.shape == (0, 1)


# --------------------------------------------------------------------------
# GPU only (compiled kernels, realistic sizes)
# --------------------------------------------------------------------------


@gpu
@pytest.mark.parametrize("D", [2, 16, 128])
def test_gpu_sqdist_large(D):
    X, T = data(3000, D, seed=30), data(2000, D, seed=31)
    out = torch.full((3000, 2000), float("nan"), device=DEV)
    tr.sqdist_triton(X, T, out)
    assert not bool(torch.isnan(out).any())
    ref = ref_mm64(X, T)
    err = (out.double().cpu() - ref).abs()
    assert bool((err <= 1e-5 * ref + 1e-9).all())


@gpu
@pytest.mark.parametrize("D", [4, 64, 128])
def test_gpu_tf32_labels_equal_ieee(D):
    X, C = data(20000, D, seed=32, offset=10.0), data(1000, D, seed=33, offset=10.0)
    li, mi, si, ci, _ = tr.assign_accumulate_triton(X, C, precision="ieee")
    lf, mf, sf, cf, _ = tr.assign_accumulate_triton(X, C, precision="tf32")
    assert torch.equal(li, lf) and torch.equal(mi, mf) and torch.equal(si, sf) and torch.equal(ci, cf)
    assert torch.equal(li.cpu(), ref_mm64(X, C).argmin(1))


@pytest.mark.parametrize("n,K,D", [(250, 5, 2), (70, 33, 9), (1, 1, 1), (40, 3, 64)])
def test_tiny_single_launch_path_equals_general_path(n, K, D):
    X, C = data(n, D, seed=n * K, offset=20.0), data(K, D, seed=K * D + 3, offset=20.0)
    assert tr._is_tiny(n, K, D)
    a = tr.assign_accumulate_triton(X, C, _tiny=True)
    b = tr.assign_accumulate_triton(X, C, _tiny=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[3], b[3])
    assert torch.allclose(a[1], b[1], rtol=1e-6)
    assert torch.allclose(a[2], b[2], rtol=1e-13, atol=0)
    assert a[4].item() == pytest.approx(b[4].item(), rel=1e-6)  # mind rounds differently per path
    assert torch.equal(a[0].cpu(), ref_d(X, C).argmin(1))


def test_tiny_path_nonfinite_and_ties_match_general_path():
    g = torch.Generator().manual_seed(17)
    C = torch.randint(0, 3, (6, 3), generator=g).float()
    C[4] = C[1]
    X = torch.randint(0, 3, (40, 3), generator=g).float()
    X[7, 1] = float("nan")
    X[9, 0] = float("inf")
    X, C = X.to(DEV), C.to(DEV)
    a = tr.assign_accumulate_triton(X, C, _tiny=True)
    b = tr.assign_accumulate_triton(X, C, _tiny=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[3], b[3])
    assert torch.allclose(a[1], b[1], equal_nan=True)
    assert torch.allclose(a[2], b[2], equal_nan=True)


def test_batched_and_chunked_public_paths():
    X = torch.stack([data(9, 6, seed=40), data(9, 6, seed=41)])  # (2, 9, 6)
    T = data(5, 6, seed=42)  # broadcast over the batch
    got = sqdist.sqdist(X, T, backend="triton")
    assert got.shape == (2, 9, 5)
    for b in range(2):
        assert torch.allclose(got[b].double().cpu(), ref_d(X[b], T), rtol=1e-5)
    blocks = list(sqdist.sqdist_chunks(X[0], T, working_memory=0.0002, backend="triton"))
    assert len(blocks) > 1
    # (not bitwise: the interpreter's matmul may round a row differently in another block layout)
    assert torch.allclose(torch.cat([blk for blk, _ in blocks]), got[0], rtol=1e-6)


def test_gpu_benchmark_script_parses_its_options():
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "--cpu-smoke" in r.stdout and "--budget-s" in r.stdout


def test_nearest_float64_product_path():
    X, T = data(60, 9, seed=50, offset=1e4, dtype=torch.float64), data(45, 9, seed=51, offset=1e4, dtype=torch.float64)
    d, i = tr.nearest_triton(X, T)
    assert d.dtype == torch.float64
    rv, ri = ref_d(X, T).min(1)
    assert torch.equal(i[:, 0].cpu(), ri)
    assert torch.allclose(d[:, 0].cpu(), rv, rtol=1e-12)


@pytest.mark.parametrize("D", [2, 9])
def test_nearest_nonfinite_rows_and_columns_match_torch(D):
    """A NaN row of T wins for every row (torch semantics), a NaN row of X gets
    NaN at index 0 -- in the direct mode (D <= 4, whose kernel reads NaN as
    inf) and in the product mode alike."""
    X = data(6, D, seed=40 + D, offset=3.0)
    T = data(5, D, seed=50 + D, offset=3.0)
    T[2, 0] = float("nan")
    X[4, 1] = float("nan")
    got_d, got_i = sqdist.nearest(X, T, backend="triton")
    ref_d, ref_i = sqdist.nearest(X.cpu(), T.cpu(), backend="torch")
    assert torch.equal(got_i.cpu(), ref_i)
    assert torch.equal(torch.isnan(got_d.cpu()), torch.isnan(ref_d))
