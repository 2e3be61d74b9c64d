"""Shared helpers of the CPU benchmarks: thread pinning, the CPU's description, interleaved timing, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def cpu_info() -> dict:
    """The CPU a measurement ran on: model, cores, vector extensions, torch's kernel level.

    ``avx2`` / ``avx512`` come from the flags in ``/proc/cpuinfo`` (Linux; None
    elsewhere); ``torch_cpu_capability`` is the ATen kernel set torch picked
    (``ATEN_CPU_CAPABILITY`` can force a lower one); the variables that force
    code paths (``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``,
    ``NUMBA_CPU_NAME``, ``OPENBLAS_CORETYPE``) are recorded as set.
    """
    model, flags = platform.processor() or platform.machine(), None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:  # the first processor's entry is enough
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name":
                    model = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        capability = None
    env = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "NUMBA_CPU_NAME", "OPENBLAS_CORETYPE", "OMP_NUM_THREADS")
    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "avx2": None if flags is None else "avx2" in flags,
        "avx512": None if flags is None else sorted(f for f in flags if f.startswith("avx512")),
        "torch_cpu_capability": capability,
        "forced": {k: os.environ[k] for k in env if k in os.environ},
    }


def cpu_line(info: dict) -> str:
    """One line for a table header: ``model, n cores, AVX2 / AVX-512, torch kernels``."""
    vec = "AVX-512" if info.get("avx512") else ("AVX2" if info.get("avx2") else "no AVX2")
    return (f"{info.get('model')}, {info.get('usable_cores')} usable cores, {vec}, "
            f"torch kernels {info.get('torch_cpu_capability')}" + (f", forced {info['forced']}" if info.get("forced") else ""))


def pin_threads(n: int) -> dict:
    """Pin every thread pool we know of to ``n`` threads; returns what was pinned and the CPU."""
    info = {"threads": n, "cpu": cpu_info()}
    torch.set_num_threads(n)
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(n)
        info["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "architecture", "num_threads", "version")}
            for p in threadpoolctl.threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = "threadpoolctl missing"
    try:
        import numba

        from sqdist import _cpu_kernels

        if _cpu_kernels.available():
            _cpu_kernels._nb()  # sqdist's threading layer (workqueue) first: set_num_threads would start numba's omp one
        numba.set_num_threads(n)
        info["numba"] = numba.__version__
    except ImportError:
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    info["OPENBLAS_L2_SIZE"] = os.environ.get("OPENBLAS_L2_SIZE")
    info["machine"] = platform.processor() or platform.machine()
    return info


def interleaved_runs(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, budget_s: float = 60.0,
                     number: int = 1, before: Callable[[], object] | None = None,
                     min_s: float = 0.0) -> dict[str, list[float]]:
    """Seconds per call of every round, the candidates interleaved round by round.

    Interleaving exposes all candidates to the same background load.  No pause
    between calls: worker threads that keep spinning after a parallel call
    (OpenMP, OpenBLAS, numba) take cores from whatever runs next, and that is
    part of the cost a user sees calling one library after another.  At least
    ``rounds`` rounds, and more until ``min_s`` seconds have passed (a median
    of 5 rounds of a 20 ms step is one outlier away from another value);
    stops early after ``budget_s``.  ``number``: calls per timed block (the
    time per call is the block's mean) -- for sub-millisecond calls.
    ``before``: run, untimed, right before each timed block (e.g. the user's
    own torch work).
    """
    for _ in range(warmup):
        for f in fns.values():
            if before is not None:
                before()
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    t_start = time.perf_counter()
    t_end = t_start + budget_s
    done = 0
    while True:
        for k, f in fns.items():
            if before is not None:
                before()
            t = time.perf_counter()
            for _ in range(number):
                f()
            times[k].append((time.perf_counter() - t) / number)
        done += 1
        now = time.perf_counter()
        if now > t_end or (done >= rounds and now - t_start >= min_s):
            break
    return times


def stats(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """``{name: {"median": s, "min": s, "rounds": n}}`` of :func:`interleaved_runs`' times."""
    return {k: {"median": statistics.median(v), "min": min(v), "rounds": len(v)} for k, v in times.items()}


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, budget_s: float = 60.0,
                number: int = 1, before: Callable[[], object] | None = None,
                min_s: float = 0.0) -> dict[str, dict[str, float]]:
    """Median and minimum seconds per call over interleaved rounds (see :func:`interleaved_runs`)."""
    return stats(interleaved_runs(fns, rounds, warmup, budget_s, number, before, min_s))


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
    os.replace(tmp, path)


def median(xs):
    return statistics.median(xs)
