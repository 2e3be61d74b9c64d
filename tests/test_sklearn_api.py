"""sqdist.KMeans as a scikit-learn estimator: check_estimator, meta-estimators,
sample weights, scale-free tolerance, scikit-learn's iteration count and memmaps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_clusterer
from sklearn.cluster import KMeans as SkKMeans
from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import sqdist
from sqdist import KMeans

# the same settings and expected failure scikit-learn uses for its own KMeans
# (sklearn/utils/_test_common/instance_generator.py): with a random init, weights
# are not equivalent to repeated rows because the draws differ
_XFAIL = {f"check_sample_weight_equivalence_on_{kind}_data":
          "sample_weight is not equivalent to removing/repeating samples (random init), as in sklearn.cluster.KMeans"
          for kind in ("dense", "sparse")}


@parametrize_with_checks([KMeans(n_init=2, n_clusters=2, max_iter=5)], expected_failed_checks=lambda est: _XFAIL)
def test_check_estimator(estimator, check):
    check(estimator)


def _blobs(n=300, scale=1.0, seed=0):
    X, y = make_blobs(n_samples=n, centers=4, n_features=3, cluster_std=1.5, random_state=seed)
    return X * scale, y


def test_meta_estimators_and_tooling():
    X, _ = _blobs()
    km = KMeans(4, random_state=0)
    assert is_clusterer(km) and clone(km).get_params() == km.get_params()
    pipe = make_pipeline(StandardScaler(), KMeans(4, random_state=0)).fit(X)
    assert pipe.predict(X).shape == (300,) and pipe.transform(X).shape == (300, 4)
    scores = cross_val_score(KMeans(4, random_state=0), X, cv=3)
    assert scores.shape == (3,) and np.all(scores < 0)
    # n_jobs=2: joblib hands arrays over 1 MB to the workers as read-only memory maps
    Xbig, _ = _blobs(n=60_000)
    gs = GridSearchCV(KMeans(random_state=0, max_iter=20), {"n_clusters": [3, 4]}, cv=2, n_jobs=2).fit(Xbig)
    assert gs.best_params_ == {"n_clusters": 4}
    assert list(KMeans(3).fit(X).get_feature_names_out()) == ["kmeans0", "kmeans1", "kmeans2"]
    with pytest.raises(SkNotFittedError):
        KMeans(3).predict(X)


def test_memmap_is_data_in_memory(tmp_path):
    X, _ = _blobs()
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    km = KMeans(4, random_state=0).fit(mm)
    assert km.labels_ is not None and np.array_equal(km.fit_predict(mm), KMeans(4, random_state=0).fit_predict(X))


def test_same_fit_as_scikit_learn_from_the_same_centres():
    """Same initial centres, scikit-learn's tol and iteration count: same labels, iterations, inertia."""
    for seed in range(4):
        X, _ = _blobs(seed=seed)
        C0 = X[np.random.default_rng(seed).choice(300, 4, replace=False)]
        for tol in (0.0, 1e-4, 1e-2):
            ours = KMeans(4, init=C0, tol=tol).fit(X)
            ref = SkKMeans(4, init=C0, n_init=1, tol=tol, algorithm="lloyd").fit(X)
            assert np.array_equal(ours.labels_, ref.labels_)
            assert ours.n_iter_ == ref.n_iter_, (seed, tol)
            assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
            np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scale", [1e-5, 1e5])
def test_tolerance_does_not_depend_on_the_scale(scale):
    X, _ = _blobs()
    C0 = X[[0, 1, 2, 3]]
    ref = KMeans(4, init=C0).fit(X)
    r = KMeans(4, init=C0 * scale).fit(X * scale)
    assert np.array_equal(r.labels_, ref.labels_) and r.n_iter_ == ref.n_iter_
    assert r.inertia_ == pytest.approx(ref.inertia_ * scale**2, rel=1e-9)
    # the exercise's absolute rule is available explicitly -- and is not scale-free
    absolute = KMeans(4, init=C0 * scale, tol=1e-4, tol_mode="absolute").fit(X * scale)
    assert absolute.n_iter_ <= ref.n_iter_


def test_integer_weights_equal_repeated_rows():
    X, _ = _blobs()
    w = np.random.default_rng(1).integers(1, 5, size=300)
    C0 = X[[0, 100, 200, 250]]
    a = KMeans(4, init=C0).fit(X, sample_weight=w)
    b = KMeans(4, init=C0).fit(np.repeat(X, w, axis=0))
    assert np.array_equal(np.repeat(a.labels_, w), b.labels_) and a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-12)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-12)
    assert a.score(X, sample_weight=w) == pytest.approx(-a.inertia_, rel=1e-12)
    # unit weights take the unweighted path: the same bits
    u = KMeans(4, init=C0).fit(X, sample_weight=np.ones(300))
    assert u.cluster_centers_.tobytes() == KMeans(4, init=C0).fit(X).cluster_centers_.tobytes()
    # scaling every weight changes nothing but the inertia's scale
    s = KMeans(4, init=C0).fit(X, sample_weight=3.0 * w)
    np.testing.assert_allclose(s.cluster_centers_, a.cluster_centers_, rtol=1e-12)
    # torch input and weights on the torch path give the same fit
    t = KMeans(4, init=torch.from_numpy(C0)).fit(torch.from_numpy(X), sample_weight=torch.from_numpy(w))
    np.testing.assert_allclose(t.cluster_centers_.numpy(), a.cluster_centers_, rtol=1e-12)


def test_weights_match_scikit_learn_and_zero_weights():
    X, _ = _blobs()
    w = np.random.default_rng(2).uniform(0.1, 3.0, size=300)
    C0 = X[[5, 105, 205, 255]]
    ours = KMeans(4, init=C0, tol=0).fit(X, sample_weight=w)
    ref = SkKMeans(4, init=C0, n_init=1, tol=0, algorithm="lloyd").fit(X, sample_weight=w)
    assert np.array_equal(ours.labels_, ref.labels_) and ours.n_iter_ == ref.n_iter_
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
    # a zero weight: the point never becomes an initial centre, and weighs nothing in the means
    w0 = w.copy()
    w0[::2] = 0
    for init in ("k-means++", "random"):
        C = KMeans(8, init=init, random_state=3)._init_centroids(X, None, init, 3, w0, n_centroids=8)
        assert not (np.abs(X[::2, None, :] - C[None]).sum(-1) == 0).any()
    km = KMeans(4, init=C0).fit(X, sample_weight=w0)
    for k in range(4):
        m = (km.labels_ == k) & (w0 > 0)
        np.testing.assert_allclose(km.cluster_centers_[k], np.average(X[m], axis=0, weights=w0[m]), rtol=1e-12)
    with pytest.raises(ValueError, match="weight"):
        KMeans(4).fit(X, sample_weight=-w)
    with pytest.raises(ValueError, match="weight.*zero"):
        KMeans(4).fit(X, sample_weight=np.zeros(300))


def test_weighted_relocation():
    """An empty cluster takes the farthest point of positive weight (scikit-learn's policy, weighted)."""
    X = np.array([[0.0], [1.0], [10.0], [11.0], [50.0], [60.0]])
    w = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 2.0])
    r = sqdist.kmeans(X, init=np.array([[0.0], [10.0], [1000.0]]), sample_weight=w, max_iter=1)
    assert r.history[1]["relocated"] == [2]
    assert 60.0 in r.centers.ravel()  # 60 (weight 2), not 50 (weight 0)


def test_kmeans_plusplus_like_scikit_learn():
    X, y = make_blobs(n_samples=300, centers=4, n_features=3, cluster_std=0.2, random_state=0)
    C, idx = sqdist.kmeans_plusplus(X, 4, random_state=0)
    assert C.shape == (4, 3) and idx.shape == (4,) and np.array_equal(X[idx], C)
    _, idx_s = sk_kmeans_plusplus(X, 4, random_state=0)
    # well separated blobs: one centre per blob, as scikit-learn's
    assert sorted(y[idx]) == sorted(y[idx_s]) == [0, 1, 2, 3]
    w = np.zeros(300)
    w[:10] = 1.0
    _, idx_w = sqdist.kmeans_plusplus(X, 4, sample_weight=w, random_state=0)
    assert (idx_w < 10).all()  # only rows of positive weight can be drawn
    with pytest.raises(ValueError, match="x_squared_norms"):
        sqdist.kmeans_plusplus(X, 4, x_squared_norms=np.ones(3))


def test_n_init_auto_and_iteration_count():
    X, _ = _blobs()
    assert KMeans(4, init="random").fit(X)._n_init == 10
    assert KMeans(4).fit(X)._n_init == 1
    # the exercise's blobs: 2 / 5 / 8 clusters converge after 4 / 2 / 6 iterations, counting the pass that
    # finds nothing moves (as the exercise's rule and scikit-learn count)
    Xe, _ = sqdist.datasets.make_blobs(seed=0)
    n = [sqdist.kmeans(Xe, init=sqdist.datasets.EXERCISE_INIT_INDICES[P], tol_mode="absolute").n_iter
         for P in (2, 5, 8)]
    assert n == [4, 2, 6]


def test_fewer_distinct_points_warns_like_scikit_learn():
    X = np.asarray([[0, 0], [0, 1], [1, 0], [1, 0]])
    with pytest.warns(SkConvergenceWarning, match=r"Number of distinct clusters \(3\) found smaller than n_clusters \(4\)"):
        KMeans(4, random_state=0).fit(X)


def test_sparse_input_fits_like_dense():
    sp = pytest.importorskip("scipy.sparse")
    X = sp.random(20, 5, density=0.3, format="csr", random_state=0)
    km, kd = KMeans(2, random_state=0).fit(X), KMeans(2, random_state=0).fit(X.toarray())
    np.testing.assert_array_equal(km.labels_, kd.labels_)
    np.testing.assert_allclose(km.cluster_centers_, kd.cluster_centers_, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sqdist.kmeans(X, 2, random_state=0).labels, kd.labels_)


def test_streamed_weights_equal_in_memory(tmp_path):
    X, _ = _blobs(n=2000)
    w = np.random.default_rng(3).uniform(0.0, 2.0, size=2000)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "w.npy", w)
    ref = sqdist.kmeans(X, 4, init=[0, 500, 1000, 1500], sample_weight=w, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = sqdist.kmeans_stream(str(tmp_path / "X.npy"), 4, init=[0, 500, 1000, 1500], tol=0,
                                 sample_weight=str(tmp_path / "w.npy"), working_memory=0.05,
                                 labels_out=tmp_path / "l.npy")
    assert np.array_equal(np.load(tmp_path / "l.npy"), ref.labels) and r.n_iter == ref.n_iter
    np.testing.assert_allclose(r.centers, ref.centers, rtol=1e-12)
    assert r.inertia == pytest.approx(ref.inertia, rel=1e-12)
    km = KMeans(4, init=[0, 500, 1000, 1500], tol=0).fit(str(tmp_path / "X.npy"), sample_weight=w)
    np.testing.assert_allclose(km.cluster_centers_, ref.centers, rtol=1e-12)
