"""The C kernels (``_ckernels.c``) on torch's own OpenMP thread pool, loaded with ctypes.

setup.py compiles ``_ckernels.c`` at install time into ``_sqdist_omp*.so`` next
to this file (an optional extension: without a C compiler the install still
succeeds, and sqdist falls back to numba or torch).  The kernels are called
through ctypes (one small CPython entry point besides, :func:`entry_point`);
the library needs ``libgomp.so.1`` and is loaded *after* torch, so the dynamic
loader binds it to the libgomp torch already loaded: its ``#pragma omp
parallel`` regions run on the same runtime and worker threads as torch's
intra-op operations (one pool of threads, nothing spinning next to it).
:func:`library` checks that at run time -- Linux, torch's parallel backend is
OpenMP, and the library's ``omp_*`` calls resolve to the very runtime
torch's ``libtorch_cpu`` resolves them to -- and returns None otherwise.
(Other runtimes in the process, e.g. one bundled with FAISS or used by
numba's "omp" layer, are not ours to remove; they do not change that sqdist
runs on torch's pool.)

The functions below take the same arguments as the numba kernels of the same
name in :mod:`sqdist._cpu_nb` (contiguous NumPy arrays; the caller guarantees
shapes and dtypes) and run with ``torch.get_num_threads()`` threads.  Results
are bit-identical for every thread count (row groups fixed by the shape, see
:mod:`sqdist._cpu_nb`).

Examples
--------
>>> import torch
>>> from sqdist import _ckernels
>>> _ckernels.library() is None or _ckernels.library().sq_abi() == _ckernels.ABI
True
"""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib.machinery
import importlib.util
import os
import sys
from typing import Any

import numpy as np
import torch

__all__ = [
    "ABI",
    "library",
    "library_path",
    "entry_point",
    "omp_runtimes",
    "torch_omp_runtime",
    "assign_accumulate_direct",
    "assign_accumulate_direct_serial",
    "update_assign_direct",
    "update_assign_bound",
    "nearest_direct",
    "argmin_accumulate_gemm_t",
    "assign_accumulate_fused",
    "sqdist_direct",
    "sqdist_direct_serial",
    "prepare_right",
    "augment",
    "gemm_fixup",
    "gemm_min",
    "gemm_supported",
    "sgemm_nt",
    "gemm_sqdist",
    "assign_accumulate_gemm",
]

# must equal SQ_ABI in _ckernels.c (a stale build of an older source is refused)
ABI = 10
# row passes over at least this many elements (augment, prepare_right) run on the pool: 2-core EPYC,
# 4096 x 128 float32 augment 1.8 ms serial (quiet), a thread hand-over ~0.02 ms quiet, milliseconds loaded
_PARALLEL_ROWS_WORK = 1 << 18
_HERE = os.path.dirname(os.path.abspath(__file__))
_P, _I, _D, _N = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_int64
# exported name (without the _f32/_f64 suffix): (result type, argument types)
_SIGNATURES = {
    "assign_direct": (_I, [_P, _P, _N, _N, _P, _N, _N, _P, _P, _P, _P, _P, _I]),
    "update_assign": (_N, [_P, _N, _P, _N, _N, _P, _P, _N, _P, _P, _P, _P, _P, _P]),
    "nearest_direct": (_I, [_P, _N, _P, _N, _N, _N, _P, _P, _I]),
    "argmin_gemm_t": (_I, [_P, _N, _P, _P, _P, _N, _N, _D, _D, _P, _N, _P, _P, _P, _P, _P, _P, _N, _P, _I]),
    "assign_fused": (_I, [_P, _P, _P, _P, _N, _N, _D, _D, _P, _N, _P, _P, _P, _P, _P, _I]),
    "sqdist_direct": (None, [_P, _P, _P, _N, _N, _N, _I]),
    "prepare_right": (_N, [_P, _N, _N, _P, _P, _P, _P, _P, _I]),
    "augment": (_N, [_P, _P, _P, _P, _N, _N, _I]),
    "gemm_fixup": (_N, [_P, _P, _P, _D, _P, _P, _N, _N, _N, _I]),
    "gemm_min": (_N, [_P, _P, _P, _D, _P, _P, _N, _N, _N, _P, _P, _I]),
}
# float32 only (_ckernels_gemm.h): exported name: (result type, argument types)
_SIGNATURES_F32 = {
    "sq_gemm_supported": (_I, []),
    "sgemm_nt": (_I, [_P, _N, _P, _N, _P, _N, _N, _N, _N, _I]),
    "gemm_sqdist_f32": (_N, [_P, _P, _P, _N, _N, _N, _P, _P, _P, _D, _P, _P, _I]),
    "assign_gemm_f32": (_I, [_P, _N, _P, _P, _P, _N, _N, _D, _D, _N, _P, _P, _N, _P, _P, _P, _P, _P, _I]),
}


def library_path() -> str | None:
    """Path of the compiled library next to this module, or None when it was not built."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        hits = glob.glob(os.path.join(_HERE, "_sqdist_omp" + suffix))
        if hits:
            return hits[0]
    return None


def omp_runtimes() -> set[str]:
    """Real paths of the OpenMP runtimes (libgomp, libiomp, libomp) mapped into this process (Linux)."""
    names = ("libgomp", "libiomp", "libomp.")
    found = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.rstrip("\n").partition("/")
            if path[1] and any(n in os.path.basename(path[1] + path[2]) for n in names):
                found.add(os.path.realpath(path[1] + path[2]))
    return found


def torch_omp_runtime(lib: Any) -> str:
    """Real path of the OpenMP runtime torch's ``libtorch_cpu`` calls ("" when not found)."""
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        fn = ctypes.CDLL(path).omp_get_max_threads  # dlsym in torch's own lookup scope
    except (OSError, AttributeError):
        return ""
    found = lib.sq_object_of(ctypes.cast(fn, ctypes.c_void_p)).decode()
    return os.path.realpath(found) if found else ""


@functools.cache
def library() -> Any:
    """The loaded library (ctypes.CDLL) when it exists and shares torch's OpenMP runtime, else None."""
    path = library_path()
    if path is None or not sys.platform.startswith("linux"):
        return None
    if "OpenMP" not in torch.__config__.parallel_info().rsplit("ATen parallel backend:", 1)[-1]:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    lib.sq_abi.restype = ctypes.c_int
    lib.sq_omp_library.restype = ctypes.c_char_p
    lib.sq_object_of.restype, lib.sq_object_of.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    if lib.sq_abi() != ABI:
        return None
    ours = lib.sq_omp_library().decode()
    if not ours or os.path.realpath(ours) != torch_omp_runtime(lib):  # another runtime: not torch's pool
        return None
    for name, (res, args) in _SIGNATURES.items():
        for sfx in ("_f32", "_f64"):
            fn = getattr(lib, name + sfx)
            fn.restype, fn.argtypes = res, args
    for name, (res, args) in _SIGNATURES_F32.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def _fn(name: str, a: np.ndarray) -> Any:
    return getattr(library(), name + ("_f32" if a.dtype == np.float32 else "_f64"))


_CHAR = ctypes.c_char


def _p(a: np.ndarray) -> int:
    """Address of a C-contiguous array's data: through the buffer protocol (~3x faster than
    ``a.ctypes.data``, which matters at the exercise's size), ``a.ctypes.data`` for read-only
    or empty arrays."""
    try:
        return ctypes.addressof(_CHAR.from_buffer(a))
    except (TypeError, ValueError):
        if not a.flags.c_contiguous:
            raise ValueError(f"sqdist's C kernels need C-contiguous arrays, got strides {a.strides}") from None
        return a.ctypes.data


def _threads() -> int:
    return torch.get_num_threads()


def _check(status: int) -> None:
    if status < 0:
        raise MemoryError("sqdist's C kernels could not allocate their scratch buffers")


def _assign_direct(X, C, bounds, chunk, labels, mind, psums, pcounts, pinert, threads: int) -> None:
    _check(_fn("assign_direct", X)(_p(X), _p(C), X.shape[1], C.shape[0], _p(bounds), bounds.shape[0] - 1, chunk,
                                   _p(labels), _p(mind), _p(psums), _p(pcounts), _p(pinert), threads))


def assign_accumulate_direct(X, C, bounds, chunk, labels, mind, psums, pcounts, pinert) -> None:
    """Direct-formula assign + accumulate over row groups, groups in parallel (see _cpu_nb)."""
    _assign_direct(X, C, bounds, chunk, labels, mind, psums, pcounts, pinert, _threads())


def assign_accumulate_direct_serial(X, C, bounds, chunk, labels, mind, psums, pcounts, pinert) -> None:
    """The same on the calling thread."""
    _assign_direct(X, C, bounds, chunk, labels, mind, psums, pcounts, pinert, 1)


def nearest_direct(X, C, chunk, labels, mind) -> None:
    """Every row's nearest centre by the direct formula, labels and distances only (see
    :func:`sqdist._cpu_nb.nearest_direct`); blocks of ``chunk`` rows in parallel."""
    n = X.shape[0]
    threads = _threads() if n * C.shape[0] * X.shape[1] >= _PARALLEL_ROWS_WORK else 1
    _check(_fn("nearest_direct", X)(_p(X), n, _p(C), C.shape[0], X.shape[1], chunk, _p(labels), _p(mind), threads))


@functools.cache
def entry_point() -> Any:
    """The library's one CPython entry point (a module with ``update_assign``), loaded from the
    file :func:`library` accepted, or None (a library built without it: the ctypes call then)."""
    if library() is None:
        return None
    spec = importlib.util.spec_from_file_location("sqdist._sqdist_omp", library_path())
    try:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except (ImportError, AttributeError):
        return None
    return mod if hasattr(mod, "update_assign") else None


def update_assign_direct(X, C, sums, counts, chunk, labels, mind) -> tuple:
    """One Lloyd iteration of a small problem (see :func:`sqdist._cpu_nb.update_assign_direct`).

    Through the CPython entry point when there is one: at the exercise's size the ctypes
    call and its ten array addresses cost ~3x the arithmetic (36 against 12 us for numba).
    """
    mod = entry_point()
    if mod is not None:
        return mod.update_assign(chunk, X, C, sums, counts, labels, mind)
    K, D = C.shape
    Cn = np.empty((K, D), dtype=C.dtype)
    psums = np.empty((K, D), dtype=np.float64)
    pcounts = np.empty(K, dtype=np.int64)
    stats = np.empty(3, dtype=np.float64)
    empty = _fn("update_assign", X)(_p(X), X.shape[0], _p(C), K, D, _p(sums), _p(counts), chunk, _p(labels), _p(mind),
                                    _p(Cn), _p(psums), _p(pcounts), _p(stats))
    _check(empty)
    return Cn, float(stats[0]), float(stats[1]), psums, pcounts, float(stats[2]), int(empty)


def update_assign_bound(chunk: int) -> Any:
    """:func:`update_assign_direct` with its row chunk bound: ``step(X, C, sums, counts, labels,
    mind)``, the call a fit makes every iteration (the entry point itself when there is one:
    ~10 calls per fit at the exercise's size, where each Python layer costs ~0.3 us)."""
    mod = entry_point()
    if mod is not None:
        return functools.partial(mod.update_assign, chunk)
    return lambda X, C, sums, counts, labels, mind: update_assign_direct(X, C, sums, counts, chunk, labels, mind)


def argmin_accumulate_gemm_t(GT, X, m, C, ncmax, gamma, sub, labels, mind, psums, pcounts, pinert, Xnext,
                             xa) -> None:
    """Assign one block's rows from their *transposed* products GT (K, n): an element-wise running
    (min, second min, index) over the rows, then the exact near-tie re-check (see _ckernels_impl.h).
    In the same parallel region, the next block's rows ``Xnext`` (nn, D) are centred on ``m`` into
    ``xa[:nn]`` = ``[Xnext - m, 1]`` (``xa`` a contiguous (>= nn, D+1) array; nn may be 0)."""
    _check(_fn("argmin_gemm_t", X)(_p(GT), GT.shape[1], _p(X), _p(m), _p(C), C.shape[0], X.shape[1], float(ncmax),
                                   float(gamma), _p(sub), sub.shape[0] - 1, _p(labels), _p(mind), _p(psums),
                                   _p(pcounts), _p(pinert), _p(Xnext), Xnext.shape[0], _p(xa), _threads()))


def assign_accumulate_fused(X, m, A, C, ncmax, gamma, bounds, labels, mind, psums, pcounts, pinert) -> None:
    """Large-D assign + accumulate with the products of each cache-resident chunk of rows
    computed in C and never stored: ``A`` (K, D+1) = ``[-2 c_c, |c_c|^2]``, ``m`` (D,) the
    centring vector; row groups ``bounds`` as :func:`assign_accumulate_direct`."""
    _check(_fn("assign_fused", X)(_p(X), _p(m), _p(A), _p(C), C.shape[0], X.shape[1], float(ncmax), float(gamma),
                                  _p(bounds), bounds.shape[0] - 1, _p(labels), _p(mind), _p(psums), _p(pcounts),
                                  _p(pinert), _threads()))


def _sqdist(X, TT, out, threads: int):
    _fn("sqdist_direct", X)(_p(X), _p(TT), _p(out), X.shape[0], TT.shape[1], X.shape[1], threads)


def sqdist_direct(X, TT, out) -> None:
    """out[i, j] = sum_d (X[i, d] - TT[d, j])**2, rows in parallel."""
    _sqdist(X, TT, out, _threads())


def sqdist_direct_serial(X, TT, out) -> None:
    """The same on the calling thread."""
    _sqdist(X, TT, out, 1)


def prepare_right(T, c, Ta, nt, finite) -> int:
    """Centre T and build the product's right factor (see :func:`sqdist._cpu_nb.prepare_right`)."""
    P, D = T.shape
    acc = np.empty(D, dtype=np.float64)
    threads = _threads() if P * D >= _PARALLEL_ROWS_WORK else 1
    return int(_fn("prepare_right", T)(_p(T), P, D, _p(c), _p(Ta), _p(nt), _p(finite), _p(acc), threads))


def augment(X, c, Xa, nx) -> int:
    """Centred, augmented rows and their norms (see :func:`sqdist._cpu_nb.augment`); rows in parallel."""
    n, D = X.shape
    threads = _threads() if n * D >= _PARALLEL_ROWS_WORK else 1
    return int(_fn("augment", X)(_p(X), _p(c), _p(Xa), _p(nx), n, D, threads))


def gemm_fixup(d, nx, tnt, tau, X, T) -> int:
    """Direct recomputation of a gemm block's cancelled entries (see :func:`sqdist._cpu_nb.gemm_fixup`).

    Each row is screened in its own dtype first against thresholds rounded up (see
    ``_ckernels_impl.h``); only rows the screen flags take the exact float64 test."""
    n, P = d.shape
    threads = _threads() if n * P >= 1 << 16 else 1
    cnt = int(_fn("gemm_fixup", d)(_p(d), _p(nx), _p(tnt), float(tau), _p(X), _p(T), n, P, X.shape[1], threads))
    _check(cnt)
    return cnt


def gemm_min(d, nx, tnt, tau, X, T, dmin, imin) -> int:
    """:func:`gemm_fixup` of a block d (n, P), then each row's smallest entry into ``dmin`` (n,) and the
    index of its first occurrence into ``imin`` (n,) (NaN first, as ``torch.min``); see _cpu_nb.gemm_min."""
    n, P = d.shape
    threads = _threads() if n * P >= 1 << 16 else 1
    cnt = int(_fn("gemm_min", d)(_p(d), _p(nx), _p(tnt), float(tau), _p(X), _p(T), n, P, X.shape[1], _p(dmin),
                                 _p(imin), threads))
    _check(cnt)
    return cnt


@functools.cache
def gemm_supported() -> bool:
    """Whether the library's float32 product (``_ckernels_gemm.h``: AVX2 and FMA) runs on this CPU."""
    lib = library()
    return lib is not None and bool(lib.sq_gemm_supported())


def sgemm_nt(A, B, C) -> None:
    """``C = A @ B.T`` for float32 C-contiguous A (n, K), B (P, K), C (n, P), on torch's pool
    (packed 6 x 16 register tiles; each entry one sequential chain of fused multiply-adds in k,
    the same bits on any thread count)."""
    n, K = A.shape
    P = B.shape[0]
    _check(library().sgemm_nt(_p(A), K, _p(B), K, _p(C), P, n, P, K, _threads()))


def gemm_sqdist(Xa, Ta, d, nx, nt, tnt, tau, X, T) -> int:
    """:func:`gemm_fixup` fused into the product ``d = Xa @ Ta.T`` (float32; the augmented rows
    (n, D+2) of :func:`augment` and (P, D+2) of :func:`prepare_right`, D >= 1): the product over
    the first D columns, the last two added in each register tile with the augmented product's
    bits, then the screen in registers and the exact fix-up of flagged rows while the tile is in
    cache.  Returns how many entries were recomputed."""
    n, D = X.shape
    cnt = int(library().gemm_sqdist_f32(_p(Xa), _p(Ta), _p(d), n, Ta.shape[0], D, _p(nx), _p(nt), _p(tnt),
                                        float(tau), _p(X), _p(T), _threads()))
    _check(cnt)
    return cnt


def assign_accumulate_gemm(X, m, A, C, ncmax, gamma, nb, sub, sublast, labels, mind, psums, pcounts, pinert) -> None:
    """:func:`argmin_accumulate_gemm_t` over all of X (n, D) float32 at once, its products computed in
    the own product's register tiles and folded at once into each row's running (min, second min,
    index), never stored (``_ckernels_gemm.h``; D + 1 <= 384): ``A`` (K, D+1) = ``[-2 c_c, |c_c|^2]``,
    ``m`` (D,) the centring vector; subgroup s takes rows ``sub[s]:sub[s+1]`` of every block of
    ``nb`` rows (``sublast`` for a short last block), the transposed path's order: its bits."""
    _check(library().assign_gemm_f32(_p(X), X.shape[0], _p(m), _p(A), _p(C), C.shape[0], X.shape[1], float(ncmax),
                                     float(gamma), nb, _p(sub), _p(sublast), sub.shape[0] - 1, _p(labels), _p(mind),
                                     _p(psums), _p(pcounts), _p(pinert), _threads()))
