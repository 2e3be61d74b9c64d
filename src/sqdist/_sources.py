"""Data sources: in-memory arrays, ``.npy`` files and memory maps, and re-iterables of chunks.

Data that does not fit in memory is read one *chunk* of rows at a time:

* a path to a ``.npy`` file (memory-mapped read-only by
  :func:`sqdist._files.open_npy`: header checked, never unpickled; a 1-D file
  is N points of one feature) or a ``np.memmap``: after a chunk is copied
  out, its pages are released from
  this process (``madvise(MADV_DONTNEED)``: the data stays in the OS page
  cache, but is no longer counted in the process's resident set), so resident
  memory stays bounded by the working-memory budget, not by the file size;
* any re-iterable of (n_i, D) arrays or tensors (a list, or an object whose
  ``__iter__`` returns a fresh iterator -- not a one-shot generator): each
  element is split into pieces of at most ``R`` rows;
* an in-memory array or tensor (views, no copy).

``R`` (:func:`chunk_rows`) is ``min(65536, rows that fit the working
memory)``: it depends on the budget, the number of clusters and features,
never on the number of processes -- which is what makes distributed runs
bit-identical to one process (see :mod:`sqdist._shard`).
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from . import _chunking
from ._files import open_npy
from ._validation import SqdistError, as_tensor, describe

__all__ = ["CHUNK_ROWS_MAX", "Source", "as_source", "chunk_rows", "is_out_of_core", "is_sparse", "malloc_trim"]

# Largest chunk (rows): a fixed cap so that, for any budget large enough, the
# chunk grid -- and therefore every floating-point result -- is the same.
CHUNK_ROWS_MAX = 1 << 16
_PAGE = mmap.PAGESIZE


def chunk_rows(budget: int, K: int, D: int, itemsize: int) -> int:
    """Rows per chunk: the distance block (n, K) with its temporaries, the copy and its float64 view."""
    per_row = K * (2 * itemsize + 1) + (D + 2) * itemsize + D * (itemsize + 8) + 32
    return _chunking.rows_per_chunk(CHUNK_ROWS_MAX, per_row, budget, what="k-means")  # at most CHUNK_ROWS_MAX


def _is_chunk(x: Any) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 2


def is_sparse(X: Any) -> bool:
    """True for SciPy sparse matrices/arrays and sparse torch tensors (not supported as data yet)."""
    if isinstance(X, torch.Tensor):
        return X.layout != torch.strided
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def is_out_of_core(X: Any) -> bool:
    """True for data that sqdist streams instead of loading: a path or an iterable of chunks.

    Arrays, tensors and memory maps (``np.load(..., mmap_mode="r")``, and the
    read-only memmaps joblib hands to worker processes) are data in memory.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> sqdist.is_out_of_core(np.zeros((3, 2))), sqdist.is_out_of_core([np.zeros((3, 2))])
    (False, True)
    >>> sqdist.is_out_of_core("X.npy")
    True
    """
    if isinstance(X, (str, os.PathLike)):
        return True
    if isinstance(X, (np.ndarray, torch.Tensor)) or hasattr(X, "__array__") or hasattr(X, "__array_interface__"):
        return False  # arrays, memory maps and array-likes (DataFrames, ...) are in memory
    if is_sparse(X):
        return False
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(_is_chunk(c) for c in X)
    return isinstance(X, Iterable) and not isinstance(X, (bytes, dict))


@functools.cache
def _libc_malloc_trim() -> Any:
    """glibc's ``malloc_trim`` as a ctypes function, or None (other C libraries)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def malloc_trim() -> None:
    """Call glibc's ``malloc_trim(0)`` (nothing on other C libraries).

    glibc raises its mmap threshold after large blocks are freed, so the
    chunk-sized temporaries of a long pass end up in the heap and stay
    there; trimming after every chunk hands them back, which keeps the
    resident set of a streamed pass at a few chunks (measured: without it a
    96 MB file grew the peak resident set by 150 MB, with it by 17 MB).
    """
    fn = _libc_malloc_trim()
    if fn is not None:
        fn(0)


class Source:
    """Rows of a data set, readable by global row ranges (files, arrays) or sequentially (iterables)."""

    n_rows: int | None
    n_features: int
    dtype: torch.dtype  # dtype of the tensors produced
    numpy_out: bool
    random_access = True

    def rows(self, a: int, b: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def pieces(self, rows: int) -> Iterator[torch.Tensor]:
        """All rows in order, in pieces of at most ``rows`` rows (out-of-core pages released after each)."""
        for a in range(0, int(self.n_rows), rows):  # type: ignore[arg-type]
            yield self.rows(a, min(a + rows, int(self.n_rows)))  # type: ignore[arg-type]
            self.release()

    def release(self) -> None:
        """Hand freed heap memory back after a chunk (files only: keeps the resident set bounded)."""

    def take(self, idx: np.ndarray, max_rows: int) -> torch.Tensor:
        """Rows at sorted global indices ``idx``, read in spans of at most ``max_rows`` rows."""
        parts = []
        i = 0
        while i < len(idx):  # one span per iteration: at most len(idx) spans
            a = int(idx[i])
            j = int(np.searchsorted(idx, a + max_rows, side="left"))
            b = int(idx[j - 1]) + 1
            parts.append(self.rows(a, b)[torch.from_numpy(idx[i:j] - a)])
            i = j
        if not parts:
            return torch.empty((0, self.n_features), dtype=self.dtype)
        return torch.cat(parts)


class ArraySource(Source):
    def __init__(self, t: torch.Tensor, numpy_out: bool):
        if t.ndim != 2:
            raise SqdistError(f"X: expected a 2-D array (n, d), got {describe(t)}")
        self.t = t
        self.n_rows, self.n_features = t.shape
        self.dtype = t.dtype
        self.numpy_out = numpy_out

    def rows(self, a: int, b: int) -> torch.Tensor:
        return self.t[a:b]


class NpySource(Source):
    """A memory-mapped ``.npy`` file; pages are released once a range is copied out."""

    def __init__(self, X: Any, name: str):
        if isinstance(X, np.memmap):
            mm = X
            self.label = f"memory map of {getattr(X, 'filename', None) or 'a file'}"
        else:
            path = os.fspath(X)
            self.label = repr(path)
            mm = open_npy(path, name, mmap=True)  # header checked against the file size; OSError if unreadable
        if mm.ndim == 1:  # N scalars: N points of one feature (a view, no copy)
            mm = mm.reshape(-1, 1)
        if mm.ndim != 2:
            raise SqdistError(f"{name}: expected a 2-D array (n, d) or a 1-D array of n values in {self.label}, "
                              f"got shape {mm.shape}")
        kind = mm.dtype.kind
        if kind not in "fiub":
            raise SqdistError(f"{name}: expected numeric data in {self.label}, got dtype {mm.dtype}")
        self.mm = mm
        self.n_rows, self.n_features = mm.shape
        np_dtype = np.dtype(np.float64) if kind in "iub" else mm.dtype.newbyteorder("=")
        self.np_dtype = np_dtype
        self.dtype = torch.from_numpy(np.zeros(0, np_dtype)).dtype
        self.numpy_out = True
        # pages are only released from read-only or shared maps ("r", "r+"): never from a
        # copy-on-write map ("c"), whose private changes would be lost
        releasable = mm.flags.c_contiguous and getattr(mm, "mode", None) in ("r", "r+")
        self._mmap = getattr(mm, "_mmap", None) if releasable else None
        self._base = None
        if self._mmap is not None and hasattr(self._mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._base = np.frombuffer(self._mmap, dtype=np.uint8).ctypes.data
        self._row_bytes = mm.dtype.itemsize * self.n_features

    def rows(self, a: int, b: int) -> torch.Tensor:
        chunk = np.array(self.mm[a:b], dtype=self.np_dtype, order="C")  # copy out of the map
        self._advise(mmap.MADV_DONTNEED if self._base is not None else None, a, b)  # release what was read
        self._advise(getattr(mmap, "MADV_WILLNEED", None), b, min(b + (b - a), self.n_rows))  # read ahead
        return torch.from_numpy(chunk)

    def release(self) -> None:
        malloc_trim()

    def _advise(self, option: int | None, a: int, b: int) -> None:
        if option is None or self._base is None or b <= a:
            return
        start = self.mm.ctypes.data + a * self._row_bytes - self._base
        stop = start + (b - a) * self._row_bytes
        lo = (start // _PAGE) * _PAGE
        hi = min(-(-stop // _PAGE) * _PAGE, len(self._mmap))
        if hi > lo:
            self._mmap.madvise(option, lo, hi - lo)


class IterSource(Source):
    """A re-iterable of (n_i, D) chunks (each element converted like any array input)."""

    random_access = False

    def __init__(self, X: Any, name: str):
        it = iter(X)
        if it is X:
            raise SqdistError(
                f"{name}: got a one-shot iterator ({type(X).__name__}); k-means reads the data once per "
                f"iteration, so pass a re-iterable (a list of chunks, or an object whose __iter__ returns a "
                f"fresh iterator each time)"
            )
        self.X = X
        self.name = name
        self.n_rows = None
        first = next(it, None)
        if first is None:
            raise SqdistError(f"{name}: the iterable of chunks is empty")
        t, was_numpy = as_tensor(first, f"{name} chunk 0")
        if t.ndim != 2:
            raise SqdistError(f"{name}: expected chunks of shape (n_i, d), got chunk 0 as {describe(t)}")
        self.n_features = t.shape[1]
        self.dtype = t.dtype
        self.numpy_out = was_numpy

    def pieces(self, rows: int) -> Iterator[torch.Tensor]:
        for i, c in enumerate(self.X):
            t, _ = as_tensor(c, f"{self.name} chunk {i}")
            if t.ndim != 2 or t.shape[1] != self.n_features or t.dtype != self.dtype:
                raise SqdistError(
                    f"{self.name}: every chunk must have shape (n_i, {self.n_features}) and dtype {self.dtype} "
                    f"like chunk 0, got chunk {i} as {describe(t)}"
                )
            for s in range(0, t.shape[0], rows):
                yield t[s : s + rows]


def as_source(X: Any, name: str = "X") -> Source:
    """Wrap any accepted data in a source."""
    if isinstance(X, Source):
        return X
    if isinstance(X, (str, os.PathLike, np.memmap)):
        return NpySource(X, name)
    if isinstance(X, (np.ndarray, torch.Tensor)):
        t, was_numpy = as_tensor(X, name)
        return ArraySource(t, was_numpy)
    if is_out_of_core(X):
        return IterSource(X, name)
    t, was_numpy = as_tensor(X, name)
    return ArraySource(t, was_numpy)
