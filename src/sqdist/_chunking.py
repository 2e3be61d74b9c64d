"""Working-memory budget and row chunking.

Every function that could build a large temporary takes ``working_memory``
(MiB).  ``None`` means the global default, 256 MiB, changeable with
:func:`set_working_memory` or temporarily with :func:`working_memory`.
"""

from __future__ import annotations

import contextlib
import contextvars
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


_HUGEPAGE_MIN_BYTES = 4 * 2**20
_huge_pages: contextvars.ContextVar[bool] = contextvars.ContextVar("sqdist_huge_pages", default=True)


@contextlib.contextmanager
def plain_allocations() -> Iterator[None]:
    """Within the block, results come from ``torch.empty`` (no huge-page mapping).

    Same bytes, ordinary 4 KiB pages: used by ``sqdist bench`` so that torch's
    memory profiler, which only sees its own allocator, counts the result.
    """
    token = _huge_pages.set(False)
    try:
        yield
    finally:
        _huge_pages.reset(token)


def empty_output(shape: tuple[int, ...], dtype, device) -> torch.Tensor:
    """Uninitialised result tensor; large CPU results are backed by transparent huge pages.

    A fresh N x P result is written exactly once, so on the CPU the kernel's
    page faults (one per 4 KiB page, each zeroing the page) can cost more than
    computing the distances: a fresh 64 MiB ``torch.empty`` at 4096 x 4096
    took ~28 ms to fault in and fill here.  On Linux, a private anonymous
    mapping advised with ``MADV_HUGEPAGE`` faults in 2 MiB at a time (~3.5 ms).  Falls back to
    ``torch.empty`` elsewhere or for small results.  The mapping is freed with
    the tensor (and any NumPy view of it).
    """
    import torch

    numel = 1
    for s in shape:
        numel *= int(s)
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = numel * itemsize
    if torch.device(device).type != "cpu" or nbytes < _HUGEPAGE_MIN_BYTES or not _huge_pages.get():
        return torch.empty(shape, dtype=dtype, device=device)
    try:
        import mmap

        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # private: THP applies
        buf.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError, ValueError):  # not Linux, or THP unavailable
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.frombuffer(buf, dtype=dtype, count=numel).view(shape)
