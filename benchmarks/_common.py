"""Shared helpers of the CPU benchmarks: thread pinning, interleaved timing, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def pin_threads(n: int) -> dict:
    """Pin every thread pool we know of to ``n`` threads; returns what was pinned."""
    info = {"threads": n}
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


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, budget_s: float = 60.0,
                settle_s: float = 0.0, number: int = 1) -> dict[str, float]:
    """Min-of-rounds seconds per call, the candidates interleaved round by round.

    On a shared, noisy machine the minimum over interleaved rounds is the most
    stable estimate of each candidate's own cost, and interleaving exposes all
    candidates to the same background load.  Stops early after ``budget_s``.
    ``settle_s``: pause before each timed call.  OpenBLAS and OpenMP worker
    threads keep spinning for up to ~0.2 s after a parallel call; without the
    pause they take cores away from whichever candidate runs next (measured:
    a 2-thread kernel run right after a 2-thread ``np.matmul`` took 1.5-1.7x
    its time after a 0.2 s pause).  ``number``: calls per timed block (the
    time per call is the block's mean) -- for sub-millisecond calls, whose
    single timings after a pause measure a cold start rather than the
    steady state.
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    t_end = time.perf_counter() + budget_s
    for _ in range(rounds):
        for k, f in fns.items():
            if settle_s:
                time.sleep(settle_s)
            t = time.perf_counter()
            for _ in range(number):
                f()
            times[k].append((time.perf_counter() - t) / number)
        if time.perf_counter() > t_end:
            break
    return {k: min(v) for k, v in times.items()}


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
