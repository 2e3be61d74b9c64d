"""Resolve ``backend`` and ``method`` ("auto" included) to a concrete kernel path, once per call."""

from __future__ import annotations

import functools
import importlib.util
import os
from types import ModuleType

import torch

from . import _cpu_kernels
from ._validation import SqdistError, check_choice, common_dtype

__all__ = ["BACKENDS", "METHODS", "resolve_backend", "resolve_method", "triton_usable"]

METHODS = ("auto", "gemm", "broadcast", "numpy", "loops")
BACKENDS = ("auto", "torch", "triton")


@functools.cache
def _triton_installed() -> bool:
    """Whether the optional ``triton`` package is importable (looked up once per process)."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def triton_kernels() -> ModuleType:
    """The Triton kernel module :mod:`sqdist._triton`, imported on first use.

    Importing Triton costs ~0.5 s, and every CUDA build of torch installs it:
    ``import sqdist`` does not pay that unless a Triton kernel runs.  (The
    module also decides interpreted vs compiled when it is first imported.)
    """
    from . import _triton

    return _triton


def triton_usable(device: torch.device) -> bool:
    """Whether Triton kernels can run on ``device``: CUDA, or the CPU under ``TRITON_INTERPRET=1``."""
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    return device.type in ("cpu", "cuda") and _triton_installed()


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"torch"`` or ``"triton"`` for tensors on ``device``; "auto" takes Triton for CUDA when installed."""
    check_choice(backend, "backend", BACKENDS)
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_usable(device) else "torch"
    if backend == "triton" and not triton_usable(device):
        raise SqdistError(
            f"backend: 'triton' needs Triton installed (pip install 'sqdist[gpu]') and CUDA tensors "
            f"(or TRITON_INTERPRET=1 for CPU tensors), got tensors on {device}"
        )
    return backend


def differentiable(*tensors: torch.Tensor) -> bool:
    """Whether autograd records operations on any of ``tensors`` here."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def resolve_method(method: str, X: torch.Tensor, T: torch.Tensor, backend: str, *, matrix: bool = True) -> str:
    """Check ``method`` and turn "auto" into a concrete distance-matrix path.

    "auto" is "gemm" (the exact product path), except on the CPU for small D
    or small problems (float32/float64, compiled kernels available; N * P * D
    up to 2^22 at D up to 1024 with the C kernels) where the direct-formula
    kernel ("_direct", internal) is both exact by construction and faster than
    the product path (see docs/performance.md) -- with autograd too, so that
    the recorded forward has the bits of the call without it.  ``matrix=False``
    asks for :func:`sqdist.nearest`'s path (its direct pass writes no matrix,
    so it keeps the direct formula where the matrix takes the product).
    """
    check_choice(method, "method", METHODS)
    device = X.device
    if method in ("numpy", "loops") and device.type != "cpu":
        raise SqdistError(
            f"method: {method!r} runs on the CPU with NumPy, got tensors on {device}; "
            f"move them with .cpu() or use method='gemm' or 'broadcast'"
        )
    if method != "auto":
        return method
    if (
        backend == "torch"
        and device.type == "cpu"
        and _cpu_kernels.sqdist_small_wins(common_dtype(X, T), X.shape[-1], X.shape[-2], T.shape[-2], matrix=matrix)
    ):
        return "_direct"
    return "gemm"
