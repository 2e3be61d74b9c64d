"""What machine a measurement ran on: CPU, cores, threads, memory, versions, GPU.

Benchmarks and the report print this next to every timing so a reader can
judge the numbers.  Only the standard library, torch and NumPy are used.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np
import torch

__all__ = ["available_memory_bytes", "machine_info", "format_machine", "usable_cores"]


def usable_cores() -> int:
    """Logical cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _meminfo_bytes(field: str) -> int | None:
    """One ``/proc/meminfo`` field (e.g. ``"MemTotal"``) in bytes; None where there is no such file or field."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _total_memory_bytes() -> int | None:
    total = _meminfo_bytes("MemTotal")
    if total is not None:
        return total
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def available_memory_bytes() -> int | None:
    """Memory the kernel says is available for new allocations (``MemAvailable``), else the total; None if unknown."""
    available = _meminfo_bytes("MemAvailable")
    return available if available is not None else _total_memory_bytes()


def machine_info() -> dict[str, Any]:
    """A JSON-serialisable description of this machine and software.

    Returns
    -------
    dict
        ``cpu_model``, ``logical_cores`` (``os.cpu_count()``), ``usable_cores``
        (the CPU affinity of this process), ``torch_threads``
        (``torch.get_num_threads()`` now), ``total_memory_bytes`` (or None),
        ``platform``, ``python``, ``torch``, ``numpy``, ``cuda_available`` and
        ``gpu_name`` (None without CUDA).

    Examples
    --------
    >>> from sqdist._machine import machine_info
    >>> info = machine_info()
    >>> info["logical_cores"] >= 1 and info["torch_threads"] >= 1
    True
    >>> sorted(info)[:3]
    ['cpu_model', 'cuda_available', 'gpu_name']
    """
    cuda = torch.cuda.is_available()
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "total_memory_bytes": _total_memory_bytes(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda_available": cuda,
        "gpu_name": torch.cuda.get_device_name(0) if cuda else None,
    }


def format_machine(info: dict[str, Any]) -> str:
    """One line summarising :func:`machine_info` for table headers.

    Examples
    --------
    >>> from sqdist._machine import format_machine
    >>> format_machine({"cpu_model": "Some CPU", "logical_cores": 2, "usable_cores": 2,
    ...                 "total_memory_bytes": 2**34, "torch": "2.0", "numpy": "1.26",
    ...                 "gpu_name": None})
    'Some CPU, 2 logical cores (2 usable), 16.0 GiB RAM, torch 2.0, numpy 1.26, no GPU'
    """
    mem = info.get("total_memory_bytes")
    mem_s = f"{mem / 2**30:.1f} GiB RAM" if mem else "RAM unknown"
    gpu = info.get("gpu_name") or "no GPU"
    return (
        f"{info.get('cpu_model', '?')}, {info.get('logical_cores', '?')} logical cores "
        f"({info.get('usable_cores', '?')} usable), {mem_s}, torch {info.get('torch', '?')}, "
        f"numpy {info.get('numpy', '?')}, {gpu}"
    )
