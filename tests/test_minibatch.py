"""sqdist's MiniBatchKMeans: scikit-learn's step as the oracle, its estimator checks, quality against full-batch
k-means, sample weights, determinism, out-of-core sources and two gloo ranks."""

from __future__ import annotations

import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.cluster import MiniBatchKMeans as SkMiniBatchKMeans
from sklearn.cluster._kmeans import _mini_batch_step
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.metrics import pairwise_distances, v_measure_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import sqdist
from sqdist import _chunking
from sqdist._comm import Comm
from sqdist._minibatch_step import BatchSampler, CentreCache, StepOptions, squared_shift, step, take_rows
from sqdist._sparse import as_csr
from sqdist.minibatch import MiniBatchKMeans

# the settings scikit-learn's own test suite gives its MiniBatchKMeans (instance_generator.py), and the two
# checks it expects to fail for it (PER_ESTIMATOR_XFAIL_CHECKS): batches are drawn at random, so weights are
# not repeated rows, on dense or sparse data alike
_XFAIL = {f"check_sample_weight_equivalence_on_{kind}_data":
          "sample_weight is not equivalent to removing/repeating samples (as sklearn.cluster.MiniBatchKMeans)"
          for kind in ("dense", "sparse")}


@parametrize_with_checks([MiniBatchKMeans(n_init=2, n_clusters=2, max_iter=5, batch_size=10)],
                         expected_failed_checks=lambda est: _XFAIL)
def test_check_estimator(estimator, check):
    check(estimator)


def _blobs(n=600, k=4, d=3, seed=0, std=1.0):
    X, y = make_blobs(n_samples=n, centers=k, n_features=d, cluster_std=std, random_state=seed)
    return X, y


def _opts(ratio=0.0) -> StepOptions:
    return StepOptions(budget=_chunking.resolve_budget(None), backend="torch", reassignment_ratio=ratio)


# -- scikit-learn's step as the oracle -------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_step_equals_scikit_learns(weighted, seed):
    rng = np.random.default_rng(seed)
    X, _ = _blobs(n=200, k=5, d=4, seed=seed)
    C0 = X[rng.choice(200, 5, replace=False)] + rng.normal(0, 0.5, (5, 4))
    W0 = rng.integers(0, 40, 5).astype(np.float64)  # centres that already collected some weight
    w = rng.uniform(0.1, 3.0, 200) if weighted else np.ones(200)
    C_sk, W_sk = np.empty_like(C0), W0.copy()
    inertia_sk = _mini_batch_step(X, w, C0.copy(), C_sk, W_sk, np.random.RandomState(0), random_reassign=False)
    W = torch.from_numpy(W0.copy())
    res = step(torch.from_numpy(X), torch.from_numpy(w) if weighted else None, torch.from_numpy(C0), W, _opts(),
               Comm(), torch.Generator().manual_seed(0), reassign=False)
    np.testing.assert_allclose(res.centers.numpy(), C_sk, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(W.numpy(), W_sk, rtol=1e-12)
    assert res.inertia == pytest.approx(inertia_sk, rel=1e-10)
    assert res.rows == 200 and res.weight == pytest.approx(w.sum())


def test_reassignment_follows_scikit_learns_rule():
    """reassignment_ratio=1: the same centres are reassigned (those below the largest weight, at most half
    the batch), to distinct batch rows, and their weight becomes the smallest of the others."""
    X, y = _blobs(n=100, k=3, d=5, seed=42)
    perfect = np.stack([X[y == i].mean(0) for i in range(3)])
    w = np.ones(100)
    C_sk, W_sk = np.empty_like(perfect), np.zeros(3)
    _mini_batch_step(X, w, perfect.copy(), C_sk, W_sk, np.random.RandomState(0), random_reassign=True,
                     reassignment_ratio=1.0)
    W = torch.zeros(3, dtype=torch.float64)
    res = step(torch.from_numpy(X), None, torch.from_numpy(perfect), W, _opts(1.0), Comm(),
               torch.Generator().manual_seed(0), reassign=True)
    moved_sk = ~np.isclose(C_sk, perfect).all(1)
    moved = ~np.isclose(res.centers.numpy(), perfect).all(1)
    np.testing.assert_array_equal(moved, moved_sk)
    assert res.n_reassigned == moved.sum() == 2
    np.testing.assert_array_equal(W.numpy(), W_sk)
    rows = res.centers.numpy()[moved]  # exact copies of distinct batch rows
    hits = [np.flatnonzero((X == r).all(1)) for r in rows]
    assert all(len(h) == 1 for h in hits) and len({int(h[0]) for h in hits}) == len(rows)
    # a tiny ratio reassigns nothing: the centres are the plain means
    W2 = torch.zeros(3, dtype=torch.float64)
    res2 = step(torch.from_numpy(X), None, torch.from_numpy(perfect), W2, _opts(1e-15), Comm(),
                torch.Generator().manual_seed(0), reassign=True)
    assert res2.n_reassigned == 0
    np.testing.assert_allclose(res2.centers.numpy(), perfect, rtol=1e-12)


def test_partial_fit_sequence_equals_scikit_learns():
    """Same initial centres, same batches, no reassignment: the same centres, counts, labels and
    inertia as scikit-learn's partial_fit, step after step."""
    X, _ = _blobs(n=2000, k=6, d=5, seed=3, std=2.0)
    C0 = X[:6].copy()
    ours = MiniBatchKMeans(6, init=C0, reassignment_ratio=0.0)
    theirs = SkMiniBatchKMeans(6, init=C0, n_init=1, reassignment_ratio=0.0)
    for i in range(0, 2000, 100):
        ours.partial_fit(X[i : i + 100])
        theirs.partial_fit(X[i : i + 100])
        np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.counts_, theirs._counts, rtol=1e-12)
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-10)
    assert ours.n_steps_ == theirs.n_steps_ == 20


def test_weighted_step_equals_repeated_rows():
    X, _ = _blobs(n=150, k=3, d=4, seed=5)
    w = np.random.default_rng(5).integers(1, 5, 150)
    C0 = X[[0, 50, 100]]
    a = MiniBatchKMeans(3, init=C0, reassignment_ratio=0.0).partial_fit(X, sample_weight=w)
    b = MiniBatchKMeans(3, init=C0, reassignment_ratio=0.0).partial_fit(np.repeat(X, w, axis=0))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-12)
    np.testing.assert_array_equal(a.counts_, b.counts_)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-12)
    np.testing.assert_array_equal(np.repeat(a.labels_, w), b.labels_)


def test_weighted_batches_are_drawn_in_proportion_to_the_weights():
    w = torch.tensor([0.0, 1.0, 3.0, 0.0, 4.0], dtype=torch.float64)
    s = BatchSampler(5, 40000, w, torch.Generator().manual_seed(0))
    freq = torch.bincount(s.draw(), minlength=5).double() / 40000
    assert freq[0] == 0 and freq[3] == 0
    np.testing.assert_allclose(freq.numpy(), (w / w.sum()).numpy(), atol=0.01)


# -- the fit ------------------------------------------------------------------------------


def test_quality_close_to_full_batch_kmeans():
    X, y = _blobs(n=6000, k=8, d=6, seed=1, std=1.5)
    full = sqdist.KMeans(8, random_state=0).fit(X)
    mb = MiniBatchKMeans(8, random_state=0, batch_size=256).fit(X)
    assert mb.inertia_ <= 1.02 * full.inertia_
    assert v_measure_score(y, mb.labels_) > 0.98
    # labels and inertia are those of the final centres, exactly
    d = pairwise_distances(X, mb.cluster_centers_, metric="sqeuclidean")
    np.testing.assert_array_equal(mb.labels_, d.argmin(1))
    assert mb.inertia_ == pytest.approx(d.min(1).sum(), rel=1e-10)
    assert mb.score(X) == pytest.approx(-mb.inertia_, rel=1e-12)
    np.testing.assert_array_equal(mb.fit_predict(X), mb.labels_)
    np.testing.assert_allclose(mb.transform(X), np.sqrt(d), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mb.transform_squared(X), d, rtol=1e-9, atol=1e-9)
    assert list(mb.get_feature_names_out()) == [f"minibatchkmeans{i}" for i in range(8)]


def test_as_good_as_scikit_learns_minibatch():
    """Over 8 seeds the final inertia is on a par with scikit-learn's (same algorithm, other draws)."""
    X, _ = _blobs(n=4000, k=8, d=5, seed=7)
    ours = [MiniBatchKMeans(8, random_state=s, batch_size=128).fit(X).inertia_ for s in range(8)]
    theirs = [SkMiniBatchKMeans(8, random_state=s, batch_size=128).fit(X).inertia_ for s in range(8)]
    assert np.median(ours) <= 1.005 * np.median(theirs) and max(ours) <= 1.01 * max(theirs)


def test_steps_iterations_and_sizes_as_scikit_learn():
    X, _ = _blobs(n=300)
    m = MiniBatchKMeans(3, batch_size=30, random_state=0, tol=0, max_no_improvement=None, max_iter=10).fit(X)
    assert m.n_steps_ == 10 * 300 // 30 and m.n_iter_ == 10
    m = MiniBatchKMeans(3, batch_size=30, random_state=0).fit(X)
    assert m.n_iter_ == int(np.ceil(m.n_steps_ * 30 / 300)) and m.n_steps_ < 100  # stopped early
    assert MiniBatchKMeans(10, batch_size=5, n_init=1).fit(X).init_size_ == 15
    assert MiniBatchKMeans(10, batch_size=1, n_init=1).fit(X).init_size_ == 30
    assert MiniBatchKMeans(10, batch_size=5, init_size=301).fit(X).init_size_ == 300
    assert MiniBatchKMeans(3, init="random").fit(X)._n_init == 3
    with pytest.warns(RuntimeWarning, match="init_size=10 should be larger than n_clusters=20"):
        MiniBatchKMeans(20, init_size=10).fit(X)


@pytest.mark.parametrize("tol, patience, message", [(1e-4, None, "Converged (small centers change)"),
                                                     (0.0, 10, "Converged (lack of improvement in inertia)")])
def test_early_stopping_rules(capsys, tol, patience, message):
    X, _, centers = make_blobs(centers=3, random_state=0, return_centers=True)
    m = MiniBatchKMeans(3, init=centers, batch_size=20, tol=tol, random_state=0, max_iter=10, verbose=1,
                        max_no_improvement=patience).fit(X)
    assert 1 < m.n_iter_ < 10
    assert message in capsys.readouterr().out


def test_compute_labels_false_estimates_the_inertia():
    X, _ = _blobs(n=2000)
    m = MiniBatchKMeans(4, random_state=0, compute_labels=False, batch_size=100).fit(X)
    assert m.labels_ is None
    exact = -m.score(X)
    assert 0.5 * exact < m.inertia_ < 2.0 * exact


def test_reassignment_spreads_identical_centres():
    X, _ = make_blobs(n_samples=100, centers=5, random_state=0)
    X[::2] = 0
    m = MiniBatchKMeans(20, batch_size=10, random_state=0, init="random").fit(X)
    assert m.cluster_centers_.any(axis=1).sum() > 9


def test_deterministic_for_a_seed_and_across_thread_counts():
    X, _ = _blobs(n=3000, k=6, d=8, seed=2, std=2.0)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = MiniBatchKMeans(6, random_state=11, batch_size=64).fit(X)
        torch.set_num_threads(2)
        b = MiniBatchKMeans(6, random_state=11, batch_size=64).fit(X)
    finally:
        torch.set_num_threads(n)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.n_steps_ == b.n_steps_ and a.inertia_ == b.inertia_
    c = MiniBatchKMeans(6, random_state=12, batch_size=64).fit(X)
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)
    # a NumPy RandomState is drawn from, as scikit-learn's estimators do
    d = MiniBatchKMeans(6, random_state=np.random.RandomState(3), batch_size=64).fit(X)
    e = MiniBatchKMeans(6, random_state=np.random.RandomState(3), batch_size=64).fit(X)
    np.testing.assert_array_equal(d.cluster_centers_, e.cluster_centers_)


def test_sample_weight_scaling_and_units():
    X, _ = _blobs(n=500)
    w = np.random.default_rng(0).uniform(0.1, 1.0, 500)
    a = MiniBatchKMeans(4, random_state=0, batch_size=50).fit(X, sample_weight=w)
    b = MiniBatchKMeans(4, random_state=0, batch_size=50).fit(X, sample_weight=0.5 * w)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_)
    c = MiniBatchKMeans(4, random_state=0, batch_size=50).fit(X, sample_weight=np.ones(500))
    d = MiniBatchKMeans(4, random_state=0, batch_size=50).fit(X)
    np.testing.assert_array_equal(c.cluster_centers_, d.cluster_centers_)
    # rows of weight 0 are never drawn: the fit equals the fit without them... in expectation; here they
    # simply never become a centre's point in a step
    w0 = np.where(np.arange(500) < 250, 1.0, 0.0)
    e = MiniBatchKMeans(4, random_state=0, batch_size=50, reassignment_ratio=0.0).fit(X, sample_weight=w0)
    assert np.isclose(e.counts_.sum(), e.n_steps_ * 50)


def test_float32_and_tensors():
    X, _ = _blobs(n=800)
    m32 = MiniBatchKMeans(4, random_state=0).fit(X.astype(np.float32))
    m64 = MiniBatchKMeans(4, random_state=0).fit(X)
    assert m32.cluster_centers_.dtype == np.float32
    np.testing.assert_array_equal(m32.labels_, m64.labels_)
    np.testing.assert_allclose(m32.cluster_centers_, m64.cluster_centers_, rtol=1e-4, atol=1e-4)
    mt = MiniBatchKMeans(4, random_state=0).fit(torch.from_numpy(X))
    assert isinstance(mt.cluster_centers_, torch.Tensor) and isinstance(mt.labels_, torch.Tensor)
    np.testing.assert_array_equal(mt.cluster_centers_.numpy(), m64.cluster_centers_)
    assert isinstance(mt.predict(torch.from_numpy(X[:5])), torch.Tensor)
    mt.partial_fit(torch.from_numpy(X[:50]))
    assert isinstance(mt.cluster_centers_, torch.Tensor) and mt.n_steps_ == m64.n_steps_ + 1
    mi = MiniBatchKMeans(2, init=np.array([[0, 0], [10, 10]]), batch_size=2).fit(
        np.array([[0, 0], [10, 10], [12, 9], [-1, 1], [2, 0], [8, 10]]))
    assert mi.cluster_centers_.dtype == np.float64 and v_measure_score(mi.labels_, [0, 1, 1, 0, 0, 1]) == 1.0


def test_triton_backend_steps_like_torch():
    """The same steps on sqdist's Triton kernels (interpreted on the CPU without CUDA) as on torch's."""
    pytest.importorskip("triton")
    X = torch.from_numpy(_blobs(n=300, k=3)[0]).float()
    a = MiniBatchKMeans(3, init=X[:3].clone(), backend="triton", reassignment_ratio=0.0)
    b = MiniBatchKMeans(3, init=X[:3].clone(), backend="torch", reassignment_ratio=0.0)
    for i in range(0, 300, 100):
        a.partial_fit(X[i : i + 100])
        b.partial_fit(X[i : i + 100])
        assert torch.equal(a.labels_, b.labels_)
    torch.testing.assert_close(a.cluster_centers_, b.cluster_centers_, rtol=1e-6, atol=1e-6)
    assert torch.equal(a.counts_, b.counts_)


def test_partial_fit_initialises_once_and_counts_steps():
    X, y = _blobs(n=1000, k=4)
    m = MiniBatchKMeans(4, random_state=0)
    for i in range(0, 1000, 100):
        m.partial_fit(X[i : i + 100])
    assert m.n_steps_ == 10 and m.counts_.sum() == pytest.approx(1000)
    assert -m.score(X) <= 1.02 * sqdist.KMeans(4, random_state=0).fit(X).inertia_
    assert m.labels_.shape == (100,)
    assert not hasattr(MiniBatchKMeans(4), "n_steps_")
    # after fit, partial_fit continues from the fitted centres and counts
    f = MiniBatchKMeans(4, random_state=0, batch_size=100).fit(X)
    counts = f.counts_.sum()
    f.partial_fit(X[:100])
    assert f.counts_.sum() == pytest.approx(counts + 100)


# -- out-of-core sources ---------------------------------------------------------------------


def test_partial_fit_from_sources_steps_per_chunk(tmp_path):
    X, y = _blobs(n=3000, k=4, d=3, seed=4)
    path = tmp_path / "X.npy"
    np.save(path, X)
    C0 = X[[0, 1, 2, 3]]
    # one step per piece of batch_size rows: the same as partial_fit on those pieces
    ref = MiniBatchKMeans(4, init=C0, batch_size=500)
    for i in range(0, 3000, 500):
        ref.partial_fit(X[i : i + 500])
    for source in (str(path), [X[:1500], X[1500:]]):
        m = MiniBatchKMeans(4, init=C0, batch_size=500).partial_fit(source)
        assert m.n_steps_ == 6 and m.labels_ is None
        np.testing.assert_allclose(m.cluster_centers_, ref.cluster_centers_, rtol=1e-12)
        np.testing.assert_array_equal(m.counts_, ref.counts_)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y)),
                                         batch_size=500)
    m = MiniBatchKMeans(4, init=C0, batch_size=500).partial_fit(loader)  # (x, y) batches: x is taken
    assert m.n_steps_ == 6 and isinstance(m.cluster_centers_, torch.Tensor)
    np.testing.assert_allclose(m.cluster_centers_.numpy(), ref.cluster_centers_, rtol=1e-12)
    # continuing from a fitted state
    m.partial_fit(loader)
    assert m.n_steps_ == 12 and float(m.counts_.sum()) == pytest.approx(6000)


def test_fit_on_sources_is_as_good_as_in_memory(tmp_path):
    X, y = _blobs(n=4000, k=5, d=4, seed=6, std=1.5)
    path = tmp_path / "X.npy"
    np.save(path, X)
    mem = MiniBatchKMeans(5, random_state=0, batch_size=200).fit(X)
    for source in (str(path), [X[i : i + 700] for i in range(0, 4000, 700)]):
        m = MiniBatchKMeans(5, random_state=0, batch_size=200).fit(source)
        assert m.labels_ is None and m.n_features_in_ == 4 and 1 <= m.n_iter_ <= 100
        assert m.inertia_ == pytest.approx(-m.score(X), rel=1e-10)  # the extra pass: the final centres' inertia
        assert m.inertia_ <= 1.05 * mem.inertia_
        assert v_measure_score(mem.labels_, m.predict(X)) > 0.95
    a = MiniBatchKMeans(5, random_state=0, batch_size=200).fit(str(path))
    b = MiniBatchKMeans(5, random_state=0, batch_size=200).fit(str(path))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_parquet_source(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    X, y = _blobs(n=2000, k=4, d=3, seed=8)
    path = tmp_path / "X.parquet"
    pq.write_table(pa.table({f"f{j}": X[:, j] for j in range(3)}), path, row_group_size=300)
    C0 = X[[0, 1, 2, 3]]
    ref = MiniBatchKMeans(4, init=C0, batch_size=250)
    for i in range(0, 2000, 250):
        ref.partial_fit(X[i : i + 250])
    m = MiniBatchKMeans(4, init=C0, batch_size=250).partial_fit(str(path))
    assert m.n_steps_ == 8
    np.testing.assert_allclose(m.cluster_centers_, ref.cluster_centers_, rtol=1e-12)
    f = MiniBatchKMeans(4, random_state=0, batch_size=250).fit(str(path))
    assert f.inertia_ == pytest.approx(-f.score(X), rel=1e-10)
    assert f.inertia_ <= 1.02 * sqdist.KMeans(4, random_state=0).fit(X).inertia_


# -- sparse input --------------------------------------------------------------------------------


def _sparse_blobs(n=600, k=4, d=20, seed=0, density=0.3):
    """Blobs with most coordinates zeroed: a CSR matrix and the same rows dense."""
    X, y = _blobs(n=n, k=k, d=d, seed=seed)
    X = X * (np.random.default_rng(seed).random(X.shape) < density)
    return sp.csr_matrix(X), X, y


_CONTAINERS = {"csr_matrix": sp.csr_matrix, "csr_array": sp.csr_array, "csc_matrix": sp.csc_matrix,
               "torch_csr": lambda X: torch.from_numpy(X.toarray()).to_sparse_csr()}
_SETTINGS = [dict(), dict(init="random", n_init=3, weighted=True), dict(tol=0.05, max_no_improvement=None),
             dict(reassignment_ratio=0.5, batch_size=20),
             dict(init=lambda X, k, random_state: (X.to_dense() if isinstance(X, torch.Tensor) else X)[:k])]


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
@pytest.mark.parametrize("container", list(_CONTAINERS))
@pytest.mark.parametrize("settings", range(len(_SETTINGS)))
def test_sparse_input_fits_as_dense(container, settings):
    """Same random_state: sparse rows give the dense fit (labels, steps; centres to 1e-12), and so do
    predict, transform and score; SciPy in -> NumPy out, torch in -> tensors."""
    Xs, X, _ = _sparse_blobs()
    kw = dict(_SETTINGS[settings])
    w = np.random.default_rng(1).uniform(0.2, 2.0, X.shape[0]) if kw.pop("weighted", False) else None
    kw.setdefault("batch_size", 50)
    S = _CONTAINERS[container](Xs)
    d = MiniBatchKMeans(4, random_state=3, **kw).fit(X, sample_weight=w)
    s = MiniBatchKMeans(4, random_state=3, **kw).fit(S, sample_weight=w)
    is_torch = container == "torch_csr"
    out = (lambda a: a.numpy()) if is_torch else np.asarray
    assert isinstance(s.cluster_centers_, torch.Tensor if is_torch else np.ndarray)
    assert s.n_steps_ == d.n_steps_ and s.n_iter_ == d.n_iter_
    if "tol" in kw:  # the sparse variance scales tol as the dense one: the rule stopped both at the same step
        assert d.n_steps_ < kw.get("max_iter", 100) * X.shape[0] // kw["batch_size"]
    np.testing.assert_array_equal(out(s.labels_), d.labels_)
    np.testing.assert_allclose(out(s.cluster_centers_), d.cluster_centers_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out(s.counts_), d.counts_, rtol=1e-15)
    assert s.inertia_ == pytest.approx(d.inertia_, rel=1e-12)
    np.testing.assert_array_equal(out(s.predict(S)), d.predict(X))
    np.testing.assert_allclose(out(s.transform(S)), d.transform(X), rtol=1e-10, atol=1e-10)
    assert s.score(S, sample_weight=w) == pytest.approx(d.score(X, sample_weight=w), rel=1e-12)
    # the dense fitted model predicts sparse rows and vice versa
    np.testing.assert_array_equal(out(d.predict(S)), d.predict(X))


@pytest.mark.parametrize("container", ["csr_matrix", "csc_matrix"])
def test_sparse_partial_fit_as_dense(container):
    Xs, X, _ = _sparse_blobs(n=500)
    S = _CONTAINERS[container](Xs)
    d, s = MiniBatchKMeans(4, random_state=0), MiniBatchKMeans(4, random_state=0)
    for a in range(0, 500, 100):
        d.partial_fit(X[a : a + 100])
        s.partial_fit(S[a : a + 100])
        np.testing.assert_array_equal(s.labels_, d.labels_)
        np.testing.assert_allclose(s.cluster_centers_, d.cluster_centers_, rtol=0, atol=1e-12)
        assert s.inertia_ == pytest.approx(d.inertia_, rel=1e-12)
    assert s.n_steps_ == 5
    s.partial_fit(X[:100])  # dense and sparse batches mix
    d.partial_fit(X[:100])
    np.testing.assert_allclose(s.cluster_centers_, d.cluster_centers_, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_step_equals_scikit_learns(weighted, cached):
    """One step on CSR rows against scikit-learn's own sparse step (_minibatch_update_sparse)."""
    Xs, X, _ = _sparse_blobs(n=200, seed=4)
    rng = np.random.default_rng(5)
    C0 = X[rng.choice(200, 4, replace=False)] + rng.normal(0, 0.5, (4, 20))
    W0 = rng.integers(0, 40, 4).astype(np.float64)
    w = rng.uniform(0.1, 3.0, 200) if weighted else np.ones(200)
    C_sk, W_sk = np.empty_like(C0), W0.copy()
    inertia_sk = _mini_batch_step(Xs, w, C0.copy(), C_sk, W_sk, np.random.RandomState(0), random_reassign=False)
    W = torch.from_numpy(W0.copy())
    res = step(as_csr(Xs), torch.from_numpy(w) if weighted else None, torch.from_numpy(C0), W, _opts(), Comm(),
               torch.Generator().manual_seed(0), reassign=False, cache=CentreCache() if cached else None)
    np.testing.assert_allclose(res.centers.numpy(), C_sk, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(W.numpy(), W_sk, rtol=1e-12)
    assert res.inertia == pytest.approx(inertia_sk, rel=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_cached_sparse_steps_equal_plain_steps(dtype, weighted):
    """Sparse steps on a CentreCache (its centres moved in place, only those given weight or reassigned) give
    the plain steps' centres, weights, inertias, reassignments and squared moves bit for bit."""
    Xs, X, _ = _sparse_blobs(n=400, k=6, seed=6, density=0.2)
    S, K, rng = as_csr(Xs).to(dtype), 12, np.random.default_rng(7)
    C0 = torch.from_numpy(X[rng.choice(400, K, replace=False)]).to(dtype)
    w = torch.from_numpy(rng.uniform(0, 2, 400) * (rng.random(400) > 0.2)) if weighted else None  # some weigh 0
    batches = [torch.from_numpy(rng.integers(0, 400, 40)) for _ in range(15)]
    opts, runs = replace(_opts(0.3), shift=True), []
    for cache in (None, CentreCache()):
        C, W, gen, out = C0.clone(), torch.zeros(K, dtype=torch.float64), torch.Generator().manual_seed(8), []
        for i, idx in enumerate(batches):
            res = step(take_rows(S, idx), None if w is None else w[idx], C, W, opts, Comm(), gen, i % 4 == 3, cache)
            assert cache is None or res.centers is cache.C
            out.append((res.centers.clone(), W.clone(), res.inertia, res.n_reassigned, res.weight, res.shift))
            C = res.centers
        runs.append(out)
    assert torch.equal(C0, torch.from_numpy(X[np.random.default_rng(7).choice(400, K, replace=False)]).to(dtype))
    for a, b in zip(*runs):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2:] == b[2:]
    assert sum(r[3] for r in runs[1]) > 0 and all(r[5] > 0 for r in runs[1])  # reassignments happened, centres moved
    for prev, cur in zip(runs[1], runs[1][1:]):  # the moves of the moved centres are all the centres' moves
        assert cur[5] == squared_shift(cur[0], prev[0])


def test_sparse_fit_one_and_two_threads_are_bit_identical():
    numba = pytest.importorskip("numba")
    Xs, _, _ = _sparse_blobs(n=2000, k=6, d=40, seed=9, density=0.1)
    old, old_t = numba.get_num_threads(), torch.get_num_threads()
    try:
        fits = []
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            torch.set_num_threads(n)
            fits.append(MiniBatchKMeans(6, batch_size=64, tol=1e-4, random_state=0).fit(Xs))
    finally:
        numba.set_num_threads(old)
        torch.set_num_threads(old_t)
    a, b = fits
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_ and a.n_steps_ == b.n_steps_


def test_take_rows_keeps_rows_sparse():
    Xs, X, _ = _sparse_blobs(n=50, density=0.2)
    Xs.data[Xs.indptr[3] : Xs.indptr[4]] = 0  # an empty row
    Xs.eliminate_zeros()
    idx = torch.tensor([3, 0, 49, 3, 7, 7])
    got = take_rows(as_csr(Xs), idx)
    assert got.shape == (6, 20) and got.nnz == Xs[idx.numpy()].nnz  # only the stored values are gathered
    np.testing.assert_array_equal(got.dense().numpy(), Xs[idx.numpy()].toarray())
    np.testing.assert_array_equal(take_rows(torch.from_numpy(X), idx).numpy(), X[idx.numpy()])
    assert take_rows(as_csr(Xs), torch.tensor([], dtype=torch.int64)).shape == (0, 20)


def test_sparse_callable_init_and_bad_sparse_input():
    Xs, X, _ = _sparse_blobs(n=300)
    seen = []

    def init(S, k, random_state):
        seen.append(type(S))
        return S[:k].toarray()

    MiniBatchKMeans(3, init=init, random_state=0).fit(Xs)
    assert set(seen) == {sp.csr_matrix}  # n_init="auto": 3 samples, each sparse, in the caller's kind
    bad = Xs.copy()
    bad.data[bad.indptr[7]] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MiniBatchKMeans(3).fit(bad)
    with pytest.raises(sqdist.SqdistError, match="row 7"):  # torch sparse: sqdist's own check names the row
        MiniBatchKMeans(3).fit(torch.from_numpy(bad.toarray()).to_sparse_csr())
    m = MiniBatchKMeans(3, random_state=0).fit(Xs)
    with pytest.raises(ValueError, match="20 features"):
        m.predict(Xs[:, :5])


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("params, name", [
    ({"batch_size": 0}, "batch_size"), ({"max_iter": -1}, "max_iter"), ({"tol": -1.0}, "tol"),
    ({"reassignment_ratio": -0.5}, "reassignment_ratio"), ({"init_size": 0}, "init_size"), ({"n_init": 0}, "n_init"),
    ({"max_no_improvement": -1}, "max_no_improvement"), ({"compute_labels": "yes"}, "compute_labels"),
    ({"init": "bogus"}, "init"), ({"n_clusters": 0}, "n_clusters"), ({"n_clusters": 1000}, "n_clusters"),
    ({"verbose": -1}, "verbose"), ({"backend": "cuda-magic"}, "backend"), ({"dtype": "int8"}, "dtype"),
])
def test_bad_parameters_name_the_argument(params, name):
    X, _ = _blobs(n=100)
    with pytest.raises(sqdist.SqdistError, match=name):
        MiniBatchKMeans(**params).fit(X)
    with pytest.raises(sqdist.SqdistError, match=name):
        MiniBatchKMeans(**params).partial_fit(X)


def test_bad_data_errors(tmp_path):
    X, _ = _blobs(n=100)
    bad = X.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MiniBatchKMeans(3).fit(bad)
    with pytest.raises(sqdist.SqdistError, match="row 7"):
        MiniBatchKMeans(3).fit(torch.from_numpy(bad))
    with pytest.raises(sqdist.SqdistError, match="chunk"):
        MiniBatchKMeans(3).partial_fit([X, bad])
    with pytest.raises(sqdist.SqdistError, match="sample_weight"):
        MiniBatchKMeans(3).fit(X, sample_weight=-np.ones(100))
    with pytest.raises(sqdist.SqdistError, match="sample_weight"):
        MiniBatchKMeans(3).fit([X], sample_weight=np.ones(100))
    with pytest.raises((SkNotFittedError, sqdist.SqdistError), match="not fitted"):
        MiniBatchKMeans(3).predict(X)
    m = MiniBatchKMeans(3, random_state=0).partial_fit(X)
    with pytest.raises(ValueError, match="3 features"):
        m.partial_fit(X[:, :2])
    with pytest.raises(sqdist.SqdistError, match="expecting 3 features"):
        m.partial_fit([X[:, :2]])
    with pytest.raises(ValueError, match="The shape of the initial centers"):
        MiniBatchKMeans(3, init=X[:2]).fit(X)
    with pytest.raises(ValueError, match="number of features"):
        MiniBatchKMeans(3, init=lambda X_, k, random_state: X_[:3, :2]).fit(X)


# -- torch.distributed ------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="gloo over TCP on 127.0.0.1")
@pytest.mark.parametrize("mode", ["array", "file"])
def test_two_gloo_ranks_hold_the_same_centres(tmp_path, mode):
    from test_distributed import _run_ranks  # the harness of tests/test_distributed.py

    X, y = _blobs(n=6000, k=6, d=3, seed=9, std=1.0)
    path = tmp_path / "X.npy"
    np.save(path, X)
    out = tmp_path / "mb"
    res = _run_ranks([str(path), str(out), "--minibatch", mode, "-k", "6", "--max-iter", "20"], world=2)
    assert [r.returncode for r in res] == [0, 0], [r.stderr[-2000:] for r in res]
    r0, r1 = (dict(np.load(f"{out}.{r}.npz")) for r in (0, 1))
    np.testing.assert_array_equal(r0["centers"], r1["centers"])  # every rank holds the same centres
    np.testing.assert_array_equal(r0["counts"], r1["counts"])
    assert r0["n_steps"] == r1["n_steps"] and r0["inertia"] == r1["inertia"]
    full = sqdist.KMeans(6, random_state=0).fit(X)
    assert r0["inertia"] <= 1.05 * full.inertia_  # a reasonable fit of the global data
    assert r0["inertia"] == pytest.approx(((X[:, None, :] - r0["centers"][None]) ** 2).sum(-1).min(1).sum(), rel=1e-9)
    if mode == "array":  # the labels of every row, gathered from the ranks
        np.testing.assert_array_equal(r0["labels"], pairwise_distances(X, r0["centers"]).argmin(1))
    if mode == "array":  # each step took 256 rows from each of the 2 (equal) shards, of unit weight
        assert r0["counts"].sum() == pytest.approx(2 * 256 * int(r0["n_steps"]), rel=1e-12)


def test_meta_estimators():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, _ = _blobs(n=400)
    pipe = make_pipeline(StandardScaler(), MiniBatchKMeans(4, random_state=0)).fit(X)
    assert pipe.transform(X).shape == (400, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gs = GridSearchCV(MiniBatchKMeans(random_state=0), {"n_clusters": [2, 4]}, cv=2).fit(X)
    assert gs.best_params_ == {"n_clusters": 4}
    assert clone(MiniBatchKMeans(5, batch_size=7)).get_params()["batch_size"] == 7
