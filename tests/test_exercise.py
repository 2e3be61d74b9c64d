"""sqdist.exercise: the exercise's plain solutions against float64 references, SciPy,
scikit-learn and sqdist.kmeans, plus the invariants of Lloyd's algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import cdist

import sqdist
from sqdist import SqdistError
from sqdist.datasets import EXERCISE_INIT_INDICES, make_blobs
from sqdist.exercise import (
    KMeansSolution,
    distances_loops,
    distances_numpy,
    distances_torch,
    distances_torch_expansion,
    inertia_torch,
    kmeans_torch,
)

NUMPY_WAYS = [distances_loops, distances_numpy]
TORCH_WAYS = [distances_torch, distances_torch_expansion]


def _all_ways(X: np.ndarray, T: np.ndarray) -> dict[str, np.ndarray]:
    out = {f.__name__: f(X, T) for f in NUMPY_WAYS}
    out.update({f.__name__: f(torch.from_numpy(X), torch.from_numpy(T)).numpy() for f in TORCH_WAYS})
    return out


# ---- Task 1: the distance matrix four ways ---------------------------------------------------


def test_hand_solved_case():
    X = np.array([[0.0, 0.0], [1.0, 1.0]])
    T = np.array([[3.0, 4.0], [0.0, 1.0], [1.0, 1.0]])
    want = np.array([[25.0, 1.0, 2.0], [13.0, 1.0, 0.0]])  # 3^2+4^2, 2^2+3^2, ...
    for name, d in _all_ways(X, T).items():
        np.testing.assert_array_equal(d, want, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 6), st.data())
def test_every_way_matches_scipy_and_each_other(n, p, d, data):
    elems = st.floats(-100, 100, allow_nan=False, width=64)
    X = data.draw(arrays(np.float64, (n, d), elements=elems))
    T = data.draw(arrays(np.float64, (p, d), elements=elems))
    ref = cdist(X, T, "sqeuclidean")  # SciPy, float64
    scale = (X**2).sum(1)[:, None] + (T**2).sum(1)[None, :] + 1.0  # ||x||^2 + ||t||^2 (+1 for zeros)
    ways = _all_ways(X, T)
    for name, got in ways.items():
        assert got.shape == (n, p) and got.dtype == np.float64, name
        # the broadcasting ways are accurate relative to the distance; the expansion only to ||x||^2 + ||t||^2
        bound = 1e-12 * scale if name == "distances_torch_expansion" else 1e-13 * (ref + 1e-300)
        assert np.all(np.abs(got - ref) <= bound), name
    np.testing.assert_allclose(ways["distances_numpy"], ways["distances_loops"], rtol=1e-14, atol=0)
    np.testing.assert_allclose(ways["distances_torch"], ways["distances_numpy"], rtol=1e-14, atol=0)
    assert np.all(ways["distances_torch_expansion"] >= 0)  # the clamp


def test_types_and_dtypes_follow_the_input():
    rng = np.random.default_rng(0)
    X, T = rng.standard_normal((7, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    for f in NUMPY_WAYS:
        out = f(X, T)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (7, 4)
    for f in TORCH_WAYS:
        out = f(torch.from_numpy(X), torch.from_numpy(T))
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (7, 4)
        ref = cdist(X.astype(np.float64), T.astype(np.float64), "sqeuclidean")
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_expansion_loses_digits_far_from_the_origin():
    """The docstring's claim: in float32, points ~1e3 from the origin and ~1 apart keep few digits
    with ||x||^2 + ||t||^2 - 2 x.t, while broadcasting the differences stays accurate."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((50, 4))
    X64, T64 = 1000.0 + base, 1000.0 + base[:20] + 0.5 * rng.standard_normal((20, 4))
    ref = cdist(X64, T64, "sqeuclidean")
    X32, T32 = torch.from_numpy(X64).float(), torch.from_numpy(T64).float()
    err_bc = np.abs(distances_torch(X32, T32).double().numpy() - ref).max()
    err_ex = np.abs(distances_torch_expansion(X32, T32).double().numpy() - ref).max()
    assert err_bc < 1e-3  # differences of nearby float32 numbers are exact; only the rounding of X, T
    assert err_ex > 100 * err_bc and err_ex > 0.05  # eps * R^2 = 6e-8 * 4e6 ~ 0.2


def test_expansion_is_clamped_at_zero():
    X = torch.full((5, 3), 1234.5678, dtype=torch.float32) + torch.arange(5.0)[:, None] * 1e-3
    d = distances_torch_expansion(X, X)
    assert bool((d >= 0).all())
    assert torch.equal(torch.diagonal(distances_torch(X, X)), torch.zeros(5))  # broadcasting: exactly 0


@pytest.mark.parametrize("f", NUMPY_WAYS + TORCH_WAYS, ids=lambda f: f.__name__)
def test_bad_shapes_name_the_argument(f):
    conv = torch.as_tensor if f in TORCH_WAYS else np.asarray
    with pytest.raises(SqdistError, match=r"T: expected shape \(P, 2\).*got \(4, 3\)"):
        f(conv(np.zeros((3, 2))), conv(np.zeros((4, 3))))
    with pytest.raises(SqdistError, match=r"X: expected a 2-D array.*got shape \(3,\)"):
        f(conv(np.zeros(3)), conv(np.zeros((4, 3))))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_ways_run_on_the_gpu():
    rng = np.random.default_rng(2)
    X, T = rng.standard_normal((300, 16)), rng.standard_normal((70, 16))
    ref = cdist(X, T, "sqeuclidean")
    for f in TORCH_WAYS:
        out = f(torch.from_numpy(X).cuda(), torch.from_numpy(T).cuda())
        assert out.is_cuda
        np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-10, atol=1e-10)
    sol = kmeans_torch(torch.from_numpy(X).cuda(), [0, 1, 2], max_iter=20)
    assert sol.centers.is_cuda and sol.labels.is_cuda


# ---- Task 3: k-means -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    X, _ = make_blobs()  # the exercise's 5 blobs x 50 points in 2-D
    return X.astype(np.float64)


@pytest.mark.parametrize("P,iters", [(2, 4), (5, 2), (8, 6)])
def test_kmeans_on_the_blobs_matches_sqdist_and_sklearn(blobs, P, iters):
    from sklearn.cluster import KMeans

    idx = EXERCISE_INIT_INDICES[P]
    sol = kmeans_torch(torch.from_numpy(blobs), idx, max_iter=100, threshold=1e-4)
    assert isinstance(sol, KMeansSolution)
    lib = sqdist.kmeans(blobs, P, init=idx, max_iter=100, tol=1e-4, tol_mode="absolute")
    sk = KMeans(P, init=blobs[idx], n_init=1, algorithm="lloyd", max_iter=100, tol=0.0).fit(blobs)

    assert sol.n_iter == iters == lib.n_iter == sk.n_iter_
    np.testing.assert_array_equal(sol.initial_centers.numpy(), blobs[idx])
    np.testing.assert_array_equal(sol.labels.numpy(), lib.labels)
    np.testing.assert_array_equal(sol.labels.numpy(), sk.labels_)
    np.testing.assert_allclose(sol.centers.numpy(), lib.centers, rtol=0, atol=1e-10)
    np.testing.assert_allclose(sol.centers.numpy(), sk.cluster_centers_, rtol=0, atol=1e-10)
    inertia = inertia_torch(torch.from_numpy(blobs), sol.centers)
    assert inertia == pytest.approx(lib.inertia, rel=1e-10) and inertia == pytest.approx(sk.inertia_, rel=1e-10)
    # the inertia by hand: squared distance of every point to the mean of its cluster
    by_hand = sum(((blobs[sol.labels.numpy() == j] - blobs[sol.labels.numpy() == j].mean(0)) ** 2).sum() for j in range(P))
    assert inertia == pytest.approx(by_hand, rel=1e-10)


@pytest.mark.parametrize("P", [2, 5, 8])
def test_kmeans_history_and_stopping_rule(blobs, P):
    X = torch.from_numpy(blobs)
    sol = kmeans_torch(X, EXERCISE_INIT_INDICES[P], max_iter=100, threshold=1e-4)
    assert len(sol.history) == sol.n_iter + 1
    assert torch.equal(sol.history[0], sol.initial_centers) and torch.equal(sol.history[-1], sol.centers)
    moves = [float((b - a).norm(dim=1).max()) for a, b in zip(sol.history, sol.history[1:])]
    assert moves[-1] < 1e-4 and all(m >= 1e-4 for m in moves[:-1])  # stops at the first all-below pass
    inertias = [inertia_torch(X, C) for C in sol.history]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(inertias, inertias[1:]))  # Lloyd never raises the inertia
    # every centre of the history is the mean of the points nearest to the previous centres
    for prev, cur in zip(sol.history, sol.history[1:]):
        lab = distances_loops(blobs, prev.numpy()).argmin(1)
        for j in range(P):
            want = blobs[lab == j].mean(0) if (lab == j).any() else prev[j].numpy()
            np.testing.assert_allclose(cur[j].numpy(), want, rtol=0, atol=1e-12)


def test_kmeans_stops_at_max_iter(blobs):
    X = torch.from_numpy(blobs)
    idx = EXERCISE_INIT_INDICES[8]
    one = kmeans_torch(X, idx, max_iter=1)
    lab = cdist(blobs, blobs[idx], "sqeuclidean").argmin(1)
    want = np.stack([blobs[lab == j].mean(0) for j in range(8)])
    assert one.n_iter == 1 and len(one.history) == 2
    np.testing.assert_allclose(one.centers.numpy(), want, rtol=0, atol=1e-12)
    zero = kmeans_torch(X, idx, max_iter=0)
    assert zero.n_iter == 0 and torch.equal(zero.centers, X[idx])
    np.testing.assert_array_equal(zero.labels.numpy(), lab)


def test_kmeans_empty_cluster_keeps_its_centre():
    """Hand-solved: both centres start at 0; ties go to centre 0, so centre 1 is empty
    and stays at 0, then takes the two points near 0."""
    X = torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)
    sol = kmeans_torch(X, [0, 0], max_iter=10, threshold=1e-9)
    assert sol.history[1].flatten().tolist() == pytest.approx([11 / 3, 0.0])
    assert sol.centers.flatten().tolist() == [10.0, 0.5]
    assert sol.labels.tolist() == [1, 1, 0] and sol.n_iter == 3


def test_kmeans_keeps_float32():
    X = torch.from_numpy(make_blobs()[0]).float()
    sol = kmeans_torch(X, EXERCISE_INIT_INDICES[5])
    assert sol.centers.dtype == torch.float32 and sol.labels.dtype == torch.int64 and sol.n_iter == 2


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(1, 3), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_kmeans_invariants_on_random_data(n, d, k, seed):
    rng = np.random.default_rng(seed)
    X = torch.from_numpy(rng.standard_normal((n, d)))
    idx = rng.integers(0, n, size=k).tolist()  # repeated rows allowed: empty clusters keep their centre
    sol = kmeans_torch(X, idx, max_iter=15, threshold=1e-6)
    assert 1 <= sol.n_iter <= 15 and len(sol.history) == sol.n_iter + 1
    inertias = [inertia_torch(X, C) for C in sol.history]
    assert all(b <= a * (1 + 1e-12) + 1e-12 for a, b in zip(inertias, inertias[1:]))
    np.testing.assert_array_equal(sol.labels.numpy(), cdist(X.numpy(), sol.centers.numpy(), "sqeuclidean").argmin(1))


@pytest.mark.parametrize("kwargs,match", [
    ({"init_index": [0, 250]}, r"init_index: expected row indices in \[0, 250\), got \[0, 250\]"),
    ({"init_index": []}, r"init_index: expected row indices"),
    ({"max_iter": -1}, r"max_iter: expected an integer >= 0, got -1"),
    ({"max_iter": 2.5}, r"max_iter: expected an integer >= 0, got 2.5"),
    ({"threshold": -1.0}, r"threshold: expected a number >= 0, got -1.0"),
    ({"threshold": float("nan")}, r"threshold: expected a number >= 0, got nan"),
    ({"threshold": "0.1"}, r"threshold: expected a number >= 0, got '0.1'"),
])
def test_kmeans_bad_arguments(blobs, kwargs, match):
    args = {"init_index": [0, 50], "max_iter": 10, "threshold": 1e-4, **kwargs}
    with pytest.raises(SqdistError, match=match):
        kmeans_torch(torch.from_numpy(blobs), **args)


def test_kmeans_rejects_data_that_is_not_2d():
    with pytest.raises(SqdistError, match=r"X: expected a 2-D tensor of shape \(N, D\), got shape \(5,\)"):
        kmeans_torch(torch.arange(5.0), [0, 1])
