"""The report's other sections: the machine, Task 2 (broadcasting), Task 3 (k-means), extra comparisons."""

from __future__ import annotations

import html
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._bench_measure import err_vs_f64, median_time, reference_blocks
from ._machine import machine_info
from ._report_context import Context, Section, fmt, jsonable
from ._report_page import figure_html, figure_md, table_html, table_md
from .broadcast import EXERCISE_PAIRS, broadcast_table, explain_broadcast
from .clustering import kmeans
from .datasets import EXERCISE_INIT_INDICES, make_blobs
from .distances import sqdist
from .plotting import plot_inertia, plot_kmeans_grid, plot_trajectories

__all__ = ["section_extras", "section_machine", "section_task2", "section_task3"]


# ---- the machine -----------------------------------------------------------------------------


_MACHINE_LABELS = {
    "cpu_model": "CPU",
    "logical_cores": "logical cores",
    "usable_cores": "cores usable by this process",
    "torch_threads": "torch threads",
    "total_memory_bytes": "memory",
    "platform": "platform",
    "python": "Python",
    "torch": "torch",
    "numpy": "NumPy",
    "cuda_available": "CUDA available",
    "gpu_name": "GPU",
    "report_device": "device used by this report",
}


def section_machine(ctx: Context) -> Section:
    """The machine and software the report ran on (:func:`sqdist._machine.machine_info`)."""
    sid, title = "machine", "Machine"
    info = jsonable(machine_info())
    info["report_device"] = ctx.device
    ctx.results[sid] = info
    rows_h, rows_m = [], []
    for k, v in info.items():
        if isinstance(v, (dict, list)):
            continue
        label = _MACHINE_LABELS.get(k, k.replace("_", " "))
        if v is None:
            kind = "text"
        elif isinstance(v, bool):
            kind = "bool"
        elif k.endswith("bytes"):
            kind = "bytes"
        elif isinstance(v, int):
            kind = "int"
        else:
            kind = "text"
        rows_h.append([html.escape(label), ctx.num(f"{sid}.{k}", kind)])
        rows_m.append([label, ctx.md(f"{sid}.{k}", kind)])
    return Section(sid, title, table_html(["", ""], rows_h, "kv"), table_md(["", "value"], rows_m))


# ---- Task 2 ---------------------------------------------------------------------------------


def section_task2(ctx: Context) -> Section:
    """Task 2: the exercise's eight shape pairs, each with its aligned broadcasting table and verdict."""
    sid, title = "task2", "Task 2 \u2014 which shapes broadcast?"
    pairs = []
    for a, b in EXERCISE_PAIRS:
        t = broadcast_table(a, b)
        pairs.append({
            "a": list(a), "b": list(b), "compatible": bool(t["compatible"]),
            "result": None if t["result"] is None else list(t["result"]),
            "reason": t["error"],
            "axes": [{"axis": e["axis"], "sizes": list(e["sizes"]), "result": e["result"], "kind": e["kind"],
                      "verdict": e["verdict"]} for e in t["axes"]],
            "table": explain_broadcast(a, b),
        })
    ctx.results[sid] = {"pairs": pairs, "n_pairs": len(pairs), "n_compatible": sum(p["compatible"] for p in pairs)}

    summary_h, summary_m, cards_h, cards_m = [], [], [], []
    for i, p in enumerate(pairs):
        k = f"{sid}.pairs.{i}"
        res_h = ctx.num(f"{k}.result", "shape") if p["compatible"] else '<span class="bad">incompatible</span>'
        res_m = ctx.md(f"{k}.result", "shape") if p["compatible"] else "incompatible"
        summary_h.append([ctx.num(f"{k}.a", "shape"), ctx.num(f"{k}.b", "shape"), res_h])
        summary_m.append([ctx.md(f"{k}.a", "shape"), ctx.md(f"{k}.b", "shape"), res_m])
        # the aligned table: one column per axis counted from the right
        head = "<th></th>" + "".join(f"<th>axis {ctx.num(f'{k}.axes.{j}.axis', 'int')}</th>" for j in range(len(p["axes"])))
        body_rows = []
        for o, name in enumerate(("first", "second")):
            tds = "".join(
                f'<td class="{_axis_class(e, o)}">'
                f'{ctx.num(f"{k}.axes.{j}.sizes.{o}", "int") if e["sizes"][o] is not None else _MISSING}</td>'
                for j, e in enumerate(p["axes"])
            )
            body_rows.append(f"<tr><th>{name}<br><small>{ctx.num(f'{k}.{chr(97 + o)}', 'shape')}</small></th>{tds}</tr>")
        tds = "".join(
            f'<td class="{e["kind"]}">{ctx.num(f"{k}.axes.{j}.result", "int") if e["result"] is not None else "?"}</td>'
            for j, e in enumerate(p["axes"])
        )
        body_rows.append(f"<tr class=\"res\"><th>result</th>{tds}</tr>")
        tds = "".join(f'<td class="{e["kind"]} why">{ctx.num(f"{k}.axes.{j}.verdict", "text")}</td>'
                      for j, e in enumerate(p["axes"]))
        body_rows.append(f"<tr><th>verdict</th>{tds}</tr>")
        table = f'<table class="bc"><thead><tr>{head}</tr></thead><tbody>{"".join(body_rows)}</tbody></table>'
        if p["compatible"]:
            verdict_h = f'<p class="verdict ok">compatible \u2192 result shape {ctx.num(f"{k}.result", "shape")}</p>'
            verdict_m = f"compatible → result shape {fmt(p['result'], 'shape')}"
        else:
            verdict_h = f'<p class="verdict bad">incompatible: <span class="reason">{html.escape(p["reason"])}</span></p>'
            verdict_m = f"incompatible: {p['reason']}"
        cards_h.append(
            f'<div class="card"><h4>{ctx.num(f"{k}.a", "shape")} with {ctx.num(f"{k}.b", "shape")}</h4>'
            f"{table}{verdict_h}</div>"
        )
        cards_m.append(f"**{fmt(p['a'], 'shape')} with {fmt(p['b'], 'shape')}**\n\n```\n{p['table']}\n```\n\n{verdict_m}\n")
    body = (
        "<p>Broadcasting aligns the shapes on the <em>right</em>; on each axis the sizes must be equal or one "
        "of them 1 (a missing axis, \u2013, counts as 1) and the result takes the larger size; any other pair "
        f"of sizes is a conflict. {ctx.num(f'{sid}.n_compatible', 'int')} of the {ctx.num(f'{sid}.n_pairs', 'int')} "
        "pairs of the exercise are compatible (<code>sqdist.broadcast_table</code>, checked against NumPy and "
        "torch in the test suite; <code>sqdist broadcast SHAPE SHAPE</code> prints the same tables).</p>"
        + table_html(["first shape", "second shape", "result"], summary_h, "num")
        + '<div class="cards">' + "".join(cards_h) + "</div>"
    )
    md = (
        "Shapes are aligned on the right; each axis needs equal sizes or a 1 (a missing axis counts as 1). "
        f"{ctx.md(f'{sid}.n_compatible', 'int')} of the {ctx.md(f'{sid}.n_pairs', 'int')} pairs are compatible.\n\n"
        + table_md(["first shape", "second shape", "result"], summary_m)
        + "\n"
        + "\n".join(cards_m)
    )
    return Section(sid, title, body, md)


_MISSING = "\u2013"  # a missing axis in the broadcasting table


def _axis_class(entry: dict, operand: int) -> str:
    """CSS class of one operand's cell: stretched from 1, conflicting, or plain."""
    if entry["kind"] == "conflict":
        return "conflict"
    size = entry["sizes"][operand]
    if entry["kind"] == "stretch" and (size is None or size == 1):
        return "stretch"
    return ""


# ---- Task 3 ---------------------------------------------------------------------------------


def section_task3(ctx: Context) -> Section:
    """Task 3: k-means on the five blobs for each P, from fixed initial rows of X, with the figures."""
    sid, title = "task3", "Task 3 \u2014 k-means on five blobs"
    X, y = make_blobs()  # the exercise's data: 5 Gaussian blobs x 50 points in 2-D, and their blob ids
    cfg = ctx.config
    Xt = torch.as_tensor(X, dtype=torch.float64, device=ctx.device)  # (n, 2)
    runs, results = [], {}
    for P in cfg.kmeans_p:
        idx = [int(i) for i in EXERCISE_INIT_INDICES[P]]
        t0 = time.perf_counter()
        res = kmeans(Xt, P, init=idx, max_iter=cfg.kmeans_max_iter, tol=cfg.kmeans_tol, tol_mode="absolute")
        elapsed = time.perf_counter() - t0
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
            "sizes": np.bincount(jsonable(res.labels), minlength=P).tolist(),
            "n_relocations": len(relocations),
            "relocations": relocations,
            "time_s": elapsed,
            "history": [{k: h[k] for k in ("iteration", "inertia", "max_shift", "sizes", "relocated", "time")} for h in hist],
        })
        results[P] = res
    ctx.results[sid] = {
        "n_points": int(X.shape[0]),
        "n_blobs": int(len(np.unique(y))),
        "max_iter": cfg.kmeans_max_iter,
        "tol": cfg.kmeans_tol,
        "runs": runs,
    }
    figs = _task3_figures(ctx, X, y, results)

    header = ["P", "initial rows of X", "iterations", "converged", "inertia", "cluster sizes", "relocations", "time"]
    cells = [("P", "int"), ("init_indices", "list"), ("n_iter", "int"), ("converged", "bool"),
             ("inertia", "float"), ("sizes", "list"), ("n_relocations", "int"), ("time_s", "time")]
    rows_h = [[ctx.num(f"{sid}.runs.{i}.{c}", kd) for c, kd in cells] for i in range(len(runs))]
    rows_m = [[ctx.md(f"{sid}.runs.{i}.{c}", kd) for c, kd in cells] for i in range(len(runs))]

    details_h, details_m = [], []
    for i, r in enumerate(runs):
        k = f"{sid}.runs.{i}"
        hdr = ["initial row of X", "initial centre", "converged centre", "points"]
        rh = [[ctx.num(f"{k}.init_indices.{j}", "int"), ctx.num(f"{k}.init_centers.{j}", "point"),
               ctx.num(f"{k}.centers.{j}", "point"), ctx.num(f"{k}.sizes.{j}", "int")] for j in range(r["P"])]
        rm = [[ctx.md(f"{k}.init_indices.{j}", "int"), ctx.md(f"{k}.init_centers.{j}", "point"),
               ctx.md(f"{k}.centers.{j}", "point"), ctx.md(f"{k}.sizes.{j}", "int")] for j in range(r["P"])]
        hdr2 = ["iteration", "inertia", "largest centre move", "cluster sizes", "relocated clusters"]
        ih = [[ctx.num(f"{k}.history.{t}.iteration", "int"), ctx.num(f"{k}.history.{t}.inertia", "float"),
               ctx.num(f"{k}.history.{t}.max_shift", "sci"), ctx.num(f"{k}.history.{t}.sizes", "list"),
               ctx.num(f"{k}.history.{t}.relocated", "list") if r["history"][t]["relocated"] else ""]
              for t in range(len(r["history"]))]
        im = [[ctx.md(f"{k}.history.{t}.iteration", "int"), ctx.md(f"{k}.history.{t}.inertia", "float"),
               ctx.md(f"{k}.history.{t}.max_shift", "sci"), ctx.md(f"{k}.history.{t}.sizes", "list"),
               ctx.md(f"{k}.history.{t}.relocated", "list")] for t in range(len(r["history"]))]
        details_h.append(
            f"<details><summary>P = {r['P']}: centres and iterations</summary>"
            f"{table_html(hdr, rh, 'num')}{table_html(hdr2, ih, 'num')}</details>"
        )
        details_m.append(f"P = {r['P']}:\n\n" + table_md(hdr, rm) + "\n" + table_md(hdr2, im))

    k = sid
    intro_h = (
        f"<p>{ctx.num(f'{k}.n_points', 'int')} points drawn from {ctx.num(f'{k}.n_blobs', 'int')} Gaussian blobs "
        "(<code>sqdist.datasets.make_blobs()</code>), clustered by <code>sqdist.kmeans</code> with the initial "
        "centres taken from fixed rows of X (<code>sqdist.datasets.EXERCISE_INIT_INDICES</code>), so anyone can "
        f"reproduce the run. At most {ctx.num(f'{k}.max_iter', 'int')} iterations; the run stops when every "
        f"centre moves less than {ctx.num(f'{k}.tol', 'sci')} (Euclidean distance, data units) or the "
        "assignment no longer changes. Each iteration assigns every point to its nearest centre (argmin over "
        "the centre axis of the distance matrix) and moves each centre to the mean of its points; a centre "
        "left without points is moved to the point farthest from its centre (a <em>relocation</em>).</p>"
    )
    body = intro_h + table_html(header, rows_h, "num") + "".join(details_h)
    md = (
        f"{ctx.md(f'{k}.n_points', 'int')} points from {ctx.md(f'{k}.n_blobs', 'int')} blobs, initial centres from "
        f"fixed rows of X, at most {ctx.md(f'{k}.max_iter', 'int')} iterations, tol {ctx.md(f'{k}.tol', 'sci')}.\n\n"
        + table_md(header, rows_m) + "\n" + "\n".join(details_m) + "\n"
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
    fig = plot_kmeans_grid(X, results, truth=y)
    figs.append((ctx.save_figure(fig, "task3_kmeans"),
                 "One row per P. Left: the data coloured by the blob they were drawn from, with the initial centres. "
                 "Right: the converged clustering, the converged centres and the path of every centre over the iterations."))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for P, res in results.items():
        plot_inertia(res, ax=ax, label=f"P = {P}")
    ax.set_yscale("log")
    ax.set_title("inertia per iteration (log scale)")
    fig.tight_layout()
    figs.append((ctx.save_figure(fig, "task3_inertia"),
                 "Inertia (sum of squared distances to the nearest centre) after each iteration; it never increases."))
    return figs


# ---- extra comparisons ------------------------------------------------------------------------


def section_extras(ctx: Context) -> Section:
    """Extra comparisons: SciPy's and scikit-learn's distances and scikit-learn's k-means, when installed."""
    sid, title = "extras", "Extra comparisons (scikit-learn / SciPy, when installed)"
    N, P, D = ctx.config.extra_size
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    T = rng.normal(size=(P, D)).astype(np.float32)
    # the float64 reference of `sqdist bench` (centred, in row blocks: no (N, P, D) temporary), computed once
    X64, T64 = torch.from_numpy(X).double(), torch.from_numpy(T).double()
    ref = torch.cat([r for _, r in reference_blocks(X64, T64, max(1, 2**22 // max(1, P)))])  # (N, P)

    def err(d: Any) -> float:
        return err_vs_f64(torch.as_tensor(np.asarray(d)), X64, T64, ref64=ref)

    cands: list[tuple[str, str, Callable[[], Any]]] = [
        ("sqdist", "sqdist.sqdist (gemm, the reference row)", lambda: sqdist(X, T))
    ]
    try:
        from scipy.spatial.distance import cdist

        cands.append(("scipy", "SciPy cdist(metric='sqeuclidean')", lambda: cdist(X, T, "sqeuclidean")))
    except ImportError:
        pass
    try:
        from sklearn.metrics.pairwise import euclidean_distances

        cands.append(
            ("sklearn", "scikit-learn euclidean_distances(squared=True)", lambda: euclidean_distances(X, T, squared=True))
        )
    except ImportError:
        pass
    rows = []
    for lib, label, fn in cands:
        d = np.asarray(fn())
        # timed like Task 1's rows (torch.utils.benchmark, median), so the page compares like with like
        t = median_time(fn, torch.get_num_threads(), ctx.config.bench_min_run_time)
        rows.append({"library": lib, "label": label, "time_s": t, "max_rel_err_vs_f64": err(d)})
    base = rows[0]["time_s"]
    for r in rows:
        r["time_vs_sqdist"] = r["time_s"] / base
    result: dict[str, Any] = {"size": [N, P, D], "distances": rows, "kmeans": []}

    km_rows = _extra_kmeans(ctx)
    result["kmeans"] = km_rows
    ctx.results[sid] = result
    k = sid
    hdr = ["", "time", "time / sqdist", "max rel. error vs float64"]
    rh, rm = [], []
    for i, r in enumerate(rows):
        kk = f"{k}.distances.{i}"
        tag_h = "" if r["library"] == "sqdist" else '<span class="extra">extra</span> '
        rh.append([tag_h + html.escape(r["label"]), ctx.num(f"{kk}.time_s", "time"), ctx.num(f"{kk}.time_vs_sqdist", "ratio"),
                   ctx.num(f"{kk}.max_rel_err_vs_f64", "sci")])
        rm.append([("" if r["library"] == "sqdist" else "*extra* ") + r["label"], ctx.md(f"{kk}.time_s", "time"),
                   ctx.md(f"{kk}.time_vs_sqdist", "ratio"), ctx.md(f"{kk}.max_rel_err_vs_f64", "sci")])
    body = (
        "<p>These rows come from other libraries, not from sqdist, and are shown for comparison only "
        "(median of torch.utils.benchmark runs in this process, as Task 1; float32 inputs, CPU). Distances for "
        f"N = {ctx.num(f'{k}.size.0', 'int')}, P = {ctx.num(f'{k}.size.1', 'int')}, D = {ctx.num(f'{k}.size.2', 'int')}:</p>"
        + table_html(hdr, rh, "num extra-table")
    )
    missing = [name for name, lib in (("SciPy", "scipy"), ("scikit-learn", "sklearn")) if lib not in {r["library"] for r in rows}]
    if missing:
        note = (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed, so "
                f"{'its' if len(missing) == 1 else 'their'} rows are missing: pip install 'sqdist[bench]' to add them.")
        body += f'<p class="note">{html.escape(note)}</p>'
    md = (
        f"Rows marked *extra* come from other libraries (comparison only). Distances for N = {ctx.md(f'{k}.size.0', 'int')}, "
        f"P = {ctx.md(f'{k}.size.1', 'int')}, D = {ctx.md(f'{k}.size.2', 'int')}:\n\n" + table_md(hdr, rm)
    )
    if missing:
        md += "\n" + note + "\n"
    if km_rows:
        hdr2 = ["P", "scikit-learn iterations", "sqdist iterations", "scikit-learn inertia", "sqdist inertia", "labels identical"]
        rh2, rm2 = [], []
        for i in range(len(km_rows)):
            kk = f"{k}.kmeans.{i}"
            cells = [("P", "int"), ("n_iter", "int"), ("sqdist_n_iter", "int"), ("inertia", "float"),
                     ("sqdist_inertia", "float"), ("labels_equal", "bool")]
            rh2.append([ctx.num(f"{kk}.{c}", kd) for c, kd in cells])
            rm2.append([ctx.md(f"{kk}.{c}", kd) for c, kd in cells])
        body += (
            '<p><span class="extra">extra</span> scikit-learn <code>KMeans(algorithm="lloyd", n_init=1)</code> '
            "started from the same initial centres as Task 3 (both count the pass that finds the labels "
            "unchanged, as the exercise's rule does):</p>" + table_html(hdr2, rh2, "num extra-table")
        )
        md += "\n*extra* scikit-learn KMeans(algorithm='lloyd') from the same initial centres:\n\n" + table_md(hdr2, rm2)
    return Section(sid, title, body, md)


def _extra_kmeans(ctx: Context) -> list[dict]:
    """scikit-learn's Lloyd k-means from Task 3's initial centres, against sqdist's runs (empty without sklearn)."""
    task3 = ctx.results.get("task3", {})
    if not task3.get("runs"):  # Task 3 not run (a reduced section list)
        return []
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        return []

    X, _ = make_blobs()
    X = X.astype(np.float64)
    rows = []
    for r in task3["runs"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            km = KMeans(r["P"], init=np.asarray(r["init_centers"], dtype=np.float64), n_init=1, algorithm="lloyd",
                        max_iter=ctx.config.kmeans_max_iter, tol=0.0).fit(X)
        ours = np.argmin(((X[:, None, :] - np.asarray(r["centers"])[None]) ** 2).sum(-1), axis=1)
        rows.append({"P": r["P"], "n_iter": int(km.n_iter_), "inertia": float(km.inertia_),
                     "sqdist_inertia": r["inertia"], "sqdist_n_iter": r["n_iter"],
                     "labels_equal": bool(np.array_equal(km.labels_, ours))})
    return rows
