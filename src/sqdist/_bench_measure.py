"""How ``sqdist bench`` measures a call: median time, peak memory, error against float64, pinned threads.

Used by :mod:`sqdist.bench` for every row and by the report's extra
comparisons, so that all timings on the page are taken the same way.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

__all__ = ["err_vs_f64", "max_rel", "measure_cpu", "measure_cuda", "median_time", "pinned_threads", "reference_blocks"]


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
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


@functools.cache
def _warm_profiler() -> None:
    """Profile one tiny op once so that first-use set-up is not counted as a method's memory.

    Cached: runs once per process (a call that raises is not cached and is tried again).
    """
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        torch.ones(4).sum()
    _torch_cpu_peak(_kineto_events(prof))


def measure_cpu(fn: Callable[[], Any]) -> tuple[Any, int | None]:
    """Run ``fn`` once; return its result and its peak allocated bytes (:mod:`sqdist.bench` docstring).

    The peak is tracemalloc's (NumPy, Python) plus torch's CPU allocator's
    (profiler memory events); None when the profiler gives no events.
    """
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


def measure_cuda(fn: Callable[[], Any], device: torch.device) -> tuple[Any, int]:
    """Run ``fn`` once; return its result and the growth of ``torch.cuda.max_memory_allocated``."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    res = fn()
    torch.cuda.synchronize(device)
    return res, max(0, torch.cuda.max_memory_allocated(device) - base)


def median_time(fn: Callable[[], Any], threads: int, min_run_time: float) -> float:
    """Median seconds per call of ``fn``: :class:`torch.utils.benchmark.Timer`'s ``blocked_autorange``."""
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return float(timer.blocked_autorange(min_run_time=min_run_time).median)


def reference_blocks(X64: torch.Tensor, T64: torch.Tensor, rows: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """Float64 distances in row blocks (centred expansion: error ~1e-15 relative to the spread)."""
    c = T64.mean(0) if T64.shape[0] else T64.new_zeros(T64.shape[1])  # (D,)
    Tc = T64 - c  # (P, D)
    nt = (Tc * Tc).sum(1)  # (P,)
    for s in range(0, X64.shape[0], rows):
        Xc = X64[s : s + rows] - c  # (n, D)
        nx = (Xc * Xc).sum(1)  # (n,)
        d = (nx[:, None] + nt[None, :] - 2.0 * (Xc @ Tc.T)).clamp_min_(0)  # (n, P)
        yield slice(s, s + Xc.shape[0]), d


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
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


def err_vs_f64(res: torch.Tensor, X64: torch.Tensor, T64: torch.Tensor, ref64: torch.Tensor | None = None) -> float:
    """Max relative error of ``res`` (n, p) against float64 distances of X64[:n], T64[:p].

    ``ref64`` (N, P), when given, is the precomputed reference of the full X64, T64.
    """
    n, p = res.shape
    block = max(1, (32 * 2**20) // max(1, 8 * p))
    worst = 0.0
    if ref64 is not None:
        for s in range(0, n, block):
            worst = max(worst, max_rel(res[s : s + block], ref64[s : min(s + block, n), :p]))
        return worst
    for sl, ref in reference_blocks(X64[:n], T64[:p], block):
        worst = max(worst, max_rel(res[sl], ref))
    return worst
