"""Write the whole exercise -- measured, validated and explained -- as an offline web page.

``sqdist report`` runs every task of the exercise on this machine and writes a
self-contained folder (default ``./sqdist-report/``):

* ``index.html`` -- opens offline in any browser: inline CSS, no scripts,
  no external styles or fonts; figures are relative links to the PNG files;
* the figures as PNG files;
* ``results.json`` -- every number the page shows (each number on the page
  carries a ``data-key`` attribute: its dotted path in this file);
* ``report.md`` -- the same content as Markdown.

Sections: the machine; Task 1 (timings of loops, NumPy broadcasting, torch
broadcast and gemm, torch on the GPU when present; peak memory; validation
against float64; the RBF kernel as a heat map); Task 2 (the eight shape
pairs with their aligned tables); Task 3 (k-means on five blobs with fixed
initial indices for P = 2, 5, 8); extra comparisons with scikit-learn and
SciPy when they are installed.

The folder is written atomically: the report is built in a temporary folder
next to the target and renamed into place only when complete, so an
interrupted run leaves any previous report untouched.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import math
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._machine import usable_cores
from ._validation import SqdistError, check_choice

__all__ = ["MODES", "write_report"]

MODES = ("quick", "default", "full")
DEVICES = ("auto", "cpu", "cuda")

#: Marker stored in ``results.json``; an existing folder is only replaced when it carries it.
_GENERATOR = "sqdist report"


@dataclass(frozen=True)
class _Config:
    """Problem sizes of one report mode."""

    mode: str
    bench_sizes: tuple[tuple[int, int, int], ...]
    extra_size: tuple[int, int, int]  # scikit-learn / SciPy comparison
    bench_min_run_time: float = 0.1  # seconds per torch.utils.benchmark measurement
    kmeans_p: tuple[int, ...] = (2, 5, 8)
    kmeans_max_iter: int = 100
    kmeans_tol: float = 1e-4
    dpi: int = 110


_CONFIGS = {
    "quick": _Config(
        mode="quick",
        bench_sizes=((64, 64, 8), (128, 128, 8), (256, 256, 8)),
        extra_size=(256, 256, 8),
        bench_min_run_time=0.01,
        dpi=80,
    ),
    "default": _Config(
        mode="default",
        bench_sizes=((128, 128, 16), (256, 256, 16), (512, 512, 16), (1024, 1024, 16), (2048, 2048, 16)),
        extra_size=(1024, 1024, 16),
        bench_min_run_time=0.05,
    ),
    "full": _Config(
        mode="full",
        bench_sizes=(
            (256, 256, 32), (512, 512, 32), (1024, 1024, 32), (2048, 2048, 32), (4096, 4096, 32), (8192, 8192, 32),
        ),
        extra_size=(4096, 4096, 32),
        bench_min_run_time=0.2,
    ),
}


# --------------------------------------------------------------------------------------------
# progress bar
# --------------------------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on a terminal stream; silent when disabled."""

    def __init__(self, total: float, enabled: bool, stream: Any = None, width: int = 28):
        self.total = max(float(total), 1e-9)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0.0
        self.label = ""
        self._last_len = 0

    def set(self, done: float, label: str | None = None) -> None:
        self.done = min(max(done, 0.0), self.total)
        if label is not None:
            self.label = label
        if not self.enabled:
            return
        frac = self.done / self.total
        filled = int(round(frac * self.width))
        line = f"sqdist report [{'#' * filled}{'.' * (self.width - filled)}] {frac * 100:3.0f}%  {self.label}"
        line = line[: max(shutil.get_terminal_size((80, 24)).columns - 1, 40)]  # never wrap
        pad = max(self._last_len - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last_len = len(line)

    def close(self) -> None:
        if self.enabled and self._last_len:
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------------------------
# numbers: every number shown is looked up in results.json by its dotted key
# --------------------------------------------------------------------------------------------


def _lookup(results: dict, key: str) -> Any:
    """Value at dotted ``key`` (integer parts index lists) in ``results``."""
    node: Any = results
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _fmt(value: Any, kind: str) -> str:
    """Text shown for ``value`` (the test suite parses it back)."""
    if value is None:
        return "\u2014"
    if kind == "time":
        v = float(value)
        if v < 1e-3:
            return f"{v * 1e6:.3g} \u00b5s"
        if v < 1.0:
            return f"{v * 1e3:.3g} ms"
        return f"{v:.3g} s"
    if kind == "bytes":
        v = float(value)
        for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if v >= scale:
                return f"{v / scale:.3g} {unit}"
        return f"{v:.0f} B"
    if kind == "ratio":
        return f"{float(value):.3g}\u00d7"
    if kind == "sci":
        return f"{float(value):.2e}"
    if kind == "float":
        return f"{float(value):.4g}"
    if kind == "int":
        return str(int(value))
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "shape":
        return "(" + ", ".join(str(int(s)) for s in value) + ("," if len(value) == 1 else "") + ")"
    if kind == "list":
        return ", ".join(_fmt(v, "float") if isinstance(v, float) else str(v) for v in value)
    if kind == "point":
        return "(" + ", ".join(f"{float(v):.3f}" for v in value) + ")"
    return str(value)


def _jsonable(x: Any) -> Any:
    """Plain JSON types from NumPy / torch scalars and arrays, tuples, dataclasses."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "__dataclass_fields__"):
        import dataclasses

        return _jsonable(dataclasses.asdict(x))
    return x


# --------------------------------------------------------------------------------------------
# the build context shared by the sections
# --------------------------------------------------------------------------------------------


@dataclass
class _Section:
    id: str
    title: str
    html: str
    md: str


@dataclass
class _Context:
    folder: Path
    config: _Config
    device: str
    progress: _Progress
    results: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)

    def num(self, key: str, kind: str = "float") -> str:
        """HTML for the number at ``key`` of the results, traceable through ``data-key``."""
        value = _jsonable(_lookup(self.results, key))
        return (
            f'<span class="n" data-key="{html.escape(key)}" data-kind="{kind}" '
            f"data-value='{html.escape(json.dumps(value), quote=True)}'>{html.escape(_fmt(value, kind))}</span>"
        )

    def md(self, key: str, kind: str = "float") -> str:
        return _fmt(_jsonable(_lookup(self.results, key)), kind)

    def save_figure(self, fig: Any, name: str) -> str:
        """Save a matplotlib figure as ``name`` (PNG) in the report folder; returns the file name."""
        import matplotlib.pyplot as plt

        if not name.endswith(".png"):
            name += ".png"
        fig.savefig(self.folder / name, dpi=self.config.dpi, bbox_inches="tight", facecolor="white")
        plt.close(fig)
        self.figures.append(name)
        return name


def _figure_html(name: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _figure_md(name: str, caption: str) -> str:
    return f"![{caption}]({name})\n\n*{caption}*\n"


def _table_html(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """A table whose cells are already HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}">{thead}<tbody>{body}</tbody></table>'


def _table_md(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


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


def _section_machine(ctx: _Context) -> _Section:
    sid, title = "machine", "Machine"
    from ._machine import machine_info

    info = _jsonable(machine_info())
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
    return _Section(sid, title, _table_html(["", ""], rows_h, "kv"), _table_md(["", "value"], rows_m))


# ---- Task 1 ---------------------------------------------------------------------------------

def _run_bench(ctx: _Context) -> dict:
    """Run the Task 1 benchmark (:func:`sqdist.bench.run_bench`) and return its JSON-ready dict."""
    from .bench import run_bench

    cfg = ctx.config
    p0 = ctx.progress.done
    share = _WEIGHTS["task1"]
    per_size = 5 + (3 if ctx.device == "cuda" else 0)  # loops, numpy, broadcast, gemm, auto (+ GPU rows)
    total = max(1, len(cfg.bench_sizes) * per_size)
    seen = [0]

    def say(msg: str) -> None:  # called before each measurement
        ctx.progress.set(p0 + share * min(seen[0], total) / total, "Task 1: " + msg)
        seen[0] += 1

    res = run_bench(list(cfg.bench_sizes), device=ctx.device, progress=say, min_run_time=cfg.bench_min_run_time)
    return _jsonable(res.to_dict())


def _section_task1(ctx: _Context) -> _Section:
    sid, title = "task1", "Task 1 \u2014 the distance matrix four ways"
    bench = _run_bench(ctx)
    rows = bench["rows"]
    itemsize = 8 if bench.get("dtype") == "float64" else 4
    for r in rows:
        r["label"] = r.get("label", r["method"]) + (" [GPU]" if str(r["device"]).startswith("cuda") else "")
        r["naive_intermediate_bytes"] = r["N"] * r["P"] * r["D"] * itemsize
        r["output_bytes"] = r["N"] * r["P"] * itemsize
    # direct torch-vs-loops/NumPy comparisons, summarised per method and reference
    summary: dict[tuple, dict] = {}
    for c in bench.get("checks", []):
        key = (c["method"], c["device"], c["reference"])
        e = summary.setdefault(key, {"method": c["method"], "device": c["device"], "reference": c["reference"],
                                     "n_sizes": 0, "max_rel_diff": 0.0, "passed": True})
        e["n_sizes"] += 1
        e["max_rel_diff"] = max(e["max_rel_diff"], c["max_rel_diff"] if c["max_rel_diff"] is not None else math.inf)
        e["passed"] = e["passed"] and bool(c["passed"])
    errs = [r["max_rel_err_vs_f64"] for r in rows]
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
        "notes": bench.get("notes", []),
    }
    fig_name = ctx.save_figure(_figure_timing(rows, itemsize), "task1_time_memory")

    header = ["method", "N", "P", "D", "time", "speed-up vs loops", "GFLOP/s", "peak memory",
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
    mem_hdr = ["N \u00d7 P \u00d7 D"] + labels + [f"N\u00b7P\u00b7D \u00d7 {itemsize} B", f"N\u00b7P \u00d7 {itemsize} B (output)"]
    time_table_h = _table_html([html.escape(h) for h in time_hdr], time_h, "num pivot")
    mem_table_h = _table_html([html.escape(h) for h in mem_hdr], mem_h, "num pivot")

    agree_hdr = ["torch method", "device", "compared with", "sizes", "max relative difference", "agree"]
    agree_h, agree_m = [], []
    for i, a in enumerate(ctx.results[sid]["agreement"]):
        k = f"{sid}.agreement.{i}"
        agree_h.append([html.escape(a["method"]), html.escape(a["device"]), html.escape(a["reference"]),
                        ctx.num(f"{k}.n_sizes", "int"), ctx.num(f"{k}.max_rel_diff", "sci"), ctx.num(f"{k}.passed", "bool")])
        agree_m.append([a["method"], a["device"], a["reference"], ctx.md(f"{k}.n_sizes", "int"),
                        ctx.md(f"{k}.max_rel_diff", "sci"), ctx.md(f"{k}.passed", "bool")])

    v = ctx.results[sid]["validation"]
    ok = v["passed"]
    verdict_h = (
        f'<p class="verdict {"ok" if ok else "bad"}">Validation {"passed" if ok else "FAILED"}: every result within '
        f'{ctx.num(f"{sid}.tolerance", "sci")} relative of a float64 reference (largest error '
        f'{ctx.num(f"{sid}.validation.max_rel_err_vs_f64", "sci")}), and torch on the CPU equals the loops / NumPy '
        "results on the same data:</p>"
    )
    verdict_m = (
        f"**Validation {'passed' if ok else 'FAILED'}:** every result within {ctx.md(f'{sid}.tolerance', 'sci')} "
        f"relative of a float64 reference (largest error {ctx.md(f'{sid}.validation.max_rel_err_vs_f64', 'sci')}), "
        "and torch on the CPU equals the loops / NumPy results on the same data:\n\n"
    )
    why = (
        "Why the memory differs: broadcasting <code>X[:, None, :] - T[None, :, :]</code> materialises the "
        "difference of every point with every prototype in every feature, an N\u00d7P\u00d7D array (and its "
        "square), before summing over D. The gemm form <code>\u2016x\u2016\u00b2 + \u2016t\u2016\u00b2 \u2212 2x\u00b7t</code> "
        "never forms the differences: one matrix product writes the N\u00d7P result directly, plus two vectors "
        "of norms, so it needs only N\u00b7P memory, and the sum over D happens inside a fast matrix multiply. "
        "sqdist's broadcast paths process the rows in blocks so the intermediate stays within the working-memory "
        "budget (256 MiB by default); the one-line NumPy expression of the exercise would need the whole "
        "N\u00b7P\u00b7D column of the table."
    )
    caption = ("Left: time against problem size N\u00b7P\u00b7D (log-log; hollow circles: extrapolated). "
               "Right: peak memory, with the N\u00b7P\u00b7D and N\u00b7P reference lines.")
    intro_h = (
        "<p>The exercise's matrix d<sub>ij</sub> = \u2016X[i] \u2212 T[j]\u2016\u00b2 of standard-normal "
        f"{html.escape(ctx.results[sid]['dtype'])} data, computed each way (<code>sqdist.bench</code>) with "
        f"{ctx.num(f'{sid}.threads', 'int')} threads. Times are medians of repeated runs; a "
        '<span class="mark">*</span> marks a time scaled up from a subset of the matrix (the loops cost the same '
        "per pair, and are too slow to run whole). GFLOP/s counts 3\u00b7N\u00b7P\u00b7D operations for every "
        "method. Peak memory is the allocator's growth during one call, output included.</p>"
    )
    intro_m = (
        f"d_ij = ||X[i] - T[j]||² of standard-normal {ctx.results[sid]['dtype']} data, "
        f"{ctx.md(f'{sid}.threads', 'int')} threads; \\* = scaled up from a subset of the matrix. "
        "GFLOP/s counts 3·N·P·D operations; peak memory is the allocator's growth during one call.\n\n"
    )
    notes = "".join(f"<p class=\"note\">{html.escape(n)}</p>" for n in ctx.results[sid]["notes"])
    body = (
        intro_h
        + "<h3>Time (speed-up over the two loops below it)</h3>" + time_table_h
        + verdict_h + _table_html(agree_hdr, agree_h, "num") + notes
        + _figure_html(fig_name, caption)
        + "<h3>Peak memory</h3>" + mem_table_h
        + '<p class="note"><span class="mark">*</span> measured on the subset of the matrix that was timed.</p>'
        + f"<p>{why}</p>"
        + "<details><summary>All measurements (time, GFLOP/s, memory, error of every method and size)</summary>"
        + _table_html(header, rows_h, "num") + "</details>"
    )
    md = (
        intro_m
        + "### Time (speed-up over the two loops)\n\n" + _table_md(time_hdr, time_m) + "\n"
        + verdict_m + _table_md(agree_hdr, agree_m) + "\n"
        + "".join(f"{n}\n\n" for n in ctx.results[sid]["notes"])
        + _figure_md(fig_name, caption) + "\n"
        + "### Peak memory\n\n" + _table_md(mem_hdr, mem_m) + "\n\\* measured on the subset of the matrix that was timed.\n\n"
        + html.unescape(why.replace("<code>", "`").replace("</code>", "`")) + "\n\n"
        + "### All measurements\n\n" + _table_md(header, rows_m)
    )
    return _Section(sid, title, body, md)


def _figure_timing(rows: list[dict], itemsize: int = 4) -> Any:
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
    ax_m.loglog([a for a, _ in npd], [a * itemsize / 2**20 for a, _ in npd], "k--", lw=1, label="N\u00b7P\u00b7D values (one-shot broadcast)", zorder=1)
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
    ax_t.legend(fontsize=9)
    ax_m.set_xlabel("problem size N\u00b7P\u00b7D")
    ax_m.set_ylabel("peak memory [MiB]")
    ax_m.set_title("Peak memory (rows timed on a subset left out)")
    ax_m.grid(True, which="both", alpha=0.3)
    ax_m.legend(fontsize=9)
    fig.tight_layout()
    return fig


def _exercise_blobs() -> tuple[np.ndarray, np.ndarray]:
    """The exercise's data: 5 Gaussian blobs x 50 points in 2-D (float64) and their blob ids."""
    from .datasets import make_blobs

    return make_blobs()


def _section_rbf(ctx: _Context) -> _Section:
    sid, title = "rbf", "Task 1 \u2014 the RBF kernel on the distances"
    from .distances import sqdist as _sq
    from .kernels import rbf

    X, y = _exercise_blobs()
    order = np.argsort(y, kind="stable")
    Xs = torch.as_tensor(X[order], dtype=torch.float32, device=ctx.device)
    d = _sq(Xs, Xs)  # (n, n)
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
        f"<p>The kernel \u03c6(x<sub>i</sub>, t<sub>j</sub>) = exp(\u2212\u2016x<sub>i</sub> \u2212 t<sub>j</sub>\u2016\u00b2/\u03b3) "
        f"(the exercise's convention; <code>sqdist.rbf</code>) of the {ctx.num(f'{k}.n', 'int')} blob points with themselves, "
        f"points sorted by blob, \u03b3 = {ctx.num(f'{k}.gamma', 'float')} (the 10th percentile of the squared distances). "
        f"The diagonal is exactly {ctx.num(f'{k}.diag_min', 'float')}; the mean kernel value is "
        f"{ctx.num(f'{k}.mean_same_blob', 'float')} within a blob and {ctx.num(f'{k}.mean_other_blob', 'sci')} "
        f"between blobs, hence the five bright diagonal blocks.</p>"
        + _figure_html(fig_name, "RBF kernel of the blob data with itself (points sorted by blob)")
    )
    md = (
        f"exp(-||x_i - t_j||²/γ) of the {ctx.md(f'{k}.n', 'int')} blob points with themselves, sorted by blob, "
        f"γ = {ctx.md(f'{k}.gamma', 'float')} (10th percentile of the squared distances). Diagonal "
        f"{ctx.md(f'{k}.diag_min', 'float')}; mean within a blob {ctx.md(f'{k}.mean_same_blob', 'float')}, "
        f"between blobs {ctx.md(f'{k}.mean_other_blob', 'sci')}.\n\n"
        + _figure_md(fig_name, "RBF kernel of the blob data with itself (points sorted by blob)")
    )
    return _Section(sid, title, body, md)


def _figure_rbf(K: np.ndarray, ys: np.ndarray, gamma: float) -> Any:
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


# ---- Task 2 ---------------------------------------------------------------------------------


def _section_task2(ctx: _Context) -> _Section:
    sid, title = "task2", "Task 2 \u2014 which shapes broadcast?"
    from .broadcast import EXERCISE_PAIRS, broadcast_table, explain_broadcast

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
                f'<td class="{_axis_class(e, o)}">{ctx.num(f"{k}.axes.{j}.sizes.{o}", "int") if e["sizes"][o] is not None else _MISSING}</td>'
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
            verdict_m = f"compatible → result shape {_fmt(p['result'], 'shape')}"
        else:
            verdict_h = f'<p class="verdict bad">incompatible: <span class="reason">{html.escape(p["reason"])}</span></p>'
            verdict_m = f"incompatible: {p['reason']}"
        cards_h.append(
            f'<div class="card"><h4>{ctx.num(f"{k}.a", "shape")} with {ctx.num(f"{k}.b", "shape")}</h4>'
            f"{table}{verdict_h}</div>"
        )
        cards_m.append(f"**{_fmt(p['a'], 'shape')} with {_fmt(p['b'], 'shape')}**\n\n```\n{p['table']}\n```\n\n{verdict_m}\n")
    body = (
        "<p>Broadcasting aligns the shapes on the <em>right</em>; on each axis the sizes must be equal or one "
        "of them 1 (a missing axis, \u2013, counts as 1) and the result takes the larger size; any other pair "
        f"of sizes is a conflict. {ctx.num(f'{sid}.n_compatible', 'int')} of the {ctx.num(f'{sid}.n_pairs', 'int')} "
        "pairs of the exercise are compatible (<code>sqdist.broadcast_table</code>, checked against NumPy and "
        "torch in the test suite; <code>sqdist broadcast SHAPE SHAPE</code> prints the same tables).</p>"
        + _table_html(["first shape", "second shape", "result"], summary_h, "num")
        + '<div class="cards">' + "".join(cards_h) + "</div>"
    )
    md = (
        "Shapes are aligned on the right; each axis needs equal sizes or a 1 (a missing axis counts as 1). "
        f"{ctx.md(f'{sid}.n_compatible', 'int')} of the {ctx.md(f'{sid}.n_pairs', 'int')} pairs are compatible.\n\n"
        + _table_md(["first shape", "second shape", "result"], summary_m)
        + "\n"
        + "\n".join(cards_m)
    )
    return _Section(sid, title, body, md)


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


def _section_task3(ctx: _Context) -> _Section:
    sid, title = "task3", "Task 3 \u2014 k-means on five blobs"
    from .datasets import EXERCISE_INIT_INDICES
    from .kmeans import kmeans

    X, y = _exercise_blobs()
    cfg = ctx.config
    Xt = torch.as_tensor(X, dtype=torch.float64, device=ctx.device)  # (n, 2)
    runs, results = [], {}
    for P in cfg.kmeans_p:
        idx = [int(i) for i in EXERCISE_INIT_INDICES[P]]
        t0 = time.perf_counter()
        res = kmeans(Xt, P, init=idx, max_iter=cfg.kmeans_max_iter, tol=cfg.kmeans_tol)
        elapsed = time.perf_counter() - t0
        hist = [{k: _jsonable(v) for k, v in h.items()} for h in res.history]
        relocations = [[h["iteration"], j] for h in hist for j in h["relocated"]]
        runs.append({
            "P": P,
            "init_indices": idx,
            "init_centers": _jsonable(res.init_centers),
            "centers": _jsonable(res.centers),
            "n_iter": int(res.n_iter),
            "converged": bool(res.converged),
            "inertia": float(res.inertia),
            "sizes": np.bincount(_jsonable(res.labels), minlength=P).tolist(),
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
            f"{_table_html(hdr, rh, 'num')}{_table_html(hdr2, ih, 'num')}</details>"
        )
        details_m.append(f"P = {r['P']}:\n\n" + _table_md(hdr, rm) + "\n" + _table_md(hdr2, im))

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
    body = intro_h + _table_html(header, rows_h, "num") + "".join(details_h)
    md = (
        f"{ctx.md(f'{k}.n_points', 'int')} points from {ctx.md(f'{k}.n_blobs', 'int')} blobs, initial centres from "
        f"fixed rows of X, at most {ctx.md(f'{k}.max_iter', 'int')} iterations, tol {ctx.md(f'{k}.tol', 'sci')}.\n\n"
        + _table_md(header, rows_m) + "\n" + "\n".join(details_m) + "\n"
    )
    for name, caption in figs:
        body += _figure_html(name, caption)
        md += "\n" + _figure_md(name, caption)
    return _Section(sid, title, body, md)


def _task3_figures(ctx: _Context, X: np.ndarray, y: np.ndarray, results: dict) -> list[tuple[str, str]]:
    """The exercise's plots (:mod:`sqdist.plotting`): a grid over P and the inertia curves."""
    import matplotlib.pyplot as plt

    from .plotting import plot_inertia, plot_kmeans_grid, plot_trajectories

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


def _section_extras(ctx: _Context) -> _Section:
    sid, title = "extras", "Extra comparisons (scikit-learn / SciPy, when installed)"
    from .distances import sqdist as _sq

    N, P, D = ctx.config.extra_size
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    T = rng.normal(size=(P, D)).astype(np.float32)
    # the float64 reference of `sqdist bench` (centred, in row blocks: no (N, P, D) temporary), computed once
    from .bench import _err_vs_f64, _median_time, _reference_blocks

    X64, T64 = torch.from_numpy(X).double(), torch.from_numpy(T).double()
    ref = torch.cat([r for _, r in _reference_blocks(X64, T64, max(1, 2**22 // max(1, P)))])  # (N, P)

    def err(d: Any) -> float:
        return _err_vs_f64(torch.as_tensor(np.asarray(d)), X64, T64, ref64=ref)

    cands: list[tuple[str, str, Callable[[], Any]]] = [("sqdist", "sqdist.sqdist (gemm, the reference row)", lambda: _sq(X, T))]
    try:
        from scipy.spatial.distance import cdist

        cands.append(("scipy", "SciPy cdist(metric='sqeuclidean')", lambda: cdist(X, T, "sqeuclidean")))
    except ImportError:
        pass
    try:
        from sklearn.metrics.pairwise import euclidean_distances

        cands.append(("sklearn", "scikit-learn euclidean_distances(squared=True)", lambda: euclidean_distances(X, T, squared=True)))
    except ImportError:
        pass
    rows = []
    for lib, label, fn in cands:
        d = np.asarray(fn())
        # timed like Task 1's rows (torch.utils.benchmark, median), so the page compares like with like
        t = _median_time(fn, torch.get_num_threads(), ctx.config.bench_min_run_time)
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
        + _table_html(hdr, rh, "num extra-table")
    )
    missing = [name for name, lib in (("SciPy", "scipy"), ("scikit-learn", "sklearn")) if lib not in {r["library"] for r in rows}]
    if missing:
        note = (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed, so "
                f"{'its' if len(missing) == 1 else 'their'} rows are missing: pip install 'sqdist[bench]' to add them.")
        body += f'<p class="note">{html.escape(note)}</p>'
    md = (
        f"Rows marked *extra* come from other libraries (comparison only). Distances for N = {ctx.md(f'{k}.size.0', 'int')}, "
        f"P = {ctx.md(f'{k}.size.1', 'int')}, D = {ctx.md(f'{k}.size.2', 'int')}:\n\n" + _table_md(hdr, rm)
    )
    if missing:
        md += "\n" + note + "\n"
    if km_rows:
        hdr2 = ["P", "scikit-learn iterations", "sqdist iterations", "scikit-learn inertia", "sqdist inertia", "labels identical"]
        rh2, rm2 = [], []
        for i, r in enumerate(km_rows):
            kk = f"{k}.kmeans.{i}"
            cells = [("P", "int"), ("n_iter", "int"), ("sqdist_n_iter", "int"), ("inertia", "float"),
                     ("sqdist_inertia", "float"), ("labels_equal", "bool")]
            rh2.append([ctx.num(f"{kk}.{c}", kd) for c, kd in cells])
            rm2.append([ctx.md(f"{kk}.{c}", kd) for c, kd in cells])
        body += (
            '<p><span class="extra">extra</span> scikit-learn <code>KMeans(algorithm="lloyd", n_init=1)</code> '
            "started from the same initial centres as Task 3 (scikit-learn counts one more pass: the one that "
            "finds the labels unchanged):</p>" + _table_html(hdr2, rh2, "num extra-table")
        )
        md += "\n*extra* scikit-learn KMeans(algorithm='lloyd') from the same initial centres:\n\n" + _table_md(hdr2, rm2)
    return _Section(sid, title, body, md)


def _extra_kmeans(ctx: _Context) -> list[dict]:
    task3 = ctx.results.get("task3", {})
    if not task3.get("runs"):  # Task 3 not run (a reduced section list)
        return []
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        return []
    import warnings

    X, _ = _exercise_blobs()
    X = X.astype(np.float64)
    rows = []
    for r in task3["runs"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            km = KMeans(r["P"], init=np.asarray(r["init_centers"], dtype=np.float64), n_init=1, algorithm="lloyd",
                        max_iter=ctx.config.kmeans_max_iter, tol=0.0).fit(X)
        ours = np.argmin(((X[:, None, :] - np.asarray(r["centers"])[None]) ** 2).sum(-1), axis=1)
        rows.append({"P": r["P"], "n_iter": int(km.n_iter_), "inertia": float(km.inertia_),
                     "sqdist_inertia": r["inertia"], "sqdist_n_iter": r["n_iter"], "labels_equal": bool(np.array_equal(km.labels_, ours))})
    return rows


# --------------------------------------------------------------------------------------------
# page assembly and the atomic write
# --------------------------------------------------------------------------------------------

_SECTIONS: tuple[tuple[str, Callable[[_Context], _Section]], ...] = (
    ("machine", _section_machine),
    ("task1", _section_task1),
    ("rbf", _section_rbf),
    ("task2", _section_task2),
    ("task3", _section_task3),
    ("extras", _section_extras),
)
# rough share of the run time of each section, for the progress bar
_WEIGHTS = {"machine": 1, "task1": 60, "rbf": 4, "task2": 1, "task3": 14, "extras": 20}

_CSS = """
:root { --fg:#1d232a; --muted:#5b6672; --line:#d8dee4; --ok:#1a7f37; --bad:#c0392b; --accent:#0b5cad; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg);
       max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 28px; margin: 0 0 4px; } h2 { font-size: 21px; margin-top: 40px; padding-bottom: 4px;
     border-bottom: 2px solid var(--line); } h4 { margin: 0 0 6px; font-size: 15px; }
h3 { font-size: 16.5px; margin: 22px 0 4px; }
table.pivot td small { color: var(--muted); font-size: 12px; }
.meta { color: var(--muted); margin: 0 0 16px; }
nav ol { margin: 6px 0 0; padding-left: 22px; columns: 2; }
a { color: var(--accent); }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 13px; }
pre { background: #f6f8fa; border: 1px solid var(--line); padding: 8px 10px; overflow-x: auto; margin: 6px 0; }
table { border-collapse: collapse; margin: 10px 0 14px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; }
table.num td { font-variant-numeric: tabular-nums; }
table.kv td:first-child { color: var(--muted); }
figure { margin: 14px 0 20px; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 4px; }
.verdict { font-weight: 600; } .ok { color: var(--ok); } .bad { color: var(--bad); }
.verdict .reason { font-weight: 400; }
.warn { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; }
p.verdict.ok::before { content: "\\2714\\00a0"; } p.verdict.bad::before { content: "\\2718\\00a0"; }
.mark { color: var(--bad); font-weight: 700; }
table.bc { margin: 4px 0; font-size: 13px; } table.bc th { text-align: left; white-space: nowrap; }
table.bc td { text-align: center; vertical-align: middle; min-width: 40px; padding: 3px 6px; } table.bc td.why { font-size: 11px; color: var(--muted); white-space: nowrap; }
table.bc td.stretch { background: #e8f1fb; } table.bc td.conflict { background: #fdecea; color: var(--bad); font-weight: 600; }
table.bc tr.res td { font-weight: 600; } table.bc th small { font-weight: 400; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; overflow-x: auto; }
.card p.verdict { margin: 4px 0 0; font-size: 14px; }
.extra { display: inline-block; background: #eef2ff; color: #3949ab; border: 1px solid #c5cae9; border-radius: 3px;
         font-size: 11px; font-weight: 700; padding: 0 5px; text-transform: uppercase; letter-spacing: .04em; }
table.extra-table { border-left: 4px solid #c5cae9; }
details { margin: 4px 0; } summary { cursor: pointer; color: var(--accent); }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; }
"""


def _page_html(ctx: _Context, sections: list[_Section]) -> str:
    nav = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.html}</section>' for s in sections)
    meta = ctx.results["meta"]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>sqdist report \u2014 {html.escape(meta['created'])}</title><style>{_CSS}</style></head><body>"
        "<header><h1>sqdist report</h1>"
        f'<p class="meta">The exercise\'s three tasks, measured on this machine. sqdist {html.escape(meta["version"])}, '
        f'mode <b>{html.escape(meta["mode"])}</b>, device <b>{html.escape(meta["device"])}</b>, '
        f'created {html.escape(meta["created"])}, built in {ctx.num("meta.total_seconds", "time")}. '
        "Every number on this page is in <code>results.json</code> (hover a number: its <code>data-key</code> is the path).</p>"
        f"{_busy_warning(ctx)}<nav><b>Contents</b><ol>{nav}</ol></nav></header>{body}"
        "<footer>Generated by <code>sqdist report</code>. Figures: PNG files next to this page; "
        "data: <code>results.json</code>; text version: <code>report.md</code>.</footer></body></html>\n"
    )


def _busy(meta: dict) -> bool:
    loads = [v for v in (meta.get("load_average_start"), meta.get("load_average_end")) if v is not None]
    return bool(loads) and max(loads) > 1.25 * meta["cores"]


def _busy_warning(ctx: _Context) -> str:
    if not _busy(ctx.results["meta"]):
        return ""
    return (
        '<p class="warn"><b>The machine was busy</b> while this report ran: 1-minute load average '
        f'{ctx.num("meta.load_average_start", "float")} at the start and {ctx.num("meta.load_average_end", "float")} '
        f'at the end, on {ctx.num("meta.cores", "int")} usable cores. Other programs competed for the CPU, so the '
        "timings are noisy (multi-threaded code suffers most); run the report again on an idle machine for "
        "representative times. Results and errors are unaffected.</p>"
    )


def _page_md(ctx: _Context, sections: list[_Section]) -> str:
    meta = ctx.results["meta"]
    parts = [
        "# sqdist report\n",
        f"sqdist {meta['version']}, mode **{meta['mode']}**, device **{meta['device']}**, created {meta['created']}, "
        f"built in {ctx.md('meta.total_seconds', 'time')}. All numbers are in `results.json`.\n",
    ]
    if _busy(meta):
        parts.append(
            f"> **The machine was busy** (load average {ctx.md('meta.load_average_start', 'float')} -> "
            f"{ctx.md('meta.load_average_end', 'float')} on {ctx.md('meta.cores', 'int')} cores): timings are noisy.\n"
        )
    for s in sections:
        parts.append(f"## {s.title}\n\n{s.md}")
    return "\n".join(parts)


def _resolve_device(device: str) -> str:
    device = check_choice(device, "device", DEVICES)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SqdistError("device: 'cuda' was requested but torch.cuda.is_available() is False; use --device cpu or auto")
    return device


def _check_target(target: Path) -> None:
    """Refuse to replace anything but a previous sqdist report (or an empty folder)."""
    if not os.path.lexists(target):
        return
    if not target.is_dir() or target.is_symlink():
        raise SqdistError(f"out: {str(target)!r} exists and is not a folder; choose another --out")
    entries = list(target.iterdir())
    if not entries:
        return
    try:
        with open(target / "results.json", encoding="utf-8") as fh:
            if json.load(fh).get("meta", {}).get("generator") == _GENERATOR:
                return
    except (OSError, ValueError, AttributeError):
        pass
    raise SqdistError(
        f"out: {str(target)!r} exists and is not a sqdist report (no results.json written by sqdist report); "
        "refusing to replace it -- choose another --out or remove it"
    )


def _free_name(target: Path, tag: str) -> Path:
    """An unused hidden name next to ``target`` (same file system, so renames are atomic)."""
    for _ in range(100):
        cand = target.parent / f".{target.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"
        if not os.path.lexists(cand):
            return cand
    raise OSError(f"no free temporary name next to {target}")


def _install(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing an old report only now."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    backup = _free_name(target, "old")
    os.rename(target, backup)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(backup, target)  # put the previous report back
        raise
    shutil.rmtree(backup, ignore_errors=True)


def write_report(
    out: str | os.PathLike = "sqdist-report",
    *,
    mode: str = "default",
    device: str = "auto",
    progress: bool | None = None,
) -> Path:
    """Run the whole exercise and write the report folder atomically.

    Parameters
    ----------
    out : str or path-like
        Folder to write (default ``./sqdist-report``).  An existing folder is
        replaced only when it holds a previous sqdist report (or is empty), and
        only once the new report is complete.
    mode : {"quick", "default", "full"}
        Problem sizes: ``"quick"`` (seconds, for tests), ``"default"`` (under a
        minute on two CPU cores), ``"full"`` (larger benchmark sizes).
    device : {"auto", "cpu", "cuda"}
        Where the torch computations run; ``"auto"`` picks CUDA when available.
    progress : bool, optional
        Draw a progress bar on stderr; default: only when stderr is a terminal.

    Returns
    -------
    Path
        The report folder (holding ``index.html``, ``results.json``,
        ``report.md`` and the PNG figures).

    Raises
    ------
    SqdistError
        Unknown ``mode`` or ``device``, CUDA requested but absent, matplotlib
        missing, or ``out`` an existing file or a folder that is not a
        previous sqdist report (it is never replaced).

    Examples
    --------
    >>> import sqdist.report
    >>> path = sqdist.report.write_report("sqdist-report", mode="quick")  # doctest: +SKIP
    >>> sorted(p.name for p in path.iterdir())[:3]  # doctest: +SKIP
    ['index.html', 'report.md', 'results.json']
    """
    mode = check_choice(mode, "mode", MODES)
    dev = _resolve_device(device)
    target = Path(out).expanduser().absolute()
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    try:
        import matplotlib
    except ImportError:
        raise SqdistError(
            "the report draws its figures with matplotlib, which is not installed: pip install 'sqdist[plot]'"
        ) from None
    matplotlib.use("Agg")  # figures are written to files; never open a window

    t_start = time.perf_counter()
    tmp = _free_name(target, "tmp")
    tmp.mkdir()  # default permissions (umask), unlike tempfile.mkdtemp's 0700
    bar = _Progress(sum(_WEIGHTS.values()), enabled=bool(progress))
    try:
        ctx = _Context(folder=tmp, config=_CONFIGS[mode], device=dev, progress=bar)
        ctx.results["meta"] = {
            "generator": _GENERATOR,
            "version": _version(),
            "mode": mode,
            "device": dev,
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "section_seconds": {},
            "cores": usable_cores(),
            "load_average_start": _load_average(),
        }
        sections = []
        done = 0.0
        for sid, fn in _SECTIONS:
            bar.set(done, f"{sid}")
            t0 = time.perf_counter()
            sections.append(fn(ctx))
            ctx.results["meta"]["section_seconds"][sid] = time.perf_counter() - t0
            done += _WEIGHTS[sid]
            bar.set(done)
        ctx.results["meta"]["total_seconds"] = time.perf_counter() - t_start
        ctx.results["meta"]["load_average_end"] = _load_average()
        ctx.results["meta"]["figures"] = list(ctx.figures)
        ctx.results = _jsonable(ctx.results)
        page = _page_html(ctx, sections)
        (tmp / "index.html").write_text(page, encoding="utf-8")
        (tmp / "report.md").write_text(_page_md(ctx, sections), encoding="utf-8")
        with open(tmp / "results.json", "w", encoding="utf-8") as fh:
            json.dump(ctx.results, fh, indent=1, allow_nan=False)
            fh.write("\n")
        bar.set(bar.total, "done")
        _install(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return target


def _load_average() -> float | None:
    """1-minute load average (None where the OS does not say)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _version() -> str:
    from . import __version__

    return __version__


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="sqdist-report", metavar="DIR", help="report folder (default: ./sqdist-report)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick", help="small sizes (seconds)")
    size.add_argument("--full", dest="mode", action="store_const", const="full", help="larger benchmark sizes")
    parser.set_defaults(mode="default")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="where torch runs (default: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")


def run(args: argparse.Namespace) -> int:
    path = write_report(args.out, mode=args.mode, device=args.device, progress=False if args.quiet else None)
    if not args.quiet:
        print(f"report written to {path / 'index.html'}")
    return 0
