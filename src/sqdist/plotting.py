"""Figures for k-means: data coloured by cluster, initial and converged centres,
centre trajectories, a grid over P, and the inertia curve.

matplotlib is an optional extra (``pip install 'sqdist[plot]'``); it is
imported inside the functions.  Every function draws into ``ax`` (or
``axes``) when given, otherwise into a new figure, and returns the
:class:`matplotlib.figure.Figure`.  Data with more than two features are
drawn in their first two coordinates (axis labels say so).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ._atomic import atomic_write
from ._validation import SqdistError

__all__ = [
    "plot_clusters",
    "plot_init_and_final",
    "plot_trajectories",
    "plot_inertia",
    "plot_kmeans_grid",
    "plot_kmeans_summary",
    "save_figure",
]


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise SqdistError("plotting needs matplotlib: pip install 'sqdist[plot]'") from None
    return plt


def _np(a: Any) -> np.ndarray | None:
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64 if a.is_floating_point() else a.dtype).numpy()
    return np.asarray(a)


def _xy(A: Any) -> np.ndarray:
    """First two coordinates of points (n, D); 1-D data get y = 0."""
    A = _np(A)
    if A.ndim != 2:
        raise SqdistError(f"points: expected shape (n, D), got shape {A.shape}")
    if A.shape[1] >= 2:
        return A[:, :2].astype(np.float64)
    return np.column_stack([A[:, 0], np.zeros(len(A))]).astype(np.float64)


def _colors(k: int):
    plt = _plt()
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20" if k <= 20 else "turbo")
    return [cmap(i % cmap.N if k <= 20 else i / max(k - 1, 1)) for i in range(k)]


def _axes(ax, nrows=1, ncols=1, figsize=None):
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(nrows, ncols, figsize=figsize or (5.2 * ncols, 4.6 * nrows), squeeze=False, layout="constrained")
        return fig, (ax[0, 0] if nrows * ncols == 1 else ax)
    fig = ax.figure if not isinstance(ax, np.ndarray) else ax.flat[0].figure
    return fig, ax


def _labels_axes(ax, D):
    ax.set_xlabel("feature 0" if D <= 2 else f"feature 0 (of {D:d})")
    ax.set_ylabel("feature 1" if D >= 2 else "(1-D data)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)


def plot_clusters(
    X: Any,
    labels: Any = None,
    centers: Any = None,
    init_centers: Any = None,
    *,
    ax: Any = None,
    title: str | None = None,
    center_label: str = "converged centres",
) -> Any:
    """Scatter the data coloured by ``labels`` with the centres on top.

    Parameters
    ----------
    X : of shape (N, D)
    labels : int of shape (N,), optional
        Cluster (or true blob) of every point; grey when omitted.
    centers : of shape (K, D), optional
        Drawn as large stars in the cluster colours.
    init_centers : of shape (K, D), optional
        Drawn as black crosses.
    ax : matplotlib Axes, optional
    title : str, optional
    """
    fig, ax = _axes(ax)
    P = _xy(X)
    D = _np(X).shape[1]
    lab = _np(labels)
    k = 0
    if centers is not None:
        k = len(_np(centers))
    if lab is not None and len(lab):
        k = max(k, int(lab.max()) + 1)
    cols = _colors(max(k, 1))
    if lab is None:
        ax.scatter(P[:, 0], P[:, 1], s=12, c="0.55", label="data", linewidths=0)
    else:
        for j in np.unique(lab):
            m = lab == j
            ax.scatter(P[m, 0], P[m, 1], s=12, color=cols[int(j)], linewidths=0, alpha=0.8)
        ax.scatter([], [], s=12, c="0.55", label=f"data ({len(np.unique(lab))} groups)")
    if init_centers is not None:
        Ci = _xy(init_centers)
        ax.scatter(Ci[:, 0], Ci[:, 1], marker="X", s=110, c="black", edgecolors="white", linewidths=1.0,
                   label="initial centres", zorder=4)
    if centers is not None:
        C = _xy(centers)
        ax.scatter(C[:, 0], C[:, 1], marker="*", s=320, c=[cols[j] for j in range(len(C))], edgecolors="black", linewidths=1.0,
                   label=center_label, zorder=5)
    _labels_axes(ax, D)
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return fig


def _result_parts(result: Any):
    hist = getattr(result, "history", None) or getattr(result, "history_", None) or []
    centers = getattr(result, "centers", None)
    if centers is None:
        centers = result.cluster_centers_
    labels = getattr(result, "labels", None)
    if labels is None:
        labels = result.labels_
    init = getattr(result, "init_centers", None)
    if init is None and hist:
        init = hist[0]["centers"]
    return centers, labels, init, hist


def plot_init_and_final(X: Any, result: Any, *, truth: Any = None, axes: Sequence[Any] | None = None) -> Any:
    """The exercise's two plots side by side: data with the initial centres
    (coloured by the true blob when ``truth`` is given) and the converged clustering.

    ``result`` is a :class:`~sqdist.KMeansResult` or a fitted :class:`~sqdist.KMeans`.
    """
    centers, labels, init, hist = _result_parts(result)
    if axes is None:
        fig, axs = _axes(None, 1, 2)
        axs = axs[0]
    else:
        axs = list(axes)
        fig = axs[0].figure
    K = len(_np(centers))
    plot_clusters(X, truth, None, init, ax=axs[0], title=f"data and initial centres (K={K})")
    n_iter = len(hist) - 1 if hist else getattr(result, "n_iter", "?")
    plot_clusters(X, labels, centers, init, ax=axs[1],
                  title=f"converged clustering after {n_iter} iteration{'' if n_iter == 1 else 's'}")
    return fig


def plot_trajectories(X: Any, result: Any, *, ax: Any = None, title: str | None = None) -> Any:
    """Centre paths over the iterations (from ``history``) on top of the clustered data."""
    centers, labels, init, hist = _result_parts(result)
    fig, ax = _axes(ax)
    plot_clusters(X, labels, centers, init, ax=ax, title=title or "centre trajectories")
    if hist:
        path = np.stack([_xy(h["centers"]) for h in hist])  # (iters+1, K, 2)
        cols = _colors(path.shape[1])
        for j in range(path.shape[1]):  # drawing only: one line per centre
            ax.plot(path[:, j, 0], path[:, j, 1], "-", color="black", lw=1.6, zorder=3)
            ax.plot(path[:, j, 0], path[:, j, 1], "o-", color=cols[j], lw=1.0, ms=3, zorder=3)
        ax.plot([], [], "o-", color="black", lw=1.2, ms=3, label="centre path")
        reloc = [(h["iteration"], j) for h in hist for j in h["relocated"]]
        if reloc:
            pts = np.array([path[it, j] for it, j in reloc])
            ax.scatter(pts[:, 0], pts[:, 1], marker="o", s=140, facecolors="none", edgecolors="red", linewidths=1.5, zorder=6,
                       label="relocated (empty cluster)")
        ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return fig


def plot_inertia(result: Any, *, ax: Any = None, title: str | None = None, label: str | None = None) -> Any:
    """Inertia (sum of squared distances to the centres) per iteration (log scale when it spans > 20x)."""
    _, _, _, hist = _result_parts(result)
    if not hist:
        raise SqdistError("result: has no history to plot")
    fig, ax = _axes(ax)
    it = [h["iteration"] for h in hist]
    val = [h["inertia"] for h in hist]
    ax.plot(it, val, "o-", ms=4, label=label or "inertia")
    reloc = [h["iteration"] for h in hist if h["relocated"]]
    if reloc:
        ax.scatter(reloc, [hist[i]["inertia"] for i in reloc], s=80, facecolors="none", edgecolors="red",
                   label="empty-cluster relocation", zorder=4)
    if min(val) > 0 and max(val) / min(val) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("iteration (0 = initial centres)")
    ax.set_ylabel("inertia (sum of squared distances)")
    ax.set_title(title or "inertia per iteration")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def plot_kmeans_grid(X: Any, results: Mapping[int, Any], *, truth: Any = None, axes: Any = None) -> Any:
    """One row per number of clusters P: initial centres | converged clustering with trajectories.

    ``results`` maps P to a :class:`~sqdist.KMeansResult` (e.g. P = 2, 5, 8).
    """
    ps = list(results)
    if axes is None:
        fig, axs = _axes(None, len(ps), 2, figsize=(10.4, 4.4 * len(ps)))
    else:
        axs = np.asarray(axes).reshape(len(ps), 2)
        fig = axs[0, 0].figure
    for row, p in enumerate(ps):
        r = results[p]
        centers, labels, init, hist = _result_parts(r)
        plot_clusters(X, truth, None, init, ax=axs[row, 0], title=f"P = {p}: data and initial centres")
        conv = "converged" if getattr(r, "converged", True) else "not converged"
        plot_trajectories(X, r, ax=axs[row, 1],
                          title=f"P = {p}: {len(hist) - 1} iteration{'' if len(hist) == 2 else 's'} ({conv}), "
                                f"inertia {r.inertia:.4g}")
    return fig


def plot_kmeans_summary(X: Any, result: Any, *, truth: Any = None) -> Any:
    """2 x 2 figure: initial centres, converged clustering, trajectories, inertia."""
    fig, axs = _axes(None, 2, 2, figsize=(11, 9.5))
    plot_init_and_final(X, result, truth=truth, axes=[axs[0, 0], axs[0, 1]])
    plot_trajectories(X, result, ax=axs[1, 0])
    plot_inertia(result, ax=axs[1, 1])
    return fig


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> None:
    """Save ``fig`` as PNG via a temporary file in the same folder, then rename."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    _plt().close(fig)
