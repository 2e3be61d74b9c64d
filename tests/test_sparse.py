"""Sparse input (issue 13): SciPy CSR/CSC matrices and arrays, torch sparse CSR/COO.

References: float64 brute force on the densified data, SciPy's ``cdist`` and
scikit-learn's ``euclidean_distances`` / ``rbf_kernel`` as oracles, the dense
code paths of sqdist (labels equal, centres to 1e-12), invariants (exact
zeros for identical rows, never negative), hypothesis over shapes and
densities, chunked == unchunked, compiled == torch path, 1 == 2 threads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sqdist
from sqdist import _sparse
from sqdist._validation import SqdistError

sp = pytest.importorskip("scipy.sparse")
from scipy.spatial.distance import cdist  # noqa: E402

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state:UserWarning")


def _rand(n, d, density, seed, loc=0.0, fmt="csr"):
    """Sparse (n, d) with standard normal stored values shifted by ``loc``."""
    rng = np.random.default_rng(seed)
    return sp.random(n, d, density=density, format=fmt, random_state=rng,
                     data_rvs=lambda k: rng.normal(size=k) + loc)


def _ref(A, B):
    """Float64 brute force: sum over the features of the squared differences."""
    A = A.toarray() if sp.issparse(A) else np.asarray(A)
    B = B.toarray() if sp.issparse(B) else np.asarray(B)
    A, B = A.astype(np.float64), B.astype(np.float64)
    return ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)


@pytest.fixture(params=["compiled", "torch"])
def path(request, monkeypatch):
    """Run each test on the compiled CSR kernels and on the torch.sparse.mm path."""
    if request.param == "torch":
        monkeypatch.setattr(_sparse, "_compiled", lambda X: False)
    elif not _sparse._available():
        pytest.skip("numba is not installed")
    return request.param


KINDS = {
    "csr_matrix": lambda A: sp.csr_matrix(A), "csc_matrix": lambda A: sp.csc_matrix(A),
    "csr_array": lambda A: sp.csr_array(A), "csc_array": lambda A: sp.csc_array(A),
    "coo_matrix": lambda A: sp.coo_matrix(A),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_sqdist_matches_cdist_for_every_scipy_format(kind, path):
    X = _rand(60, 30, 0.2, 0)
    T = np.random.default_rng(1).normal(size=(9, 30))
    S = KINDS[kind](X)
    ref = cdist(X.toarray(), T, "sqeuclidean")
    for got in (sqdist.sqdist(S, T), sqdist.sqdist(T, S).T):
        assert isinstance(got, np.ndarray) and got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_both_sparse_and_torch_inputs(path):
    X, T = _rand(50, 40, 0.1, 2), _rand(20, 40, 0.3, 3)
    ref = _ref(X, T)
    np.testing.assert_allclose(sqdist.sqdist(X, T), ref, rtol=1e-12, atol=1e-12)
    Xt = torch.from_numpy(X.toarray())
    for Xs in (Xt.to_sparse_csr(), Xt.to_sparse()):  # CSR, and COO (converted)
        got = sqdist.sqdist(Xs, torch.from_numpy(T.toarray()))
        assert isinstance(got, torch.Tensor) and got.layout == torch.strided and got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    # numpy / scipy and torch sparse input: the same bits
    np.testing.assert_array_equal(sqdist.sqdist(Xt.to_sparse_csr(), torch.from_numpy(T.toarray())).numpy(),
                                  sqdist.sqdist(X, T.toarray()))


def test_sklearn_oracles_euclidean_and_rbf(path):
    from sklearn.metrics.pairwise import euclidean_distances, rbf_kernel

    X, Y = _rand(80, 25, 0.3, 4), _rand(15, 25, 0.3, 5)
    np.testing.assert_allclose(np.sqrt(sqdist.sqdist(X, Y)), euclidean_distances(X, Y), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sqdist.rbf(X, Y, 4.0), rbf_kernel(X, Y, gamma=0.25), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sqdist.rbf(X, X[:7], 2.0), rbf_kernel(X, X[:7], gamma=0.5), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_far_from_origin_accuracy_zeros_and_sign(dtype, path):
    """Rows whose stored values sit near 1000 (spread 1): the expansion's terms are ~1e6 times the
    distances between close rows; the guard keeps the median relative error <= 1e-6, identical rows
    give exactly 0 and nothing is negative."""
    rng = np.random.default_rng(6)
    base = _rand(1, 400, 0.05, 7, loc=1000.0).toarray()
    pattern = base != 0
    rows = np.where(pattern, base + rng.normal(scale=1.0, size=(120, 400)), 0.0)  # (120, D) same support
    X = sp.csr_matrix(rows.astype(dtype))
    T = rows[:30].astype(dtype)  # identical to the first 30 rows of X
    got = sqdist.sqdist(X, T)
    ref = _ref(X, T)
    assert got.dtype == dtype
    assert (got >= 0).all()
    assert (np.diagonal(got[:30]) == 0).all()
    off = ref > 0
    rel = np.abs(got[off] - ref[off]) / ref[off]
    assert np.median(rel) <= 1e-6 and rel.max() <= 1e-4
    # far from the centres: sparse rows against dense prototypes around the origin
    P = rng.normal(size=(10, 400)).astype(dtype)
    d = sqdist.sqdist(X, P)
    rel = np.abs(d - _ref(X, P)) / _ref(X, P)
    assert np.median(rel) <= 1e-6 and rel.max() <= 1e-4


def test_identical_sparse_rows_give_exact_zeros(path):
    X = _rand(40, 300, 0.05, 8, loc=3.0)
    d = sqdist.sqdist(X, X)
    assert (np.diagonal(d) == 0).all() and (d >= 0).all()
    np.testing.assert_allclose(d, d.T, rtol=1e-14)
    np.testing.assert_allclose(d, _ref(X, X), rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 30), p=st.integers(1, 12), d=st.integers(1, 40), density=st.floats(0.0, 1.0),
       loc=st.sampled_from([0.0, 1.0, 100.0]), seed=st.integers(0, 2**16))
def test_hypothesis_against_float64_brute_force(n, p, d, density, loc, seed):
    X = _rand(n, d, density, seed, loc=loc)
    T = _rand(p, d, density, seed + 1, loc=loc)
    ref = _ref(X, T)
    for got in (sqdist.sqdist(X, T), sqdist.sqdist(X, T.toarray()), sqdist.sqdist(X.toarray(), T)):
        assert (got >= 0).all()
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-9 * (1 + loc * loc))
        assert ((got == 0) == (ref == 0)).all()  # zeros exactly where the rows are identical
    dist, idx = sqdist.nearest(X, T.toarray())
    np.testing.assert_array_equal(idx[:, 0], ref.argmin(1))  # exact argmin, ties: smallest index
    np.testing.assert_allclose(dist[:, 0], ref.min(1), rtol=1e-10, atol=1e-9 * (1 + loc * loc))


def test_nearest_ties_go_to_the_smallest_index_and_k_gt_1(path):
    X = _rand(50, 20, 0.3, 9)
    T = np.random.default_rng(10).normal(size=(6, 20))
    T = np.vstack([T, T])  # every centre twice: exact ties
    ref = _ref(X, T)
    d, i = sqdist.nearest(X, T)
    np.testing.assert_array_equal(i[:, 0], ref.argmin(1))
    assert (i < 6).all()
    d3, i3 = sqdist.nearest(X, T, 3)
    np.testing.assert_allclose(d3, np.sort(ref, 1)[:, :3], rtol=1e-12)
    dT, iT = sqdist.nearest(T, X, 2)  # dense X, sparse T
    np.testing.assert_allclose(dT, np.sort(ref.T, 1)[:, :2], rtol=1e-12)


def test_chunked_equals_unchunked(path):
    X, T = _rand(300, 500, 0.02, 11, loc=2.0), _rand(70, 500, 0.05, 12)
    full = sqdist.sqdist(X, T)
    small = sqdist.sqdist(X, T, working_memory=0.05)  # T densified in blocks of a few rows
    np.testing.assert_array_equal(full, small)
    np.testing.assert_allclose(full, _ref(X, T), rtol=1e-12, atol=1e-12)
    r1 = sqdist.kmeans(X, 5, random_state=0, tol=0, max_iter=20)
    r2 = sqdist.kmeans(X, 5, random_state=0, tol=0, max_iter=20, working_memory=0.05)
    np.testing.assert_array_equal(r1.labels, r2.labels)
    np.testing.assert_array_equal(r1.centers, r2.centers)


def test_compiled_and_torch_paths_agree(monkeypatch):
    if not _sparse._available():
        pytest.skip("numba is not installed")
    X = _rand(400, 60, 0.1, 13, loc=1.0)
    a = sqdist.kmeans(X, 6, random_state=1, tol=0, max_iter=30)
    d = sqdist.sqdist(X, X[:50])
    monkeypatch.setattr(_sparse, "_compiled", lambda X: False)
    b = sqdist.kmeans(X, 6, random_state=1, tol=0, max_iter=30)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centers, b.centers)  # the same ordered float64 sums
    np.testing.assert_allclose(sqdist.sqdist(X, X[:50]), d, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("init", ["k-means++", "random", "indices", "weights"])
def test_kmeans_sparse_equals_dense(init, path):
    X = _rand(600, 40, 0.15, 14, loc=0.5)
    kw = dict(random_state=3, max_iter=50)
    if init == "indices":
        kw["init"] = [0, 100, 200, 300, 400]
    elif init == "weights":
        kw["sample_weight"] = np.random.default_rng(15).uniform(0, 2, size=600)
    else:
        kw["init"] = init
    rs, rd = sqdist.kmeans(X, 5, **kw), sqdist.kmeans(X.toarray(), 5, **kw)
    np.testing.assert_array_equal(rs.labels, rd.labels)
    np.testing.assert_allclose(rs.centers, rd.centers, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rs.inertia, rd.inertia, rtol=1e-12)
    assert rs.n_iter == rd.n_iter
    # the labels are the argmin of the float64 distances to the final centres
    np.testing.assert_array_equal(rs.labels, _ref(X, rs.centers).argmin(1))
    c, i = sqdist.kmeans_plusplus(X, 5, random_state=4)
    cd, i_d = sqdist.kmeans_plusplus(X.toarray(), 5, random_state=4)
    np.testing.assert_array_equal(i, i_d)
    np.testing.assert_array_equal(c, cd)


def test_kmeans_float32_and_torch_input(path):
    X = _rand(500, 30, 0.2, 16, loc=1.0).astype(np.float32)
    rs = sqdist.kmeans(X, 4, random_state=0)
    assert rs.centers.dtype == np.float32
    np.testing.assert_array_equal(rs.labels, _ref(X, rs.centers).argmin(1))
    rt = sqdist.kmeans(torch.from_numpy(X.toarray()).to_sparse_csr(), 4, random_state=0)
    assert isinstance(rt.centers, torch.Tensor)
    np.testing.assert_array_equal(rt.labels.numpy(), rs.labels)
    np.testing.assert_array_equal(rt.centers.numpy(), rs.centers)


def test_estimator_fit_predict_transform_score(path):
    X = _rand(400, 50, 0.1, 17, loc=1.0)
    ks = sqdist.KMeans(6, random_state=0).fit(X)
    kd = sqdist.KMeans(6, random_state=0).fit(X.toarray())
    np.testing.assert_array_equal(ks.labels_, kd.labels_)
    np.testing.assert_allclose(ks.cluster_centers_, kd.cluster_centers_, rtol=0, atol=1e-12)
    Y = _rand(50, 50, 0.1, 18, loc=1.0, fmt="csc")
    np.testing.assert_array_equal(ks.predict(Y), kd.predict(Y.toarray()))
    np.testing.assert_allclose(ks.transform(Y), np.sqrt(_ref(Y, ks.cluster_centers_)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ks.score(Y), kd.score(Y.toarray()), rtol=1e-12)
    kt = sqdist.KMeans(6, random_state=0).fit(torch.from_numpy(X.toarray()).to_sparse_csr())
    np.testing.assert_array_equal(kt.labels_.numpy(), ks.labels_)
    assert isinstance(kt.predict(torch.from_numpy(Y.toarray()).to_sparse()), torch.Tensor)


def test_one_and_two_threads_are_bit_identical():
    numba = pytest.importorskip("numba")
    X = _rand(3000, 200, 0.05, 19, loc=0.3)
    old = numba.get_num_threads()
    try:
        runs = []
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            torch.set_num_threads(n)
            r = sqdist.kmeans(X, 8, random_state=0, tol=0, max_iter=30)
            runs.append((r.labels, r.centers, r.inertia, sqdist.sqdist(X, r.centers)))
    finally:
        numba.set_num_threads(old)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_mean_variance_and_relative_tol():
    X = _rand(300, 20, 0.3, 20, loc=5.0)
    np.testing.assert_allclose(_sparse.mean_variance(_sparse.as_csr(X)), X.toarray().var(0).mean(), rtol=1e-12)


def test_duplicates_and_integer_values_are_handled():
    A = sp.coo_matrix((np.array([1, 2, 3]), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 3))  # (0, 1) twice
    d = sqdist.sqdist(A, np.zeros((1, 3)))
    assert d.dtype == np.float64
    np.testing.assert_array_equal(d[:, 0], [9.0, 9.0])


def test_bad_sparse_input_is_a_clear_error():
    X = _rand(10, 4, 0.5, 21)
    with pytest.raises(SqdistError, match="same number of features"):
        sqdist.sqdist(X, np.zeros((2, 5)))
    bad = X.copy()
    bad.data[3] = np.nan
    row = int(np.searchsorted(bad.indptr, 3, side="right") - 1)
    with pytest.raises(SqdistError, match=f"X: row {row} contains NaN or Inf"):
        sqdist.kmeans(bad, 2)
    with pytest.raises(SqdistError, match="complex"):
        sqdist.sqdist(sp.csr_matrix(np.eye(2, dtype=complex)), np.zeros((1, 2)))
    with pytest.raises(SqdistError, match="sparse input is not supported yet"):
        sqdist.sqdist_chunks(X, np.zeros((2, 4)))


def test_nan_in_sparse_rows_propagates_to_its_row_only(path):
    X = sp.csr_matrix(np.array([[1.0, 0.0], [np.nan, 0.0], [0.0, np.inf]]))
    d = sqdist.sqdist(X, np.array([[0.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_array_equal(d[0], [1.0, 0.0])
    assert np.isnan(d[1]).all() and np.isinf(d[2]).all()


def test_sparse_assign_entry_point():
    """sqdist._sparse.assign, the assignment MiniBatchKMeans calls on a sparse batch."""
    X = _rand(200, 30, 0.2, 22)
    C = torch.from_numpy(np.random.default_rng(23).normal(size=(4, 30)))
    labels, mind, sums, counts, inertia = _sparse.assign(_sparse.as_csr(X), C, 1 << 20)
    ref = _ref(X, C.numpy())
    np.testing.assert_array_equal(labels.numpy(), ref.argmin(1))
    np.testing.assert_allclose(mind.numpy(), ref.min(1), rtol=1e-12)
    want = np.zeros((4, 30))
    np.add.at(want, labels.numpy(), X.toarray())
    np.testing.assert_allclose(sums.numpy(), want, rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(counts.numpy(), np.bincount(labels.numpy(), minlength=4))
    np.testing.assert_allclose(float(inertia), ref.min(1).sum(), rtol=1e-12)


def _compiled_only():
    if not _sparse._available():
        pytest.skip("numba is not installed")


def test_prepared_centres_update_rows_as_fresh_ones():
    """Centres.set_rows (a mini-batch step's in-place update) leaves the float64 centres, their transpose
    and norms exactly as preparing the updated centres afresh; the norms are the float64 brute force."""
    _compiled_only()
    rng = np.random.default_rng(25)
    C = torch.from_numpy(rng.normal(size=(7, 37)))
    P = _sparse.Centres(C.clone())
    idx, rows = torch.tensor([5, 0, 2]), torch.from_numpy(rng.normal(size=(3, 37)))
    P.set_rows(idx, rows)
    C[idx] = rows
    Q = _sparse.Centres(C)
    for a, b in ((P.C64, C), (P.CT, Q.CT), (P.CT, C.T), (P.nc, Q.nc)):
        assert torch.equal(a, b)
    np.testing.assert_allclose(P.nc.numpy(), (C.numpy() ** 2).sum(1), rtol=1e-14)


@pytest.mark.parametrize("weighted", [False, True])
def test_assign_active_equals_assign(weighted):
    """assign_active (only the clusters given weight are summed) is assign's numbers bit for bit."""
    _compiled_only()
    rng = np.random.default_rng(26)
    X = _sparse.as_csr(_rand(300, 40, 0.1, 27, loc=0.2))
    C = torch.from_numpy(np.r_[rng.normal(size=(8, 40)), np.full((1, 40), 50.0)])  # centre 8 gets no row
    w = torch.from_numpy(rng.uniform(0, 2, 300) * (rng.random(300) > 0.2)) if weighted else None
    labels, _, sums, counts, inertia = _sparse.assign(X, C, 1 << 20, w)
    weight, active, asums, ainertia = _sparse.assign_active(X, _sparse.Centres(C), C.dtype, w)
    ref = counts.double() if w is None else torch.zeros(9, dtype=torch.float64).index_add_(0, labels, w)
    np.testing.assert_allclose(weight.numpy(), ref.numpy(), rtol=1e-14)
    assert active.tolist() == (weight > 0).nonzero().flatten().tolist() and 8 not in active.tolist()
    assert torch.equal(asums, sums[active]) and float(ainertia) == float(inertia)


def test_out_buffer_and_dtypes():
    X = _rand(20, 10, 0.3, 24).astype(np.float32)
    T = np.random.default_rng(25).normal(size=(4, 10)).astype(np.float32)
    out = np.empty((20, 4), dtype=np.float32)
    res = sqdist.sqdist(X, T, out=out)
    assert res is out
    np.testing.assert_allclose(out, _ref(X, T), rtol=1e-6)
    with pytest.raises(SqdistError, match="out: expected shape"):
        sqdist.sqdist(X, T, out=np.empty((20, 4)))  # float64 buffer for a float32 result
    with pytest.raises(SqdistError, match="2-D"):
        sqdist.sqdist(X, np.zeros((2, 4, 10)))
