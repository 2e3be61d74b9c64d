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

Methods (``method`` column), each labelled by what runs (:data:`LABELS`):
the exercise's solutions of :mod:`sqdist.exercise` -- ``"loops"``, two
Python for-loops ("Python loops", :func:`~sqdist.exercise.distances_loops`);
``"numpy"``, NumPy broadcasting (:func:`~sqdist.exercise.distances_numpy`);
``"torch"``, PyTorch broadcasting ("PyTorch CPU (broadcasting)",
:func:`~sqdist.exercise.distances_torch`); ``"expansion"``, PyTorch with
``||x||^2 + ||t||^2 - 2 x.t`` through one matrix product ("PyTorch CPU
(expansion, matmul)", :func:`~sqdist.exercise.distances_torch_expansion`) --
and ``"sqdist"``: :func:`sqdist.sqdist` with its default settings, labelled
by the engine it really dispatches to (:func:`sqdist_engine`): "sqdist
(compiled C kernel)" or "sqdist (compiled numba kernel)" on the CPU for small
D (sqdist's C kernels when built, else numba when installed), "sqdist
(PyTorch)" otherwise, "sqdist (Triton)" for CUDA tensors with Triton
installed.  With CUDA, ``"torch"``, ``"expansion"`` and ``"sqdist"`` also run
on the GPU with the data already there (kernel time), and ``"torch+copies"``
adds the host-to-device copies of X and T and the copy of the result back.
Every method is called once before it is measured (warm-up: first-call
set-up such as compilation or allocator growth is neither timed nor counted
as memory).

**Subsets.**  The loops take several microseconds per pair, so they are timed
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
>>> res = run_bench("64x48x3", methods=("loops", "numpy", "torch"), device="cpu",
...                 threads=1, min_run_time=0.01)
>>> [(r.label, r.N, r.P, r.D) for r in res.rows]
[('Python loops', 64, 48, 3), ('NumPy broadcasting', 64, 48, 3), ('PyTorch CPU (broadcasting)', 64, 48, 3)]
>>> res.validation_passed
True
>>> "validation passed" in format_table(res)
True
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import _ckernels as c_kernels
from ._backend import resolve_backend, resolve_method
from ._bench_measure import err_vs_f64, max_rel, measure_cpu, measure_cuda, median_time, pinned_threads, reference_blocks
from ._bench_result import APPROXIMATE, LABELS, TOLERANCE, AgreementCheck, BenchResult, BenchRow, format_table, write_results
from ._cpu_kernels import kernels
from ._machine import available_memory_bytes, machine_info, usable_cores
from ._validation import SqdistError, check_choice, check_output_path, check_positive_int, check_positive_number
from .distances import sqdist
from .exercise import distances_loops, distances_numpy, distances_torch, distances_torch_expansion

__all__ = [
    "APPROXIMATE",
    "BENCH_METHODS",
    "LABELS",
    "DEFAULT_SIZES",
    "QUICK_SIZES",
    "TOLERANCE",
    "BenchResult",
    "BenchRow",
    "AgreementCheck",
    "format_table",
    "parse_sizes",
    "run_bench",
    "sqdist_engine",
    "write_results",
]

#: Methods run on the CPU, in table order.  With CUDA, "torch", "expansion" and "sqdist"
#: also run on the GPU and "torch" adds the "torch+copies" row.
BENCH_METHODS = ("loops", "numpy", "torch", "expansion", "sqdist")
#: The exercise's function behind each method (the report shows their source).
EXERCISE_FUNCTIONS = {
    "loops": distances_loops,
    "numpy": distances_numpy,
    "torch": distances_torch,
    "expansion": distances_torch_expansion,
}
DEVICES = ("auto", "cpu", "cuda")
#: Default grid (N, P, D): finishes in well under a minute on 2 cores.
DEFAULT_SIZES: tuple[tuple[int, int, int], ...] = ((1024, 1024, 2), (1024, 1024, 128), (4096, 4096, 2))
#: Grid of ``sqdist bench --quick``.
QUICK_SIZES: tuple[tuple[int, int, int], ...] = ((256, 256, 2), (1024, 1024, 16))

_REF_CACHE_BYTES = 2**28  # keep the float64 reference of a size whole up to 256 MiB


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
    sqdist.SqdistError: sizes: expected N x P x D triples of positive integers separated by commas,
    like '1024x1024x16', got '256x256' in '256x256'
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


def bytes_needed(N: int, P: int, D: int) -> int:
    """Peak host memory of one size, roughly: the data in float32 and float64 (12 (N + P) D bytes), up to
    three N x P results alive at once (the float64 reference, a NumPy result, the method's own: 16 N P)
    and the working-memory budget of the product path (256 MiB)."""
    return 12 * (N + P) * D + 16 * N * P + (1 << 28)


def _check_memory(grid: list[tuple[int, int, int]]) -> None:
    """Refuse sizes that cannot fit this machine's available memory, before allocating anything."""
    avail = available_memory_bytes()
    if avail is None:
        return
    for N, P, D in grid:
        need = bytes_needed(N, P, D)
        if need > avail:
            raise SqdistError(
                f"sizes: {N}x{P}x{D} needs about {need / 2**30:.3g} GiB of memory (its N x P distance matrices and "
                f"copies of the data), this machine has {avail / 2**30:.3g} GiB available; choose smaller sizes"
            )


def sqdist_engine(X: torch.Tensor, T: torch.Tensor) -> str:
    """The engine that ``sqdist.sqdist(X, T)`` (default settings) dispatches to for these tensors.

    ``"compiled C kernel"`` or ``"compiled numba kernel"`` (CPU, small D or, with the C
    kernels, small problems: the direct-formula kernel of :mod:`sqdist._cpu_kernels`, C
    when built, else numba),
    ``"Triton"`` (CUDA tensors, Triton installed) or ``"PyTorch"`` (the exact
    matrix-product path).

    Examples
    --------
    >>> import torch
    >>> sqdist_engine(torch.zeros(4, 2000), torch.zeros(3, 2000))  # many features: the product path
    'PyTorch'
    """
    backend = resolve_backend("auto", X.device)
    if backend == "triton":
        return "Triton"
    if resolve_method("auto", X, T, backend) != "_direct":
        return "PyTorch"
    return "compiled C kernel" if kernels() is c_kernels else "compiled numba kernel"


def _label(method: str, dev: str, X: torch.Tensor, T: torch.Tensor) -> str:
    if method != "sqdist":
        return LABELS[(method, dev)]
    engine = sqdist_engine(X.to(dev) if dev != "cpu" else X, T.to(dev) if dev != "cpu" else T)
    return f"sqdist ({engine}{', GPU' if dev != 'cpu' and engine == 'PyTorch' else ''})"


def _resolve_devices(device: str) -> tuple[str, ...]:
    check_choice(device, "device", DEVICES)
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise SqdistError("device: 'cuda' was asked for but torch.cuda.is_available() is False on this machine")
    return ("cpu", "cuda") if (cuda and device != "cpu") else ("cpu",)


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
    _check_memory(grid)
    chosen = _resolve_methods(methods)
    devices = _resolve_devices(device)
    threads = usable_cores() if threads is None else check_positive_int(threads, "threads")
    loops_max_pairs = check_positive_int(loops_max_pairs, "loops_max_pairs")
    broadcast_max_elements = check_positive_int(broadcast_max_elements, "broadcast_max_elements")
    min_run_time = check_positive_number(min_run_time, "min_run_time")
    seed = check_positive_int(seed, "seed", minimum=0)
    if seed >= 2**63:
        raise SqdistError(f"seed: expected an integer in [0, 2**63), got {seed}")
    say = progress or (lambda msg: None)

    rows: list[BenchRow] = []
    checks: list[AgreementCheck] = []
    notes: list[str] = []
    with pinned_threads(threads):
        info = machine_info()
        for N, P, D in grid:
            _bench_cell(N, P, D, chosen, devices, threads, loops_max_pairs, broadcast_max_elements,
                        min_run_time, seed, say, rows, checks)
    if "cuda" in devices and "torch" in chosen:
        notes.append("GPU rows: the data are on the GPU before the clock starts; "
                     "'+ copies' includes the host<->device copies of X, T and the result")
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
        ref64 = torch.cat([d for _, d in reference_blocks(X64, T64, max(1, 2**22 // max(1, P)))]) if N else None
    refs: dict[str, torch.Tensor] = {}  # loops / numpy results for the direct comparison
    cell_rows: list[BenchRow] = []

    plan: list[tuple[str, str]] = [(m, "cpu") for m in chosen]
    if "cuda" in devices:
        plan += [(m, "cuda") for m in ("torch", "expansion", "sqdist") if m in chosen]
        if "torch" in chosen:
            plan.append(("torch+copies", "cuda"))

    for method, dev in plan:
        if method == "loops":
            r, c = _subset(N, P, loops_max_pairs)
        elif method in ("numpy", "torch", "torch+copies") and N * P * D > broadcast_max_elements:
            r, c = _subset(N, P, max(1, broadcast_max_elements // D))
        else:
            r, c = N, P
        label = _label(method, dev, X[:r], T[:c])
        say(f"{N}x{P}x{D}: {label}" + (f" ({r}x{c} subset)" if (r, c) != (N, P) else ""))
        fn, measure = _make_call(method, dev, X[:r], T[:c], Xn[:r], Tn[:c])
        fn()  # warm-up: first-call set-up (compilation, allocator growth) is neither timed nor measured
        res, peak = measure(fn)
        res = _as_cpu_tensor(res)
        t = median_time(fn, threads, min_run_time) * (N * P) / (r * c)
        err = err_vs_f64(res, X64, T64, ref64)
        row = BenchRow(
            method=method, device=dev, N=N, P=P, D=D, time_s=t, extrapolated=(r, c) != (N, P),
            timed_rows=r, timed_cols=c, speedup_vs_loops=None, gflops=3.0 * N * P * D / t / 1e9,
            peak_mem_bytes=peak, max_rel_err_vs_f64=err, validated=err <= TOLERANCE, label=label,
        )
        cell_rows.append(row)
        if method in ("loops", "numpy"):
            refs[method] = res
        else:
            for ref_name, ref in refs.items():
                n, p = min(ref.shape[0], res.shape[0]), min(ref.shape[1], res.shape[1])
                diff = max_rel(res[:n, :p], ref[:n, :p])
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
        f_np = EXERCISE_FUNCTIONS[method]
        return (lambda: f_np(Xn, Tn)), measure_cpu
    f = sqdist if method == "sqdist" else EXERCISE_FUNCTIONS[method.removesuffix("+copies")]
    if dev == "cpu":
        return (lambda: f(X, T)), measure_cpu
    cuda = torch.device("cuda")
    if method == "torch+copies":

        def fn() -> torch.Tensor:
            return f(X.to(cuda), T.to(cuda)).cpu()

    else:
        Xd, Td = X.to(cuda), T.to(cuda)

        def fn() -> torch.Tensor:
            return f(Xd, Td)

    return fn, (lambda fn_: measure_cuda(fn_, cuda))


def _as_cpu_tensor(res: Any) -> torch.Tensor:
    """A method's result (NumPy array or tensor on any device) as a CPU tensor."""
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
# CLI
# --------------------------------------------------------------------------


def configure_parser(parser: Any) -> None:
    """Options of ``sqdist bench``."""
    parser.add_argument(
        "--sizes", default=None, metavar="NxPxD,...",
        help="comma-separated sizes, e.g. '256x256x2,1024x1024x16' (default: "
        + ",".join("x".join(map(str, s)) for s in DEFAULT_SIZES) + ")",
    )
    parser.add_argument(
        "--device", default="auto", choices=DEVICES,
        help="add the CUDA rows: auto (if available), cuda (required), cpu (never)",
    )
    parser.add_argument("--methods", default=None, metavar="M,...", help=f"subset of {','.join(BENCH_METHODS)} (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and BLAS (default: all usable cores)")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the results to FILE (.json or .csv)")
    parser.add_argument(
        "--quick", action="store_true",
        help="small grid and short timings (" + ",".join("x".join(map(str, s)) for s in QUICK_SIZES) + ")",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random data (default 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


def run(args: Any) -> int:
    """``sqdist bench``: print the table; exit 0 if validation passed, 1 if not."""
    if args.out is not None and Path(args.out).suffix.lower() not in (".json", ".csv"):
        raise SqdistError(f"--out: expected a file name ending in .json or .csv, got {args.out!r}")
    if args.out is not None:
        check_output_path(args.out, "--out")  # a folder, or a missing one, fails now, not after the benchmark
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
