"""sqdist.sqdist / sqdist_chunks / nearest against float64 brute force, SciPy and scikit-learn.

Accuracy contract (issue 2): for float32 input the default method is within
1e-6 median and 1e-4 max relative error of a float64 reference, also far from
the origin; identical rows give exactly 0; never negative; never NaN from
finite input.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sqdist
from sqdist import SqdistError

METHODS = ["auto", "gemm", "broadcast", "numpy", "loops"]


def np64(a) -> np.ndarray:
    """Any array or tensor (bfloat16 and autograd included) as a float64 ndarray."""
    if isinstance(a, torch.Tensor):
        a = a.detach().double().numpy()
    return np.asarray(a, dtype=np.float64)


def ref64(X, T) -> np.ndarray:
    """Brute-force float64 reference: all differences, squared and summed, in float64."""
    X, T = np64(X), np64(T)
    return ((X[..., :, None, :] - T[..., None, :, :]) ** 2).sum(-1)


def rel_err(d, r: np.ndarray) -> np.ndarray:
    """Relative errors of the entries with a positive reference (zeros are checked exactly)."""
    d = np64(d)
    pos = r > 0
    assert np.all(d[~pos] == 0.0), "identical rows must give exactly 0.0"
    return np.abs(d[pos] - r[pos]) / r[pos]


def assert_contract(d, r: np.ndarray, *, median: float = 1e-6, worst: float = 1e-4) -> tuple[float, float]:
    d_np = np64(d)
    assert not np.isnan(d_np).any(), "NaN from finite input"
    assert (d_np >= 0).all(), "negative distance"
    e = rel_err(d, r)
    if e.size == 0:
        return 0.0, 0.0
    med, mx = float(np.median(e)), float(e.max())
    assert med <= median, f"median relative error {med:.3g} > {median:g}"
    assert mx <= worst, f"max relative error {mx:.3g} > {worst:g}"
    return med, mx


def offset_data(n: int, p: int, D: int, offset: float, spread: float = 1.0, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    X = (torch.randn(n, D, generator=g, dtype=torch.float64) * spread + offset).to(dtype)
    T = (torch.randn(p, D, generator=g, dtype=torch.float64) * spread + offset).to(dtype)
    return X, T


# ---------------------------------------------------------------------------------------------
# basic values, all methods, dtypes, kinds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_hand_solved(method):
    X = np.array([[0.0, 0.0], [3.0, 4.0]])
    T = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 4.0], [-1.0, 2.0]])
    d = sqdist.sqdist(X, T, method=method)
    np.testing.assert_array_equal(d, [[0.0, 2.0, 25.0, 5.0], [25.0, 13.0, 0.0, 20.0]])


def test_matches_scipy_cdist():
    spatial = pytest.importorskip("scipy.spatial")
    X, T = offset_data(60, 45, 7, offset=3.0, seed=1, dtype=torch.float64)
    np.testing.assert_allclose(sqdist.sqdist(X.numpy(), T.numpy()), spatial.distance.cdist(X, T, "sqeuclidean"),
                               rtol=1e-12, atol=1e-12)


def test_matches_sklearn_euclidean_distances():
    pairwise = pytest.importorskip("sklearn.metrics.pairwise")
    X, T = offset_data(60, 45, 7, offset=0.0, seed=2, dtype=torch.float64)
    np.testing.assert_allclose(sqdist.sqdist(X.numpy(), T.numpy()),
                               pairwise.euclidean_distances(X.numpy(), T.numpy(), squared=True),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", METHODS)
def test_methods_agree_with_reference(method, dtype):
    X, T = offset_data(23, 17, 5, offset=10.0, seed=3, dtype=dtype)
    d = sqdist.sqdist(X, T, method=method)
    assert isinstance(d, torch.Tensor) and d.dtype == dtype and d.shape == (23, 17)
    r = ref64(X, T)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert rel_err(d, r).max() <= tol


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", METHODS)
def test_half_precision_is_float32_rounded(method, dtype):
    # half inputs accumulate in float32 and round once at the end
    X, T = offset_data(19, 13, 6, offset=2.0, seed=4, dtype=dtype)
    d = sqdist.sqdist(X, T, method=method)
    assert d.dtype == dtype
    expect = sqdist.sqdist(X.float(), T.float(), method=method).to(dtype)
    assert torch.equal(d, expect)
    # and that is the reference rounded to the half type, to within one half-ulp rounding
    r = torch.from_numpy(ref64(X, T))
    assert torch.allclose(d.double(), r, rtol=torch.finfo(dtype).eps, atol=0)


def test_float16_numpy_in_numpy_out():
    X, T = offset_data(9, 8, 3, offset=0.0, seed=5)
    d = sqdist.sqdist(X.numpy().astype(np.float16), T.numpy().astype(np.float16))
    assert isinstance(d, np.ndarray) and d.dtype == np.float16
    Xh, Th = (torch.from_numpy(a.numpy().astype(np.float16).astype(np.float64)) for a in (X, T))
    np.testing.assert_allclose(d.astype(np.float64), ref64(Xh, Th), rtol=2e-3, atol=0)


def test_integer_inputs_are_converted_as_documented():
    Xi = np.array([[0, 0], [3, 4]], dtype=np.int32)
    Ti = np.array([[1, 1]], dtype=np.int64)
    d = sqdist.sqdist(Xi, Ti)  # NumPy integers -> float64 (NumPy's convention)
    assert isinstance(d, np.ndarray) and d.dtype == np.float64
    np.testing.assert_array_equal(d, [[2.0], [13.0]])
    dt = sqdist.sqdist(torch.from_numpy(Xi), torch.from_numpy(Ti))  # torch integers -> float32
    assert isinstance(dt, torch.Tensor) and dt.dtype == torch.float32
    assert dt.tolist() == [[2.0], [13.0]]
    db = sqdist.sqdist(np.eye(3, dtype=bool), np.eye(3, dtype=bool))  # booleans too
    np.testing.assert_array_equal(db, 2.0 * (1 - np.eye(3)))


def test_input_kinds_give_output_kinds():
    X = [[0.0, 1.0], [2.0, 3.0]]
    T = [[1.0, 1.0]]
    d = sqdist.sqdist(X, T)  # lists -> NumPy float64
    assert isinstance(d, np.ndarray) and d.dtype == np.float64
    np.testing.assert_array_equal(d, [[1.0], [5.0]])
    assert isinstance(sqdist.sqdist(np.array(X), np.array(T)), np.ndarray)
    dt = sqdist.sqdist(torch.tensor(X), torch.tensor(T))
    assert isinstance(dt, torch.Tensor) and dt.dtype == torch.float32
    # mixed NumPy / torch: a tensor, with the promoted dtype
    dm = sqdist.sqdist(np.array(X, dtype=np.float32), torch.tensor(T, dtype=torch.float64))
    assert isinstance(dm, torch.Tensor) and dm.dtype == torch.float64
    dm = sqdist.sqdist(torch.tensor(X), np.array(T, dtype=np.float32))
    assert isinstance(dm, torch.Tensor) and dm.dtype == torch.float32
    assert dm.tolist() == [[1.0], [5.0]]


def test_non_contiguous_and_reversed_numpy_views():
    X, T = offset_data(12, 9, 4, offset=1.0, seed=6, dtype=torch.float64)
    Xn, Tn = X.numpy(), T.numpy()
    for a, b in [(Xn[::-1], Tn), (Xn[:, ::-1], Tn[:, ::-1]), (Xn[::2], Tn.T.copy().T), (np.asfortranarray(Xn), Tn)]:
        np.testing.assert_allclose(sqdist.sqdist(a, b), ref64(a, b), rtol=1e-12)


def test_big_endian_and_read_only_numpy():
    X = np.array([[0.0, 0.0], [3.0, 4.0]], dtype=">f8")
    T = np.array([[0.0, 0.0]])
    T.flags.writeable = False
    np.testing.assert_array_equal(sqdist.sqdist(X, T), [[0.0], [25.0]])


# ---------------------------------------------------------------------------------------------
# the accuracy contract
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("D", [1, 2, 3, 16, 64, 128, 300])
@pytest.mark.parametrize("offset", [0.0, 1000.0, 5e5])
def test_accuracy_contract_on_offset_data(offset, D):
    X, T = offset_data(200, 150, D, offset=offset, seed=D)
    d = sqdist.sqdist(X, T)
    assert d.dtype == torch.float32
    assert_contract(d, ref64(X, T))


@pytest.mark.parametrize("D", [1, 2, 64])
@pytest.mark.parametrize("offset", [1000.0, 5e5])
def test_float64_is_accurate_to_float64_roundoff(offset, D):
    # the close-pair threshold scales with the dtype's roundoff (a fixed 1e-5 target once let
    # float64 results be off by 5e-7 relative at D = 1)
    X, T = offset_data(300, 300, D, offset=offset, seed=20 + D, dtype=torch.float64)
    assert_contract(sqdist.sqdist(X, T), ref64(X, T), median=1e-15, worst=1e-13)


@pytest.mark.parametrize("D", [2, 64, 300])
def test_accuracy_contract_with_many_close_pairs(D):
    # adversarial for the close-pair threshold: two far clusters of near-duplicates around 1000,
    # the centre (mean of T) lies between them, so half the pairs are close relative to the norms
    g = torch.Generator().manual_seed(D)
    u = torch.randn(D, generator=g, dtype=torch.float64)
    u /= u.norm()
    lab = (torch.arange(200) % 2 * 2 - 1).double()[:, None]
    X = (1000 + lab * 100 * u + 0.05 * torch.randn(200, D, generator=g, dtype=torch.float64)).float()
    T = (1000 + lab * 100 * u + 0.05 * torch.randn(200, D, generator=g, dtype=torch.float64)).float()
    assert_contract(sqdist.sqdist(X, T), ref64(X, T))
    # exact duplicates of X in T (twice each): the duplicates give exactly 0
    Td = torch.cat([X, X])[torch.randperm(400, generator=g)]
    d = sqdist.sqdist(X, Td)
    assert_contract(d, ref64(X, Td))
    assert int((d == 0).sum()) >= 2 * 200


@pytest.mark.parametrize("D", [1, 2, 16, 128, 1000])
def test_error_constant_of_the_expansion(D):
    """The threshold ``_numerics.tau`` assumes |error| <= 2 sqrt(D+2) eps (|x_c|^2 + |t_c|^2) for the
    centred float32 expansion; check it on data with many pairs near the threshold."""
    from sqdist._numerics import prepare_right

    g = torch.Generator().manual_seed(10 + D)
    eps = torch.finfo(torch.float32).eps
    worst = 0.0
    n = 150 if D <= 300 else 60
    for spread in (1.0, 0.1, 0.01):
        u = torch.randn(D, generator=g)
        u /= u.norm()
        lab = (torch.arange(n) % 2 * 2 - 1).float()[:, None]
        X = lab * 100 * u + spread * torch.randn(n, D, generator=g)
        T = lab * 100 * u + spread * torch.randn(n, D, generator=g)
        prep = prepare_right(T, torch.float32)
        Xc = X - prep.c
        nx = (Xc * Xc).sum(1)
        Xa = torch.cat([Xc, nx[:, None], torch.ones_like(nx)[:, None]], 1)
        d = (Xa @ prep.Ta.T).double()  # the raw expansion, before any recompute
        s = (nx[:, None] + prep.nt[None, :]).double()
        err = (d - torch.from_numpy(ref64(X, T))).abs() / s
        worst = max(worst, float(err.max()) / eps)
    assert worst <= 2 * math.sqrt(D + 2), f"error constant {worst:.2f} > 2 sqrt(D+2)"


@settings(max_examples=40, deadline=None)
@given(
    D=st.integers(1, 40),
    n=st.integers(1, 30),
    p=st.integers(1, 30),
    log_offset=st.floats(-3, 5.7),
    log_spread=st.floats(-2, 2),
    dup=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_accuracy_contract_property(D, n, p, log_offset, log_spread, dup, seed):
    g = torch.Generator().manual_seed(seed)
    off = torch.randn(D, generator=g, dtype=torch.float64) * 10**log_offset
    X = (off + torch.randn(n, D, generator=g, dtype=torch.float64) * 10**log_spread).float()
    T = (off + torch.randn(p, D, generator=g, dtype=torch.float64) * 10**log_spread).float()
    T[: min(dup, p, n)] = X[: min(dup, p, n)]  # some identical rows
    d = sqdist.sqdist(X, T)
    r = ref64(X, T)
    e = rel_err(d, r)  # identical rows exactly 0
    assert (d >= 0).all() and not d.isnan().any()
    if e.size:
        assert e.max() <= 1e-4
        assert np.median(e) <= 1e-5  # small samples: a handful of pairs may all sit near the threshold
    for i in range(min(dup, p, n)):
        assert d[i, i] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", METHODS)
def test_the_issue_pair_512695_512804(dtype, method):
    a, b = np.array([[512695.0]], dtype=dtype), np.array([[512804.0]], dtype=dtype)
    assert sqdist.sqdist(a, b, method=method)[0, 0] == 11881.0
    assert sqdist.sqdist(b, a, method=method)[0, 0] == 11881.0
    # also among other points (then the centre is not one of the two)
    X = np.array([[512695.0], [0.0], [512804.0]], dtype=dtype)
    d = sqdist.sqdist(X, X, method=method)
    assert d[0, 2] == d[2, 0] == 11881.0
    assert d[0, 0] == d[1, 1] == d[2, 2] == 0.0


def test_torch_cdist_squared_is_wrong_on_offset_data():
    """Why sqdist exists: torch.cdist (matrix-product path, used for > 25 rows) loses the
    digits of points near 1000 with spread 1, sqdist does not."""
    X, T = offset_data(100, 100, 2, offset=1000.0, seed=7)
    r = ref64(X, T)
    bad = np.median(rel_err(torch.cdist(X, T) ** 2, r[:, :]))  # zeros do not occur here
    assert bad > 1e-3
    med, _ = assert_contract(sqdist.sqdist(X, T), r)
    assert med < bad / 1000


@pytest.mark.parametrize("method", METHODS)
def test_identical_rows_are_exactly_zero_and_nothing_negative(method):
    X, _ = offset_data(15, 1, 8, offset=1000.0, seed=8)
    d = sqdist.sqdist(X, X, method=method)
    assert torch.all(torch.diagonal(d) == 0)
    assert (d >= 0).all()


# ---------------------------------------------------------------------------------------------
# chunking and the working-memory budget
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("D", [2, 64])
def test_gemm_chunked_equals_unchunked(D):
    """Rows are independent, but BLAS picks different kernels (and summation orders) for
    different block heights, so chunking is not bitwise: both sides are within 1e-5 of the
    reference (the gemm path's target), hence within 2e-5 of each other."""
    X, T = offset_data(300, 200, D, offset=1000.0, seed=9)
    r = ref64(X, T)
    full = sqdist.sqdist(X, T)
    for wm in (1e-4, 0.01, 0.1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            part = sqdist.sqdist(X, T, working_memory=wm)
        assert rel_err(part, r).max() <= 1e-5
        np.testing.assert_allclose(part.numpy(), full.numpy(), rtol=2e-5, atol=0)


@pytest.mark.parametrize("method", ["broadcast", "numpy"])
def test_broadcast_chunked_equals_unchunked(method):
    X, T = offset_data(40, 30, 16, offset=1.0, seed=10)
    full = sqdist.sqdist(X, T, method=method)
    part = sqdist.sqdist(X, T, method=method, working_memory=0.01)  # 0.01 MiB: a few rows per chunk
    np.testing.assert_allclose(part.numpy(), full.numpy(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("method", ["gemm", "broadcast", "numpy"])
def test_budget_too_small_for_one_row_warns_and_stays_correct(method):
    X, T = offset_data(5, 400, 32, offset=0.0, seed=11)
    with pytest.warns(RuntimeWarning, match="too small for one row"):
        d = sqdist.sqdist(X, T, method=method, working_memory=1e-5)
    assert rel_err(d, ref64(X, T)).max() <= 1e-5


def test_global_working_memory_setting_is_used():
    X, T = offset_data(5, 400, 32, offset=0.0, seed=11)
    with sqdist.working_memory(1e-5):
        with pytest.warns(RuntimeWarning):
            sqdist.sqdist(X, T, method="broadcast")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sqdist.sqdist(X, T, method="broadcast")  # default budget again: no warning


def test_sqdist_chunks_cover_the_matrix():
    X, T = offset_data(50, 20, 3, offset=1000.0, seed=12)
    full = sqdist.sqdist(X, T)
    blocks = list(sqdist.sqdist_chunks(X, T, working_memory=0.001))
    assert len(blocks) > 1
    starts = [s for _, s in blocks]
    sizes = [b.shape[0] for b, _ in blocks]
    assert starts == [sum(sizes[:i]) for i in range(len(sizes))] and sum(sizes) == 50
    assert all(b.shape[1] == 20 and isinstance(b, torch.Tensor) for b, _ in blocks)
    stacked = torch.cat([b for b, _ in blocks])
    assert rel_err(stacked, ref64(X, T)).max() <= 1e-5
    torch.testing.assert_close(stacked, full, rtol=2e-5, atol=0)
    # NumPy in -> NumPy blocks; one block with the default budget
    nb = list(sqdist.sqdist_chunks(X.numpy(), T.numpy()))
    assert len(nb) == 1 and isinstance(nb[0][0], np.ndarray) and nb[0][1] == 0


def test_sqdist_chunks_validates_at_the_call():
    with pytest.raises(SqdistError, match="same number of features"):
        sqdist.sqdist_chunks(np.ones((3, 2)), np.ones((3, 4)))  # no next() needed
    with pytest.raises(SqdistError, match="2-D"):
        sqdist.sqdist_chunks(np.ones((2, 3, 2)), np.ones((3, 2)))


# ---------------------------------------------------------------------------------------------
# out=
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gemm", "broadcast", "numpy", "loops"])
def test_out_numpy_is_reused(method):
    X, T = offset_data(7, 5, 3, offset=100.0, seed=13, dtype=torch.float64)
    out = np.full((7, 5), -1.0)
    res = sqdist.sqdist(X.numpy(), T.numpy(), out=out, method=method)
    assert res is out
    np.testing.assert_allclose(out, ref64(X, T), rtol=1e-12)
    # a non-contiguous (Fortran-ordered) buffer works too
    outf = np.asfortranarray(np.zeros((7, 5)))
    sqdist.sqdist(X.numpy(), T.numpy(), out=outf, method=method)
    np.testing.assert_allclose(outf, ref64(X, T), rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_out_torch_is_reused(dtype):
    X, T = offset_data(7, 5, 3, offset=100.0, seed=14, dtype=dtype)
    out = torch.full((7, 5), -1.0, dtype=dtype)
    ptr = out.data_ptr()
    res = sqdist.sqdist(X, T, out=out)
    assert res is out and out.data_ptr() == ptr
    assert torch.equal(out, sqdist.sqdist(X, T))
    out_t = torch.zeros(5, 7, dtype=dtype).T  # non-contiguous view
    sqdist.sqdist(X, T, out=out_t)
    assert torch.equal(out_t, out)


def test_out_wrong_shape_dtype_kind_device():
    X, T = np.ones((4, 3)), np.ones((2, 3))
    with pytest.raises(SqdistError, match=r"out: expected shape \(4, 2\).*shape \(2, 4\)"):
        sqdist.sqdist(X, T, out=np.empty((2, 4)))
    with pytest.raises(SqdistError, match=r"out: .*dtype torch.float64.*float32"):
        sqdist.sqdist(X, T, out=np.empty((4, 2), dtype=np.float32))
    ro = np.empty((4, 2))
    ro.flags.writeable = False
    with pytest.raises(SqdistError, match="out: .*read-only"):
        sqdist.sqdist(X, T, out=ro)
    with pytest.raises(SqdistError, match="out: expected a torch tensor"):
        sqdist.sqdist(torch.ones(4, 3), torch.ones(2, 3), out=np.empty((4, 2), dtype=np.float32))
    with pytest.raises(SqdistError, match="out: .*device cpu.*device meta"):
        sqdist.sqdist(torch.ones(4, 3), torch.ones(2, 3), out=torch.empty(4, 2, device="meta"))
    with pytest.raises(SqdistError, match="out: expected"):
        sqdist.sqdist(X, T, out=[[0.0, 0.0]] * 4)


# ---------------------------------------------------------------------------------------------
# batch dimensions and empty inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gemm", "broadcast", "numpy"])
def test_batch_dimensions_broadcast(method):
    g = torch.Generator().manual_seed(15)
    X = torch.randn(3, 6, 4, generator=g, dtype=torch.float64) + 50
    T2 = torch.randn(5, 4, generator=g, dtype=torch.float64) + 50
    T3 = torch.randn(3, 5, 4, generator=g, dtype=torch.float64) + 50
    d = sqdist.sqdist(X, T2, method=method)
    assert d.shape == (3, 6, 5)
    np.testing.assert_allclose(d, ref64(X, T2), rtol=1e-12)
    d = sqdist.sqdist(X, T3, method=method)
    assert d.shape == (3, 6, 5)
    for b in range(3):
        np.testing.assert_allclose(d[b], ref64(X[b], T3[b]), rtol=1e-12)
    d = sqdist.sqdist(X[0], T3, method=method)  # (N, D) with (B, P, D)
    assert d.shape == (3, 6, 5)
    np.testing.assert_allclose(d, ref64(X[0], T3), rtol=1e-12)
    # (2, 1, N, D) with (3, P, D) -> (2, 3, N, P)
    X4 = torch.randn(2, 1, 6, 4, generator=g, dtype=torch.float64)
    d = sqdist.sqdist(X4, T3, method=method)
    assert d.shape == (2, 3, 6, 5)
    np.testing.assert_allclose(d, ref64(X4, T3), rtol=1e-12)
    # with a NumPy out buffer
    out = np.empty((3, 6, 5))
    assert sqdist.sqdist(X.numpy(), T3.numpy(), out=out, method=method) is out
    np.testing.assert_allclose(out, ref64(X, T3), rtol=1e-12)


def test_batch_dimensions_that_do_not_broadcast():
    with pytest.raises(SqdistError, match=r"batch dimensions \(3,\) and \(2,\) do not broadcast"):
        sqdist.sqdist(np.ones((3, 4, 2)), np.ones((2, 5, 2)))


@pytest.mark.parametrize("method", METHODS)
def test_empty_inputs_give_empty_results(method):
    assert sqdist.sqdist(np.ones((0, 3)), np.ones((4, 3)), method=method).shape == (0, 4)
    assert sqdist.sqdist(np.ones((4, 3)), np.ones((0, 3)), method=method).shape == (4, 0)
    assert sqdist.sqdist(torch.ones(2, 0, 3), torch.ones(5, 3), method=method).shape == (2, 0, 5)
    assert sqdist.sqdist(np.ones((0, 2, 3)), np.ones((5, 3)), method=method).shape == (0, 2, 5)
    # D = 0: every distance is an empty sum
    np.testing.assert_array_equal(sqdist.sqdist(np.ones((2, 0)), np.ones((3, 0)), method=method), np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------------
# NaN / Inf semantics
# ---------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NumPy's inf - inf
@pytest.mark.parametrize("method", METHODS)
def test_nan_and_inf_propagate_element_wise(method):
    """A NaN in X[i] makes row i NaN; +-inf in X[i] gives inf against every finite row of T and
    NaN against a row with inf in the same coordinate (inf - inf); other entries are untouched."""
    X, T = offset_data(6, 5, 3, offset=1000.0, seed=16)
    X[1, 0] = float("nan")
    X[3, 2] = float("inf")
    T[2, 1] = -float("inf")
    T[4, 2] = float("inf")
    d = sqdist.sqdist(X, T, method=method)
    with np.errstate(invalid="ignore"):
        r = ref64(X, T)
    assert torch.isnan(d[1]).all()
    assert torch.isinf(d[3, [0, 1, 2, 3]]).all() and torch.isnan(d[3, 4])
    assert torch.isinf(d[[0, 2, 4, 5], 2]).all() and torch.isinf(d[[0, 2, 4, 5], 4]).all()
    np.testing.assert_array_equal(np.isnan(d.numpy()), np.isnan(r))
    np.testing.assert_array_equal(np.isinf(d.numpy()), np.isinf(r))
    fin = np.isfinite(r)
    assert np.max(np.abs(d.numpy()[fin] - r[fin]) / r[fin]) <= 1e-5


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gemm", "broadcast"])
def test_gradcheck_float64(method):
    g = torch.Generator().manual_seed(17)
    X = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    T = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: sqdist.sqdist(a, b, method=method), (X, T))
    Xb = torch.randn(2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: sqdist.sqdist(a, b, method=method), (Xb, T))


@pytest.mark.parametrize("method", ["gemm", "broadcast"])
def test_gradient_finite_and_exact_at_coincident_points(method):
    X, T = offset_data(6, 4, 3, offset=1000.0, seed=18)
    T[1] = X[2]  # a coincident pair
    X.requires_grad_(True)
    T.requires_grad_(True)
    w = torch.rand(6, 4, generator=torch.Generator().manual_seed(0))
    (sqdist.sqdist(X, T, method=method) * w).sum().backward()
    assert torch.isfinite(X.grad).all() and torch.isfinite(T.grad).all()
    # d/dX_i sum_j w_ij |x_i - t_j|^2 = 2 sum_j w_ij (x_i - t_j), in float64
    Xd, Td, wd = X.detach().double(), T.detach().double(), w.double()
    gx = 2 * (wd[:, :, None] * (Xd[:, None, :] - Td[None, :, :])).sum(1)
    gt = -2 * (wd[:, :, None] * (Xd[:, None, :] - Td[None, :, :])).sum(0)
    torch.testing.assert_close(X.grad.double(), gx, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(T.grad.double(), gt, rtol=1e-4, atol=1e-3)


def test_batched_gradient_with_out_fills_the_buffer():
    X = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    T = torch.randn(4, 2, dtype=torch.float64)
    out = torch.zeros(2, 3, 4, dtype=torch.float64)
    res = sqdist.sqdist(X, T, out=out)
    np.testing.assert_allclose(out.detach().numpy(), ref64(X.detach(), T), rtol=1e-12)
    res.sum().backward()
    assert X.grad is not None and torch.isfinite(X.grad).all()


# ---------------------------------------------------------------------------------------------
# nearest
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0.0, 1000.0])
@pytest.mark.parametrize("k", [1, 3])
def test_nearest_matches_reference(k, offset):
    X, T = offset_data(120, 70, 5, offset=offset, seed=19)
    d, i = sqdist.nearest(X, T, k=k)
    assert d.shape == i.shape == (120, k) and i.dtype == torch.int64 and d.dtype == torch.float32
    r = ref64(X, T)
    ri = np.argsort(r, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(i.numpy(), ri)
    np.testing.assert_allclose(d.numpy(), np.take_along_axis(r, ri, 1), rtol=1e-5)
    assert (np.diff(d.numpy(), axis=1) >= 0).all()
    # a small budget (many row blocks) gives the same answer
    d2, i2 = sqdist.nearest(X, T, k=k, working_memory=0.002)
    assert torch.equal(i2, i)
    torch.testing.assert_close(d2, d, rtol=2e-5, atol=0)


def test_nearest_ties_go_to_the_smallest_index():
    T = np.array([[5.0, 5.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    d, i = sqdist.nearest(X, T)
    assert isinstance(d, np.ndarray) and isinstance(i, np.ndarray)
    assert i.ravel().tolist() == [1, 1, 1]
    assert d.ravel().tolist() == [1.0, 0.0, 0.5]
    # far from the origin, rows at the same exact distance may differ in the last bits after the
    # matrix product (BLAS edge tiles round differently, even for duplicated rows), so the
    # winner is one of the exact ties, with the exact distance to 1e-5
    Tf = np.vstack([T + 1000, T + 1000]).astype(np.float32)
    Xf = (X + 1000).astype(np.float32)
    d, i = sqdist.nearest(Xf, Tf)
    r = ref64(Xf, Tf)
    assert all(r[a, i[a, 0]] == r[a].min() for a in range(3))
    np.testing.assert_allclose(d.ravel(), r.min(1), rtol=1e-5)


def test_nearest_k_bounds():
    X, T = np.ones((3, 2)), np.zeros((4, 2))
    for k in (0, 5, -1, 2.0, True, "1", None):
        with pytest.raises(SqdistError, match=r"k: expected an integer in \[1, 4\]"):
            sqdist.nearest(X, T, k=k)
    d, i = sqdist.nearest(X, T, k=np.int64(4))
    assert d.shape == (3, 4) and sorted(i[0].tolist()) == [0, 1, 2, 3]
    with pytest.raises(SqdistError, match=r"k: expected an integer in \[1, 0\]"):
        sqdist.nearest(X, np.zeros((0, 2)))
    d, i = sqdist.nearest(np.zeros((0, 2)), T, k=2)
    assert d.shape == i.shape == (0, 2)


def test_nearest_nan_semantics():
    """k = 1 propagates NaN like torch.min / numpy.argmin (and the Triton kernel);
    k > 1 ranks NaN last like torch.topk.  (Documented in nearest's docstring.)"""
    T = np.array([[0.0], [np.nan], [1.0]])
    X = np.array([[0.9], [0.1], [np.nan]])
    d1, i1 = sqdist.nearest(X, T, k=1)
    assert np.isnan(d1).all() and i1.ravel().tolist()[:2] == [1, 1]
    np.testing.assert_array_equal(i1.ravel()[:2], np.argmin(sqdist.sqdist(X, T), axis=1)[:2])
    d2, i2 = sqdist.nearest(X, T, k=2)
    assert i2[:2].tolist() == [[2, 0], [0, 2]]
    np.testing.assert_allclose(d2[:2], [[0.01, 0.81], [0.01, 0.81]])
    assert np.isnan(d2[2]).all()
    # NaN only in X: the other rows are untouched
    d, i = sqdist.nearest(X, np.array([[0.0], [1.0]]))
    assert i[:2].ravel().tolist() == [1, 0] and np.isnan(d[2, 0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_small_d_row_minimum_equals_min_of_the_matrix(dtype):
    """Small D (the direct formula): the row minimum is one compiled pass; its values, indices,
    ties (first index) and NaN (first NaN, as torch.min) are those of sqdist(X, T).min(1), also
    with enough rows for the parallel pass."""
    rng = np.random.default_rng(5)
    T = np.round(rng.normal(size=(9, 3)), 1).astype(dtype)
    T[4] = T[2]  # a duplicated row: exact ties
    X = np.round(rng.normal(size=(30000, 3)), 1).astype(dtype)
    X[:50] = T[rng.integers(0, 9, 50)]  # exact zeros
    X[60, 1] = np.nan  # a NaN row: NaN with index 0
    T2 = T.copy()
    T2[6, 0] = np.nan  # a NaN column: every row's minimum is NaN, at index 6
    for Tc in (T, T2):
        d, i = sqdist.nearest(torch.from_numpy(X), torch.from_numpy(Tc))
        v, j = sqdist.sqdist(torch.from_numpy(X), torch.from_numpy(Tc)).min(1, keepdim=True)
        assert torch.equal(i, j)
        np.testing.assert_array_equal(d.numpy(), v.numpy())  # NaN where NaN
    d, i = sqdist.nearest(X, T)  # NumPy in, NumPy out, the same
    assert isinstance(d, np.ndarray) and (d[:50] == 0).all() and np.isnan(d[60, 0]) and i[60, 0] == 0


def test_nearest_bad_inputs():
    with pytest.raises(SqdistError, match="2-D"):
        sqdist.nearest(np.ones((2, 3, 2)), np.ones((3, 2)))
    with pytest.raises(SqdistError, match="same number of features"):
        sqdist.nearest(np.ones((3, 2)), np.ones((3, 4)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("as_numpy", [False, True])
def test_large_result_in_a_fresh_buffer(dtype, as_numpy):
    """Results over 4 MiB (ordinary allocator since the back-to-back measurements in
    docs/performance.md): same values as a float64 reference, writable, and usable after the call."""
    from sqdist._chunking import empty_output

    t = empty_output((1100, 1000), dtype, "cpu")
    assert t.shape == (1100, 1000) and t.dtype == dtype and t.is_contiguous()
    t.fill_(3)
    assert float(t[-1, -1]) == 3.0
    rng = np.random.default_rng(7)
    X = torch.from_numpy(rng.normal(size=(1100, 3)) + 500).to(dtype)
    T = torch.from_numpy(rng.normal(size=(1000, 3)) + 500).to(dtype)
    if as_numpy and dtype == torch.bfloat16:
        pytest.skip("NumPy has no bfloat16")
    d = sqdist.sqdist(X.numpy() if as_numpy else X, T.numpy() if as_numpy else T)
    ref = ((X.double()[:, None] - T.double()[None]) ** 2).sum(-1).numpy()
    got = d if as_numpy else d.double().numpy()
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-4
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), ref, rtol=tol)
    got[0, 0] = -1.0  # writable
    assert got[0, 0] == -1.0


@pytest.mark.parametrize("compiled", [True, False])
def test_huge_finite_rows_do_not_overflow_the_expansion(compiled, monkeypatch):
    """Finite rows whose squared norms overflow the expansion (inf - inf = NaN)
    take the direct formula: identical rows give exactly 0, far ones inf --
    what the broadcast method says -- on the compiled and the torch gemm path,
    and nearest finds the identical row."""
    from sqdist import _cpu_kernels

    if not compiled:
        monkeypatch.setattr(_cpu_kernels, "available", lambda: False)
    X = torch.full((1, 20), 1e20)
    T = torch.stack([torch.full((20,), 1e20), torch.full((20,), -1e20), torch.full((20,), 1e20), torch.ones(20)])
    d = sqdist.sqdist(X, T, method="gemm")
    assert torch.equal(d, sqdist.sqdist(X, T, method="broadcast"))
    assert d[0, 0] == 0 and d[0, 2] == 0 and torch.isinf(d[0, 1])
    dist, idx = sqdist.nearest(X, T)
    assert int(idx[0, 0]) == 0 and float(dist[0, 0]) == 0.0
