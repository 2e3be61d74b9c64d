"""The report's Task 1 sections: the distance matrix timed, measured and validated; the RBF kernel heat map."""

from __future__ import annotations

import html
import inspect
import math
from typing import Any

import numpy as np
import torch

from ._report_context import Context, Section, jsonable
from ._report_page import code_html, code_md, figure_html, figure_md, table_html, table_md
from .bench import APPROXIMATE, EXERCISE_FUNCTIONS, run_bench
from .datasets import make_blobs
from .distances import sqdist
from .kernels import rbf

__all__ = ["section_rbf", "section_task1"]


# --------------------------------------------------------------------------------------------
# the distance matrix: times, memory, validation
# --------------------------------------------------------------------------------------------


def _run_bench(ctx: Context) -> dict:
    """Run the Task 1 benchmark (:func:`sqdist.bench.run_bench`) and return its JSON-ready dict."""
    cfg = ctx.config
    p0 = ctx.progress.done
    share = ctx.share
    per_size = 5 + (4 if ctx.device == "cuda" else 0)  # loops, numpy, torch, expansion, sqdist (+ GPU rows)
    total = max(1, len(cfg.bench_sizes) * per_size)
    seen = [0]

    def say(msg: str) -> None:  # called before each measurement
        ctx.progress.set(p0 + share * min(seen[0], total) / total, "Task 1: " + msg)
        seen[0] += 1

    res = run_bench(list(cfg.bench_sizes), device=ctx.device, progress=say, min_run_time=cfg.bench_min_run_time,
                    loops_max_pairs=cfg.loops_max_pairs)
    return jsonable(res.to_dict())


def _listings(rows: list[dict]) -> list[dict]:
    """The code behind every method that ran: the exercise function's source, or the ``sqdist.sqdist`` call."""
    out: list[dict] = []
    by_fn: dict[str, dict] = {}
    for r in rows:
        method = r["method"].removesuffix("+copies")
        if method in EXERCISE_FUNCTIONS:
            fn = EXERCISE_FUNCTIONS[method]
            name = f"sqdist.exercise.{fn.__name__}"
            source = inspect.getsource(fn)
        else:  # "sqdist": the library call, labelled by the engine it dispatched to
            name = "sqdist.sqdist"
            source = (
                "import sqdist\n\n"
                "d = sqdist.sqdist(X, T)  # (N, P); default settings: the engine is chosen from the device, "
                "dtype and D\n"
            )
        entry = by_fn.get(name)
        if entry is None:
            entry = by_fn[name] = {"function": name, "labels": [], "source": source}
            out.append(entry)
        if r["label"] not in entry["labels"]:
            entry["labels"].append(r["label"])
    return out


def section_task1(ctx: Context) -> Section:
    """Task 1: every way of computing the distance matrix, timed, measured and validated (``sqdist.bench``)."""
    sid, title = "task1", "Task 1 \u2014 the distance matrix four ways"
    bench = _run_bench(ctx)
    rows = bench["rows"]
    itemsize = 8 if bench.get("dtype") == "float64" else 4
    for r in rows:
        r["naive_intermediate_bytes"] = r["N"] * r["P"] * r["D"] * itemsize
        r["output_bytes"] = r["N"] * r["P"] * itemsize
    label_of = {(r["N"], r["P"], r["D"], r["method"], r["device"]): r["label"] for r in rows}
    ref_label = {r["method"]: r["label"] for r in rows if r["method"] in ("loops", "numpy")}
    # direct comparisons with the loops / NumPy results, summarised per method (label) and reference
    summary: dict[tuple, dict] = {}
    for c in bench.get("checks", []):
        lab = label_of[(c["N"], c["P"], c["D"], c["method"], c["device"])]
        key = (lab, c["reference"])
        e = summary.setdefault(key, {"label": lab, "method": c["method"], "device": c["device"],
                                     "reference": ref_label.get(c["reference"], c["reference"]),
                                     "exact": c["method"] not in APPROXIMATE,
                                     "n_sizes": 0, "max_rel_diff": 0.0, "passed": True})
        e["n_sizes"] += 1
        e["max_rel_diff"] = max(e["max_rel_diff"], c["max_rel_diff"] if c["max_rel_diff"] is not None else math.inf)
        e["passed"] = e["passed"] and bool(c["passed"])
    errs = [r["max_rel_err_vs_f64"] for r in rows if r["method"] not in APPROXIMATE]
    ctx.results[sid] = {
        "sizes": [list(x) for x in ctx.config.bench_sizes],
        "dtype": bench.get("dtype", "float32"),
        "threads": bench.get("threads"),
        "tolerance": bench.get("tolerance"),
        "min_run_time_s": ctx.config.bench_min_run_time,
        "rows": rows,
        "agreement": list(summary.values()),
        "validation": {
            "passed": bool(bench.get("validation_passed")),
            "verdict": bench.get("verdict", ""),
            "max_rel_err_vs_f64": None if any(e is None for e in errs) else max(errs, default=0.0),
        },
        "code": _listings(rows),
        "notes": bench.get("notes", []),
    }
    fig_name = ctx.save_figure(_figure_timing(rows, itemsize), "task1_time_memory")

    header = ["method (what runs)", "N", "P", "D", "time", "speed-up vs loops", "GFLOP/s", "peak memory",
              "N\u00b7P\u00b7D intermediate", "max rel. error vs float64", "within tolerance"]
    cells = [("N", "int"), ("P", "int"), ("D", "int"), ("time_s", "time"), ("speedup_vs_loops", "ratio"),
             ("gflops", "float"), ("peak_mem_bytes", "bytes"), ("naive_intermediate_bytes", "bytes"),
             ("max_rel_err_vs_f64", "sci"), ("validated", "bool")]
    rows_h, rows_m = [], []
    for i, r in enumerate(rows):
        k = f"{sid}.rows.{i}"
        star_h = ' <span class="mark" title="extrapolated from a subset of the matrix">*</span>' if r.get("extrapolated") else ""
        star_m = " \\*" if r.get("extrapolated") else ""
        rh, rm = [html.escape(r["label"])], [r["label"]]
        for name, kind in cells:
            rh.append(ctx.num(f"{k}.{name}", kind) + (star_h if name == "time_s" else ""))
            rm.append(ctx.md(f"{k}.{name}", kind) + (star_m if name == "time_s" else ""))
        rows_h.append(rh)
        rows_m.append(rm)
    # compact views: one row per size, one column per method
    sizes = list(dict.fromkeys((r["N"], r["P"], r["D"]) for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    where = {((r["N"], r["P"], r["D"]), r["label"]): i for i, r in enumerate(rows)}
    time_h, time_m, mem_h, mem_m = [], [], [], []
    for size in sizes:
        first = where[(size, next(lab for lab in labels if (size, lab) in where))]
        size_h = " \u00d7 ".join(ctx.num(f"{sid}.rows.{first}.{d}", "int") for d in ("N", "P", "D"))
        size_m = " × ".join(ctx.md(f"{sid}.rows.{first}.{d}", "int") for d in ("N", "P", "D"))
        th, tm, mh, mm = [size_h], [size_m], [size_h], [size_m]
        for lab in labels:
            i = where.get((size, lab))
            if i is None:
                th.append("")
                tm.append("")
                mh.append("")
                mm.append("")
                continue
            k = f"{sid}.rows.{i}"
            ext = rows[i].get("extrapolated")
            th.append(ctx.num(f"{k}.time_s", "time") + (' <span class="mark">*</span>' if ext else "")
                      + f'<br><small>{ctx.num(f"{k}.speedup_vs_loops", "ratio")}</small>')
            tm.append(ctx.md(f"{k}.time_s", "time") + (" \\*" if ext else "") + f" ({ctx.md(f'{k}.speedup_vs_loops', 'ratio')})")
            mh.append(ctx.num(f"{k}.peak_mem_bytes", "bytes") + (' <span class="mark">*</span>' if ext else ""))
            mm.append(ctx.md(f"{k}.peak_mem_bytes", "bytes") + (" \\*" if ext else ""))
        k = f"{sid}.rows.{first}"
        mh += [ctx.num(f"{k}.naive_intermediate_bytes", "bytes"), ctx.num(f"{k}.output_bytes", "bytes")]
        mm += [ctx.md(f"{k}.naive_intermediate_bytes", "bytes"), ctx.md(f"{k}.output_bytes", "bytes")]
        time_h.append(th)
        time_m.append(tm)
        mem_h.append(mh)
        mem_m.append(mm)
    time_hdr = ["N \u00d7 P \u00d7 D"] + labels
    mem_hdr = ["N \u00d7 P \u00d7 D"] + labels + [
        f"N\u00b7P\u00b7D \u00d7 {itemsize} B",
        f"N\u00b7P \u00d7 {itemsize} B (output)",
    ]
    time_table_h = table_html([html.escape(h) for h in time_hdr], time_h, "num pivot", row_headers=True)
    mem_table_h = table_html([html.escape(h) for h in mem_hdr], mem_h, "num pivot", row_headers=True)

    agree_hdr = ["method (what runs)", "compared with", "sizes", "max relative difference", "agree"]
    agree_h, agree_m = [], []
    for i, a in enumerate(ctx.results[sid]["agreement"]):
        k = f"{sid}.agreement.{i}"
        name = a["label"] + ("" if a["exact"] else " (approximate: shown, not required)")
        agree_h.append([html.escape(name), html.escape(a["reference"]),
                        ctx.num(f"{k}.n_sizes", "int"), ctx.num(f"{k}.max_rel_diff", "sci"), ctx.num(f"{k}.passed", "bool")])
        agree_m.append([name, a["reference"], ctx.md(f"{k}.n_sizes", "int"),
                        ctx.md(f"{k}.max_rel_diff", "sci"), ctx.md(f"{k}.passed", "bool")])

    v = ctx.results[sid]["validation"]
    ok = v["passed"]
    compared = list(dict.fromkeys(a["label"] for a in ctx.results[sid]["agreement"] if a["exact"]))
    refs = list(dict.fromkeys(a["reference"] for a in ctx.results[sid]["agreement"]))
    approx = [lab for lab in labels if any(r["label"] == lab and r["method"] in APPROXIMATE for r in rows)]
    what = (f"{', '.join(compared)} {'equals' if len(compared) == 1 else 'equal'} the {' / '.join(refs)} results "
            "on the same data" if compared and refs else "")
    approx_txt = (f" {', '.join(approx)} is not exact by construction (the expansion loses digits to cancellation): "
                  "its error is shown, not required." if approx else "")
    verdict_h = (
        f'<p class="verdict {"ok" if ok else "bad"}">Validation {"passed" if ok else "FAILED"}: every exact method within '
        f'{ctx.num(f"{sid}.tolerance", "sci")} relative of a float64 reference (largest error '
        f'{ctx.num(f"{sid}.validation.max_rel_err_vs_f64", "sci")})' + (f", and {html.escape(what)}" if what else "")
        + f".{html.escape(approx_txt)}</p>"
    )
    verdict_m = (
        f"**Validation {'passed' if ok else 'FAILED'}:** every exact method within {ctx.md(f'{sid}.tolerance', 'sci')} "
        f"relative of a float64 reference (largest error {ctx.md(f'{sid}.validation.max_rel_err_vs_f64', 'sci')})"
        + (f", and {what}" if what else "") + f".{approx_txt}\n\n"
    )
    why = (
        "Why the memory differs: NumPy and PyTorch broadcasting <code>X[:, None, :] - T[None, :, :]</code> materialise "
        "the difference of every point with every prototype in every feature, an N\u00d7P\u00d7D array (and its "
        "square), before summing over D: their peak follows the N\u00b7P\u00b7D column. The expansion "
        "<code>\u2016x\u2016\u00b2 + \u2016t\u2016\u00b2 \u2212 2x\u00b7t</code> never forms the differences: one matrix "
        "product writes the N\u00d7P result directly, plus two vectors of norms, so it needs about N\u00b7P memory and "
        "the sum over D happens inside a fast matrix multiply \u2014 at the price of cancellation (its error column). "
        "sqdist computes every entry exactly into the N\u00d7P output (its compiled kernel), or in row blocks that fit "
        "a working-memory budget of 256 MiB (its PyTorch path)."
    )
    caption = ("Left: time against problem size N\u00b7P\u00b7D (log-log; hollow circles: extrapolated). "
               "Right: peak memory, with the N\u00b7P\u00b7D and N\u00b7P reference lines.")
    intro_h = (
        "<p>The exercise's matrix d<sub>ij</sub> = \u2016X[i] \u2212 T[j]\u2016\u00b2 of standard-normal "
        f"{html.escape(ctx.results[sid]['dtype'])} data, computed each way (<code>sqdist.bench</code>) with "
        f"{ctx.num(f'{sid}.threads', 'int')} threads. Every column is named by what runs: the exercise's solutions "
        "(<code>sqdist.exercise</code>, their code is below) in plain Python, NumPy and PyTorch, and sqdist's own "
        "<code>sqdist.sqdist</code>, named by the engine it dispatched to. Every method is called once before it is "
        "timed and measured (warm-up). Times are medians of repeated runs; a "
        '<span class="mark">*</span> marks a time scaled up from a subset of the matrix (the loops cost the same '
        "per pair, and are too slow to run whole). GFLOP/s counts 3\u00b7N\u00b7P\u00b7D operations for every "
        "method. Peak memory is the allocator's growth during one call, output included.</p>"
    )
    intro_m = (
        f"d_ij = ||X[i] - T[j]||² of standard-normal {ctx.results[sid]['dtype']} data, "
        f"{ctx.md(f'{sid}.threads', 'int')} threads; columns named by what runs (the exercise's code is below); "
        "every method warmed up before timing; \\* = scaled up from a subset of the matrix. "
        "GFLOP/s counts 3·N·P·D operations; peak memory is the allocator's growth during one call.\n\n"
    )
    code_h, code_m = [], []
    for c in ctx.results[sid]["code"]:
        cap = f"{html.escape(' and '.join(c['labels']))}: <code>{html.escape(c['function'])}</code>"
        code_h.append(code_html(c["source"], cap))
        code_m.append(code_md(c["source"], f"{' and '.join(c['labels'])}: `{c['function']}`"))
    notes = "".join(f"<p class=\"note\">{html.escape(n)}</p>" for n in ctx.results[sid]["notes"])
    body = (
        intro_h
        + "<h3>Time (speed-up over the Python loops below it)</h3>" + time_table_h
        + verdict_h + table_html(agree_hdr, agree_h, "num") + notes
        + "<h3>The code that was timed</h3>" + '<div class="side">' + "".join(code_h) + "</div>"
        + figure_html(fig_name, caption)
        + "<h3>Peak memory</h3>" + mem_table_h
        + '<p class="note"><span class="mark">*</span> measured on the subset of the matrix that was timed.</p>'
        + f"<p>{why}</p>"
        + "<details><summary>All measurements (time, GFLOP/s, memory, error of every method and size)</summary>"
        + table_html(header, rows_h, "num", row_headers=True) + "</details>"
    )
    md = (
        intro_m
        + "### Time (speed-up over the Python loops)\n\n" + table_md(time_hdr, time_m) + "\n"
        + verdict_m + table_md(agree_hdr, agree_m) + "\n"
        + "".join(f"{n}\n\n" for n in ctx.results[sid]["notes"])
        + "### The code that was timed\n\n" + "\n".join(code_m) + "\n"
        + figure_md(fig_name, caption) + "\n"
        + "### Peak memory\n\n" + table_md(mem_hdr, mem_m) + "\n\\* measured on the subset of the matrix that was timed.\n\n"
        + html.unescape(why.replace("<code>", "`").replace("</code>", "`")) + "\n\n"
        + "### All measurements\n\n" + table_md(header, rows_m)
    )
    return Section(sid, title, body, md)


def _figure_timing(rows: list[dict], itemsize: int = 4) -> Any:
    """Time (left) and peak memory (right) of every method against N·P·D, log-log."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.6))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    markers = "osD^vP*X"
    for i, lab in enumerate(labels):
        rs = sorted((r for r in rows if r["label"] == lab), key=lambda r: r["N"] * r["P"] * r["D"])
        x = [r["N"] * r["P"] * r["D"] for r in rs]
        t = [r["time_s"] for r in rs]
        line = ax_t.loglog(x, t, marker=markers[i % len(markers)], label=lab)[0]
        ext = [(xx, tt) for xx, tt, r in zip(x, t, rs) if r.get("extrapolated")]
        if ext:
            ax_t.loglog(*zip(*ext), linestyle="none", marker="o", markersize=12, markerfacecolor="none",
                        markeredgecolor=line.get_color())
        # memory of a row timed on a subset describes the subset: left out of the plot
        mem = [(xx, r["peak_mem_bytes"] / 2**20) for xx, r in zip(x, rs) if r.get("peak_mem_bytes") and not r.get("extrapolated")]
        if mem:
            hollow = i % 2 == 1  # identical curves (NumPy and torch broadcast) stay both visible
            ax_m.loglog(*zip(*mem), marker=markers[i % len(markers)], label=lab, color=line.get_color(),
                        markersize=10 if hollow else 6, markerfacecolor="none" if hollow else line.get_color(),
                        linestyle="--" if hollow else "-")
    xs = sorted({r["N"] * r["P"] * r["D"] for r in rows})
    npd = sorted({(r["N"] * r["P"] * r["D"], r["N"] * r["P"]) for r in rows})
    ax_m.loglog([a for a, _ in npd], [a * itemsize / 2**20 for a, _ in npd], "k--", lw=1,
                label="N\u00b7P\u00b7D values (one-shot broadcast)", zorder=1)
    ax_m.loglog([a for a, _ in npd], [b * itemsize / 2**20 for _, b in npd], "k:", lw=1.3, label="N\u00b7P values (the output)")
    if xs:
        ax_t.set_xlim(xs[0] / 1.5, xs[-1] * 1.5)
    from matplotlib.ticker import NullFormatter

    for ax in (ax_t, ax_m):
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax_t.set_xlabel("problem size N\u00b7P\u00b7D")
    ax_t.set_ylabel("time [s]")
    ax_t.set_title("Time (hollow circle: extrapolated)")
    ax_t.grid(True, which="both", alpha=0.3)
    # legends below the axes: inside, they hide the curves
    ax_t.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    ax_m.set_xlabel("problem size N\u00b7P\u00b7D")
    ax_m.set_ylabel("peak memory [MiB]")
    ax_m.set_title("Peak memory (rows timed on a subset left out)")
    ax_m.grid(True, which="both", alpha=0.3)
    ax_m.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# the RBF kernel
# --------------------------------------------------------------------------------------------


def section_rbf(ctx: Context) -> Section:
    """Task 1: the RBF kernel of the blob data with itself, as a heat map."""
    sid, title = "rbf", "Task 1 \u2014 the RBF kernel on the distances"
    X, y = make_blobs()  # the exercise's data: 5 Gaussian blobs x 50 points in 2-D, and their blob ids
    order = np.argsort(y, kind="stable")
    Xs = torch.as_tensor(X[order], dtype=torch.float32, device=ctx.device)
    d = sqdist(Xs, Xs)  # (n, n)
    gamma = float(torch.quantile(d.flatten().double(), 0.1).item())
    K = rbf(Xs, Xs, gamma).cpu().numpy()  # (n, n)
    ys = y[order]
    same = ys[:, None] == ys[None, :]  # (n, n)
    ctx.results[sid] = {
        "n": int(K.shape[0]),
        "gamma": gamma,
        "gamma_rule": "10th percentile of the squared distances",
        "diag_min": float(np.diag(K).min()),
        "min": float(K.min()),
        "mean_same_blob": float(K[same].mean()),
        "mean_other_blob": float(K[~same].mean()),
    }
    fig_name = ctx.save_figure(_figure_rbf(K, ys, gamma), "task1_rbf_heatmap")
    k = sid
    body = (
        f"<p>The kernel \u03c6(x<sub>i</sub>, t<sub>j</sub>) = "
        f"exp(\u2212\u2016x<sub>i</sub> \u2212 t<sub>j</sub>\u2016\u00b2/\u03b3) "
        f"(the exercise's convention; <code>sqdist.rbf</code>) of the {ctx.num(f'{k}.n', 'int')} blob points with themselves, "
        f"points sorted by blob, \u03b3 = {ctx.num(f'{k}.gamma', 'float')} (the 10th percentile of the squared distances). "
        f"The diagonal is exactly {ctx.num(f'{k}.diag_min', 'float')}; the mean kernel value is "
        f"{ctx.num(f'{k}.mean_same_blob', 'float')} within a blob and {ctx.num(f'{k}.mean_other_blob', 'sci')} "
        f"between blobs, hence the five bright diagonal blocks.</p>"
        + figure_html(fig_name, "RBF kernel of the blob data with itself (points sorted by blob)")
    )
    md = (
        f"exp(-||x_i - t_j||²/γ) of the {ctx.md(f'{k}.n', 'int')} blob points with themselves, sorted by blob, "
        f"γ = {ctx.md(f'{k}.gamma', 'float')} (10th percentile of the squared distances). Diagonal "
        f"{ctx.md(f'{k}.diag_min', 'float')}; mean within a blob {ctx.md(f'{k}.mean_same_blob', 'float')}, "
        f"between blobs {ctx.md(f'{k}.mean_other_blob', 'sci')}.\n\n"
        + figure_md(fig_name, "RBF kernel of the blob data with itself (points sorted by blob)")
    )
    return Section(sid, title, body, md)


def _figure_rbf(K: np.ndarray, ys: np.ndarray, gamma: float) -> Any:
    """Heat map of the kernel matrix ``K`` (points sorted by blob ``ys``), blob boundaries drawn."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    im = ax.imshow(K, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="\u03c6 = exp(\u2212d/\u03b3)")
    bounds = np.flatnonzero(np.diff(ys)) + 0.5
    for b in bounds:
        ax.axhline(b, color="white", lw=0.6, alpha=0.6)
        ax.axvline(b, color="white", lw=0.6, alpha=0.6)
    ax.set_title(f"RBF kernel, \u03b3 = {gamma:.3g}")
    ax.set_xlabel("point j (sorted by blob)")
    ax.set_ylabel("point i (sorted by blob)")
    fig.tight_layout()
    return fig
