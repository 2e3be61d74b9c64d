"""The report's Task 3 section: k-means on the five blobs three ways -- the exercise's PyTorch loop
(:func:`sqdist.exercise.kmeans_torch`), :func:`sqdist.kmeans` and scikit-learn's Lloyd -- with the figures."""

from __future__ import annotations

import html
import inspect
import warnings
from typing import Any

import numpy as np
import torch

from ._bench_measure import median_time
from ._report_context import Context, Section, jsonable
from ._report_page import code_html, code_md, figure_html, figure_md, table_html, table_md
from .clustering import kmeans
from .datasets import EXERCISE_INIT_INDICES, make_blobs
from .exercise import inertia_torch, kmeans_torch
from .plotting import plot_inertia, plot_kmeans_grid, plot_trajectories

__all__ = ["library_kmeans", "section_task3", "sklearn_kmeans"]


def library_kmeans(X: torch.Tensor, init_index: list[int], max_iter: int, tol: float) -> Any:
    """Task 3 the library way: :func:`sqdist.kmeans` from the same rows of X, with the exercise's rule.

    ``tol_mode="absolute"``: stop once every centre moved less than ``tol`` (data units).
    """
    return kmeans(X, len(init_index), init=list(init_index), max_iter=max_iter, tol=tol, tol_mode="absolute")


def sklearn_kmeans(X: np.ndarray, init_centers: np.ndarray, max_iter: int) -> Any:
    """The cross-check: scikit-learn's Lloyd k-means from the same initial centres (a fitted ``KMeans``)."""
    from sklearn.cluster import KMeans  # scikit-learn takes a second to import: only when the report runs

    km = KMeans(len(init_centers), init=init_centers, n_init=1, algorithm="lloyd", max_iter=max_iter, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the iteration count is reported instead
        return km.fit(X)


def _timed(fn: Any, min_run_time: float) -> tuple[Any, float]:
    """``fn()`` once as a warm-up (its result returned), then its median time."""
    out = fn()
    return out, median_time(fn, torch.get_num_threads(), min_run_time)


def section_task3(ctx: Context) -> Section:
    """Task 3: k-means on the five blobs for each P, from fixed initial rows of X, three ways, with the figures."""
    sid, title = "task3", "Task 3 \u2014 k-means on five blobs"
    X, y = make_blobs()  # the exercise's data: 5 Gaussian blobs x 50 points in 2-D, and their blob ids
    cfg = ctx.config
    Xt = torch.as_tensor(X, dtype=torch.float64, device=ctx.device)  # (n, 2)
    X64 = np.asarray(X, dtype=np.float64)
    runs, results = [], {}
    for P in cfg.kmeans_p:
        idx = [int(i) for i in EXERCISE_INIT_INDICES[P]]
        res, t_lib = _timed(lambda: library_kmeans(Xt, idx, cfg.kmeans_max_iter, cfg.kmeans_tol), cfg.bench_min_run_time)
        sol, t_ex = _timed(lambda: kmeans_torch(Xt, idx, cfg.kmeans_max_iter, cfg.kmeans_tol), cfg.bench_min_run_time)
        km = sklearn_kmeans(X64, np.asarray(jsonable(res.init_centers), dtype=np.float64), cfg.kmeans_max_iter)
        labels = np.asarray(jsonable(res.labels))
        centers = np.asarray(jsonable(res.centers))
        hist = [{k: jsonable(v) for k, v in h.items()} for h in res.history]
        relocations = [[h["iteration"], j] for h in hist for j in h["relocated"]]
        runs.append({
            "P": P,
            "init_indices": idx,
            "init_centers": jsonable(res.init_centers),
            "centers": jsonable(res.centers),
            "n_iter": int(res.n_iter),
            "converged": bool(res.converged),
            "inertia": float(res.inertia),
            "sizes": np.bincount(labels, minlength=P).tolist(),
            "n_relocations": len(relocations),
            "relocations": relocations,
            "time_s": t_lib,
            "exercise": {
                "n_iter": int(sol.n_iter),
                "inertia": inertia_torch(Xt, sol.centers),
                "labels_equal": bool(np.array_equal(jsonable(sol.labels), labels)),
                "max_center_diff": float(np.abs(np.asarray(jsonable(sol.centers)) - centers).max()),
                "time_s": t_ex,
            },
            "sklearn": {
                "n_iter": int(km.n_iter_),
                "inertia": float(km.inertia_),
                "labels_equal": bool(np.array_equal(km.labels_, labels)),
                "max_center_diff": float(np.abs(km.cluster_centers_ - centers).max()),
            },
            "history": [{k: h[k] for k in ("iteration", "inertia", "max_shift", "sizes", "relocated", "time")} for h in hist],
        })
        results[P] = res
    ctx.results[sid] = {
        "n_points": int(X.shape[0]),
        "n_blobs": int(len(np.unique(y))),
        "max_iter": cfg.kmeans_max_iter,
        "tol": cfg.kmeans_tol,
        "runs": runs,
        "code": [
            {"function": "sqdist.exercise.kmeans_torch", "source": inspect.getsource(kmeans_torch)},
            {"function": "sqdist.kmeans", "source": inspect.getsource(library_kmeans)},
            {"function": "sklearn.cluster.KMeans", "source": inspect.getsource(sklearn_kmeans)},
        ],
    }
    figs = _task3_figures(ctx, X, y, results)
    k = sid

    # the three implementations side by side
    cmp_hdr = ["P", "iterations, kmeans_torch (exercise)", "iterations, sqdist.kmeans", "iterations, scikit-learn",
               "inertia, kmeans_torch (exercise)", "inertia, sqdist.kmeans", "inertia, scikit-learn",
               "labels equal sqdist.kmeans's (exercise, scikit-learn)",
               "largest centre difference from sqdist.kmeans (exercise, scikit-learn)"]
    cmp_cells = [("P", "int"), ("exercise.n_iter", "int"), ("n_iter", "int"), ("sklearn.n_iter", "int"),
                 ("exercise.inertia", "float"), ("inertia", "float"), ("sklearn.inertia", "float")]
    cmp_h, cmp_m = [], []
    for i in range(len(runs)):
        kk = f"{k}.runs.{i}"
        same_h = f'{ctx.num(f"{kk}.exercise.labels_equal", "bool")}, {ctx.num(f"{kk}.sklearn.labels_equal", "bool")}'
        same_m = f'{ctx.md(f"{kk}.exercise.labels_equal", "bool")}, {ctx.md(f"{kk}.sklearn.labels_equal", "bool")}'
        diff_h = f'{ctx.num(f"{kk}.exercise.max_center_diff", "sci")}, {ctx.num(f"{kk}.sklearn.max_center_diff", "sci")}'
        diff_m = f'{ctx.md(f"{kk}.exercise.max_center_diff", "sci")}, {ctx.md(f"{kk}.sklearn.max_center_diff", "sci")}'
        cmp_h.append([ctx.num(f"{kk}.{c}", kd) for c, kd in cmp_cells] + [same_h, diff_h])
        cmp_m.append([ctx.md(f"{kk}.{c}", kd) for c, kd in cmp_cells] + [same_m, diff_m])

    header = ["P", "initial rows of X", "converged", "cluster sizes", "relocations", "time, sqdist.kmeans",
              "time, kmeans_torch (exercise)"]
    cells = [("P", "int"), ("init_indices", "list"), ("converged", "bool"), ("sizes", "list"),
             ("n_relocations", "int"), ("time_s", "time"), ("exercise.time_s", "time")]
    rows_h = [[ctx.num(f"{k}.runs.{i}.{c}", kd) for c, kd in cells] for i in range(len(runs))]
    rows_m = [[ctx.md(f"{k}.runs.{i}.{c}", kd) for c, kd in cells] for i in range(len(runs))]

    details_h, details_m = [], []
    for i, r in enumerate(runs):
        kk = f"{k}.runs.{i}"
        hdr = ["initial row of X", "initial centre", "converged centre", "points"]
        rh = [[ctx.num(f"{kk}.init_indices.{j}", "int"), ctx.num(f"{kk}.init_centers.{j}", "point"),
               ctx.num(f"{kk}.centers.{j}", "point"), ctx.num(f"{kk}.sizes.{j}", "int")] for j in range(r["P"])]
        rm = [[ctx.md(f"{kk}.init_indices.{j}", "int"), ctx.md(f"{kk}.init_centers.{j}", "point"),
               ctx.md(f"{kk}.centers.{j}", "point"), ctx.md(f"{kk}.sizes.{j}", "int")] for j in range(r["P"])]
        hdr2 = ["iteration", "inertia", "largest centre move", "cluster sizes", "relocated clusters"]
        ih = [[ctx.num(f"{kk}.history.{t}.iteration", "int"), ctx.num(f"{kk}.history.{t}.inertia", "float"),
               ctx.num(f"{kk}.history.{t}.max_shift", "sci"), ctx.num(f"{kk}.history.{t}.sizes", "list"),
               ctx.num(f"{kk}.history.{t}.relocated", "list") if r["history"][t]["relocated"] else ""]
              for t in range(len(r["history"]))]
        im = [[ctx.md(f"{kk}.history.{t}.iteration", "int"), ctx.md(f"{kk}.history.{t}.inertia", "float"),
               ctx.md(f"{kk}.history.{t}.max_shift", "sci"), ctx.md(f"{kk}.history.{t}.sizes", "list"),
               ctx.md(f"{kk}.history.{t}.relocated", "list")] for t in range(len(r["history"]))]
        details_h.append(
            f"<details><summary>P = {r['P']}: centres and iterations</summary>"
            f"{table_html(hdr, rh, 'num')}{table_html(hdr2, ih, 'num')}</details>"
        )
        details_m.append(f"P = {r['P']}:\n\n" + table_md(hdr, rm) + "\n" + table_md(hdr2, im))

    rule = (
        "Iterations are counted by the exercise's rule: iterate at most M times and stop once every centre moved "
        "less than the threshold \u2014 the pass that finds every move below the threshold counts, so the last "
        "iteration's largest centre move is below it. scikit-learn counts the same way."
    )
    intro_h = (
        f"<p>{ctx.num(f'{k}.n_points', 'int')} points drawn from {ctx.num(f'{k}.n_blobs', 'int')} Gaussian blobs "
        "(<code>sqdist.datasets.make_blobs()</code>), clustered from initial centres taken from fixed rows of X "
        "(<code>sqdist.datasets.EXERCISE_INIT_INDICES</code>), so anyone can reproduce the run: by the exercise's "
        "PyTorch loop <code>sqdist.exercise.kmeans_torch</code>, by <code>sqdist.kmeans</code> and, as a "
        f"cross-check, by scikit-learn's Lloyd <code>KMeans</code>. At most {ctx.num(f'{k}.max_iter', 'int')} "
        f"iterations M, threshold {ctx.num(f'{k}.tol', 'sci')} (Euclidean distance, data units). Each iteration "
        "assigns every point to its nearest centre (argmin over the centre axis of the distance matrix) and moves "
        "each centre to the mean of its points. " + html.escape(rule) + "</p>"
    )
    body = (
        intro_h
        + "<h3>Three implementations, one answer</h3>" + table_html(cmp_hdr, cmp_h, "num", row_headers=True)
        + "<h3>The runs</h3>"
        + "<p>Times are medians of repeated runs after a warm-up run. sqdist.kmeans also moves a centre left "
        "without points to the point farthest from its centre (a <em>relocation</em>; none happen here).</p>"
        + table_html(header, rows_h, "num", row_headers=True) + "".join(details_h)
        + "<h3>The code that ran</h3>"
        + '<div class="side">'
        + "".join(code_html(c["source"], f"<code>{html.escape(c['function'])}</code>" + (
            " (the exercise's solution)" if c["function"].startswith("sqdist.exercise") else ""))
            for c in ctx.results[sid]["code"][:2])
        + "</div>"
        + code_html(ctx.results[sid]["code"][2]["source"], "the cross-check: <code>sklearn.cluster.KMeans</code>")
        + "<h3>Figures</h3>"
    )
    md = (
        f"{ctx.md(f'{k}.n_points', 'int')} points from {ctx.md(f'{k}.n_blobs', 'int')} blobs, initial centres from "
        f"fixed rows of X, at most {ctx.md(f'{k}.max_iter', 'int')} iterations, threshold {ctx.md(f'{k}.tol', 'sci')}. "
        f"{rule}\n\n"
        + "### Three implementations, one answer\n\n" + table_md(cmp_hdr, cmp_m) + "\n"
        + "### The runs\n\n" + table_md(header, rows_m) + "\n" + "\n".join(details_m) + "\n"
        + "### The code that ran\n\n"
        + "\n".join(code_md(c["source"], f"`{c['function']}`") for c in ctx.results[sid]["code"]) + "\n"
        + "### Figures\n"
    )
    for name, caption in figs:
        body += figure_html(name, caption)
        md += "\n" + figure_md(name, caption)
    return Section(sid, title, body, md)


def _task3_figures(ctx: Context, X: np.ndarray, y: np.ndarray, results: dict) -> list[tuple[str, str]]:
    """The exercise's plots (:mod:`sqdist.plotting`): a grid over P and the inertia curves."""
    import matplotlib.pyplot as plt

    figs = []
    with plt.rc_context({"font.size": 11.5, "axes.titlesize": 12.5}):
        fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 4.9), squeeze=False)
        for ax, (P, res) in zip(axes[0], results.items()):
            state = "converged" if res.converged else "not converged"
            its = f"{res.n_iter} iteration" + ("" if res.n_iter == 1 else "s")
            plot_trajectories(X, res, ax=ax, title=f"P = {P}: {its} ({state})\ninertia {res.inertia:.4g}")
            ax.set_aspect("equal", adjustable="datalim")
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        handles, names = axes[0, 0].get_legend_handles_labels()
        names = ["points (colour = cluster)" if n.startswith("data") else n for n in names]
        fig.legend(handles, names, loc="lower center", ncol=len(handles), frameon=False)
        fig.suptitle("sqdist.kmeans on five Gaussian blobs, initial centres from fixed rows of X", fontsize=14)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    figs.append((ctx.save_figure(fig, "task3_overview"),
                 "The clusterings for P = 2, 5, 8: points coloured by cluster, initial centres (crosses), converged "
                 "centres (stars) and the path of every centre over the iterations."))
    if ctx.config.kmeans_grid:  # the costliest figure (~2 s to draw): left out by --quick
        fig = plot_kmeans_grid(X, results, truth=y)
        figs.append((ctx.save_figure(fig, "task3_kmeans"),
                     "One row per P. Left: the data coloured by the blob they were drawn from, with the initial centres. "
                     "Right: the converged clustering, the converged centres and the path of every centre over the "
                     "iterations."))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for P, res in results.items():
        plot_inertia(res, ax=ax, label=f"P = {P}")
    ax.set_yscale("log")
    ax.set_title("inertia per iteration (log scale)")
    fig.tight_layout()
    figs.append((ctx.save_figure(fig, "task3_inertia"),
                 "Inertia (sum of squared distances to the nearest centre) after each iteration; it never increases."))
    return figs
