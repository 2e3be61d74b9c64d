"""plotting: figures are built, labelled, drawn into given axes and saved as PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from sqdist import KMeans, kmeans, plotting  # noqa: E402
from sqdist.datasets import EXERCISE_INIT_INDICES, make_blobs  # noqa: E402


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs()
    res = {p: kmeans(X, init=EXERCISE_INIT_INDICES[p], max_iter=50) for p in (2, 5, 8)}
    return X, y, res


def _texts(fig):
    titles = [ax.get_title() for ax in fig.axes]
    legend_texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    return titles, legend_texts


def test_init_and_final(blobs):
    X, y, res = blobs
    fig = plotting.plot_init_and_final(X, res[5], truth=y)
    titles, legends = _texts(fig)
    assert len(fig.axes) == 2 and "initial centres" in titles[0] and "converged" in titles[1]
    assert "initial centres" in legends and "converged centres" in legends
    assert all(ax.get_xlabel() == "feature 0" and ax.get_ylabel() == "feature 1" for ax in fig.axes)
    # the star markers sit at the converged centres
    stars = fig.axes[1].collections[-1].get_offsets()
    np.testing.assert_allclose(np.asarray(stars), res[5].centers)
    plt.close(fig)


def test_draws_into_given_axes_and_accepts_estimator_and_torch(blobs):
    X, y, res = blobs
    fig, axs = plt.subplots(1, 3)
    assert plotting.plot_clusters(torch.from_numpy(X), res[2].labels, res[2].centers, ax=axs[0]) is fig
    km = KMeans(8, init=EXERCISE_INIT_INDICES[8], max_iter=20).fit(torch.from_numpy(X))
    assert plotting.plot_trajectories(X, km, ax=axs[1]) is fig
    assert plotting.plot_inertia(km, ax=axs[2]) is fig
    line = axs[2].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [h["inertia"] for h in km.history_])
    assert len(fig.axes) == 3
    plt.close(fig)


def test_grid_and_summary_png(blobs, tmp_path):
    X, y, res = blobs
    fig = plotting.plot_kmeans_grid(X, res, truth=y)
    assert len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert all(any(t.startswith(f"P = {p}") for t in titles) for p in (2, 5, 8))
    path = tmp_path / "grid.png"
    plotting.save_figure(fig, path)
    img = mpimg.imread(path)
    assert path.read_bytes()[:4] == b"\x89PNG" and img.shape[0] > 1000 and img.ndim == 3
    assert img[..., :3].std() > 0.05  # not blank
    fig = plotting.plot_kmeans_summary(X, res[8], truth=y)
    assert len(fig.axes) == 4
    plotting.save_figure(fig, tmp_path / "s.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "s.png"]


def test_relocations_are_marked_and_high_dim_data(blobs):
    X, y, _ = blobs
    C0 = X[EXERCISE_INIT_INDICES[5]].copy()
    C0[2] = [100.0, 100.0]
    r = kmeans(X, init=C0, max_iter=30)
    fig = plotting.plot_trajectories(X, r)
    assert "relocated (empty cluster)" in _texts(fig)[1]
    plt.close(fig)
    X5, y5 = make_blobs(dim=5)
    fig = plotting.plot_init_and_final(X5, kmeans(X5, 3, random_state=0, max_iter=5))
    assert fig.axes[0].get_xlabel() == "feature 0 (of 5)"
    plt.close(fig)
    fig = plotting.plot_clusters(X[:, :1], y)
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("feature 0", "(1-D data)")
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == len(X)  # every point drawn
    plt.close(fig)
