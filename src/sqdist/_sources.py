"""Data sources: in-memory arrays, ``.npy`` files, Parquet / Arrow files, and re-iterables of batches.

Data that does not fit in memory is read one *chunk* of rows at a time:

* a path to a ``.npy`` file (memory-mapped read-only by
  :func:`sqdist._files.open_npy`: header checked, never unpickled; a 1-D file
  is N points of one feature) or a ``np.memmap``: after a chunk is copied
  out, its pages are released from
  this process (``madvise(MADV_DONTNEED)``: the data stays in the OS page
  cache, but is no longer counted in the process's resident set), so resident
  memory stays bounded by the working-memory budget, not by the file size;
* a path ending in ``.parquet`` / ``.pq`` (:class:`ParquetSource`) or
  ``.arrow`` / ``.feather`` / ``.ipc`` (:class:`FeatherSource`, the Arrow IPC
  file format), read through the optional ``pyarrow`` in record batches,
  never the whole file; numeric columns become the features.  Like ``.npy``
  files they are read by global row ranges, so they shard across ranks and
  give the same bits as the same data in an array;
* any re-iterable of batches (a list, a ``torch.utils.data.DataLoader``, or
  an object whose ``__iter__`` returns a fresh iterator -- not a one-shot
  generator): each batch is an (n_i, D) array or tensor, or a tuple / list
  ``(x, y, ...)`` whose first element ``x`` is; the batches are cut and
  joined into chunks of exactly ``R`` rows, so the chunk grid -- and the
  result -- does not depend on the batch size;
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
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SubsetRandomSampler, WeightedRandomSampler

from . import _chunking
from ._files import open_npy
from ._validation import SqdistError, as_tensor, describe

__all__ = ["CHUNK_ROWS_MAX", "STREAMED_SUFFIXES", "FeatherSource", "ParquetSource", "Source", "as_source", "chunk_rows",
           "is_out_of_core", "is_sparse", "malloc_trim"]

# Largest chunk (rows): a fixed cap so that, for any budget large enough, the
# chunk grid -- and therefore every floating-point result -- is the same.
CHUNK_ROWS_MAX = 1 << 16
_PAGE = mmap.PAGESIZE
PARQUET_SUFFIXES = (".parquet", ".pq")
ARROW_SUFFIXES = (".arrow", ".feather", ".ipc")
STREAMED_SUFFIXES = (".npy", *PARQUET_SUFFIXES, *ARROW_SUFFIXES)  # paths the CLI streams
# Parquet record batches (rows): small next to a chunk -- pyarrow's buffers grow with the batch (measured:
# 4096 rather than 65536 rows cut the peak resident set of a 32-column fit by ~25 MB, at the same speed)
_BATCH_ROWS = 4096


def chunk_rows(budget: int, K: int, D: int, itemsize: int) -> int:
    """Rows per chunk: the distance block (n, K) with its temporaries, the copy and its float64 view."""
    per_row = K * (2 * itemsize + 1) + (D + 2) * itemsize + D * (itemsize + 8) + 32
    return _chunking.rows_per_chunk(CHUNK_ROWS_MAX, per_row, budget, what="k-means")  # at most CHUNK_ROWS_MAX


def _is_chunk(x: Any) -> bool:
    if isinstance(x, (tuple, list)) and x:  # an (x, y, ...) batch
        x = x[0]
    return isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 2


def is_sparse(X: Any) -> bool:
    """True for SciPy sparse matrices/arrays and sparse torch tensors (not supported as data yet)."""
    if isinstance(X, torch.Tensor):
        return X.layout != torch.strided
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def _is_parquet_file(X: Any) -> bool:
    """A ``pyarrow.parquet.ParquetFile`` (duck-typed: pyarrow is imported only when used)."""
    return type(X).__name__ == "ParquetFile" and hasattr(X, "iter_batches") and hasattr(X, "metadata")


def is_out_of_core(X: Any) -> bool:
    """True for data that sqdist streams instead of loading: a path, a source, or an iterable of batches.

    Arrays, tensors and memory maps (``np.load(..., mmap_mode="r")``, and the
    read-only memmaps joblib hands to worker processes) are data in memory;
    paths (``.npy``, ``.parquet``, ``.arrow``/``.feather``), a
    ``pyarrow.parquet.ParquetFile``, :class:`sqdist.ParquetSource` /
    :class:`sqdist.FeatherSource`, a ``torch.utils.data.DataLoader`` and
    other re-iterables of batches are streamed.

    Examples
    --------
    >>> import numpy as np, sqdist
    >>> sqdist.is_out_of_core(np.zeros((3, 2))), sqdist.is_out_of_core([np.zeros((3, 2))])
    (False, True)
    >>> sqdist.is_out_of_core("X.npy"), sqdist.is_out_of_core("X.parquet")
    (True, True)
    """
    if isinstance(X, (np.ndarray, torch.Tensor)):  # the common case first (os.PathLike is an ABC: a slow test)
        return False
    if isinstance(X, (str, os.PathLike)) or _is_parquet_file(X):
        return True
    if isinstance(X, Source):
        return not isinstance(X, ArraySource)
    if hasattr(X, "__array__") or hasattr(X, "__array_interface__"):
        return False  # memory maps and array-likes (DataFrames, ...) are in memory
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
    """A re-iterable of batches: (n_i, D) arrays or tensors, or ``(x, y, ...)`` tuples / lists whose ``x`` is one.

    A ``torch.utils.data.DataLoader`` is one: every pass iterates it again.
    The batches are cut and joined into chunks of exactly ``R`` rows (the
    last one shorter), so the chunk grid is the one of the same rows in an
    array: with a loader that yields its rows in the same order every pass
    (``shuffle=False``) a fit gives the array's bits.  A shuffling loader
    (``shuffle=True``, a random sampler) yields another order every pass; see
    :attr:`reorders`.
    """

    random_access = False

    def __init__(self, X: Any, name: str):
        it = iter(X)
        if it is X:
            raise SqdistError(
                f"{name}: got a one-shot iterator ({type(X).__name__}); k-means reads the data once per "
                f"iteration, so pass a re-iterable (a list of chunks, a torch DataLoader, or an object whose "
                f"__iter__ returns a fresh iterator each time)"
            )
        self.X = X
        self.name = name
        self.n_rows = None
        first = next(it, None)
        del it  # a DataLoader's worker processes stop here
        if first is None:
            raise SqdistError(f"{name}: the iterable of chunks is empty")
        t, was_numpy = self._features(first, 0)
        self.n_features = t.shape[1]
        self.dtype = t.dtype
        self.numpy_out = was_numpy
        #: True for a DataLoader whose sampler draws a new order every pass (RandomSampler & co): the
        #: passes then see the rows in different orders, so per-row outputs (labels) mean nothing
        self.reorders = _reorders(X)

    def _features(self, item: Any, i: int) -> tuple[torch.Tensor, bool]:
        """The (n_i, D) features of batch ``i``: the batch itself, or ``x`` of an ``(x, y, ...)`` batch."""
        if isinstance(item, Mapping):
            keys = ", ".join(repr(k) for k in list(item)[:8])
            raise SqdistError(
                f"{self.name}: chunk {i} is a dict (keys {keys}); sqdist takes batches that are arrays or tensors "
                f"of shape (n_i, d), or (x, y, ...) tuples whose first element is -- give the DataLoader a "
                f"collate_fn that returns the features, or wrap it in a class whose __iter__ yields them"
            )
        x = item[0] if isinstance(item, (tuple, list)) and item and isinstance(item[0], (np.ndarray, torch.Tensor)) \
            else item
        t, was_numpy = as_tensor(x, f"{self.name} chunk {i}", min_ndim=0)
        if t.ndim != 2:
            hint = ("; a DataLoader with batch_size=None yields single samples: give it a batch_size"
                    if t.ndim == 1 else "")
            raise SqdistError(f"{self.name}: expected chunks (batches) of shape (n_i, d), got chunk {i} as "
                              f"{describe(t)}{hint}")
        return t, was_numpy

    def pieces(self, rows: int) -> Iterator[torch.Tensor]:
        """The rows in chunks of exactly ``rows`` rows (the last one shorter), whatever the batches' sizes."""
        held: list[torch.Tensor] = []  # rows carried over to the next chunk: fewer than ``rows``
        have = 0
        for i, item in enumerate(self.X):
            t, _ = self._features(item, i)
            if t.shape[1] != self.n_features or t.dtype != self.dtype:
                raise SqdistError(
                    f"{self.name}: every chunk must have shape (n_i, {self.n_features}) and dtype {self.dtype} "
                    f"like chunk 0, got chunk {i} as {describe(t)}"
                )
            n, s = t.shape[0], 0
            if have:
                s = min(rows - have, n)
                held.append(t[:s])
                have += s
                if have == rows:
                    yield torch.cat(held)
                    held, have = [], 0
            while n - s >= rows:  # whole chunks of this batch: views, no copy
                yield t[s : s + rows]
                s += rows
            if s < n:
                held.append(t[s:])
                have += n - s
        if have:
            yield held[0] if len(held) == 1 else torch.cat(held)


def _reorders(X: Any) -> bool:
    """True for a DataLoader whose sampler draws a new random order on every pass."""
    if not isinstance(X, DataLoader) or isinstance(X.dataset, IterableDataset):
        return False
    sampler = getattr(X.batch_sampler, "sampler", X.sampler)
    return isinstance(sampler, (RandomSampler, SubsetRandomSampler, WeightedRandomSampler))


def _pyarrow(name: str) -> Any:
    """The ``pyarrow`` module (an optional extra), imported on first use."""
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise SqdistError(f"{name}: reading Parquet and Arrow files needs pyarrow>=14, which is not installed; "
                          f"install it with pip install 'sqdist[parquet]'") from None
    return pyarrow


class _Columnar(Source):
    """Numeric columns of an Arrow-format file, read in record batches by global row ranges.

    Reads go through a cursor: a range that starts where the previous one
    ended continues the open batch stream, any other reopens it at the block
    (row group, record batch) that holds its first row -- so a pass, a
    rank's shard and the sorted spans of an initialisation sample each read
    every block at most once.
    """

    numpy_out = True

    def _open(self, pa: Any, schema: Any, columns: Any, counts: list[int], label: str, name: str) -> None:
        self.label, self.name, self._pa = label, name, pa
        self.n_rows = int(sum(counts))
        self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])  # (blocks + 1,)
        names = list(schema.names)
        if columns is None:
            cols = names
        elif isinstance(columns, (str, bytes)) or not isinstance(columns, Iterable):
            raise SqdistError(f"columns: expected a list of column names, got {columns!r}")
        else:
            cols = list(columns)
            unknown = [c for c in cols if c not in names]
            if unknown or not cols or len(set(cols)) != len(cols):
                raise SqdistError(f"columns: expected distinct names among the columns of {label} {names}, got {cols}"
                                  + (f" ({unknown[0]!r} is not one)" if unknown else ""))
        if self.n_rows == 0 or not cols:
            raise SqdistError(f"{name}: {label} has no {'rows' if cols else 'columns'}; expected at least one point "
                              f"and one feature")
        kinds = []  # (name, "scalar" | "fixed" | "list", value numpy dtype)
        for c in cols:
            t = schema.field(c).type
            kind = "fixed" if pa.types.is_fixed_size_list(t) else \
                "list" if pa.types.is_list(t) or pa.types.is_large_list(t) else "scalar"
            vt = t if kind == "scalar" else t.value_type
            if not (pa.types.is_integer(vt) or pa.types.is_floating(vt) or pa.types.is_boolean(vt)):
                raise SqdistError(
                    f"{name}: column {c!r} of {label} has type {t}, not numeric; the features must be numbers "
                    f"(or fixed-length lists of numbers) -- choose them with columns=[...] "
                    f"(sqdist.{type(self).__name__}(path, columns=[...]))"
                )
            kinds.append((c, kind, np.dtype(vt.to_pandas_dtype())))
        self._names = cols
        first = next(b for b in self._batches(0, 1) if b.num_rows)  # list columns: the width of the first row
        widths = []
        for c, kind, _ in kinds:
            col = first.column(c)
            if kind == "scalar":
                widths.append(1)
            elif kind == "fixed":
                widths.append(int(col.type.list_size))
            else:
                if col.null_count:
                    self._null(c, 0, col)
                widths.append(int(col.offsets[1].as_py() - col.offsets[0].as_py()))
        self._cols = [(c, kind, w) for (c, kind, _), w in zip(kinds, widths)]
        self.n_features = int(sum(widths))
        dts = [dt for _, _, dt in kinds]
        self.np_dtype = np.result_type(*dts) if all(dt.kind == "f" for dt in dts) else np.dtype(np.float64)
        self.dtype = torch.from_numpy(np.zeros(0, self.np_dtype)).dtype
        self._it: Iterator[Any] | None = None
        self._pos, self._buf, self._left = 0, None, 0

    def _batches(self, block: int, rows: int) -> Iterator[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _null(self, c: str, pos: int, col: Any, per: int = 1) -> None:
        i = int(np.flatnonzero(np.asarray(col.is_null()))[0]) // per
        raise SqdistError(f"{self.name}: column {c!r} of {self.label} has a null at row {pos + i}; k-means needs a "
                          f"number in every cell -- fill or drop the nulls first")

    def _columns_of(self, batch: Any, pos: int) -> list[tuple[int, int, np.ndarray]]:
        """The feature columns of a record batch whose first row is global row ``pos``, every cell
        checked: ``(first feature, width, (n, width) array)`` -- views of the batch where pyarrow allows."""
        n = batch.num_rows
        cols, j = [], 0
        for c, kind, w in self._cols:
            col = batch.column(c)
            if col.null_count:
                self._null(c, pos, col)
            if kind == "list":
                lens = np.diff(np.asarray(col.offsets))
                if lens.size and bool((lens != w).any()):
                    i = int(np.flatnonzero(lens != w)[0])
                    raise SqdistError(f"{self.name}: column {c!r} of {self.label} holds lists of {w} values (row 0) "
                                      f"and of {int(lens[i])} (row {pos + i}); every row needs the same number of "
                                      f"features")
            if kind != "scalar":
                col = col.flatten()
                if col.null_count:
                    self._null(c, pos, col, w)
            cols.append((j, w, col.to_numpy(zero_copy_only=False).reshape(n, w)))
            j += w
        return cols

    def rows(self, a: int, b: int) -> torch.Tensor:
        out = np.empty((max(b - a, 0), self.n_features), self.np_dtype)
        if b <= a:
            return torch.from_numpy(out)
        block = int(np.searchsorted(self._starts, a, side="right")) - 1
        if self._it is None or a < self._pos or block > int(np.searchsorted(self._starts, self._pos, side="right")) - 1:
            self._it = iter(self._batches(block, _BATCH_ROWS))
            self._pos, self._buf, self._left = int(self._starts[block]), None, 0
        filled = 0
        while filled < b - a:
            if self._left == 0:
                self._drop_pages()  # the batches read so far
                batch = next(self._it, None)
                if batch is None:
                    raise SqdistError(f"{self.name}: {self.label} ends at row {self._pos}; its metadata counts "
                                      f"{self.n_rows} rows")
                self._buf, self._left = self._columns_of(batch, self._pos), batch.num_rows
            used = len(self._buf[0][2]) - self._left  # rows of this batch already behind the cursor
            skip = min(max(a - self._pos, 0), self._left)  # rows before ``a``: read past
            take = min(b - a - filled, self._left - skip)
            for s in range(0, take, 2048):  # row blocks: the column-to-row transpose stays in cache
                e = min(s + 2048, take)
                dst = out[filled + s : filled + e]
                for j, w, arr in self._buf:
                    dst[:, j : j + w] = arr[used + skip + s : used + skip + e]
            self._left -= skip + take
            self._pos += skip + take
            filled += take
        return torch.from_numpy(out)

    def _drop_pages(self) -> None:
        """Release what a read mapped into this process (memory-mapped files)."""

    def release(self) -> None:
        self._drop_pages()
        self._pa.default_memory_pool().release_unused()
        malloc_trim()


class ParquetSource(_Columnar):
    """A Parquet file's numeric columns as data, read in record batches -- never the whole file.

    A path ending in ``.parquet`` or ``.pq`` (or a ``pyarrow.parquet.ParquetFile``)
    given as data is opened as ``ParquetSource(path)``: every column is a
    feature.  Build one yourself to choose the columns.  Needs ``pyarrow``
    (``pip install 'sqdist[parquet]'``).

    Parameters
    ----------
    path : str, os.PathLike or pyarrow.parquet.ParquetFile
    columns : list of str, optional
        The feature columns, in this order; default every column.  Each must
        be numeric (integer, float or boolean; integers and booleans become
        float64, floats keep their width) or a list column holding the same
        number of numbers in every row (an embedding: one feature per value).
        A null anywhere, a non-numeric column or lists of different lengths
        raise a :class:`~sqdist.SqdistError` naming the column (and row).
    name : str, default "X"
        The argument's name in error messages.

    Notes
    -----
    Rows are read by global ranges through ``ParquetFile.iter_batches`` in
    batches of 4096 rows, starting at the row group that holds the first
    row, so resident memory is a few chunks plus pyarrow's read buffer
    (~1-3 MiB per column: the current page and the column's dictionary), whatever the file or row-group size.  Like a ``.npy``
    path it is the *global* data under ``torch.distributed``: each rank reads
    its own contiguous rows.  A ``ParquetFile`` you open yourself is read with
    its own settings: open it with ``pre_buffer=False`` to keep a row group
    from being read at once.

    Examples
    --------
    >>> import os, tempfile, pyarrow as pa, pyarrow.parquet as pq, sqdist
    >>> path = os.path.join(tempfile.mkdtemp(), "points.parquet")
    >>> pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "x": [0.0, 0.0, 10.0, 10.0], "y": [0, 1, 0, 1]}), path)
    >>> src = sqdist.ParquetSource(path, columns=["x", "y"])
    >>> src.n_rows, src.n_features, src.dtype
    (4, 2, torch.float64)
    >>> r = sqdist.kmeans(src, init=[0, 2])
    >>> r.centers.tolist(), r.inertia
    ([[0.0, 0.5], [10.0, 0.5]], 1.0)
    """

    def __init__(self, path: Any, columns: Any = None, *, name: str = "X"):
        pa = _pyarrow(name)
        if _is_parquet_file(path):
            self._pf, label = path, "the ParquetFile"
        else:
            p = os.fspath(path)
            label = repr(p)
            try:
                # no pre-buffering (it reads a whole row group at once), reads in 64 KiB pieces
                self._pf = pa.parquet.ParquetFile(p, buffer_size=1 << 16, pre_buffer=False)
            except pa.ArrowInvalid as exc:
                raise SqdistError(f"{name}: {label} is not a valid Parquet file ({exc})") from None
        md = self._pf.metadata
        self._open(pa, self._pf.schema_arrow, columns, [md.row_group(g).num_rows for g in range(md.num_row_groups)],
                   label, name)
        self.release()

    def _batches(self, block: int, rows: int) -> Iterator[Any]:
        groups = range(block, self._pf.metadata.num_row_groups)
        # pyarrow's threads decode the columns (use_threads=False measured no lower peak: -22 MB on one file,
        # +17 MB on another, the same on the 1.5 GB benchmark)
        return self._pf.iter_batches(batch_size=rows, row_groups=groups, columns=self._names)


class FeatherSource(_Columnar):
    """An Arrow IPC file's (Feather v2: ``.arrow``, ``.feather``, ``.ipc``) numeric columns, one record
    batch at a time.

    The file is memory-mapped: uncompressed batches are read without a copy,
    compressed ones (lz4, zstd) are decompressed one batch at a time, and the
    mapped pages are released after every chunk as for ``.npy`` files.
    Opening reads every batch's header (uncompressed) or every batch
    (compressed: one extra pass) to count the rows.  ``columns`` and the
    accepted column types are those of :class:`ParquetSource`.

    Examples
    --------
    >>> import os, tempfile, pyarrow as pa, pyarrow.feather as feather, sqdist
    >>> path = os.path.join(tempfile.mkdtemp(), "points.feather")
    >>> feather.write_feather(pa.table({"x": [0.0, 0.0, 10.0, 10.0], "y": [0.0, 1.0, 0.0, 1.0]}), path)
    >>> sqdist.kmeans(path, init=[0, 2]).centers.tolist()
    [[0.0, 0.5], [10.0, 0.5]]
    """

    def __init__(self, path: Any, columns: Any = None, *, name: str = "X"):
        pa = _pyarrow(name)
        p = os.fspath(path)
        label = repr(p)
        with open(p, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise SqdistError(f"{name}: {label} is empty; expected an Arrow IPC (Feather v2) file")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._reader = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(self._mm)))
            counts = [self._reader.get_batch(i).num_rows for i in range(self._reader.num_record_batches)]
        except pa.ArrowInvalid as exc:
            raise SqdistError(f"{name}: {label} is not a valid Arrow IPC (Feather v2) file ({exc})") from None
        self._open(pa, self._reader.schema, columns, counts, label, name)
        self._drop_pages()

    def _batches(self, block: int, rows: int) -> Iterator[Any]:
        return (self._reader.get_batch(i) for i in range(block, self._reader.num_record_batches))

    def _drop_pages(self) -> None:
        if hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED)  # the page cache keeps the file; this process drops it


def as_source(X: Any, name: str = "X") -> Source:
    """Wrap any accepted data in a source: a path by its suffix (``.parquet``/``.pq``, ``.arrow``/
    ``.feather``/``.ipc``, else ``.npy``), a memory map, an array, or a re-iterable of batches."""
    if isinstance(X, Source):
        return X
    if _is_parquet_file(X):
        return ParquetSource(X, name=name)
    if isinstance(X, (str, os.PathLike)):
        lower = os.fsdecode(X).lower()
        if lower.endswith(PARQUET_SUFFIXES):
            return ParquetSource(X, name=name)
        if lower.endswith(ARROW_SUFFIXES):
            return FeatherSource(X, name=name)
        return NpySource(X, name)
    if isinstance(X, np.memmap):
        return NpySource(X, name)
    if isinstance(X, (np.ndarray, torch.Tensor)):
        t, was_numpy = as_tensor(X, name)
        return ArraySource(t, was_numpy)
    if is_out_of_core(X):
        return IterSource(X, name)
    t, was_numpy = as_tensor(X, name)
    return ArraySource(t, was_numpy)
