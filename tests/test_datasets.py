"""datasets: the exercise's blobs, fixed init indices, point files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sqdist import SqdistError
from sqdist.datasets import EXERCISE_INIT_INDICES, blob_means, exercise_init_indices, load_points, make_blobs


def test_exercise_blobs():
    X, y = make_blobs()
    assert X.shape == (250, 2) and X.dtype == np.float64 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [50] * 5
    np.testing.assert_array_equal(y, np.repeat(np.arange(5), 50))
    means = blob_means(5, 2, 5.0)
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 5.0)
    for b in range(5):
        pts = X[y == b]
        # sample mean within 4 standard errors, spread close to std 0.5
        assert np.abs(pts.mean(0) - means[b]).max() < 4 * 0.5 / np.sqrt(50)
        assert 0.35 < pts.std(0).mean() < 0.65
    # well separated: every point is nearest to its own blob mean
    d = ((X[:, None] - means[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(d.argmin(1), y)


def test_reproducible_and_seeded_privately():
    state = torch.get_rng_state()
    a, _ = make_blobs(seed=3)
    b, _ = make_blobs(seed=torch.Generator().manual_seed(3))
    c, _ = make_blobs(seed=4)
    assert a.tobytes() == b.tobytes() and not np.array_equal(a, c)
    assert torch.equal(state, torch.get_rng_state())
    X, y = make_blobs(n_blobs=3, n_per_blob=7, dim=5, std=0.1, dtype=np.float32)
    assert X.shape == (21, 5) and X.dtype == np.float32 and np.abs(X[:, 2:]).max() < 1.0
    X1, _ = make_blobs(n_blobs=3, n_per_blob=4, dim=1, std=0.0, radius=2.0)
    assert X1.ravel().tolist() == [0.0] * 4 + [2.0] * 4 + [4.0] * 4


@pytest.mark.parametrize("kw", [dict(n_blobs=0), dict(n_per_blob=-1), dict(dim=0), dict(std=-1.0), dict(seed="a")])
def test_make_blobs_bad_arguments(kw):
    with pytest.raises(SqdistError):
        make_blobs(**kw)


def test_exercise_init_indices():
    assert EXERCISE_INIT_INDICES[5] == [0, 50, 100, 150, 200]
    assert EXERCISE_INIT_INDICES[2] == [0, 125]
    assert EXERCISE_INIT_INDICES[8] == [0, 31, 62, 93, 125, 156, 187, 218]
    _, y = make_blobs()
    assert sorted(y[EXERCISE_INIT_INDICES[5]].tolist()) == [0, 1, 2, 3, 4]  # one per blob
    for p in (1, 3, 250):
        idx = exercise_init_indices(p)
        assert len(set(idx)) == p and max(idx) < 250
    with pytest.raises(SqdistError, match="n_clusters"):
        exercise_init_indices(251)


def test_load_points(tmp_path):
    X = np.array([[1.0, 2.5], [3.0, -4.0], [5.0, 6.0]])
    np.save(tmp_path / "a.npy", X)
    (tmp_path / "h.csv").write_text("x,y\n1,2.5\n3,-4\n\n5,6\n")
    (tmp_path / "n.csv").write_text("1,2.5\n3,-4\n5,6\n")
    for f in ("a.npy", "h.csv", "n.csv"):
        np.testing.assert_array_equal(load_points(tmp_path / f), X)
    np.save(tmp_path / "v.npy", np.arange(4))
    assert load_points(tmp_path / "v.npy").shape == (4, 1)
    np.testing.assert_array_equal(load_points(tmp_path / "v.npy"), np.arange(4.0)[:, None])


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("e.csv", "", "empty"),
        ("only.csv", "a,b\n", "no data rows"),
        ("ragged.csv", "1,2\n3\n", "different numbers of columns"),
        ("text.csv", "1,2\nfoo,3\n", "line 2"),
        ("x.json", "[1]", "expected a .npy or .csv"),
        ("b.npy", "garbage", "not a valid .npy"),
    ],
)
def test_load_points_bad_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(SqdistError, match=match):
        load_points(tmp_path / name)


def test_load_points_rejects_pickles_and_missing(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SqdistError):
        load_points(tmp_path / "o.npy")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(SqdistError, match="dtype"):
        load_points(tmp_path / "s.npy")
    with pytest.raises(OSError):
        load_points(tmp_path / "missing.csv")
