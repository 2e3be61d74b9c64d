"""Input validation shared by every public function.

Public functions call these helpers once, up front, and then hand trusted
tensors to private ``_impl`` functions.  Every error raised here is a
:class:`SqdistError` whose message names the argument, what was given
(shape, dtype, device or value) and what was expected.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ._errors import ConvergenceWarning, SqdistError, SqdistWarning

__all__ = ["ConvergenceWarning", "SqdistError", "SqdistWarning"]  # defined in the torch-free bottom layer


def describe(x: Any) -> str:
    """Short description of an array-like for error messages."""
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}"
    if isinstance(x, np.ndarray):
        return f"ndarray of shape {x.shape}, dtype {x.dtype}"
    return f"{type(x).__name__}"


def as_tensor(x: Any, name: str, *, min_ndim: int = 2) -> tuple[torch.Tensor, bool]:
    """Convert ``x`` to a floating tensor without copying when possible.

    Returns ``(tensor, was_numpy)``.  NumPy arrays and other array-likes
    (lists) share memory where NumPy allows it.  Integer and boolean inputs
    are converted to float: ``float64`` for NumPy / array-like input (NumPy's
    convention), ``float32`` for torch tensors (torch's).  Complex input is
    rejected.
    """
    reject_sparse(x, name)
    was_numpy = not isinstance(x, torch.Tensor)
    if was_numpy:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise SqdistError(f"{name}: expected an array or tensor, got {describe(x)} ({exc})") from None
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise SqdistError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
        if arr.dtype.kind == "c":
            raise SqdistError(f"{name}: complex input is not supported (got dtype {arr.dtype}); pass real values")
        if arr.dtype.kind in "biu":
            arr = arr.astype(np.float64)
        if arr.dtype.kind != "f" or arr.dtype.itemsize > 8:
            raise SqdistError(
                f"{name}: dtype {arr.dtype} is not supported; expected float16, float32, float64, "
                f"an integer or a boolean dtype"
            )
        if not arr.flags.writeable or any(s < 0 for s in arr.strides):
            # torch.from_numpy warns on read-only memory maps and rejects negative strides (x[::-1])
            arr = np.array(arr)
        t = torch.from_numpy(arr) if arr.dtype.byteorder in "=|" else torch.from_numpy(arr.astype(arr.dtype.newbyteorder("=")))
    else:
        t = x
        if t.is_complex():
            raise SqdistError(f"{name}: complex input is not supported (got {describe(t)}); pass real values")
        if not t.is_floating_point():
            t = t.to(torch.float32)
    if t.ndim < min_ndim:
        raise SqdistError(
            f"{name}: expected at least {min_ndim} dimensions (n, d), got {describe(t)}; "
            f"reshape a 1-D vector of n scalars with .reshape(-1, 1)"
        )
    return t, was_numpy


def check_pair(X: torch.Tensor, T: torch.Tensor, xname: str = "X", tname: str = "T") -> None:
    """Check that two point sets share the feature dimension and device."""
    if X.device != T.device:
        raise SqdistError(
            f"{xname} and {tname} must be on the same device, got {xname} on {X.device} and {tname} on {T.device}"
        )
    if X.shape[-1] != T.shape[-1]:
        raise SqdistError(
            f"{xname} and {tname} must have the same number of features (last dimension), "
            f"got {xname} of shape {tuple(X.shape)} and {tname} of shape {tuple(T.shape)}"
        )


def common_dtype(X: torch.Tensor, T: torch.Tensor) -> torch.dtype:
    """Promoted floating dtype of two tensors."""
    return torch.promote_types(X.dtype, T.dtype)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype used for arithmetic: half precisions accumulate in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SqdistError(f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_positive_number(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if type(value) is float and (value > 0 or (allow_zero and value == 0)) and value != math.inf:  # the common case
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise SqdistError(f"{name}: expected a finite real number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise SqdistError(f"{name}: expected a number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return float(value)


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if type(value) is int and value >= minimum:  # the common case, without the ABC test (1.45 against 0.13 us)
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SqdistError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise SqdistError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


# CPU tensors of these dtypes are summed through NumPy (a view: no copy): NumPy's pairwise sum
# measured 1.2 ms against torch's 8.5 ms for (10^6, 2) float32, 5.5 against 9.3 ms for (10^5, 128)
# (2-core EPYC, 2 threads); float16 stays with torch (it accumulates in float32, NumPy would overflow)
_NUMPY_SUM = (torch.float32, torch.float64)


def check_finite_rows(X: torch.Tensor, name: str) -> None:
    """Reject rows with NaN or Inf, naming the first bad row."""
    # fast path: one reduction, no (n, D) mask.  Any NaN/Inf makes the sum
    # NaN/Inf; a finite sum therefore proves every entry finite (an overflowing
    # sum of finite entries just takes the exact check below).
    if X.is_cpu and X.dtype in _NUMPY_SUM and not X.requires_grad:  # the common case first (few attribute reads)
        if math.isfinite(np.add.reduce(X.numpy(), axis=None)):  # (an empty array sums to 0)
            return
    elif X.numel() == 0 or not (X.is_floating_point() or X.is_complex()):
        return
    elif bool(torch.isfinite(X.sum()).all()):
        return
    bad = ~torch.isfinite(X).reshape(X.shape[0], -1).all(dim=1)  # (n,)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise SqdistError(
            f"{name}: row {i} contains NaN or Inf ({int(bad.sum())} bad row(s) in {describe(X)}); "
            f"remove or impute non-finite rows first"
        )


def make_generator(seed: Any, name: str = "seed") -> torch.Generator:
    """A private CPU ``torch.Generator`` from an int seed, or the given generator.

    ``None`` gives a freshly, non-deterministically seeded generator; the
    global RNG is never read or advanced.
    """
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()  # (a CPU generator)
    if seed is None:  # 63 bits from the OS (Generator.seed() took 6.2 us against 3.5 us for these two calls)
        return g.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    g.manual_seed(check_seed(seed, name))
    return g


def check_seed(seed: Any, name: str = "seed") -> int:
    """An int seed in [0, 2**63), or a :class:`SqdistError` naming ``name``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**63:
        raise SqdistError(f"{name}: expected None, an integer in [0, 2**63) or a torch.Generator, got {seed!r}")
    return int(seed)


def host_array(t: torch.Tensor) -> np.ndarray:
    """A NumPy array of a tensor's values on the host (a view where torch allows one); bfloat16,
    which NumPy lacks, widened to float32 (exact)."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def to_output(t: torch.Tensor, was_numpy: bool) -> Any:
    """Return ``t`` as NumPy when the input was NumPy, else as the tensor."""
    if was_numpy:
        return t.detach().numpy() if t.requires_grad else t.numpy()
    return t


# --------------------------------------------------------------------------
# sparse input, devices, output paths and buffers that must not alias inputs
# --------------------------------------------------------------------------


def _scipy_sparse(x: Any) -> bool:
    """Whether ``x`` is a scipy.sparse matrix or array (without importing scipy: if it is not
    imported, ``x`` cannot be one)."""
    sparse = sys.modules.get("scipy.sparse")
    issparse = getattr(sparse, "issparse", None)
    return bool(issparse is not None and issparse(x))


def reject_sparse(x: Any, name: str) -> None:
    """Raise a :class:`SqdistError` for sparse input (torch sparse tensors, scipy.sparse
    matrices and arrays): sqdist computes on dense data only, for now.

    Examples
    --------
    >>> import torch
    >>> reject_sparse(torch.eye(2).to_sparse(), "X")
    Traceback (most recent call last):
    ...
    sqdist.SqdistError: X: sparse input is not supported yet (got a torch.sparse_coo tensor ...); densify ...
    """
    if isinstance(x, torch.Tensor) and x.layout != torch.strided:
        raise SqdistError(
            f"{name}: sparse input is not supported yet (got a {x.layout} tensor of shape {tuple(x.shape)}); "
            f"densify with .to_dense()"
        )
    if _scipy_sparse(x):
        raise SqdistError(
            f"{name}: sparse input is not supported yet (got scipy.sparse {type(x).__name__} of shape "
            f"{getattr(x, 'shape', '?')}); densify with .toarray()"
        )


#: Device types sqdist computes on.
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def resolve_device(device: Any, name: str = "device") -> torch.device | None:
    """The ``torch.device`` for ``device`` (a string such as ``"cpu"``, ``"cuda:1"``, a
    ``torch.device`` or a CUDA index), checked to exist on this machine.

    ``None`` is returned as ``None`` (the caller's default: where the data is).
    Unknown device types, unsupported ones (``"meta"``, ...) and devices this
    torch build or machine lacks (``"cuda"`` on a CPU-only torch, ``"cuda:3"``
    with two GPUs) raise :class:`SqdistError` naming ``name``.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    sqdist.SqdistError: device: 'tpu' is not a device; expected 'cpu', 'cuda', 'cuda:N', 'mps' or 'xpu'
    """
    if device is None:
        return None
    expected = "expected 'cpu', 'cuda', 'cuda:N', 'mps' or 'xpu'"
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, numbers.Integral) and not isinstance(device, bool):  # a CUDA index, as torch takes it
        if not 0 <= int(device) < 2**31:
            raise SqdistError(f"{name}: {device!r} is not a device; {expected}")
        dev = torch.device("cuda", int(device))
    elif isinstance(device, str):
        try:
            dev = torch.device(device.strip())
        except (RuntimeError, ValueError, TypeError, OverflowError):
            raise SqdistError(f"{name}: {device[:40]!r} is not a device; {expected}") from None
    else:
        raise SqdistError(f"{name}: {device!r} is not a device; {expected}")
    if dev.type not in DEVICE_TYPES:
        raise SqdistError(f"{name}: device type {dev.type!r} is not supported; {expected}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
            raise SqdistError(
                f"{name}: {str(device)!r} was requested but CUDA is not available{build}; use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SqdistError(
                f"{name}: {str(device)!r} was requested but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise SqdistError(f"{name}: {str(device)!r} was requested but MPS is not available; use device='cpu'")
    elif dev.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise SqdistError(f"{name}: {str(device)!r} was requested but XPU is not available; use device='cpu'")
    return dev


def check_output_path(path: Any, name: str) -> str:
    """An output file path, checked before any work is done: not an existing folder, in an
    existing folder.  Returns it as ``str``."""
    try:
        p = os.fspath(path)
    except TypeError:
        raise SqdistError(f"{name}: expected a file path, got {path!r}") from None
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if not p or "\0" in p:
        raise SqdistError(f"{name}: expected a file path, got {p!r}")
    if os.path.isdir(p):
        raise SqdistError(f"{name}: {p!r} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise SqdistError(f"{name}: the folder of {p!r} does not exist")
    return p


def _file_of(x: Any) -> str | None:
    """The file behind ``x``: a path, or the file of a ``np.memmap``; None for anything else."""
    if isinstance(x, np.memmap):
        x = getattr(x, "filename", None)
    if isinstance(x, (str, bytes, os.PathLike)):
        try:
            p = os.fspath(x)
        except TypeError:
            return None
        return os.fsdecode(p) if isinstance(p, bytes) else p
    return None


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same file (same inode, through links), or the same path."""
    try:
        if os.path.samefile(a, b):
            return True
    except (OSError, ValueError):  # one of them does not exist (yet)
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _span(x: Any) -> tuple[str, int, int] | None:
    """(device, first byte, one past the last byte) of the memory an array or tensor reads."""
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided or x.numel() == 0:
            return None
        lo = x.data_ptr()
        ext = sum((s - 1) * abs(st) for s, st in zip(x.shape, x.stride()))
        return str(x.device), lo, lo + (ext + 1) * x.element_size()
    if isinstance(x, np.ndarray):
        if x.size == 0:
            return None
        ptr = x.__array_interface__["data"][0]
        lo = ptr + sum((s - 1) * st for s, st in zip(x.shape, x.strides) if st < 0)
        hi = ptr + sum((s - 1) * st for s, st in zip(x.shape, x.strides) if st > 0) + x.itemsize
        return "cpu", lo, hi
    return None


def _as_numpy_view(x: Any) -> np.ndarray | None:
    if isinstance(x, np.ndarray):
        return x
    try:
        return x.detach().numpy() if x.device.type == "cpu" else None
    except (TypeError, RuntimeError):  # bfloat16 and other dtypes NumPy lacks
        return None


def overlaps(a: Any, b: Any) -> bool:
    """Whether two arrays / tensors share memory (byte ranges on one device, then NumPy's exact
    test where it can decide it; undecidable cases count as overlapping)."""
    sa, sb = _span(a), _span(b)
    if sa is None or sb is None or sa[0] != sb[0] or sa[2] <= sb[1] or sb[2] <= sa[1]:
        return False
    na, nb = _as_numpy_view(a), _as_numpy_view(b)
    if na is None or nb is None:
        return True
    try:
        return bool(np.shares_memory(na, nb, max_work=10**6))
    except np.exceptions.TooHardError:
        return True


def check_no_alias(outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """Refuse outputs that would destroy an input or another output, before anything is written.

    ``outputs`` and ``inputs`` map argument names to paths (or ``np.memmap``)
    and arrays / tensors; ``None`` entries are skipped.  An output path may not
    be the same file as an input (``os.path.samefile``: also through hard and
    symbolic links) nor as another output; an output buffer (``out=``) may not
    share memory with an input.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.zeros((3, 3))
    >>> check_no_alias({"out": X}, {"X": X})
    Traceback (most recent call last):
    ...
    sqdist.SqdistError: out: shares memory with X; the result would overwrite the input ...
    """
    outs = [(k, v) for k, v in outputs.items() if v is not None]
    ins = [(k, v) for k, v in inputs.items() if v is not None]
    for i, (oname, o) in enumerate(outs):
        ofile = _file_of(o)
        for iname, x in ins:
            xfile = _file_of(x)
            if ofile is not None and xfile is not None and same_file(ofile, xfile):
                raise SqdistError(
                    f"{oname}: {ofile!r} is the input {iname} ({xfile!r}); writing it would destroy the input -- "
                    f"choose another file"
                )
            if ofile is None and xfile is None and overlaps(o, x):
                raise SqdistError(
                    f"{oname}: shares memory with {iname}; the result would overwrite the input while it is read -- "
                    f"pass a separate buffer"
                )
        for oname2, o2 in outs[i + 1 :]:
            f2 = _file_of(o2)
            if ofile is not None and f2 is not None and same_file(ofile, f2):
                raise SqdistError(f"{oname} and {oname2}: both name {ofile!r}; one would overwrite the other")
