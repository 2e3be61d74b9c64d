"""Input validation shared by every public function.

Public functions call these helpers once, up front, and then hand trusted
tensors to private ``_impl`` functions.  Every error raised here is a
:class:`SqdistError` whose message names the argument, what was given
(shape, dtype, device or value) and what was expected.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

__all__ = ["SqdistError", "SqdistWarning", "ConvergenceWarning"]


class SqdistError(ValueError):
    """The one error type of sqdist: bad input, named with what was given and expected."""


class SqdistWarning(UserWarning):
    """Base class of the warnings sqdist emits."""


class ConvergenceWarning(SqdistWarning):
    """An iterative method (k-means) ended in a degenerate or unconverged state,
    e.g. fewer distinct points than clusters (as scikit-learn's ConvergenceWarning)."""


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
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise SqdistError(f"{name}: expected a finite real number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise SqdistError(f"{name}: expected a number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return float(value)


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SqdistError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise SqdistError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_finite_rows(X: torch.Tensor, name: str) -> None:
    """Reject rows with NaN or Inf, naming the first bad row."""
    # fast path: one reduction, no (n, D) mask.  Any NaN/Inf makes the sum
    # NaN/Inf; a finite sum therefore proves every entry finite (an overflowing
    # sum of finite entries just takes the exact check below).
    if X.numel() == 0 or not (X.is_floating_point() or X.is_complex()) or bool(torch.isfinite(X.sum()).all()):
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
    g = torch.Generator(device="cpu")
    if seed is None:
        g.seed()
        return g
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**63:
        raise SqdistError(f"{name}: expected None, an integer in [0, 2**63) or a torch.Generator, got {seed!r}")
    g.manual_seed(int(seed))
    return g


def to_output(t: torch.Tensor, was_numpy: bool) -> Any:
    """Return ``t`` as NumPy when the input was NumPy, else as the tensor."""
    if was_numpy:
        return t.detach().numpy() if t.requires_grad else t.numpy()
    return t
