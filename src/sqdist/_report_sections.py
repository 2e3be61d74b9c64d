"""The report's other sections: the machine, Task 2 (broadcasting), the cross-checks with SciPy and scikit-learn."""

from __future__ import annotations

import html
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._bench_measure import err_vs_f64, median_time, reference_blocks
from ._machine import machine_info
from ._report_context import Context, Section, fmt, jsonable
from ._report_page import code_html, code_md, table_html, table_md
from .bench import sqdist_engine
from .broadcast import EXERCISE_PAIRS, broadcast_table, explain_broadcast
from .distances import sqdist

__all__ = ["broadcast_shapes_answers", "explained_pairs", "section_extras", "section_machine", "section_task2"]


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


def broadcast_shapes_answers(pairs: list) -> list:
    """Task 2 with NumPy: the shape two arrays of these shapes broadcast to, or None where they cannot."""
    answers = []
    for a, b in pairs:
        try:
            answers.append(np.broadcast_shapes(a, b))  # align on the right; per axis equal sizes or a 1
        except ValueError:  # some axis has two different sizes, neither of them 1
            answers.append(None)
    return answers


def explained_pairs(pairs: list) -> list:
    """Task 2 explained: the aligned per-axis table of every pair (``sqdist broadcast A B --explain`` prints it)."""
    return [explain_broadcast(a, b) for a, b in pairs]


def section_task2(ctx: Context) -> Section:
    """Task 2: the exercise's eight shape pairs, each with its aligned broadcasting table and verdict."""
    sid, title = "task2", "Task 2 \u2014 which shapes broadcast?"
    pairs = []
    numpy_answers = broadcast_shapes_answers(EXERCISE_PAIRS)
    tables = explained_pairs(EXERCISE_PAIRS)
    for (a, b), ans, table_text in zip(EXERCISE_PAIRS, numpy_answers, tables):
        t = broadcast_table(a, b)
        pairs.append({
            "a": list(a), "b": list(b), "compatible": bool(t["compatible"]),
            "result": None if t["result"] is None else list(t["result"]),
            "reason": t["error"],
            "axes": [{"axis": e["axis"], "sizes": list(e["sizes"]), "result": e["result"], "kind": e["kind"],
                      "verdict": e["verdict"]} for e in t["axes"]],
            "table": table_text,
            "numpy_result": None if ans is None else list(ans),
        })
    ctx.results[sid] = {
        "pairs": pairs, "n_pairs": len(pairs), "n_compatible": sum(p["compatible"] for p in pairs),
        "numpy_agrees": all(p["numpy_result"] == p["result"] for p in pairs),
        "code": [{"function": f"sqdist._report_sections.{f.__name__}", "source": inspect.getsource(f)}
                 for f in (broadcast_shapes_answers, explained_pairs)],
    }

    summary_h, summary_m, cards_h, cards_m = [], [], [], []
    for i, p in enumerate(pairs):
        k = f"{sid}.pairs.{i}"
        res_h = ctx.num(f"{k}.result", "shape") if p["compatible"] else '<span class="bad">incompatible</span>'
        res_m = ctx.md(f"{k}.result", "shape") if p["compatible"] else "incompatible"
        np_h = ctx.num(f"{k}.numpy_result", "shape") if p["numpy_result"] is not None else "ValueError"
        np_m = ctx.md(f"{k}.numpy_result", "shape") if p["numpy_result"] is not None else "ValueError"
        summary_h.append([ctx.num(f"{k}.a", "shape"), ctx.num(f"{k}.b", "shape"), res_h, np_h])
        summary_m.append([ctx.md(f"{k}.a", "shape"), ctx.md(f"{k}.b", "shape"), res_m, np_m])
        # the aligned table: one column per axis counted from the right
        head = "<td></td>" + "".join(f'<th scope="col">axis {ctx.num(f"{k}.axes.{j}.axis", "int")}</th>'
                                     for j in range(len(p["axes"])))
        body_rows = []
        for o, name in enumerate(("first", "second")):
            tds = "".join(
                f'<td class="{_axis_class(e, o)}">'
                f'{ctx.num(f"{k}.axes.{j}.sizes.{o}", "int") if e["sizes"][o] is not None else _MISSING}</td>'
                for j, e in enumerate(p["axes"])
            )
            shape = ctx.num(f"{k}.{chr(97 + o)}", "shape")
            body_rows.append(f'<tr><th scope="row">{name}<br><small>{shape}</small></th>{tds}</tr>')
        tds = "".join(
            f'<td class="{e["kind"]}">{ctx.num(f"{k}.axes.{j}.result", "int") if e["result"] is not None else "?"}</td>'
            for j, e in enumerate(p["axes"])
        )
        body_rows.append(f'<tr class="res"><th scope="row">result</th>{tds}</tr>')
        tds = "".join(f'<td class="{e["kind"]} why">{ctx.num(f"{k}.axes.{j}.verdict", "text")}</td>'
                      for j, e in enumerate(p["axes"]))
        body_rows.append(f'<tr><th scope="row">verdict</th>{tds}</tr>')
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
        "torch in the test suite; <code>sqdist broadcast SHAPE SHAPE</code> prints the same tables). The last "
        "column is NumPy's own answer, <code>np.broadcast_shapes</code>: "
        + ("it agrees on every pair." if ctx.results[sid]["numpy_agrees"] else "<b>it disagrees</b>.") + "</p>"
        + table_html(["first shape", "second shape", "result", "np.broadcast_shapes"], summary_h, "num")
        + "<h3>The code that ran</h3>"
        + '<div class="side">' + "".join(code_html(c["source"], f"<code>{html.escape(c['function'])}</code>")
                                         for c in ctx.results[sid]["code"]) + "</div>"
        + "<h3>The eight pairs, axis by axis</h3>"
        + '<div class="cards">' + "".join(cards_h) + "</div>"
    )
    md = (
        "Shapes are aligned on the right; each axis needs equal sizes or a 1 (a missing axis counts as 1). "
        f"{ctx.md(f'{sid}.n_compatible', 'int')} of the {ctx.md(f'{sid}.n_pairs', 'int')} pairs are compatible.\n\n"
        + table_md(["first shape", "second shape", "result", "np.broadcast_shapes"], summary_m)
        + "\n### The code that ran\n\n"
        + "\n".join(code_md(c["source"], f"`{c['function']}`") for c in ctx.results[sid]["code"])
        + "\n### The eight pairs, axis by axis\n\n"
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


# ---- extra comparisons ------------------------------------------------------------------------


def section_extras(ctx: Context) -> Section:
    """Cross-checks: SciPy's and scikit-learn's distance matrices against sqdist's, timed and checked against float64."""
    sid, title = "extras", "Cross-checks: SciPy and scikit-learn"
    N, P, D = ctx.config.extra_size
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    T = rng.normal(size=(P, D)).astype(np.float32)
    # the float64 reference of `sqdist bench` (centred, in row blocks: no (N, P, D) temporary), computed once
    X64, T64 = torch.from_numpy(X).double(), torch.from_numpy(T).double()
    ref = torch.cat([r for _, r in reference_blocks(X64, T64, max(1, 2**22 // max(1, P)))])  # (N, P)

    def err(d: Any) -> float:
        return err_vs_f64(torch.as_tensor(np.asarray(d)), X64, T64, ref64=ref)

    engine = sqdist_engine(torch.from_numpy(X), torch.from_numpy(T))
    cands: list[tuple[str, str, Callable[[], Any]]] = [
        ("sqdist", f"sqdist.sqdist ({engine}; the reference row)", lambda: sqdist(X, T))
    ]
    try:
        from scipy.spatial.distance import cdist
    except ImportError:
        pass
    else:
        cands.append(("scipy", "SciPy cdist(metric='sqeuclidean')", lambda: cdist(X, T, "sqeuclidean")))
    try:
        from sklearn.metrics.pairwise import euclidean_distances
    except ImportError:
        pass
    else:
        cands.append(
            ("sklearn", "scikit-learn euclidean_distances(squared=True)", lambda: euclidean_distances(X, T, squared=True))
        )
    rows = []
    for lib, label, fn in cands:
        d = np.asarray(fn())  # also the warm-up call
        # timed like Task 1's rows (torch.utils.benchmark, median), so the page compares like with like
        t = median_time(fn, torch.get_num_threads(), ctx.config.bench_min_run_time)
        rows.append({"library": lib, "label": label, "time_s": t, "max_rel_err_vs_f64": err(d)})
    base = rows[0]["time_s"]
    for r in rows:
        r["time_vs_sqdist"] = r["time_s"] / base
    ctx.results[sid] = {"size": [N, P, D], "distances": rows}
    k = sid
    hdr = ["", "time", "time / sqdist", "max rel. error vs float64"]
    rh, rm = [], []
    for i, r in enumerate(rows):
        kk = f"{k}.distances.{i}"
        tag_h = "" if r["library"] == "sqdist" else '<span class="extra">cross-check</span> '
        rh.append([tag_h + html.escape(r["label"]), ctx.num(f"{kk}.time_s", "time"), ctx.num(f"{kk}.time_vs_sqdist", "ratio"),
                   ctx.num(f"{kk}.max_rel_err_vs_f64", "sci")])
        rm.append([("" if r["library"] == "sqdist" else "*cross-check* ") + r["label"], ctx.md(f"{kk}.time_s", "time"),
                   ctx.md(f"{kk}.time_vs_sqdist", "ratio"), ctx.md(f"{kk}.max_rel_err_vs_f64", "sci")])
    body = (
        "<p>The same distance matrix from other libraries, timed the same way (median of torch.utils.benchmark "
        "runs in this process after a warm-up call; float32 inputs, CPU) and checked against the same float64 "
        f"reference, for N = {ctx.num(f'{k}.size.0', 'int')}, P = {ctx.num(f'{k}.size.1', 'int')}, "
        f"D = {ctx.num(f'{k}.size.2', 'int')}. scikit-learn's k-means is the cross-check of Task 3, shown there.</p>"
        + table_html(hdr, rh, "num extra-table", row_headers=True)
    )
    md = (
        f"The same distances from other libraries (cross-checks), N = {ctx.md(f'{k}.size.0', 'int')}, "
        f"P = {ctx.md(f'{k}.size.1', 'int')}, D = {ctx.md(f'{k}.size.2', 'int')}:\n\n" + table_md(hdr, rm)
    )
    missing = [name for name, lib in (("SciPy", "scipy"), ("scikit-learn", "sklearn")) if lib not in {r["library"] for r in rows}]
    if missing:
        note = (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed, so "
                f"{'its' if len(missing) == 1 else 'their'} rows are missing: pip install 'sqdist[report]' to add them.")
        body += f'<p class="note">{html.escape(note)}</p>'
        md += "\n" + note + "\n"
    return Section(sid, title, body, md)
