"""The report's build context: the mode's config, the progress bar, traceable numbers, Context and Section.

Every number a section shows is stored in the context's results (written as
``results.json``) and shown through :meth:`Context.num` / :meth:`Context.md`,
which look it up by its dotted key and format it with :func:`fmt`.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Config", "Context", "Progress", "Section", "fmt", "jsonable", "lookup"]


# --------------------------------------------------------------------------------------------
# problem sizes of a mode
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Problem sizes of one report mode."""

    mode: str
    bench_sizes: tuple[tuple[int, int, int], ...]
    extra_size: tuple[int, int, int]  # scikit-learn / SciPy comparison
    bench_min_run_time: float = 0.1  # seconds per torch.utils.benchmark measurement
    loops_max_pairs: int = 16_384  # the Python loops are timed on at most this many pairs and scaled up
    kmeans_grid: bool = True  # Task 3's per-P grid figure (data by blob | clustering); --quick leaves it out
    kmeans_p: tuple[int, ...] = (2, 5, 8)
    kmeans_max_iter: int = 100
    kmeans_tol: float = 1e-4
    dpi: int = 110


# --------------------------------------------------------------------------------------------
# progress bar
# --------------------------------------------------------------------------------------------


class Progress:
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


def lookup(results: dict, key: str) -> Any:
    """Value at dotted ``key`` (integer parts index lists) in ``results``."""
    node: Any = results
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def fmt(value: Any, kind: str) -> str:
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
        return _ratio(float(value)) + "\u00d7"
    if kind == "sci":
        return _sci(float(value))
    if kind == "float":
        return f"{float(value):.4g}"
    if kind == "int":
        return str(int(value))
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "shape":
        return "(" + ", ".join(str(int(s)) for s in value) + ("," if len(value) == 1 else "") + ")"
    if kind == "list":
        return ", ".join(fmt(v, "float") if isinstance(v, float) else str(v) for v in value)
    if kind == "point":
        return "(" + ", ".join(f"{float(v):.3f}" for v in value) + ")"
    return str(value)


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def _sci(v: float, digits: int = 3) -> str:
    """``v`` as ``m\u00b710\u207f`` with ``digits`` significant digits (``1.23\u00b710\u207b\u2075``); 0 as ``0``."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    mant, exp = f"{v:.{digits - 1}e}".split("e")
    return f"{mant}\u00b710{str(int(exp)).translate(_SUPERSCRIPT)}"


def _ratio(v: float) -> str:
    """A speed-up: 3 significant digits below 100, whole with thousands separators below a million
    (``1,024``), else ``2.2\u00b710\u2076``; never ``1e+03``."""
    if not math.isfinite(v) or v == 0 or 0.01 <= abs(v) < 100:
        return f"{v:.3g}"
    if abs(v) < 0.01:
        return _sci(v, 2)
    if abs(v) < 1e6:
        return f"{round(v):,}"
    return _sci(v, 2)


def jsonable(x: Any) -> Any:
    """Plain JSON types from NumPy / torch scalars and arrays, tuples, dataclasses."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return jsonable(x.detach().cpu().tolist())
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "__dataclass_fields__"):
        return jsonable(dataclasses.asdict(x))
    return x


# --------------------------------------------------------------------------------------------
# the build context shared by the sections
# --------------------------------------------------------------------------------------------


@dataclass
class Section:
    """One section of the page: its anchor ``id``, its title, its HTML and its Markdown."""

    id: str
    title: str
    html: str
    md: str


@dataclass
class Context:
    """What a section builder gets: where to write, the sizes, the device, the bar, the results so far."""

    folder: Path
    config: Config
    device: str
    progress: Progress
    results: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)
    share: float = 0.0  # progress-bar units of the section being built (set before each section)

    def num(self, key: str, kind: str = "float") -> str:
        """HTML for the number at ``key`` of the results, traceable through ``data-key``."""
        value = jsonable(lookup(self.results, key))
        return (
            f'<span class="n" title="results.json: {html.escape(key)}" data-key="{html.escape(key)}" data-kind="{kind}" '
            f"data-value='{html.escape(json.dumps(value), quote=True)}'>{html.escape(fmt(value, kind))}</span>"
        )

    def md(self, key: str, kind: str = "float") -> str:
        return fmt(jsonable(lookup(self.results, key)), kind)

    def save_figure(self, fig: Any, name: str) -> str:
        """Save a matplotlib figure as ``name`` (PNG) in the report folder; returns the file name."""
        import matplotlib.pyplot as plt

        if not name.endswith(".png"):
            name += ".png"
        fig.savefig(self.folder / name, dpi=self.config.dpi, bbox_inches="tight", facecolor="white")
        plt.close(fig)
        self.figures.append(name)
        return name
