"""The results of ``sqdist bench``: rows, checks and verdict, and their table, JSON and CSV forms.

:func:`sqdist.bench.run_bench` builds a :class:`BenchResult`;
:func:`format_table` prints it and :func:`write_results` saves it.  All the
names are available from :mod:`sqdist.bench`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._atomic import atomic_write
from ._machine import format_machine
from ._validation import SqdistError

__all__ = ["APPROXIMATE", "LABELS", "TOLERANCE", "AgreementCheck", "BenchResult", "BenchRow", "format_table", "write_results"]

#: Max relative error vs float64 accepted as "equal" (the accuracy contract).
TOLERANCE = 1e-4

#: Table label of each (method, device): what runs.  The "sqdist" rows are labelled by the
#: engine :func:`sqdist.sqdist` really dispatches to ("sqdist (compiled C kernel)", "sqdist (compiled numba kernel)",
#: "sqdist (PyTorch)", "sqdist (Triton)", see :func:`sqdist.bench.sqdist_engine`).
LABELS = {
    ("loops", "cpu"): "Python loops",
    ("numpy", "cpu"): "NumPy broadcasting",
    ("torch", "cpu"): "PyTorch CPU (broadcasting)",
    ("expansion", "cpu"): "PyTorch CPU (expansion, matmul)",
    ("torch", "cuda"): "PyTorch GPU (broadcasting)",
    ("expansion", "cuda"): "PyTorch GPU (expansion, matmul)",
    ("torch+copies", "cuda"): "PyTorch GPU (broadcasting) + copies",
}

#: Methods that are not exact by construction: the expansion ``||x||^2 + ||t||^2 - 2 x.t`` in
#: float32 loses digits to cancellation for close pairs far from the origin.  Their error is
#: shown, but the validation verdict does not require them to be within the tolerance.
APPROXIMATE = frozenset({"expansion"})

_SCHEMA = "sqdist.bench/2"


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRow:
    """One method on one size.

    Attributes
    ----------
    method : str
        ``"loops"``, ``"numpy"``, ``"torch"``, ``"expansion"`` (the functions of
        :mod:`sqdist.exercise`), ``"sqdist"`` (:func:`sqdist.sqdist`, default
        settings) or (CUDA only) ``"torch+copies"``.
    device : str
        ``"cpu"`` or ``"cuda"``.
    N, P, D : int
        Rows of X, rows of T, features.
    time_s : float
        Median seconds for the full N x P matrix (scaled when ``extrapolated``).
    extrapolated : bool
        True when only ``timed_rows`` x ``timed_cols`` pairs were computed and
        the time was scaled by ``N * P / (timed_rows * timed_cols)``.
    timed_rows, timed_cols : int
        The part of the matrix actually computed.
    speedup_vs_loops : float or None
        Loops time over this time on the same size (None without a loops row).
    gflops : float
        ``3 * N * P * D / time_s / 1e9``.
    peak_mem_bytes : int or None
        Peak allocated bytes during one call, output included (module
        docstring); None if it could not be measured.
    max_rel_err_vs_f64 : float
        Max over entries of ``|d - d64| / d64`` (absolute where ``d64 == 0``).
    validated : bool
        ``max_rel_err_vs_f64 <= tolerance``.
    label : str
        What ran, e.g. ``"NumPy broadcasting"`` or ``"sqdist (compiled numba kernel)"``
        (default: from :data:`LABELS`).
    """

    method: str
    device: str
    N: int
    P: int
    D: int
    time_s: float
    extrapolated: bool
    timed_rows: int
    timed_cols: int
    speedup_vs_loops: float | None
    gflops: float
    peak_mem_bytes: int | None
    max_rel_err_vs_f64: float
    validated: bool
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", LABELS.get((self.method, self.device), self.method))


@dataclass(frozen=True)
class AgreementCheck:
    """A torch result compared directly with a loops / NumPy result on the same data."""

    N: int
    P: int
    D: int
    method: str  # torch method, e.g. "gemm"
    device: str
    reference: str  # "loops" or "numpy"
    max_rel_diff: float
    passed: bool


@dataclass
class BenchResult:
    """Everything :func:`sqdist.bench.run_bench` measured; see :func:`format_table` and :func:`write_results`."""

    rows: list[BenchRow]
    checks: list[AgreementCheck]
    machine: dict[str, Any]
    threads: int
    dtype: str = "float32"
    tolerance: float = TOLERANCE
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def validation_passed(self) -> bool:
        """True when every exact method is within tolerance of float64 and agrees with the loops / NumPy.

        The methods in :data:`APPROXIMATE` (the expansion) are measured and shown, not required.
        """
        return all(r.validated for r in self.rows if r.method not in APPROXIMATE) and all(
            c.passed for c in self.checks if c.method not in APPROXIMATE
        )

    def _labels(self, keep: Any) -> list[str]:
        """Labels of the rows for which ``keep(row)`` holds, in table order, each once."""
        return list(dict.fromkeys(r.label for r in self.rows if keep(r)))

    def verdict(self) -> str:
        """One line naming what was compared: ``"validation passed: ..."`` or ``"validation FAILED: ..."``."""
        checked = {(c.method, c.device) for c in self.checks}
        exact = self._labels(lambda r: (r.method, r.device) in checked and r.method not in APPROXIMATE)
        refs = self._labels(lambda r: r.method in ("loops", "numpy"))
        worst = max((c.max_rel_diff for c in self.checks if c.method not in APPROXIMATE), default=0.0)
        worst_row = max((r.max_rel_err_vs_f64 for r in self.rows if r.method not in APPROXIMATE), default=0.0)
        approx = [r for r in self.rows if r.method in APPROXIMATE]
        approx_note = ""
        if approx:
            e = max(r.max_rel_err_vs_f64 for r in approx)
            approx_note = (
                f"; {', '.join(self._labels(lambda r: r.method in APPROXIMATE))}: max relative error {e:.1e} "
                + ("(within tolerance" if e <= self.tolerance else "(outside the tolerance")
                + ": the expansion loses digits to cancellation, so it is shown but not required)"
            )
        if self.validation_passed:
            if exact and refs:
                what = (
                    f"{', '.join(exact)} {'equals' if len(exact) == 1 else 'equal'} {' / '.join(refs)} within tolerance "
                    f"{self.tolerance:g} (max relative difference {worst:.1e})"
                )
            else:
                what = "no method was compared with Python loops / NumPy broadcasting"
            return (
                f"validation passed: {what}; every exact method within {self.tolerance:g} of float64 "
                f"(max relative error {worst_row:.1e}){approx_note}"
            )
        bad = [
            f"{r.label} at {r.N}x{r.P}x{r.D} (error {r.max_rel_err_vs_f64:.1e})"
            for r in self.rows
            if not r.validated and r.method not in APPROXIMATE
        ]
        bad += [
            f"{c.method} on {c.device} vs {c.reference} at {c.N}x{c.P}x{c.D} (difference {c.max_rel_diff:.1e})"
            for c in self.checks
            if not c.passed and c.method not in APPROXIMATE
        ]
        return f"validation FAILED (tolerance {self.tolerance:g}): " + "; ".join(bad) + approx_note

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite floats become None)."""
        return _finite(
            {
                "schema": _SCHEMA,
                "dtype": self.dtype,
                "threads": self.threads,
                "seed": self.seed,
                "tolerance": self.tolerance,
                "flops_convention": "3*N*P*D",
                "validation_passed": self.validation_passed,
                "verdict": self.verdict(),
                "machine": self.machine,
                "notes": list(self.notes),
                "rows": [dataclasses.asdict(r) for r in self.rows],
                "checks": [dataclasses.asdict(c) for c in self.checks],
            }
        )

    def to_json(self) -> str:
        """The result as a JSON document (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_csv(self) -> str:
        """The rows as CSV, one line per method and size, header first."""
        names = [f.name for f in dataclasses.fields(BenchRow)]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow(_finite(dataclasses.asdict(r)))
        return buf.getvalue()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. a saved JSON file)."""
        if data.get("schema") != _SCHEMA:
            raise SqdistError(f"data: expected a {_SCHEMA!r} document, got schema {data.get('schema')!r}")
        row_fields = {f.name for f in dataclasses.fields(BenchRow)}
        rows = [BenchRow(**{k: v for k, v in r.items() if k in row_fields}) for r in data["rows"]]
        rows = [
            dataclasses.replace(r, max_rel_err_vs_f64=math.inf if r.max_rel_err_vs_f64 is None else r.max_rel_err_vs_f64)
            for r in rows
        ]
        # JSON has no inf/NaN: both were written as null (see _finite); read them back as inf
        checks = [AgreementCheck(**(c | {"max_rel_diff": math.inf if c["max_rel_diff"] is None else c["max_rel_diff"]}))
                  for c in data.get("checks", [])]
        return cls(
            rows=rows, checks=checks, machine=data.get("machine", {}), threads=data["threads"],
            dtype=data.get("dtype", "float32"), tolerance=data.get("tolerance", TOLERANCE),
            seed=data.get("seed", 0), notes=list(data.get("notes", [])),
        )


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (inf, NaN) replaced by None, for JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------


def _fmt_time(t: float) -> str:
    if not math.isfinite(t):
        return "-"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} us"


def _fmt_bytes(b: int | None) -> str:
    if b is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{b} B"


def format_table(result: BenchResult) -> str:
    """The result as a text table with footnotes and the validation verdict.

    Examples
    --------
    >>> from sqdist.bench import run_bench, format_table
    >>> print(format_table(run_bench("16x8x2", methods="numpy,torch", device="cpu",
    ...                              threads=1, min_run_time=0.01)))  # doctest: +ELLIPSIS
    sqdist bench: float32, 1 thread, ...
    <BLANKLINE>
        N     P    D  method ...
    ...
    validation passed: PyTorch CPU (broadcasting) equals NumPy broadcasting within tolerance 0.0001 ...
    """
    head = (
        f"sqdist bench: float32, {result.threads} thread{'s' if result.threads != 1 else ''}, "
        f"seed {result.seed}; {format_machine(result.machine)}"
    )
    cols = ["N", "P", "D", "method", "device", "time", "vs loops", "GFLOP/s", "peak mem", "max rel err", "ok"]
    body = []
    for r in result.rows:
        body.append([
            str(r.N), str(r.P), str(r.D), r.label + ("*" if r.extrapolated else ""), r.device,
            _fmt_time(r.time_s),
            "-" if r.speedup_vs_loops is None else f"{r.speedup_vs_loops:,.1f}x",
            f"{r.gflops:.3g}", _fmt_bytes(r.peak_mem_bytes), f"{r.max_rel_err_vs_f64:.1e}",
            "yes" if r.validated else ("no (approximate)" if r.method in APPROXIMATE else "NO"),
        ])
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    left = {3, 4, 10}

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [head, "", line(cols), line(["-" * w for w in widths])]
    prev = None
    for r, b in zip(result.rows, body):
        if prev is not None and (r.N, r.P, r.D) != prev:
            out.append("")
        prev = (r.N, r.P, r.D)
        out.append(line(b))
    out.append("")
    if any(r.extrapolated for r in result.rows):
        subs = sorted({f"{r.timed_rows}x{r.timed_cols} of {r.N}x{r.P}" for r in result.rows if r.extrapolated})
        out.append(
            "* timed on a leading block of the matrix (" + ", ".join(subs) + ") and scaled linearly to N x P "
            "(constant cost per pair); its peak mem and error are those of the block."
        )
    out += [
        "time: median of torch.utils.benchmark blocked_autorange; vs loops: loops time / this time, same size.",
        "GFLOP/s: 3*N*P*D / time (one subtract, multiply, add per pair and feature), whatever the method executes.",
        "peak mem: largest growth of allocated bytes in one call, output included: tracemalloc (NumPy, Python) "
        "+ torch CPU allocator events (torch.profiler); CUDA: torch.cuda.max_memory_allocated.",
        f"max rel err: max |d - d64| / d64 against a float64 reference; ok = within {result.tolerance:g}.",
    ]
    out += list(result.notes)
    out.append(result.verdict())
    return "\n".join(out)


def write_results(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` to ``path`` atomically: JSON for ``.json``, CSV (rows only) for ``.csv``.

    Returns the path written.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise SqdistError(f"out: expected a file name ending in .json or .csv, got {str(path)!r}")
    text = result.to_json() if suffix == ".json" else result.to_csv()
    atomic_write(p, lambda f: f.write(text.encode("utf-8")))
    return p
