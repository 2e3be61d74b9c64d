"""Task 1 benchmark: two Python loops vs NumPy broadcasting vs torch (CPU, GPU).

``sqdist bench`` (and :func:`run_bench`) computes the same float32 distance
matrix ``d[i, j] = ||X[i] - T[j]||**2`` with every method on seeded random
data, for a grid of sizes (N, P, D), and reports per method and size:

* **time** -- the median of :class:`torch.utils.benchmark.Timer`'s
  ``blocked_autorange``, with ``torch.set_num_threads`` pinned (and the BLAS
  pools too when threadpoolctl is installed);
* **speed-up over the two Python loops** on the same size;
* **GFLOP/s** under the convention of ``3 * N * P * D`` floating-point
  operations (one subtraction, one multiplication and one addition per pair
  and feature), whatever the method really executes -- so GFLOP/s is just a
  size-normalised speed, comparable across methods;
* **peak memory** (see below);
* **max relative error** against a float64 reference, and whether it is
  within the tolerance (1e-4, the accuracy contract of :func:`sqdist.sqdist`).

Methods (``method`` column): ``"loops"`` -- the exercise's two Python
for-loops (:func:`sqdist.sqdist` with ``method="loops"``); ``"numpy"`` --
NumPy broadcasting; ``"broadcast"`` -- the same broadcasting in torch;
``"gemm"`` -- the matrix-product path (``||x||^2 + ||t||^2 - 2 x.t``, made
exact); ``"auto"`` -- what :func:`sqdist.sqdist` does by default (on the CPU
with numba installed and small D a compiled direct-formula kernel, else the
gemm path); with CUDA also ``"broadcast"`` and ``"gemm"`` on the GPU with the data already
there (kernel time) and ``"gemm+copies"``: host-to-device copies of X and T,
the computation and the copy of the result back.

**Subsets.**  The loops take about a microsecond per pair, so they are timed
on the first rows of X only (at most ``loops_max_pairs`` pairs) and the time
is scaled linearly to the full N x P: the cost per pair is constant.  The
broadcasting methods are treated the same way when N * P * D exceeds
``broadcast_max_elements``.  Such rows have ``extrapolated=True`` and a ``*``
in the table; their memory and error are those of the subset run.

**Peak memory** is the largest growth of allocated bytes during one call,
output included, inputs excluded: on the CPU the peak of NumPy's and
Python's allocations (:mod:`tracemalloc`) plus the peak of torch's CPU
allocator (its allocation events, recorded by :mod:`torch.profiler` with
``profile_memory=True``) -- the two peaks are added, an upper bound that is
exact when one of them only holds the output; on the GPU the growth of
``torch.cuda.max_memory_allocated``.  It is allocator bytes, not resident
pages (the OS may never touch an allocated but unused page).

Validation: every result is compared with the float64 reference, and every
torch CPU result directly with the loops / NumPy result on the same data;
:attr:`BenchResult.validation_passed` and :meth:`BenchResult.verdict` say
whether all agree within the tolerance (``sqdist bench`` exits 1 if not).

Examples
--------
>>> from sqdist.bench import run_bench, format_table
>>> res = run_bench("64x48x3", methods=("loops", "numpy", "gemm"), device="cpu",
...                 threads=1, min_run_time=0.01)
>>> [(r.method, r.N, r.P, r.D) for r in res.rows]
[('loops', 64, 48, 3), ('numpy', 64, 48, 3), ('gemm', 64, 48, 3)]
>>> res.validation_passed
True
>>> "validation passed" in format_table(res)
True
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import _chunking
from ._atomic import atomic_write
from ._machine import format_machine, machine_info, usable_cores
from ._validation import SqdistError, check_choice, check_positive_int, check_positive_number
from .distances import sqdist

__all__ = [
    "BENCH_METHODS",
    "DEFAULT_SIZES",
    "QUICK_SIZES",
    "TOLERANCE",
    "BenchResult",
    "BenchRow",
    "AgreementCheck",
    "format_table",
    "parse_sizes",
    "run_bench",
    "write_results",
]

#: Methods run on the CPU, in table order.  With CUDA, "broadcast" and "gemm"
#: also run on the GPU and "gemm" adds the "gemm+copies" row.
BENCH_METHODS = ("loops", "numpy", "broadcast", "gemm", "auto")
DEVICES = ("auto", "cpu", "cuda")
#: Default grid (N, P, D): finishes in well under a minute on 2 cores.
DEFAULT_SIZES: tuple[tuple[int, int, int], ...] = ((1024, 1024, 2), (1024, 1024, 128), (4096, 4096, 2))
#: Grid of ``sqdist bench --quick``.
QUICK_SIZES: tuple[tuple[int, int, int], ...] = ((256, 256, 2), (1024, 1024, 16))
#: Max relative error vs float64 accepted as "equal" (the accuracy contract).
TOLERANCE = 1e-4

_LABELS = {
    ("loops", "cpu"): "two Python loops",
    ("numpy", "cpu"): "NumPy broadcasting",
    ("broadcast", "cpu"): "torch broadcast",
    ("gemm", "cpu"): "torch gemm",
    ("auto", "cpu"): "sqdist default (auto)",
    ("broadcast", "cuda"): "torch broadcast",
    ("gemm", "cuda"): "torch gemm",
    ("gemm+copies", "cuda"): "torch gemm + copies",
}

_SCHEMA = "sqdist.bench/1"
_REF_CACHE_BYTES = 2**28  # keep the float64 reference of a size whole up to 256 MiB


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRow:
    """One method on one size.

    Attributes
    ----------
    method : str
        ``"loops"``, ``"numpy"``, ``"broadcast"``, ``"gemm"`` or (CUDA only)
        ``"gemm+copies"``.
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

    @property
    def label(self) -> str:
        """Human-readable method name, e.g. ``"NumPy broadcasting"``."""
        return _LABELS.get((self.method, self.device), self.method)


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
    """Everything :func:`run_bench` measured; see :func:`format_table` and :func:`write_results`."""

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
        """True when every row is within tolerance of float64 and every check agrees."""
        return all(r.validated for r in self.rows) and all(c.passed for c in self.checks)

    def verdict(self) -> str:
        """One line: ``"validation passed: ..."`` or ``"validation FAILED: ..."``."""
        torch_cpu = sorted({c.method for c in self.checks if c.device == "cpu"})
        refs = [name for key, name in (("loops", "loops"), ("numpy", "NumPy")) if any(c.reference == key for c in self.checks)]
        worst = max((c.max_rel_diff for c in self.checks), default=0.0)
        worst_row = max((r.max_rel_err_vs_f64 for r in self.rows), default=0.0)
        if self.validation_passed:
            if self.checks:
                what = (
                    f"torch CPU ({', '.join(torch_cpu) or '-'}) equals {'/'.join(refs)} within tolerance "
                    f"{self.tolerance:g} (max relative difference {worst:.1e})"
                )
            else:
                what = "no torch-vs-loops/NumPy pair was run"
            return (
                f"validation passed: {what}; every method within {self.tolerance:g} of float64 "
                f"(max relative error {worst_row:.1e})"
            )
        bad = [f"{r.label} on {r.device} at {r.N}x{r.P}x{r.D} (error {r.max_rel_err_vs_f64:.1e})" for r in self.rows if not r.validated]
        bad += [
            f"{c.method} on {c.device} vs {c.reference} at {c.N}x{c.P}x{c.D} (difference {c.max_rel_diff:.1e})"
            for c in self.checks
            if not c.passed
        ]
        return f"validation FAILED (tolerance {self.tolerance:g}): " + "; ".join(bad)

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
                "rows": [dataclasses.asdict(r) | {"label": r.label} for r in self.rows],
                "checks": [dataclasses.asdict(c) for c in self.checks],
            }
        )

    def to_json(self) -> str:
        """The result as a JSON document (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_csv(self) -> str:
        """The rows as CSV, one line per method and size, header first."""
        names = [f.name for f in dataclasses.fields(BenchRow)] + ["label"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow(_finite(dataclasses.asdict(r) | {"label": r.label}))
        return buf.getvalue()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. a saved JSON file)."""
        if data.get("schema") != _SCHEMA:
            raise SqdistError(f"data: expected a {_SCHEMA!r} document, got schema {data.get('schema')!r}")
        row_fields = {f.name for f in dataclasses.fields(BenchRow)}
        rows = [BenchRow(**{k: v for k, v in r.items() if k in row_fields}) for r in data["rows"]]
        rows = [dataclasses.replace(r, max_rel_err_vs_f64=math.inf if r.max_rel_err_vs_f64 is None else r.max_rel_err_vs_f64) for r in rows]
        # JSON has no inf/NaN: both were written as null (see _finite); read them back as inf
        checks = [AgreementCheck(**(c | {"max_rel_diff": math.inf if c["max_rel_diff"] is None else c["max_rel_diff"]}))
                  for c in data.get("checks", [])]
        return cls(
            rows=rows, checks=checks, machine=data.get("machine", {}), threads=data["threads"],
            dtype=data.get("dtype", "float32"), tolerance=data.get("tolerance", TOLERANCE),
            seed=data.get("seed", 0), notes=list(data.get("notes", [])),
        )


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------
# option parsing
# --------------------------------------------------------------------------


def parse_sizes(sizes: Any) -> list[tuple[int, int, int]]:
    """Sizes as a list of ``(N, P, D)``.

    Accepts a string ``"256x256x2,1024x1024x16"`` (N x P x D triples separated
    by commas) or an iterable of 3-tuples of positive integers.

    Examples
    --------
    >>> parse_sizes("256x256x2, 1024X512x16")
    [(256, 256, 2), (1024, 512, 16)]
    >>> parse_sizes([(8, 4, 2)])
    [(8, 4, 2)]
    >>> parse_sizes("256x256")
    Traceback (most recent call last):
    ...
    sqdist._validation.SqdistError: sizes: expected N x P x D triples of positive integers separated by commas, like '1024x1024x16', got '256x256' in '256x256'
    """
    if isinstance(sizes, str):
        out = []
        items = [s.strip() for s in sizes.split(",")]
        for item in items:
            parts = item.lower().split("x")
            try:
                triple = tuple(int(p.strip()) for p in parts)
            except ValueError:
                triple = ()
            if len(triple) != 3 or min(triple) < 1:
                raise SqdistError(
                    "sizes: expected N x P x D triples of positive integers separated by commas, "
                    f"like '1024x1024x16', got {item!r} in {sizes!r}"
                )
            out.append(triple)
        return out  # type: ignore[return-value]
    try:
        triples = [tuple(t) for t in sizes]
    except TypeError:
        raise SqdistError(f"sizes: expected a string like '1024x1024x16' or a list of (N, P, D), got {sizes!r}") from None
    if not triples:
        raise SqdistError("sizes: expected at least one (N, P, D), got an empty list")
    out = []
    for t in triples:
        if len(t) != 3:
            raise SqdistError(f"sizes: expected (N, P, D) triples, got {t!r}")
        out.append(tuple(check_positive_int(v, f"sizes {t!r}") for v in t))
    return out  # type: ignore[return-value]


def _resolve_methods(methods: Iterable[str] | str | None) -> tuple[str, ...]:
    if methods is None:
        return BENCH_METHODS
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    chosen = {check_choice(m, "methods", BENCH_METHODS) for m in methods}
    if not chosen:
        raise SqdistError(f"methods: expected at least one of {', '.join(BENCH_METHODS)}, got none")
    return tuple(m for m in BENCH_METHODS if m in chosen)


def _resolve_devices(device: str) -> tuple[str, ...]:
    check_choice(device, "device", DEVICES)
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise SqdistError("device: 'cuda' was asked for but torch.cuda.is_available() is False on this machine")
    return ("cpu", "cuda") if (cuda and device != "cpu") else ("cpu",)


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _pinned_threads(threads: int) -> Iterator[None]:
    """torch (and, with threadpoolctl, BLAS/OpenMP) pools pinned to ``threads``."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
        else:
            with threadpool_limits(limits=threads):
                yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _torch_cpu_peak(events: Sequence[Any]) -> int:
    """Peak of the running sum of allocation sizes (frees are negative)."""
    mem = sorted(
        (e for e in events if e.name() == "[memory]" and str(e.device_type()).upper().endswith("CPU")),
        key=lambda e: e.start_ns(),
    )
    cur = peak = 0
    for e in mem:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def _kineto_events(prof: Any) -> list[Any]:
    return list(prof.profiler.kineto_results.events())


_PROFILER_WARM = False


def _warm_profiler() -> None:
    """Profile one tiny op once so that first-use set-up is not counted as a method's memory."""
    global _PROFILER_WARM
    if _PROFILER_WARM:
        return
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        torch.ones(4).sum()
    _torch_cpu_peak(_kineto_events(prof))
    _PROFILER_WARM = True


def _measure_cpu(fn: Callable[[], Any]) -> tuple[Any, int | None]:
    """Run ``fn`` once; return its result and its peak allocated bytes (module docstring)."""
    # Large results normally live on a huge-page mapping that torch's profiler does not see;
    # here they come from torch.empty instead: the same bytes, counted by the profiler.
    with _chunking.plain_allocations():
        return _measure_cpu_traced(fn)


def _measure_cpu_traced(fn: Callable[[], Any]) -> tuple[Any, int | None]:
    from torch.profiler import ProfilerActivity, profile  # imported before tracing starts

    _warm_profiler()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base_tm = tracemalloc.get_traced_memory()[0]
    torch_peak: int | None = None
    try:
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _stderr_silenced():  # only the profiler's own start/stop lines: fn's warnings stay visible
            prof.start()
        try:
            res = fn()
        finally:
            with _stderr_silenced():
                prof.stop()
        try:
            torch_peak = _torch_cpu_peak(_kineto_events(prof))
        except (AttributeError, RuntimeError, TypeError):  # profiler internals moved: no torch figure
            torch_peak = None
        tm_peak = tracemalloc.get_traced_memory()[1] - base_tm
    finally:
        if started:
            tracemalloc.stop()
    if torch_peak is None:
        return res, None
    return res, max(0, tm_peak) + torch_peak


def _measure_cuda(fn: Callable[[], Any], device: torch.device) -> tuple[Any, int]:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    res = fn()
    torch.cuda.synchronize(device)
    return res, max(0, torch.cuda.max_memory_allocated(device) - base)


def _median_time(fn: Callable[[], Any], threads: int, min_run_time: float) -> float:
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return float(timer.blocked_autorange(min_run_time=min_run_time).median)


def _reference_blocks(X64: torch.Tensor, T64: torch.Tensor, rows: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """Float64 distances in row blocks (centred expansion: error ~1e-15 relative to the spread)."""
    c = T64.mean(0) if T64.shape[0] else T64.new_zeros(T64.shape[1])  # (D,)
    Tc = T64 - c  # (P, D)
    nt = (Tc * Tc).sum(1)  # (P,)
    for s in range(0, X64.shape[0], rows):
        Xc = X64[s : s + rows] - c  # (n, D)
        nx = (Xc * Xc).sum(1)  # (n,)
        d = (nx[:, None] + nt[None, :] - 2.0 * (Xc @ Tc.T)).clamp_min_(0)  # (n, P)
        yield slice(s, s + Xc.shape[0]), d


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / |b| (absolute where b == 0); NaN anywhere counts as infinite error."""
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    if a.numel() == 0:
        return 0.0
    den = torch.where(b != 0, b.abs(), torch.ones_like(b))
    err = (a - b).abs() / den
    if bool(torch.isnan(err).any()):
        return math.inf
    return float(err.max())


def _err_vs_f64(res: torch.Tensor, X64: torch.Tensor, T64: torch.Tensor, ref64: torch.Tensor | None = None) -> float:
    """Max relative error of ``res`` (n, p) against float64 distances of X64[:n], T64[:p].

    ``ref64`` (N, P), when given, is the precomputed reference of the full X64, T64.
    """
    n, p = res.shape
    block = max(1, (32 * 2**20) // max(1, 8 * p))
    worst = 0.0
    if ref64 is not None:
        for s in range(0, n, block):
            worst = max(worst, _max_rel(res[s : s + block], ref64[s : min(s + block, n), :p]))
        return worst
    for sl, ref in _reference_blocks(X64[:n], T64[:p], block):
        worst = max(worst, _max_rel(res[sl], ref))
    return worst


def _as_cpu_tensor(res: Any) -> torch.Tensor:
    if isinstance(res, np.ndarray):
        return torch.from_numpy(res)
    return res.detach().cpu()


def _subset(N: int, P: int, max_pairs: int) -> tuple[int, int]:
    """(rows, cols) of the leading block timed instead of the full N x P (at most max_pairs pairs)."""
    if N * P <= max_pairs:
        return N, P
    rows = max(1, min(N, max_pairs // P))
    cols = min(P, max(1, max_pairs // rows))
    return rows, cols


# --------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------


def run_bench(
    sizes: Any = None,
    *,
    device: str = "auto",
    methods: Iterable[str] | str | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    loops_max_pairs: int = 16_384,
    broadcast_max_elements: int = 2**28,
    min_run_time: float = 0.2,
    seed: int = 0,
) -> BenchResult:
    """Run the Task 1 comparison and return every measurement.

    Parameters
    ----------
    sizes : str or sequence of (N, P, D), optional
        ``"256x256x2,1024x1024x16"`` or ``[(256, 256, 2), ...]``; default
        :data:`DEFAULT_SIZES`.
    device : {"auto", "cpu", "cuda"}
        The CPU methods always run (they are the comparison and the reference);
        ``"auto"`` adds the CUDA rows when CUDA is available, ``"cuda"`` requires
        it, ``"cpu"`` leaves them out.
    methods : iterable of str or comma-separated str, optional
        Subset of :data:`BENCH_METHODS` (default all).
    threads : int, optional
        Threads for torch (and BLAS) during the whole run; default all usable cores.
    progress : callable(str), optional
        Called with a short message before each measurement (the CLI prints them).
    loops_max_pairs : int
        The loops are timed on at most this many (i, j) pairs and scaled up.
    broadcast_max_elements : int
        NumPy / torch broadcasting are timed on a row subset (and scaled up) when
        N * P * D exceeds this.
    min_run_time : float
        Seconds per ``blocked_autorange`` measurement.
    seed : int
        Seed of the standard-normal float32 data X (N, D) and T (P, D).

    Returns
    -------
    BenchResult
        ``rows`` (one :class:`BenchRow` per size and method), ``checks``
        (torch vs loops/NumPy), ``machine`` (:func:`sqdist._machine.machine_info`),
        ``validation_passed`` and ``verdict()``.
    """
    grid = parse_sizes(DEFAULT_SIZES if sizes is None else sizes)
    chosen = _resolve_methods(methods)
    devices = _resolve_devices(device)
    threads = usable_cores() if threads is None else check_positive_int(threads, "threads")
    loops_max_pairs = check_positive_int(loops_max_pairs, "loops_max_pairs")
    broadcast_max_elements = check_positive_int(broadcast_max_elements, "broadcast_max_elements")
    min_run_time = check_positive_number(min_run_time, "min_run_time")
    seed = check_positive_int(seed, "seed", minimum=0)
    say = progress or (lambda msg: None)

    rows: list[BenchRow] = []
    checks: list[AgreementCheck] = []
    notes: list[str] = []
    with _pinned_threads(threads):
        info = machine_info()
        for N, P, D in grid:
            _bench_cell(N, P, D, chosen, devices, threads, loops_max_pairs, broadcast_max_elements,
                        min_run_time, seed, say, rows, checks)
    if "cuda" in devices and "gemm" in chosen:
        notes.append("GPU rows use backend='torch' (cuBLAS); 'gemm+copies' includes host<->device copies of X, T and the result")
    return BenchResult(rows=rows, checks=checks, machine=info, threads=threads, seed=seed, notes=notes)


def _bench_cell(
    N: int, P: int, D: int, chosen: tuple[str, ...], devices: tuple[str, ...], threads: int,
    loops_max_pairs: int, broadcast_max_elements: int, min_run_time: float, seed: int,
    say: Callable[[str], None], rows: list[BenchRow], checks: list[AgreementCheck],
) -> None:
    """Measure every method on one size; appends to ``rows`` and ``checks``."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=gen, dtype=torch.float32)  # (N, D)
    T = torch.randn(P, D, generator=gen, dtype=torch.float32)  # (P, D)
    X64, T64 = X.to(torch.float64), T.to(torch.float64)
    Xn, Tn = X.numpy(), T.numpy()
    ref64 = None  # the float64 reference, kept whole when it is small
    if N * P * 8 <= _REF_CACHE_BYTES:
        ref64 = torch.cat([d for _, d in _reference_blocks(X64, T64, max(1, 2**22 // max(1, P)))]) if N else None
    refs: dict[str, torch.Tensor] = {}  # loops / numpy results for the direct comparison
    cell_rows: list[BenchRow] = []

    plan: list[tuple[str, str]] = [(m, "cpu") for m in chosen]
    if "cuda" in devices:
        plan += [(m, "cuda") for m in ("broadcast", "gemm") if m in chosen]
        if "gemm" in chosen:
            plan.append(("gemm+copies", "cuda"))

    for method, dev in plan:
        if method == "loops":
            r, c = _subset(N, P, loops_max_pairs)
        elif method in ("numpy", "broadcast") and N * P * D > broadcast_max_elements:
            r, c = _subset(N, P, max(1, broadcast_max_elements // D))
        else:
            r, c = N, P
        say(f"{N}x{P}x{D}: {_LABELS[(method, dev)]} on {dev}" + (f" ({r}x{c} subset)" if (r, c) != (N, P) else ""))
        fn, measure = _make_call(method, dev, X[:r], T[:c], Xn[:r], Tn[:c])
        res, peak = measure(fn)
        res = _as_cpu_tensor(res)
        t = _median_time(fn, threads, min_run_time) * (N * P) / (r * c)
        err = _err_vs_f64(res, X64, T64, ref64)
        row = BenchRow(
            method=method, device=dev, N=N, P=P, D=D, time_s=t, extrapolated=(r, c) != (N, P),
            timed_rows=r, timed_cols=c, speedup_vs_loops=None, gflops=3.0 * N * P * D / t / 1e9,
            peak_mem_bytes=peak, max_rel_err_vs_f64=err, validated=err <= TOLERANCE,
        )
        cell_rows.append(row)
        if method in ("loops", "numpy"):
            refs[method] = res
        else:
            for ref_name, ref in refs.items():
                n, p = min(ref.shape[0], res.shape[0]), min(ref.shape[1], res.shape[1])
                diff = _max_rel(res[:n, :p], ref[:n, :p])
                checks.append(AgreementCheck(N, P, D, method, dev, ref_name, diff, diff <= 2 * TOLERANCE))
        del res
    loops_t = next((r.time_s for r in cell_rows if r.method == "loops"), None)
    for row in cell_rows:
        rows.append(dataclasses.replace(row, speedup_vs_loops=None if loops_t is None else loops_t / row.time_s))


def _make_call(
    method: str, dev: str, X: torch.Tensor, T: torch.Tensor, Xn: np.ndarray, Tn: np.ndarray
) -> tuple[Callable[[], Any], Callable[[Callable[[], Any]], tuple[Any, int | None]]]:
    """The timed callable of one method and how to measure its memory."""
    if method in ("loops", "numpy"):
        return (lambda: sqdist(Xn, Tn, method=method)), _measure_cpu
    if dev == "cpu":
        return (lambda: sqdist(X, T, method=method)), _measure_cpu
    cuda = torch.device("cuda")
    if method == "gemm+copies":

        def fn() -> torch.Tensor:
            return sqdist(X.to(cuda), T.to(cuda), method="gemm", backend="torch").cpu()

    else:
        Xd, Td = X.to(cuda), T.to(cuda)

        def fn() -> torch.Tensor:
            return sqdist(Xd, Td, method=method, backend="torch")

    return fn, (lambda f: _measure_cuda(f, cuda))


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
    >>> print(format_table(run_bench("16x8x2", methods="numpy,gemm", device="cpu",
    ...                              threads=1, min_run_time=0.01)))  # doctest: +ELLIPSIS
    sqdist bench: float32, 1 thread, ...
    <BLANKLINE>
        N     P    D  method ...
    ...
    validation passed: torch CPU (gemm) equals NumPy within tolerance 0.0001 ...
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
            "yes" if r.validated else "NO",
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


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def configure_parser(parser: Any) -> None:
    """Options of ``sqdist bench``."""
    parser.add_argument(
        "--sizes", default=None, metavar="NxPxD,...",
        help="comma-separated sizes, e.g. '256x256x2,1024x1024x16' (default: "
        + ",".join("x".join(map(str, s)) for s in DEFAULT_SIZES) + ")",
    )
    parser.add_argument("--device", default="auto", choices=DEVICES, help="add the CUDA rows: auto (if available), cuda (required), cpu (never)")
    parser.add_argument("--methods", default=None, metavar="M,...", help=f"subset of {','.join(BENCH_METHODS)} (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and BLAS (default: all usable cores)")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the results to FILE (.json or .csv)")
    parser.add_argument("--quick", action="store_true", help="small grid and short timings (" + ",".join("x".join(map(str, s)) for s in QUICK_SIZES) + ")")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random data (default 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


def run(args: Any) -> int:
    """``sqdist bench``: print the table; exit 0 if validation passed, 1 if not."""
    if args.out is not None and Path(args.out).suffix.lower() not in (".json", ".csv"):
        raise SqdistError(f"--out: expected a file name ending in .json or .csv, got {args.out!r}")
    sizes = args.sizes if args.sizes is not None else (QUICK_SIZES if args.quick else None)
    progress = None if args.quiet else (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    result = run_bench(
        sizes, device=args.device, methods=args.methods, threads=args.threads, progress=progress,
        min_run_time=0.05 if args.quick else 0.2, seed=args.seed,
    )
    print(format_table(result))
    if not args.quiet:
        print(f"  (benchmark took {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    if args.out is not None:
        write_results(result, args.out)
        print(f"results written to {args.out}")
    return 0 if result.validation_passed else 1
