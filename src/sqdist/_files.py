"""Reading files safely: ``.npy`` arrays, ``.csv`` points and ``.npz`` archives, with named errors.

Every file sqdist reads goes through this module, and every way a file can be
wrong -- empty, truncated, a header that lies about the shape, a corrupted zip
directory, an unknown compression, a pickled object, a CSV with a byte-order
mark -- ends in a :class:`~sqdist.SqdistError` that names the file and says
why.  A missing or unreadable file raises the ``OSError`` of opening it.

* Nothing is ever unpickled: ``.npy`` headers are parsed here (a literal
  dict, numeric dtypes only) and the data are read as raw bytes.
* Nothing is allocated before the file's size is checked against its header:
  a header that declares more data than the file holds is refused without
  reading it.
* ``.npz`` archives are read member by member from the zip directory; only
  stored or deflated members of ``KEY.npy`` arrays are accepted, and each
  member's size must match its header.

:class:`Schema` checks the arrays of an archive (kind, number of
dimensions, shapes whose symbolic sizes must agree across fields, values in
range) with one error type.
"""

from __future__ import annotations

import ast
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import BinaryIO

import numpy as np

from ._validation import SqdistError

__all__ = ["Schema", "open_npy", "read_csv", "read_npz", "read_points"]

_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 10_000  # as NumPy's max_header_size
_MAX_MEMBERS = 4096
_DEFLATE_MAX_RATIO = 1100  # deflate cannot expand 1 byte to more than ~1032
_KINDS = "biuf"

# what a corrupted zip archive can raise while its directory or members are read
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, EOFError, ValueError,
               struct.error, RuntimeError, OverflowError, KeyError, IndexError, MemoryError, OSError)


class _Bad(Exception):
    """A malformed file (internal: turned into a SqdistError naming the file)."""


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise _Bad(f"truncated {what}: expected {n} bytes, found {len(b)}")
    return b


def _npy_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` of a ``.npy`` stream; numeric dtypes only."""
    magic = f.read(8)
    if len(magic) == 0:
        raise _Bad("the file is empty")
    if len(magic) < 8 or magic[:6] != _MAGIC:
        raise _Bad("no .npy magic string at the start")
    version = (magic[6], magic[7])
    if version == (1, 0):
        (hlen,), enc, off = struct.unpack("<H", _read_exact(f, 2, "header length")), "latin1", 10
    elif version in ((2, 0), (3, 0)):
        (hlen,), enc, off = struct.unpack("<I", _read_exact(f, 4, "header length")), "latin1", 12
        enc = "utf-8" if version == (3, 0) else enc
    else:
        raise _Bad(f"unknown .npy format version {version[0]}.{version[1]}")
    if hlen > _MAX_HEADER:
        raise _Bad(f"header of {hlen} bytes (at most {_MAX_HEADER})")
    try:
        text = _read_exact(f, hlen, "header").decode(enc)
        d = ast.literal_eval(text)
    except (UnicodeDecodeError, SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as exc:
        raise _Bad(f"unreadable header ({type(exc).__name__})") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise _Bad("the header is not a dict of descr, fortran_order and shape")
    shape, fortran, descr = d["shape"], d["fortran_order"], d["descr"]
    if not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape) or len(shape) > 32:
        raise _Bad(f"shape {shape!r} is not a tuple of sizes >= 0")
    if not isinstance(fortran, bool):
        raise _Bad(f"fortran_order {fortran!r} is not a bool")
    if not isinstance(descr, str) or len(descr) > 16:
        raise _Bad(f"dtype {descr!r} is not a plain numeric dtype (structured and object arrays are refused)")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError, SyntaxError):
        raise _Bad(f"dtype {descr!r} is not a dtype") from None
    if dtype.kind not in _KINDS or dtype.itemsize > 8 or dtype.fields is not None or dtype.subdtype is not None:
        raise _Bad(f"holds dtype {dtype}; expected numbers (bool, integer or float, at most 64-bit)")
    if math.prod(max(s, 1) for s in shape) * dtype.itemsize > np.iinfo(np.intp).max // 2:
        raise _Bad(f"shape {shape} is larger than any array can be")  # NumPy's limit, even with a zero size
    return shape, fortran, dtype, off + hlen


def _decode(raw: bytes, shape: tuple[int, ...], fortran: bool, dtype: np.dtype) -> np.ndarray:
    a = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return a.astype(dtype.newbyteorder("="), copy=True)  # native byte order, writeable, owned


def _fail(name: str, path: str, exc: BaseException, kind: str = "a valid .npy array file") -> SqdistError:
    return SqdistError(f"{name}: {path!r} is not {kind} ({exc})")


def open_npy(path: str | os.PathLike, name: str, *, mmap: bool = True) -> np.ndarray:
    """A ``.npy`` file as an array: memory-mapped read-only (``mmap=True``) or read into memory.

    The header must be a literal dict with a numeric dtype, and the file must
    hold exactly the bytes it declares.  Zero-size arrays come back in memory.
    """
    p = os.fspath(path)
    with open(p, "rb") as f:  # OSError (missing, unreadable, a folder) propagates
        try:
            shape, fortran, dtype, offset = _npy_header(f)
            size = os.fstat(f.fileno()).st_size
            nbytes = math.prod(shape) * dtype.itemsize
            if size - offset != nbytes:
                raise _Bad(f"its header declares shape {shape} of {dtype} ({nbytes} bytes of data), "
                           f"the file holds {size - offset}")
            if nbytes == 0:
                return np.zeros(shape, dtype=dtype.newbyteorder("="))
            if not mmap:
                return _decode(_read_exact(f, nbytes, "data"), shape, fortran, dtype)
        except _Bad as exc:
            raise _fail(name, p, exc) from None
    try:
        return np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    except (ValueError, OverflowError) as exc:
        raise _fail(name, p, exc) from None


def _parse_row(line: str, lineno: int, name: str, p: str) -> list[float]:
    try:
        return [float(v) for v in line.split(",")]
    except ValueError:
        raise SqdistError(f"{name}: {p!r} line {lineno}: expected comma-separated numbers, got {line[:60]!r}") from None


def read_csv(path: str | os.PathLike, name: str = "--data") -> np.ndarray:
    """Comma-separated numbers, with or without one header line, as float64 (N, D).

    A UTF-8 byte-order mark is dropped.  The first line is a header only when
    *none* of its fields is a number (``x,y``); a first line mixing numbers and
    words is an error, never silently skipped.
    """
    p = os.fspath(path)
    with open(p, encoding="utf-8-sig", errors="replace", newline="") as f:
        text = f.read()
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # only these end a line
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    if not numbered:
        raise SqdistError(f"{name}: {p!r} is empty")

    def is_number(v: str) -> bool:
        try:
            float(v)
        except ValueError:
            return False
        return True

    first = numbered[0][1].split(",")
    header = not any(is_number(v) for v in first)
    if not header and not all(is_number(v) for v in first):
        raise SqdistError(
            f"{name}: {p!r} line {numbered[0][0]}: mixes numbers and text ({numbered[0][1][:60]!r}); "
            f"expected comma-separated numbers or a header of column names"
        )
    rows = [_parse_row(ln, no, name, p) for no, ln in numbered[1 if header else 0 :]]
    if not rows:
        raise SqdistError(f"{name}: {p!r} has a header but no data rows")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise SqdistError(f"{name}: {p!r} rows have different numbers of columns {sorted(widths)}")
    if header and len(first) != len(rows[0]):
        raise SqdistError(f"{name}: {p!r} has {len(first)} column names in its header but {len(rows[0])} columns")
    return np.asarray(rows, dtype=np.float64)


def read_points(path: str | os.PathLike, name: str = "--data") -> np.ndarray:
    """Points (N, D) from ``.npy`` or ``.csv`` / ``.txt``: 1-D data gives (N, 1); integers become float64."""
    p = os.fspath(path)
    ext = os.path.splitext(p)[1].lower()
    if ext == ".npy":
        X = open_npy(p, name, mmap=False)
        if X.dtype.kind != "f":
            X = X.astype(np.float64)
    elif ext in (".csv", ".txt"):
        X = read_csv(p, name)
    else:
        raise SqdistError(f"{name}: expected a .npy or .csv file, got {p!r}")
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise SqdistError(f"{name}: expected a 2-D array of points (N, D), got shape {X.shape} from {p!r}")
    return X


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive_size: int) -> np.ndarray:
    if info.flag_bits & 0x1:
        raise _Bad(f"member {info.filename!r} is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise _Bad(f"member {info.filename!r}: stored with two different sizes")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024:
            raise _Bad(f"member {info.filename!r}: declared size impossible for its compressed size")
    else:
        raise _Bad(f"member {info.filename!r}: compression method {info.compress_type} (expected stored or deflated)")
    if info.compress_size > archive_size:
        raise _Bad(f"member {info.filename!r} is larger than the archive")
    with zf.open(info) as f:
        shape, fortran, dtype, offset = _npy_header(f)
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != offset + nbytes:
            raise _Bad(f"member {info.filename!r}: its header declares {nbytes} bytes of data, "
                       f"the member holds {info.file_size - offset}")
        raw = _read_exact(f, nbytes, f"member {info.filename!r}")
        if f.read(1):  # also makes zipfile check the CRC at the end of the member
            raise _Bad(f"member {info.filename!r} is longer than declared")
    return _decode(raw, shape, fortran, dtype)


def read_npz(path: str | os.PathLike, name: str, kind: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive by key, each checked against its header; never unpickles.

    Errors name ``name`` (the argument) and say the file is not ``kind``
    (e.g. ``"a sqdist KMeans file"``).
    """
    p = os.fspath(path)
    with open(p, "rb") as fh:  # OSError (missing, unreadable, a folder) propagates
        try:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise _Bad("the file is empty")
            with zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
                if len(infos) > _MAX_MEMBERS:
                    raise _Bad(f"{len(infos)} members (at most {_MAX_MEMBERS})")
                out: dict[str, np.ndarray] = {}
                for info in infos:
                    key = info.filename[:-4] if info.filename.endswith(".npy") else None
                    if not key or key in out:
                        raise _Bad(f"member {info.filename!r} is not one KEY.npy array")
                    out[key] = _member(zf, info, size)
                return out
        except _Bad as exc:
            raise SqdistError(f"{name}: {p!r} is not {kind} ({exc})") from None
        except _ZIP_ERRORS as exc:
            raise SqdistError(f"{name}: {p!r} is not {kind} (unreadable archive: {type(exc).__name__}: {exc})") from None


class Schema:
    """Typed access to the arrays of a file: kind, dimensions, consistent symbolic sizes, ranges.

    ``fail(message)`` builds the error; sizes named by strings (``"K"``,
    ``"D"``) are bound on first use and must agree afterwards.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], fail: Callable[[str], SqdistError],
                 sizes: Mapping[str, int] | None = None):
        self.arrays = arrays
        self.fail = fail
        self.sizes: dict[str, int] = dict(sizes or {})

    def has(self, key: str) -> bool:
        return key in self.arrays

    def array(self, key: str, kinds: str, shape: tuple[int | str | None, ...]) -> np.ndarray:
        """The array ``key``: dtype kind in ``kinds``, ``len(shape)`` dimensions, sizes as ``shape`` says."""
        if key not in self.arrays:
            raise self.fail(f"field {key!r} is missing")
        a = self.arrays[key]
        if a.dtype.kind not in kinds:
            raise self.fail(f"field {key!r} has dtype {a.dtype}, expected kind {kinds!r}")
        if a.ndim != len(shape):
            raise self.fail(f"field {key!r} has shape {a.shape}, expected {len(shape)} dimension(s)")
        for axis, (want, got) in enumerate(zip(shape, a.shape)):
            if isinstance(want, str):
                want = self.sizes.setdefault(want, got)
            if want is not None and got != want:
                raise self.fail(f"field {key!r} has shape {a.shape}; axis {axis} should be {want}")
        return a

    def floats(self, key: str, shape: tuple[int | str | None, ...], *, lo: float | None = None) -> np.ndarray:
        """A float array of finite values (``>= lo`` when given)."""
        a = self.array(key, "f", shape)
        if not np.isfinite(a).all():
            raise self.fail(f"field {key!r} holds NaN or Inf")
        if lo is not None and a.size and float(a.min()) < lo:
            raise self.fail(f"field {key!r} holds {float(a.min())!r} < {lo}")
        return a

    def ints(self, key: str, shape: tuple[int | str | None, ...], *, lo: int | None = None,
             hi: int | None = None) -> np.ndarray:
        """An integer array (bool refused) of values in ``[lo, hi)``, as int64."""
        a = self.array(key, "iu", shape)
        if a.size and a.dtype.kind == "u" and int(a.max()) > np.iinfo(np.int64).max:
            raise self.fail(f"field {key!r} holds values beyond int64")
        if a.size and ((lo is not None and int(a.min()) < lo) or (hi is not None and int(a.max()) >= hi)):
            raise self.fail(f"field {key!r} holds values outside [{lo}, {hi})")
        return a.astype(np.int64, copy=False)

    def scalar_int(self, key: str, *, lo: int | None = None, hi: int | None = None) -> int:
        return int(self.ints(key, (), lo=lo, hi=hi))

    def scalar_bool(self, key: str) -> bool:
        return bool(self.array(key, "b", ()))

    def text(self, key: str, *, limit: int = 1 << 26) -> str:
        """A UTF-8 string stored as a 1-D uint8 array."""
        a = self.array(key, "u", (None,))
        if a.dtype.itemsize != 1 or a.size > limit:
            raise self.fail(f"field {key!r} is not a UTF-8 string of at most {limit} bytes")
        try:
            return a.tobytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"field {key!r} is not UTF-8 ({exc.reason})") from None
