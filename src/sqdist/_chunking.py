"""Working-memory budget and row chunking.

Every function that could build a large temporary takes ``working_memory``
(MiB).  ``None`` means the global default, 256 MiB, changeable with
:func:`set_working_memory` or temporarily with :func:`working_memory`.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._validation import SqdistError, check_positive_number

if TYPE_CHECKING:
    import torch

__all__ = ["get_working_memory", "set_working_memory", "working_memory"]

_DEFAULT_MIB = 256.0
_state = threading.local()


def get_working_memory() -> float:
    """Current default working-memory budget in MiB (256 unless changed)."""
    return getattr(_state, "mib", _DEFAULT_MIB)


def set_working_memory(mib: float) -> None:
    """Set the default working-memory budget (MiB) for this thread.

    Examples
    --------
    >>> import sqdist
    >>> old = sqdist.get_working_memory()
    >>> sqdist.set_working_memory(64)
    >>> sqdist.get_working_memory()
    64.0
    >>> sqdist.set_working_memory(old)
    """
    _state.mib = _check_mib(mib)


def _check_mib(mib: float) -> float:
    """A budget in MiB: a finite number > 0, at most 2**33 (8 EiB -- more than any machine)."""
    mib = check_positive_number(mib, "working_memory")
    if mib > 2**33:
        raise SqdistError(f"working_memory: expected at most 2**33 MiB, got {mib!r}")
    return mib


@contextlib.contextmanager
def working_memory(mib: float) -> Iterator[None]:
    """Context manager that sets the default budget temporarily.

    Examples
    --------
    >>> import sqdist
    >>> with sqdist.working_memory(32):
    ...     sqdist.get_working_memory()
    32.0
    """
    old = get_working_memory()
    set_working_memory(mib)
    try:
        yield
    finally:
        _state.mib = old


def resolve_budget(mib: float | None) -> int:
    """Budget in bytes from a MiB value or the default."""
    if mib is None:
        mib = get_working_memory()
    else:
        mib = _check_mib(mib)
    return int(mib * 2**20)


def rows_per_chunk(n_rows: int, bytes_per_row: int, budget_bytes: int, *, what: str = "rows") -> int:
    """How many rows fit the budget; at least one (with a warning when one row is already over)."""
    if n_rows <= 0:
        return 1
    bytes_per_row = max(int(bytes_per_row), 1)
    rows = budget_bytes // bytes_per_row
    if rows < 1:
        warnings.warn(
            f"working_memory of {budget_bytes / 2**20:.3g} MiB is too small for one row of {what} "
            f"({bytes_per_row / 2**20:.3g} MiB); using one row at a time",
            RuntimeWarning,
            stacklevel=3,
        )
        return 1
    return int(min(rows, n_rows))


def row_slices(n_rows: int, chunk: int) -> Iterator[slice]:
    """Consecutive slices of at most ``chunk`` rows covering ``range(n_rows)``."""
    if chunk < 1:
        raise SqdistError(f"chunk: expected >= 1, got {chunk}")
    for start in range(0, n_rows, chunk):
        yield slice(start, min(start + chunk, n_rows))


def empty_output(shape: tuple[int, ...], dtype, device) -> torch.Tensor:
    """Uninitialised result tensor from torch's ordinary allocator (``torch.empty``).

    Until 2026-11-29 large CPU results were placed on a private anonymous
    mapping advised ``MADV_HUGEPAGE``.  Back to back it won only while each
    result was freed before the next one was made; with results kept alive
    the kernel's huge-page compaction stalled calls for 130-240 ms, 2-4x
    ``torch.empty`` (``benchmarks/realistic.py --sections alloc``;
    docs/performance.md), and torch's memory profiler did not see those
    results.  The ordinary allocator pays the same 4 KiB faults as any fresh
    torch result, predictably.
    """
    import torch

    return torch.empty(shape, dtype=dtype, device=device)
