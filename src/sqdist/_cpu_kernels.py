"""Compiled CPU fast paths: C kernels on torch's thread pool, else numba, else none.

Everything here is optional: :func:`available` says whether compiled kernels
can run, and callers fall back to the torch code otherwise.  Two
implementations take the same arguments (:func:`kernels` picks one):

* :mod:`sqdist._ckernels` -- C compiled at install time (setup.py), loaded
  after torch so that its OpenMP regions share torch's libgomp and intra-op
  thread pool (one pool of threads; Linux).  Preferred when usable.
* :mod:`sqdist._cpu_nb` -- numba (the optional ``fast`` extra), imported
  lazily, compiled on first use and cached on disk (about a second per kernel
  and dtype in a fresh environment); runs on numba's workqueue pool.

The environment variable ``SQDIST_CPU_KERNELS`` (``auto``, the default;
``c``; ``numba``; ``torch``) forces one of them, for tests and benchmarks.

Fast paths
----------
``assign_accumulate`` (one Lloyd step without the centre division)
    * small ``D`` (up to 3 features, or K * D <= 512): one pass over X, a
      few hundred rows at a time transposed into an L1-sized block, computes
      the direct distances to every centre and keeps the running
      (min, argmin) of each vector of rows in registers (the C kernels), then
      adds each row to its cluster's float64 sum -- no N x K matrix, no
      ``index_add_`` pass, no temporaries beyond O(K * D + chunk * D) per row
      group.
    * larger ``D``: as scikit-learn, every thread takes fixed row groups
      and walks them in cache-sized chunks: a single-threaded BLAS product
      per chunk, written transposed (centres x rows) so that the argmin is
      again an element-wise (min, second min, index) pass, then, while the
      chunk is hot, the direct-formula re-check of near ties (so the labels
      and distances are those of the direct formula) and the float64
      accumulation.  Without SciPy or threadpoolctl: torch.mm on large
      row blocks, then one compiled pass.  The C kernels: up to 64 features
      a fused step computes the products of each cache-resident chunk
      itself; where their own float32 product runs, its register tiles
      (6 centres x 16 rows) are folded at once into the rows' running
      (min, second min, index) instead (:func:`_assign_own_gemm`: beyond 64
      features, and large problems up to 64); else transposed row blocks.
``sqdist_small`` -- the direct-formula distance matrix for small ``D`` (faster
    than any product there, exact, never negative).
``product_nt`` -- every matrix product of the compiled paths: ``A @ B.T`` on
    torch's thread pool, by the C kernels' own packed float32 product where it
    measured faster than torch's BLAS (AVX2 + FMA CPUs that torch runs at AVX2,
    see :func:`own_gemm`), else ``torch.mm``.
The distance matrix's product path (the augmented rows, the fix-up) is
:mod:`sqdist._cpu_product`.

Determinism: row groups are fixed from the shape alone and combined in order
(see :mod:`sqdist._cpu_nb`), so results are bit-identical for any thread count.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

import numpy as np
import torch

from . import _ckernels
from ._errors import SqdistError
from ._numerics import assign_margin

__all__ = [
    "available",
    "kernels",
    "supports",
    "assign_accumulate",
    "sqdist_small",
    "sqdist_small_wins",
    "own_gemm",
    "product_nt",
    "numpy_view",
    "update_assign_step",
    "nearest_small",
    "assign_labels",
]

# Where the direct formula beats a product in the k-means assignment, by shape (D, K) only, so that
# every rank of a distributed fit takes the same path.  Measured on a 2-core AVX2 EPYC, float32, 2
# threads, the direct kernel with its register-held (min, index) against the product paths (the own
# product's tiles from 32 centres), time direct / product at N = 1e5 (N = 2e4): D=2 K=1024 0.80
# (0.66), D=3 K=256 0.85 (0.68), D=3 K=1024 1.03 (0.85), D=4 K=128 0.80 (0.67), D=4 K=256 0.98
# (0.78), D=6 K=64 0.77 (0.62), D=8 K=64 0.91 (0.71), D=8 K=128 1.10 (0.88), D=12 K=32 0.76
# (0.65), D=12 K=64 1.03 (0.85), D=16 K=32 0.91 (0.77), D=16 K=48 1.17 (0.87), D=24 K=16 0.90
# (0.69), D=32 K=8 0.84 (0.58), D=32 K=24 1.29 (0.91); N=1e6 D=2 K=8 6.4 / 15.4 ms: up to 3 features
# always, otherwise up to 512 centres times features (768 and 4 features always before the
# register-held minimum and the own product's assignment, which moved both sides).
_ASSIGN_DIRECT_ALWAYS_D = 3
_ASSIGN_DIRECT_MAX_D = 32
_ASSIGN_DIRECT_MAX_KD = 512
# most features of the one-call iteration (update_assign_step)
_STEP_MAX_D = 4
# Most features for which the direct distance matrix beats the product path (gemm + fix-up),
# 2-core AVX2 EPYC, 2 threads, direct / product time, medians of 11 interleaved calls at
# 4096 x 1024, 4096 x 4096 and 1e5 x 64: the C kernel's register tiles in float32 up to D = 24
# (0.73 / 0.89 / 0.62; at D = 28 0.83 / 0.97 / 0.67, too close), in float64 up to D = 16
# (0.72 / 0.96 / 0.79; at D = 20 0.95 / 1.02 / 0.82); numba's row kernel up to D = 16.
_SQDIST_DIRECT_MAX_D = {"c": {torch.float32: 24, torch.float64: 16}, "numba": {torch.float32: 16, torch.float64: 16}}
# Small problems (N * P * D up to 2^22) take the C direct kernel at any D up to 1024: its fixed cost
# is a third of the product path's (measured table: docs/performance.md, "Small-D distance matrix");
# its sum of D positive terms is within D u of exact (6.1e-5 in float32 at D = 1024: the contract).
_SQDIST_DIRECT_MAX_WORK = 1 << 22
_SQDIST_DIRECT_SMALL_MAX_D = 1024
# With the own float32 product and a wide T the product path wins the matrix from D = 16: ms direct
# / product into a reused result, 2 threads, (4096, 4096) D = 12 12.8 / 12.0, 16 17.0 / 13.8, 24 25.2
# / 17.3; (4096, 1024) 16 4.50 / 4.46, 24 6.39 / 5.32; but (1e5, 64) 24 9.1 / 12.6, (1e5, 256) 24 36.5 /
# 39.3.  nearest's direct pass writes no matrix and keeps up to D = 16 (16 23.9 / 25.3 at 4096 x 4096).
_OWN_GEMM_WIDE_P = 1024
_OWN_GEMM_DIRECT_MAX_D = 15
# rows per group of the direct assign kernel (groups are fixed by N only)
_GROUP_ROWS = 16384
# bytes of the direct kernel's per-chunk buffers (half of a 48 KiB L1d)
_DIRECT_L1_BYTES = 24 << 10
_MAX_GROUPS = 64
# below this many multiply-adds a kernel runs on the calling thread
_SERIAL_WORK = 1 << 16
# sub-groups of one gemm block (fixed; parallelism of the compiled pass)
_SUBGROUPS = 4
# bytes of one gemm block of products.  Smaller (L2-sized) blocks would be the
# textbook choice, but each block costs a hand-over between torch's and
# numba's thread pools, and on a loaded 2-core machine every hand-over costs
# milliseconds: 64 MiB blocks measured 1.2-1.5x the bare product there, 1 MiB
# blocks 3.5-5.7x (docs/performance.md).
BLOCK_BYTES = 64 << 20
# the C kernels' large-D path: bytes of one block of transposed products (the
# product and the argmin pass run on the same pool, so a hand-over is cheap and
# the block can stay in the last-level cache), rows per subgroup
# (100000, 128, 1024), float32, ms per step, 2-core EPYC, 8 / 16 / 32 / 64 MiB: 2 threads, quiet 518 / 486 /
# 497 (min 477, as 16 MiB) / 551, the bare product (fresh) 527; load average ~2.5 (every block's two thread
# hand-overs cost milliseconds there) 2072 / 1508 / 1268 / 1073, the product 1007; 1 thread (N = 5e4)
# - / 442 / 444 / 463: 32 MiB (at most half the budget, below)
C_BLOCK_BYTES = 32 << 20
_C_SUBGROUP_ROWS = 2048
# up to this many features the C kernels' large-K step computes its products itself, a
# cache-resident chunk of rows at a time (registers hold 2 vectors of rows x 6 centres; the
# products are never stored); beyond, torch.mm blocks win on one thread (quiet re-check with
# the FMA screening, 2 threads, ms fused / blocks: (2e5, 64, 256) 174-182 / 181 before it, (1e5, 96,
# 256) 110 / 120, (1e5, 128, 256) 148 / 150, (1e5, 128, 1024) 539 / 500: 64 kept).  Loaded 2-core EPYC,
# float32, ms fused / torch.mm blocks / numba chunked, 1 thread: (8192, 16, 1024) 32.5 / 46.5 /
# 32.6, (2e4, 32, 256) 40.1 / 44.1 / 35.0, (2e4, 64, 64) 25.6 / 29.1 / 18.8, (2e4, 128, 256)
# 141 / 114 / 99; 2 threads: 43.7 / 184 / 36.1, 36.8 / 108 / 37.5, 23.4 / 66.3 / 20.0,
# 172 / 208 / 142 (one parallel region against two per block)
_C_FUSED_MAX_D = 64
# Where the own float32 product runs (own_gemm), up to one k block of it (D + 1 <= 384), the
# assignment folds its tiles at once (_assign_own_gemm): beyond 64 features always, up to 64 from
# _OWN_ASSIGN_MIN_WORK multiply-adds (below, its ~40-70 us of packing and two parallel phases
# lose).  2-core AVX2 EPYC, float32, ms (median of 5-7), 2 threads, own / transposed blocks:
# (1e5, 80, 256) 67.1 / 100.1, (1e5, 96, 1024) 299 / 368, (5e4, 200, 512) 156 / 193, (2e4, 383,
# 256) 70.2 / 87.9, (4000, 128, 32) 1.9 / 3.3, (1e5, 128, 1024) 380 / 449; own / fused: (2e5, 64,
# 256) 108 / 121 (1 thread, 1e5 rows: 108 / 114), (1e5, 32, 1024) 107 / 119 (211 / 228), (1e5, 5,
# 1024) 33.3 / 36.5, (1e4, 12, 100) 1.31 / 1.48, (2000, 40, 50) 0.71 / 0.76 (1 thread 0.87 /
# 0.79), (1000, 8, 100) 0.44 / 0.40, (300, 64, 32) 0.40 / 0.36.
_OWN_ASSIGN_MAX_D = 384
_OWN_ASSIGN_MIN_WORK = 1 << 23
# chunked large-D path: bytes of one thread's (chunk, K) product block (stays
# in L2), rows per group (fixed by N), cap on the groups' float64 partial sums
_CHUNK_BYTES = 1 << 20
_CHUNK_MAX_ROWS = 512
_GEMM_GROUP_ROWS = 4096
_PSUM_BYTES = 16 << 20


_CHOICES = ("auto", "c", "numba", "torch")


def available() -> bool:
    """Whether compiled kernels can run (C or numba; see :func:`kernels`)."""
    return kernels() is not None


def kernels() -> Any:
    """The kernel module in use: :mod:`sqdist._ckernels`, :mod:`sqdist._cpu_nb` or None (torch code).

    ``SQDIST_CPU_KERNELS`` chooses: ``auto`` (default: C when built and sharing
    torch's OpenMP runtime, else numba when installed, else torch), ``c``,
    ``numba`` or ``torch``.
    """
    return _kernels_for(os.environ.get("SQDIST_CPU_KERNELS", "auto").strip().lower())


@functools.cache
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


@functools.cache
def _kernels_for(choice: str) -> Any:
    if choice not in _CHOICES:
        raise SqdistError(f"SQDIST_CPU_KERNELS: got {choice!r}, expected one of {', '.join(_CHOICES)}")
    if choice in ("auto", "c") and _ckernels.library() is not None:
        return _ckernels
    if choice == "c":
        raise SqdistError("SQDIST_CPU_KERNELS: got 'c', but sqdist's C kernels are not built or do not share "
                          "torch's OpenMP runtime (expected a Linux install that compiled src/sqdist/_ckernels.c)")
    if choice in ("auto", "numba") and _numba_installed():
        return _nb()
    if choice == "numba":
        raise SqdistError("SQDIST_CPU_KERNELS: got 'numba', but numba is not installed (expected `pip install numba`)")
    return None


@functools.cache
def _nb() -> Any:
    """The kernel module :mod:`sqdist._cpu_nb`, imported on first use (importing numba costs ~0.5 s).

    Before the first parallel kernel, numba's threading layer is set to
    "workqueue" unless the user chose one: numba's default "omp" layer brings a
    second OpenMP runtime next to torch's, and alternating ``torch.mm`` with a
    numba parallel loop then makes the two pools spin against each other (a
    2-core run went 10-80x slower).  The workqueue layer has no spinning pool.
    """
    import numba
    from numba.np.ufunc import parallel

    if numba.config.THREADING_LAYER == "default" and "NUMBA_THREADING_LAYER" not in os.environ:
        if not getattr(parallel, "_is_initialized", False):
            numba.config.THREADING_LAYER = "workqueue"
    from . import _cpu_nb

    return _cpu_nb


def _ok(t: torch.Tensor) -> bool:
    return (
        t.is_cpu  # (not t.device.type: building a device object costs ~1 us, at the exercise's size 1 % of a fit)
        and t.dtype in (torch.float32, torch.float64)
        and t.ndim == 2
        and not t.requires_grad
        and t.layout == torch.strided
    )


def supports(X: torch.Tensor, C: torch.Tensor) -> bool:
    """Whether :func:`assign_accumulate` runs for these inputs.

    CPU, float32 or float64 (both the same), 2-D, no autograd, at least one
    feature and one centre, compiled kernels available.  Every shape is covered: small D
    by the direct kernel, larger D by blocked products + a compiled argmin.
    """
    return kernels() is not None and _shapes_ok(X, C)


def _shapes_ok(X: torch.Tensor, C: torch.Tensor) -> bool:
    """:func:`supports` without the kernels' availability."""
    return (
        _ok(X)
        and _ok(C)
        and X.dtype == C.dtype
        and X.shape[1] == C.shape[1]
        and X.shape[1] >= 1
        and C.shape[0] >= 1
    )


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``a @ b`` into ``out`` through torch's BLAS (``torch.mm`` on views of the arrays).

    Products run on torch's own thread pool, the one the caller's torch code
    uses: NumPy's OpenBLAS (used here until 2026-11-29) brings a second pool
    that keeps spinning after each call and takes the cores from the
    caller's next torch operation (issue 14).  NaN/Inf rows give NaN products
    here: the callers recompute those rows by the direct formula (IEEE
    semantics, see distances.py).
    """
    torch.mm(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))
    return out


def _groups(n: int, size: int, max_groups: int) -> np.ndarray:
    """Boundaries (G+1,) of G contiguous row groups, G chosen from n only."""
    g = max(1, min(max_groups, -(-n // size)))
    if g == 1:  # small inputs: skip linspace's ~10 us
        return np.array([0, n], dtype=np.int64)
    return np.linspace(0, n, g + 1).round().astype(np.int64)


def assign_accumulate(X: torch.Tensor, C: torch.Tensor, *, labels_out: torch.Tensor | None = None,
                      mind_out: torch.Tensor | None = None, budget: int | None = None):
    """Nearest centre of every row and the per-cluster sums, in one pass.

    Parameters
    ----------
    X : Tensor of shape (n, D)
    C : Tensor of shape (K, D), same dtype (float32 or float64), CPU
    labels_out, mind_out : Tensor of shape (n,), optional
        Contiguous int64 / X-dtype buffers to write into (reuse them across
        Lloyd iterations: the call then allocates only O(K * D) memory).
    budget : int, optional
        Working memory in bytes for the temporaries (float64 partial sums of
        the row groups, product blocks); default 64 MiB.  Fewer groups change
        the float64 summation order (the last bits of ``sums``), never the
        labels; the thread count never changes anything.

    Returns
    -------
    labels : int64 Tensor of shape (n,)
        Index of the nearest centre (smallest index on ties).
    mind : Tensor of shape (n,), dtype of X
        Squared distance to it, by the direct formula ``sum((x - c)**2)``.
    sums : float64 Tensor of shape (K, D)
        Sum of the rows of each cluster.
    counts : int64 Tensor of shape (K,)
    inertia : float
        ``sum(mind)`` accumulated in float64.

    Examples
    --------
    >>> import torch
    >>> from sqdist import _cpu_kernels as ck
    >>> X = torch.tensor([[0.0, 0.0], [1.0, 0.0], [9.0, 0.0]])
    >>> C = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    >>> if ck.available():
    ...     labels, mind, sums, counts, inertia = ck.assign_accumulate(X, C)
    ...     print(labels.tolist(), counts.tolist(), inertia)
    ... else:
    ...     print("[0, 0, 1] [2, 1] 2.0")
    [0, 0, 1] [2, 1] 2.0
    """
    n, D = X.shape
    K = C.shape[0]
    labels = torch.empty(n, dtype=torch.int64) if labels_out is None else labels_out
    mind = torch.empty(n, dtype=X.dtype) if mind_out is None else mind_out
    budget = BLOCK_BYTES if budget is None else max(1, int(budget))
    if _direct_assign(D, K):
        return _assign_direct(X, C, labels, mind, budget)
    return _assign_gemm(X, C, labels, mind, budget)


def _direct_assign(D: int, K: int) -> bool:
    """Whether the assignment of rows of D features to K centres takes the direct formula."""
    return D <= _ASSIGN_DIRECT_ALWAYS_D or (D <= _ASSIGN_DIRECT_MAX_D and K * D <= _ASSIGN_DIRECT_MAX_KD)


def assign_labels(X: torch.Tensor, C: torch.Tensor, budget: int | None = None) -> torch.Tensor:
    """The labels of :func:`assign_accumulate` (n,), without its sums, counts and inertia: for
    the direct formula one pass of :func:`nearest_small` (the same distances and ties, hence
    the same labels, for finite rows), else the assignment itself.  Inputs as
    :func:`assign_accumulate`'s, rows finite."""
    n, D = X.shape
    if _direct_assign(D, C.shape[0]):
        labels = torch.empty(n, dtype=torch.int64)
        nearest_small(X.contiguous(), C.contiguous(), torch.empty(n, dtype=X.dtype), labels)
        return labels
    return assign_accumulate(X, C, budget=budget)[0]


def numpy_view(t: torch.Tensor) -> np.ndarray:
    """A contiguous NumPy view (or copy) of a CPU tensor, for callers that keep arrays across calls."""
    try:
        a = t.numpy()  # one call for the common case (no autograd)
    except RuntimeError:
        return _np(t)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def update_assign_step(X: torch.Tensor, C: torch.Tensor) -> Any:
    """One Lloyd iteration of a small problem in one compiled call, for data X (n, D) and
    centres like C (K, D) -- or None when it does not serve them.  It serves the direct
    kernel's one-group case (``n <= 16384``) up to ``D = 4``, where its bits equal the separate
    steps' (beyond, torch's row sum of the squared moves takes another order); the kernels and
    the row chunk are resolved here, once per fit (a fit's iterations then pay only the call;
    see :func:`sqdist._cpu_nb.update_assign_direct`).

    ``step(X, C, sums, counts, labels, mind)``: the new centres from ``sums``
    (K, D) / ``counts`` (K,) (every count > 0), the largest centre move and the
    sum of the squared moves, and the assignment of X (n, D) to the new
    centres, written into ``labels`` / ``mind`` (n,).  NumPy arrays in and out:
    at the exercise's size every tensor-to-array conversion costs more than the
    arithmetic, so the caller keeps the views.  Returns ``(centers, shift, sum
    of squared moves, sums, counts, inertia, number of empty clusters)``, the
    values :func:`sqdist._step.update_centers`, :func:`sqdist._step.max_shift`
    and :func:`assign_accumulate` give one after the other, in new arrays.
    """
    k = kernels()
    n, D = X.shape
    if k is None or not (_shapes_ok(X, C) and n <= _GROUP_ROWS and D <= _STEP_MAX_D and _direct_assign(D, C.shape[0])):
        return None
    return k.update_assign_bound(_direct_chunk(D))


def _group_cap(K: int, D: int, budget: int) -> int:
    """Most row groups whose float64 partial sums (G, K, D) fit half the budget (and _PSUM_BYTES)."""
    return max(1, min(_MAX_GROUPS, min(_PSUM_BYTES, budget // 2) // (K * D * 8)))


def _direct_chunk(D: int) -> int:
    """Rows per transposed block of the direct kernel: the block, its distances,
    minima and labels (about (D + 4) * chunk * 4 bytes) stay within L1."""
    return max(64, min(512, (_DIRECT_L1_BYTES // (4 * (D + 4))) // 16 * 16))


def _assign_direct(X: torch.Tensor, C: torch.Tensor, labels_t: torch.Tensor, mind_t: torch.Tensor, budget: int):
    n, D = X.shape
    K = C.shape[0]
    Xn = _np(X)
    Cn = _np(C)  # (K, D)
    bounds = _groups(n, _GROUP_ROWS, _group_cap(K, D, budget))
    G = bounds.shape[0] - 1
    labels, mind = labels_t.numpy(), mind_t.numpy()
    psums, pcounts, pinert = _partials(G, K, D)
    kern = kernels().assign_accumulate_direct if G > 1 else kernels().assign_accumulate_direct_serial
    kern(Xn, Cn, bounds, _direct_chunk(D), labels, mind, psums, pcounts, pinert)
    sums, counts, inertia = _combine(psums, pcounts, pinert)
    return labels_t, mind_t, sums, counts, inertia


def _partials(G: int, K: int, D: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeroed float64 sums (G, K, D), counts (G, K) and inertias (G,) of G row groups."""
    return np.zeros((G, K, D), dtype=np.float64), np.zeros((G, K), dtype=np.int64), np.zeros(G, dtype=np.float64)


def _combine(psums: np.ndarray, pcounts: np.ndarray, pinert: np.ndarray):
    """Add the group partials in group order (fixed, so deterministic)."""
    sums = psums[0].copy()
    counts = pcounts[0].copy()
    inertia = float(pinert[0])
    for g in range(1, psums.shape[0]):
        sums += psums[g]
        counts += pcounts[g]
        inertia += float(pinert[g])
    return torch.from_numpy(sums), torch.from_numpy(counts), inertia


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's controller of the BLAS that numba's ``np.dot`` calls, or None.

    The chunked large-D kernel calls BLAS (SciPy's, through numba's ``np.dot``)
    from its own worker threads, as scikit-learn does: each call must stay on
    its thread.  Needs SciPy (numba's ``np.dot``) and threadpoolctl; without
    them the block path runs instead.
    """
    if importlib.util.find_spec("scipy") is None or importlib.util.find_spec("threadpoolctl") is None:
        return None
    import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS numba binds to)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_thread_blas():
    """Context manager limiting the BLAS libraries to one thread, or None (see _blas_controller)."""
    ctl = _blas_controller()
    return None if ctl is None else ctl.limit(limits=1, user_api="blas")


def _chunk_rows(K: int, item: int) -> int:
    """Rows per product chunk: a (chunk, K) block of about _CHUNK_BYTES (fixed by the shape)."""
    return max(16, min(_CHUNK_MAX_ROWS, _CHUNK_BYTES // max(1, K * item)))


def _assign_gemm(X: torch.Tensor, C: torch.Tensor, labels_t: torch.Tensor, mind_t: torch.Tensor, budget: int):
    if kernels() is _ckernels:
        (n, D), K = X.shape, C.shape[0]
        if D < _OWN_ASSIGN_MAX_D and own_gemm(X.dtype, n, K) and (D > _C_FUSED_MAX_D or n * K * D >= _OWN_ASSIGN_MIN_WORK):
            return _assign_own_gemm(X, C, labels_t, mind_t, budget)
        if D <= _C_FUSED_MAX_D:
            return _assign_fused(X, C, labels_t, mind_t, budget)
        return _assign_gemm_transposed(X, C, labels_t, mind_t, budget)
    limit = _one_thread_blas()
    if limit is not None:  # numba: per-thread products through SciPy's BLAS
        return _assign_gemm_chunked(X, C, labels_t, mind_t, limit, budget)
    return _assign_gemm_blocks(X, C, labels_t, mind_t, budget)


def _gemm_prep(X: torch.Tensor, C: torch.Tensor):
    D = X.shape[1]
    C = C.detach().contiguous()
    m = C.mean(0)  # (D,) centring: products see the spread, not the offset
    Cc = C - m  # (K, D)
    ncc = (Cc * Cc).sum(1)  # (K,)
    # right factor [-2 c_c ; |c_c|^2] (D+1, K): the product gives e_k directly
    Ca = torch.cat([-2.0 * Cc.T, ncc[None, :]], dim=0).contiguous().numpy()  # (D+1, K)
    return C.numpy(), m.numpy(), Ca, float(ncc.max()), assign_margin(X.dtype, D)


def _assign_gemm_chunked(X: torch.Tensor, C: torch.Tensor, labels_t: torch.Tensor, mind_t: torch.Tensor, limit, budget: int):
    """Per-thread row chunks with a single-threaded product each (see
    :func:`sqdist._cpu_nb.assign_accumulate_gemm_chunked`).  Groups: fixed by
    the shape, at least _GEMM_GROUP_ROWS rows each, at most _MAX_GROUPS, and
    their float64 partial sums within _PSUM_BYTES."""
    n, D = X.shape
    K = C.shape[0]
    Xn = _np(X)
    Cn, mn, Ca, ncmax, gamma = _gemm_prep(X, C)
    bounds = _groups(n, _GEMM_GROUP_ROWS, _group_cap(K, D, budget))
    G = bounds.shape[0] - 1
    psums, pcounts, pinert = _partials(G, K, D)
    # per-thread (chunk, K + D + 1) buffers: at most a quarter of the budget for 2 threads
    chunk = max(1, min(_chunk_rows(K, Xn.itemsize), budget // (8 * (K + D + 1) * Xn.itemsize)))
    # every product covers a whole chunk (numba's np.dot needs contiguous
    # operands), so even out the chunks of a group: the last one is then full
    # but for a row or two instead of up to chunk - 1 wasted product rows
    rows = -(-n // G) + 1  # (the largest group)
    chunk = -(-rows // -(-rows // chunk))
    CaT = np.ascontiguousarray(Ca.T)  # (K, D+1)
    with limit:
        _nb().assign_accumulate_gemm_chunked(Xn, mn, CaT, Cn, ncmax, gamma, bounds, chunk, labels_t.numpy(),
                                             mind_t.numpy(), psums, pcounts, pinert)
    sums, counts, inertia = _combine(psums, pcounts, pinert)
    return labels_t, mind_t, sums, counts, inertia


def _assign_gemm_blocks(X: torch.Tensor, C: torch.Tensor, labels_t: torch.Tensor, mind_t: torch.Tensor, budget: int):
    """numba without SciPy's BLAS: blocks of products by torch.mm, numba's argmin pass (the C kernels
    take :func:`_assign_fused` / :func:`_assign_gemm_transposed`)."""
    n, D = X.shape
    K = C.shape[0]
    Xn = _np(X)
    Cn, mn, Ca, ncmax, gamma = _gemm_prep(X, C)  # Ca (D+1, K) = [-2 c_c ; |c_c|^2]
    item = Xn.itemsize
    nb = max(1, min(n, min(BLOCK_BYTES, budget // 2) // max(1, (K + D + 1) * item)))
    labels, mind = labels_t.numpy(), mind_t.numpy()
    psums, pcounts, pinert = _partials(_SUBGROUPS, K, D)
    gbuf = np.empty((nb, K), dtype=Xn.dtype)  # (nb, K) products, reused
    xbuf = np.empty((nb, D + 1), dtype=Xn.dtype)  # (nb, D+1) rows [x_c, 1], reused
    xbuf[:, D] = 1
    kern = kernels().argmin_accumulate_gemm
    for s in range(0, n, nb):
        e = min(n, s + nb)
        r = e - s
        np.subtract(Xn[s:e], mn, out=xbuf[:r, :D])  # (r, D) centred rows
        g = _matmul(xbuf[:r], Ca, gbuf[:r])  # (r, K)
        sub = _subgroups(r, _SUBGROUPS)
        kern(g, Xn[s:e], mn, Cn, ncmax, gamma, sub, labels[s:e], mind[s:e], psums, pcounts, pinert)
    sums, counts, inertia = _combine(psums, pcounts, pinert)
    return labels_t, mind_t, sums, counts, inertia


def _assign_fused(X: torch.Tensor, C: torch.Tensor, labels_t: torch.Tensor, mind_t: torch.Tensor, budget: int):
    """The C kernels' large-D step in one parallel region: every thread takes fixed row
    groups and, a cache-resident chunk of rows at a time, computes the products with the
    centres in C (six centres per sweep, never stored), the running (min, second min,
    index) and the exact near-tie re-check (see :func:`sqdist._ckernels.assign_accumulate_fused`)."""
    n, D = X.shape
    K = C.shape[0]
    Xn = _np(X)
    Cn, mn, Ca, ncmax, gamma = _gemm_prep(X, C)  # Ca (D+1, K)
    bounds = _groups(n, _GEMM_GROUP_ROWS, _group_cap(K, D, budget))
    G = bounds.shape[0] - 1
    psums, pcounts, pinert = _partials(G, K, D)
    _ckernels.assign_accumulate_fused(Xn, mn, np.ascontiguousarray(Ca.T), Cn, ncmax, gamma, bounds, labels_t.numpy(),
                                      mind_t.numpy(), psums, pcounts, pinert)
    sums, counts, inertia = _combine(psums, pcounts, pinert)
    return labels_t, mind_t, sums, counts, inertia


def _assign_gemm_transposed(X: torch.Tensor, C: torch.Tensor, labels_t: torch.Tensor, mind_t: torch.Tensor,
                            budget: int):
    """The C kernels' large-D step: per block of rows, the transposed products
    ``[-2 c_c, |c_c|^2] @ [x_c, 1].T`` (K, r) by one ``torch.mm`` on torch's
    pool, then one parallel C pass on the same pool: an element-wise running
    (min, second min, index) over the rows (as numba's chunked kernel), the
    exact near-tie re-check and the centring of the next block's rows (two
    thread hand-overs per block).  Subgroups (fixed by the shape and budget)
    keep the result independent of the thread count."""
    n, D = X.shape
    K = C.shape[0]
    Xn = _np(X)
    Cn, mn, Ca, ncmax, gamma = _gemm_prep(X, C)  # Ca (D+1, K)
    CaT = torch.from_numpy(np.ascontiguousarray(Ca.T))  # (K, D+1)
    nb, S = _t_blocks(n, K, D, Xn.itemsize, budget)
    labels, mind = labels_t.numpy(), mind_t.numpy()
    psums, pcounts, pinert = _partials(S, K, D)
    gflat = torch.empty(K * nb, dtype=X.dtype)  # (K, r) transposed products of a block, reused
    xbuf = np.empty((nb, D + 1), dtype=Xn.dtype)  # (nb, D+1) rows [x_c, 1], reused
    xbuf[:, D] = 1
    e0 = min(n, nb)
    np.subtract(Xn[:e0], mn, out=xbuf[:e0, :D])  # the first block's rows; later ones: in the C pass
    xt = torch.from_numpy(xbuf)
    for s in range(0, n, nb):
        e = min(n, s + nb)
        r = e - s
        g = product_nt(CaT, xt[:r], gflat[: K * r].view(K, r))  # (K, r)
        sub = _subgroups(r, S)
        # the C pass also centres the next block's rows into xbuf (its products are done)
        _ckernels.argmin_accumulate_gemm_t(g.numpy(), Xn[s:e], mn, Cn, ncmax, gamma, sub, labels[s:e], mind[s:e],
                                           psums, pcounts, pinert, Xn[e : min(n, e + nb)], xbuf)
    sums, counts, inertia = _combine(psums, pcounts, pinert)
    return labels_t, mind_t, sums, counts, inertia


def _t_blocks(n: int, K: int, D: int, item: int, budget: int) -> tuple[int, int]:
    """Rows per block of the transposed path and subgroups per block (fixed by the shape and budget)."""
    nb = max(1, min(n, min(C_BLOCK_BYTES, budget // 2) // max(1, (K + D + 1) * item)))
    return nb, max(1, min(_group_cap(K, D, budget), -(-nb // _C_SUBGROUP_ROWS)))


def _subgroups(r: int, S: int) -> np.ndarray:
    """Subgroup boundaries (S+1,) of a block of r rows."""
    return np.linspace(0, r, S + 1).round().astype(np.int64)


def _assign_own_gemm(X: torch.Tensor, C: torch.Tensor, labels_t: torch.Tensor, mind_t: torch.Tensor, budget: int):
    """The transposed path's assignment with its products in the own product's register tiles,
    folded at once into each row's running (min, second min, index) and never stored (see
    :func:`sqdist._ckernels.assign_accumulate_gemm`): the same products, decisions and
    subgroup order, hence the same bits, without writing and re-reading a (K, n) block per
    pass.  float32, :func:`own_gemm`, D + 1 <= 384 (one k block)."""
    n, D = X.shape
    K = C.shape[0]
    Xn = _np(X)
    Cn, mn, Ca, ncmax, gamma = _gemm_prep(X, C)  # Ca (D+1, K)
    nb, S = _t_blocks(n, K, D, Xn.itemsize, budget)
    psums, pcounts, pinert = _partials(S, K, D)
    _ckernels.assign_accumulate_gemm(Xn, mn, np.ascontiguousarray(Ca.T), Cn, ncmax, gamma, nb, _subgroups(nb, S),
                                     _subgroups(n - (n - 1) // nb * nb, S), labels_t.numpy(), mind_t.numpy(), psums,
                                     pcounts, pinert)
    sums, counts, inertia = _combine(psums, pcounts, pinert)
    return labels_t, mind_t, sums, counts, inertia


def sqdist_small_wins(dtype: torch.dtype, d: int, n: int, P: int, *, matrix: bool = True) -> bool:
    """Whether the direct formula (:func:`sqdist_small`, or :func:`nearest_small` when not
    ``matrix``) is the fastest exact CPU path for an (n, P) problem with ``d`` features of ``dtype``."""
    k = kernels()
    if k is None or dtype not in (torch.float32, torch.float64) or d < 1:
        return False
    kind = "c" if k is _ckernels else "numba"
    if kind == "c" and n * P * d <= _SQDIST_DIRECT_MAX_WORK and d <= _SQDIST_DIRECT_SMALL_MAX_D:
        return True
    limit = _SQDIST_DIRECT_MAX_D[kind][dtype]
    if matrix and P >= _OWN_GEMM_WIDE_P and own_gemm(dtype, n, P):
        limit = min(limit, _OWN_GEMM_DIRECT_MAX_D)
    return d <= limit


def sqdist_small(X: torch.Tensor, T: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Direct-formula distances ``out[i, j] = sum((X[i] - T[j])**2)`` (exact, IEEE for NaN/Inf).

    ``out`` (N, P) must be a contiguous CPU tensor of the inputs' dtype.
    """
    TT = np.ascontiguousarray(_np(T).T)  # (D, P)
    small = X.shape[0] * T.shape[0] * X.shape[1] < _SERIAL_WORK
    (kernels().sqdist_direct_serial if small else kernels().sqdist_direct)(_np(X), TT, out.numpy())
    return out


def nearest_small(X: torch.Tensor, T: torch.Tensor, dmin: torch.Tensor, imin: torch.Tensor) -> None:
    """Every row's nearest row of ``T`` (P, D) by the direct formula, in one pass without the
    (N, P) matrix: the distance into ``dmin`` (N,) and the index of its first occurrence into
    ``imin`` (N,, int64), NaN first -- the values of ``sqdist_small(X, T).min(1)``, bit for bit
    (the same sums in the same order).  X and T: contiguous CPU tensors of one dtype; dmin/imin
    contiguous.  At 10^6 x 8 x 2 float32 (2-core EPYC, 2 threads) ``nearest`` took 36 ms
    through the (n, P) block and a compiled row minimum, 6.7 ms with this pass."""
    kernels().nearest_direct(_np(X), _np(T), _direct_chunk(X.shape[1]), imin.numpy(), dmin.numpy())


@functools.cache
def _own_gemm_cpu() -> bool:
    """Whether this CPU takes the C kernels' own float32 product: AVX2 and FMA, and torch's
    kernels dispatched at AVX2 (on AVX-512, torch's BLAS has twice the vector width of ours).

    Measured on the 2-core AVX2 EPYC (Zen 1), ms into a reused result, own / torch.mm, medians of
    7 interleaved calls: 4096 x 4096 x 128 68.7 / 77.7 (1 thread 134 / 150), 16384 x 1024 x 256
    134 / 157 (1 thread 253 / 282); more in docs/performance.md, "The own float32 product"."""
    return _ckernels.gemm_supported() and torch.backends.cpu.get_cpu_capability() == "AVX2"


# fewest rows / columns of a product for the own kernel (thinner ones pad its 6 x 16 tiles and
# measured slower than torch.mm: docs/performance.md, "The own float32 product")
_OWN_GEMM_MIN_ROWS = 8
_OWN_GEMM_MIN_COLS = 32


def own_gemm(dtype: torch.dtype, n: int = _OWN_GEMM_MIN_ROWS, P: int = _OWN_GEMM_MIN_COLS) -> bool:
    """Whether an (n, P) product of ``dtype`` takes the C kernels' own product (float32 only)."""
    return (
        dtype == torch.float32 and n >= _OWN_GEMM_MIN_ROWS and P >= _OWN_GEMM_MIN_COLS
        and kernels() is _ckernels and _own_gemm_cpu()
    )


def product_nt(A: torch.Tensor, B: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``A @ B.T`` (n, P) for contiguous CPU ``A`` (n, K), ``B`` (P, K) on torch's thread pool,
    into ``out`` (contiguous) when given, else a fresh tensor (the ordinary allocator): the C
    kernels' own product where :func:`own_gemm` (each entry one sequential chain of fused
    multiply-adds: the same bits on any thread count), else ``torch.mm``."""
    if own_gemm(A.dtype, A.shape[0], B.shape[0]) and A.is_contiguous() and B.is_contiguous():
        if out is None:
            out = torch.empty((A.shape[0], B.shape[0]), dtype=A.dtype)  # (n, P)
        _ckernels.sgemm_nt(A.numpy(), B.numpy(), out.numpy())
        return out
    return torch.mm(A, B.T) if out is None else torch.mm(A, B.T, out=out)
