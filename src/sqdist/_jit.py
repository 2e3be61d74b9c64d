"""numba's ``njit`` and ``prange`` for the kernel modules, or no-op stand-ins when numba is missing.

The kernel modules (:mod:`sqdist._cpu_nb`, :mod:`sqdist._sparse_nb`) are only
imported through their dispatchers, which check that numba is installed.
Without numba the stand-ins below let those modules still import (pytest
collects every module for doctests); their functions are then plain, slow
Python and sqdist never calls them.
"""

from __future__ import annotations

try:
    from numba import njit, prange
except ImportError:  # pragma: no cover - only the doctest collector gets here without numba

    def njit(*args, **kwargs):
        """A no-op decorator, with or without arguments."""
        if args and callable(args[0]):
            return args[0]
        return lambda f: f

    prange = range

__all__ = ["njit", "prange"]
