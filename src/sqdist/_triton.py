"""Fused Triton kernels: distance matrix, nearest centre, k-means assignment + update.

Used by ``backend="triton"`` in :func:`sqdist.sqdist`, :func:`sqdist.nearest`
and k-means (``"auto"`` picks them for CUDA tensors when Triton is
installed).  CPU tensors run under Triton's interpreter when the environment
variable ``TRITON_INTERPRET=1`` is set *before* this module is first
imported (Triton decides interpreted vs compiled when a kernel is defined);
that is how the tests check these kernels on a machine without a GPU.

The module imports cleanly without Triton: the kernels are only defined when
``import triton`` succeeds, and the wrappers raise :class:`SqdistError`
otherwise.

Accuracy contract (the same as the torch product path; every bound and rule
comes from :mod:`sqdist._numerics`):

* the product runs on data centred on the mean of the finite rows of ``T``;
* in every output tile, entries below ``tau * (||x_c||^2 + ||t_c||^2)`` are
  recomputed directly as ``sum((x - t)**2)`` on the original values (so
  identical rows give exactly ``0``), the rest are clamped at ``0``;
* distance matrices (every dtype; and nearest at ``D <= 4``) are computed with
  the direct formula throughout: exact, and under sqdist's ``tau`` nearly every
  tile would need the recompute anyway (``_DIRECT_TAU``, docs/gpu.md).  The
  product path above runs only when ``tau < _DIRECT_TAU``, which sqdist's
  ``tau`` (the same for every dtype) never is: tests and benchmarks force it;
* rows of ``X`` or ``T`` with NaN/Inf get the direct formula (IEEE
  propagation, confined to their own row/column);
* half precision accumulates in float32; products are exact fp32
  (``input_precision="ieee"``) unless a fast mode is asked for.

Nearest centre / k-means replace the close-pair step by a *margin re-check*:
rows whose best and second-best values are within the error bound
(:func:`sqdist._numerics.assign_margin`) are recomputed with the direct formula, so the labels are
the argmin of directly computed distances (ties to the smallest index) in
both precisions, and the returned distance of the winner is computed
directly.  Tiny k-means problems run as one single-program launch.

Design notes, launch counts and what is verified where: ``docs/gpu.md``.
"""

from __future__ import annotations

import torch

from ._numerics import assign_margin, direct_rows, prepare_right, tau, unsafe_norms
from ._validation import SqdistError, check_choice, compute_dtype

try:  # optional dependency: the module must import without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where Triton is missing
    triton = None
    tl = None

__all__ = ["sqdist_triton", "nearest_triton", "assign_accumulate_triton", "PRECISIONS", "available"]

PRECISIONS = ("ieee", "tf32")

# D at or below which tiles are computed by the direct formula (exact; the
# kernel is bound by the output write or by the argmin, not by arithmetic).
_DIRECT_MAX_D = 4

# The distance matrix uses the direct formula at every D when the close-pair
# threshold tau is at least this.  With sqdist's tau (0.06 at D = 5, 0.27 at
# D = 128, 1 from D ~ 1750 on) every 64 x 64 tile of random data holds a "close" entry,
# so the product path would compute each tile twice (product + direct, ~3
# instructions per multiply-add of the product) where the direct formula alone
# costs ~2 and is exact.  Triton's exact-fp32 dot runs on the FMA units, not on
# tensor cores, so the product has no speed of its own to lose here.  tau does
# not depend on the dtype (_numerics.tau scales its target with eps), so
# float64 takes the direct formula too.  See docs/gpu.md.
_DIRECT_TAU = 0.05

# --------------------------------------------------------------------------
# kernels (defined only when Triton imports)
# --------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _direct_tile(Xo, To, rm, rn, mask_m, mask_n, D, BM: tl.constexpr, BN: tl.constexpr):
        """sum_k (x[i, k] - t[j, k])**2 for a (BM, BN) tile, in X's compute dtype."""
        acc = tl.zeros((BM, BN), dtype=Xo.dtype.element_ty)
        xrow = rm.to(tl.int64) * D
        trow = rn.to(tl.int64) * D
        for k in range(0, D):
            xk = tl.load(Xo + xrow + k, mask=mask_m, other=0.0)  # (BM,)
            tk = tl.load(To + trow + k, mask=mask_n, other=0.0)  # (BN,)
            diff = xk[:, None] - tk[None, :]  # (BM, BN)
            acc += diff * diff
        return acc

    @triton.jit
    def _dot_tile(Xc, Tc, rm, rn, mask_m, mask_n, D,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr):
        """x_c . t_c for a (BM, BN) tile, looping over D in BK-wide slices."""
        acc = tl.zeros((BM, BN), dtype=Xc.dtype.element_ty)
        rk = tl.arange(0, BK)
        xrow = rm.to(tl.int64) * D
        trow = rn.to(tl.int64) * D
        for k0 in range(0, D, BK):
            kk = k0 + rk  # (BK,)
            km = kk < D
            a = tl.load(Xc + xrow[:, None] + kk[None, :], mask=mask_m[:, None] & km[None, :], other=0.0)  # (BM, BK)
            b = tl.load(Tc + trow[None, :] + kk[:, None], mask=km[:, None] & mask_n[None, :], other=0.0)  # (BK, BN)
            acc = tl.dot(a, b, acc, input_precision=PREC, out_dtype=Xc.dtype.element_ty)
        return acc

    @triton.jit
    def _dist_tile(Xc, Tc, Xo, To, NX, NT, rm, rn, mask_m, mask_n, D, tau,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                   DIRECT: tl.constexpr, PREC: tl.constexpr, CLOSE: tl.constexpr):
        """Distances of a tile: product + fused epilogue (+ close-pair recompute when CLOSE)."""
        if DIRECT:
            d = _direct_tile(Xo, To, rm, rn, mask_m, mask_n, D, BM, BN)
        else:
            acc = _dot_tile(Xc, Tc, rm, rn, mask_m, mask_n, D, BM, BN, BK, PREC)  # (BM, BN)
            nx = tl.load(NX + rm, mask=mask_m, other=0.0)  # (BM,)
            nt = tl.load(NT + rn, mask=mask_n, other=0.0)  # (BN,)
            s = nx[:, None] + nt[None, :]  # (BM, BN)
            d = s - 2.0 * acc
            d = tl.where(d < 0.0, 0.0, d)  # clamp (NaN stays NaN: fixed up outside)
            if CLOSE:
                close = (d < tau * s) & mask_m[:, None] & mask_n[None, :]
                n_close = tl.sum(close.to(tl.int32))
                if n_close > 0:  # rare with centred data: the whole tile directly, keep the close entries
                    dd = _direct_tile(Xo, To, rm, rn, mask_m, mask_n, D, BM, BN)
                    d = tl.where(close, dd, d)
        return d

    @triton.jit
    def _sqdist_kernel(Xc, Tc, Xo, To, NX, NT, Out, N, P, D, so_m, so_n, tau,
                       BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                       DIRECT: tl.constexpr, PREC: tl.constexpr):
        pid = tl.program_id(0)
        n_m = tl.cdiv(N, BM)
        n_n = tl.cdiv(P, BN)
        # grouped ordering: GROUP_M row blocks share column blocks while they sit in L2
        width = GROUP_M * n_n
        group = pid // width
        first_m = group * GROUP_M
        gsize = tl.minimum(n_m - first_m, GROUP_M)
        pid_m = first_m + (pid % width) % gsize
        pid_n = (pid % width) // gsize
        rm = pid_m * BM + tl.arange(0, BM)
        rn = pid_n * BN + tl.arange(0, BN)
        mask_m = rm < N
        mask_n = rn < P
        d = _dist_tile(Xc, Tc, Xo, To, NX, NT, rm, rn, mask_m, mask_n, D, tau, BM, BN, BK, DIRECT, PREC, True)
        ptrs = Out + rm.to(tl.int64)[:, None] * so_m + rn.to(tl.int64)[None, :] * so_n
        tl.store(ptrs, d.to(Out.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])

    @triton.jit
    def _nearest_kernel(Xc, Tc, Xo, To, NT, Best, Idx, Second, N, P, D,
                        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                        DIRECT: tl.constexpr, PREC: tl.constexpr, TOP2: tl.constexpr):
        """Running min / argmin (and second min) over T; the N x P matrix is never stored.

        Each (row, lane) slot of a (BM, BN) register tile keeps the best (and
        second best) value of the columns ``lane, lane + BN, ...`` with
        element-wise compares only; the cross-lane reduction runs once, after
        the loop.  Product path (``DIRECT`` false): the value is
        ``||t_c||^2 - 2 x_c.t_c``, i.e. the distance minus the row constant
        ``||x_c||^2`` (argmin and margins are unchanged; the winner's distance
        is recomputed directly afterwards).
        """
        pid = tl.program_id(0)
        rm = pid * BM + tl.arange(0, BM)
        mask_m = rm < N
        lanes = tl.arange(0, BN)
        best = tl.full((BM, BN), float("inf"), dtype=Xo.dtype.element_ty)
        second = tl.full((BM, BN), float("inf"), dtype=Xo.dtype.element_ty)
        bidx = tl.zeros((BM, BN), dtype=tl.int32)
        for n0 in range(0, P, BN):
            rn = n0 + lanes
            mask_n = rn < P
            if DIRECT:
                d = _direct_tile(Xo, To, rm, rn, mask_m, mask_n, D, BM, BN)
            else:
                acc = _dot_tile(Xc, Tc, rm, rn, mask_m, mask_n, D, BM, BN, BK, PREC)  # (BM, BN)
                nt = tl.load(NT + rn, mask=mask_n, other=0.0)  # (BN,)
                d = nt[None, :] - 2.0 * acc
            # padding columns and NaN entries never win (non-finite T rows are merged outside)
            d = tl.where(mask_n[None, :] & (d == d), d, float("inf"))
            upd = d < best  # strict: earlier columns of a lane keep ties
            if TOP2:
                second = tl.where(upd, best, tl.minimum(second, d))
            bidx = tl.where(upd, rn[None, :], bidx)
            best = tl.where(upd, d, best)
        # cross-lane: smallest value, ties to the smallest column index
        v = tl.min(best, axis=1)  # (BM,)
        big = tl.full((BM, BN), 2147483647, dtype=tl.int32)
        win = tl.min(tl.where(best == v[:, None], bidx, big), axis=1)  # (BM,)
        win = tl.where(win == 2147483647, 0, win)  # all-inf rows (non-finite data): fixed outside
        tl.store(Best + rm, v, mask=mask_m)
        tl.store(Idx + rm, win.to(tl.int64), mask=mask_m)
        if TOP2:
            # second smallest overall: the winner's lane's second, or any other lane's best
            other = tl.where(bidx == win[:, None], second, best)  # (BM, BN)
            tl.store(Second + rm, tl.min(other, axis=1), mask=mask_m)

    @triton.jit
    def _segment_sum_kernel(X, Order, Starts, Counts, Partial, D, G,
                            BR: tl.constexpr, BD: tl.constexpr):
        """Partial[k, g, :] = fixed-order float64 sum of X rows of cluster k, slice g of G.

        Rows are visited in the stable label order ``Order``; each program owns
        a contiguous slice, accumulates a (BR, BD) float64 tile and reduces it
        with a fixed tree: no atomics, bitwise reproducible.
        """
        k = tl.program_id(0)
        g = tl.program_id(1)
        dblk = tl.program_id(2)
        cnt = tl.load(Counts + k)
        start = tl.load(Starts + k)
        per = (cnt + G - 1) // G
        lo = start + g * per
        hi = tl.minimum(start + cnt, lo + per)
        dd = dblk * BD + tl.arange(0, BD)
        dm = dd < D
        acc = tl.zeros((BR, BD), dtype=tl.float64)
        rr = tl.arange(0, BR)
        for r0 in range(lo, hi, BR):
            rows = r0 + rr
            rmask = rows < hi
            src = tl.load(Order + rows, mask=rmask, other=0)  # (BR,) int64
            x = tl.load(X + src[:, None] * D + dd[None, :], mask=rmask[:, None] & dm[None, :], other=0.0)
            acc += x.to(tl.float32).to(tl.float64)  # exact widening (half -> fp32 -> fp64)
        out = Partial + (k.to(tl.int64) * G + g) * D + dd
        tl.store(out, tl.sum(acc, axis=0), mask=dm)


    @triton.jit
    def _tiny_kernel(X, C, Labels, Mind, Sums, Counts, Inertia, N, K, D,
                     BM: tl.constexpr, KP: tl.constexpr, DP: tl.constexpr):
        """A whole k-means data pass in ONE program (tiny problems: launch-bound otherwise).

        Direct distances to all K centres, argmin (ties to the smallest
        index, NaN wins as in torch.min), exact minimum distance, per-cluster
        float64 sums and counts, and the inertia -- all in a fixed order.
        """
        kr = tl.arange(0, KP)
        km = kr < K
        dr = tl.arange(0, DP)
        dm = dr < D
        sums = tl.zeros((KP, DP), dtype=tl.float64)
        counts = tl.zeros((KP,), dtype=tl.int64)
        inertia = tl.zeros((BM,), dtype=tl.float64)
        for m0 in range(0, N, BM):
            rm = m0 + tl.arange(0, BM)
            mm = rm < N
            d = _direct_tile(X, C, rm, kr, mm, km, D, BM, KP)  # (BM, KP)
            isn = (d != d) & km[None, :]
            d = tl.where(km[None, :] & ~isn, d, float("inf"))
            v = tl.min(d, axis=1)  # (BM,)
            lab = tl.min(tl.where(d == v[:, None], kr[None, :], KP), axis=1)
            lab = tl.where(lab == KP, 0, lab)
            nan_lab = tl.min(tl.where(isn, kr[None, :], KP), axis=1)  # first NaN column, KP if none
            v = tl.where(nan_lab < KP, float("nan"), v)
            lab = tl.where(nan_lab < KP, nan_lab, lab)
            tl.store(Labels + rm, lab.to(tl.int64), mask=mm)
            tl.store(Mind + rm, v, mask=mm)
            inertia += tl.where(mm, v.to(tl.float64), 0.0)
            x = tl.load(X + rm.to(tl.int64)[:, None] * D + dr[None, :], mask=mm[:, None] & dm[None, :], other=0.0)
            x = x.to(tl.float64)  # (BM, DP)
            for k in range(0, K):
                sel = (lab == k) & mm  # (BM,)
                s_k = tl.sum(tl.where(sel[:, None], x, 0.0), axis=0)  # (DP,)
                c_k = tl.sum(sel.to(tl.int64), axis=0)
                sums = tl.where(kr[:, None] == k, sums + s_k[None, :], sums)
                counts = tl.where(kr == k, counts + c_k, counts)
        tl.store(Sums + kr[:, None] * D + dr[None, :], sums, mask=km[:, None] & dm[None, :])
        tl.store(Counts + kr, counts, mask=km)
        tl.store(Inertia, tl.sum(inertia, axis=0))


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def available() -> bool:
    """Whether Triton imported (the kernels exist)."""
    return triton is not None


def _interpreted() -> bool:
    return type(_sqdist_kernel).__name__ == "InterpretedFunction"


def _check_runnable(device: torch.device) -> None:
    if triton is None:
        raise SqdistError("backend: 'triton' needs Triton installed (pip install 'sqdist[gpu]')")
    if device.type == "cpu" and not _interpreted():
        raise SqdistError(
            "backend: 'triton' with CPU tensors needs TRITON_INTERPRET=1 set before sqdist._triton "
            "is first imported (the kernels here were compiled for a GPU)"
        )
    if device.type not in ("cpu", "cuda"):
        raise SqdistError(f"backend: 'triton' runs on CUDA (or CPU under TRITON_INTERPRET=1), got {device}")


def _tiles(D: int, device: torch.device, kind: str = "matrix") -> dict[str, int]:
    """Block sizes (first guesses, not tuned on a GPU yet).  Small tiles in the interpreter.

    ``kind="nearest"`` keeps three (BM, BN) register tiles alive across the
    loop (best, second, index), so it uses narrower tiles than the matrix.
    """
    if device.type == "cpu":
        return dict(BM=32, BN=32, BK=32, num_warps=1)
    if kind == "nearest":
        return dict(BM=64, BN=64, BK=16 if D <= 16 else 32, num_warps=4)
    if kind == "direct":
        return dict(BM=64, BN=128, BK=16, num_warps=8)
    return dict(BM=64, BN=64, BK=16 if D <= 16 else 32, num_warps=4)


class _Prep:
    """Original and centred operands in the compute dtype, norms, threshold.

    The right operand is :func:`sqdist._numerics.prepare_right`'s (centre,
    norms, unsafe columns); the rows of X are centred on the same ``c``.
    """

    def __init__(self, X: torch.Tensor, T: torch.Tensor, cdtype: torch.dtype, *, matrix: bool = False):
        self.D = X.shape[1]
        self.Xo = X.detach().to(cdtype).contiguous()  # (N, D)
        self.To = T.detach().to(cdtype).contiguous()  # (P, D)
        self.tau = tau(cdtype, self.D)
        self.direct = self.D <= _DIRECT_MAX_D or (matrix and self.tau >= _DIRECT_TAU)
        if self.direct:
            # the direct formula is exact and handles NaN/Inf itself: no centring needed
            self.Xc, self.Tc, self.nx, self.nt = self.Xo, self.To, self.Xo, self.To
            self._bad_cols = self.To.new_zeros(0, dtype=torch.int64)
            return
        right = prepare_right(self.To, cdtype)
        self.Xc = (self.Xo - right.c).contiguous()  # (N, D)
        self.Tc = right.Tc.contiguous()  # (P, D)
        self.nx = (self.Xc * self.Xc).sum(1)  # (N,)
        self.nt = right.nt  # (P,)
        self._bad_cols = right.bad_cols

    def bad_rows(self) -> torch.Tensor:
        """Rows of X whose norm is unsafe for the expansion (NaN/Inf, or overflow): direct formula."""
        if self.direct:
            return self.Xo.new_zeros(0, dtype=torch.int64)
        return unsafe_norms(self.nx).nonzero().flatten()

    def bad_cols(self) -> torch.Tensor:
        return self._bad_cols


# --------------------------------------------------------------------------
# distance matrix
# --------------------------------------------------------------------------


def sqdist_triton(X: torch.Tensor, T: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Fill ``out`` (N, P) with ``||X[i] - T[j]||**2`` using one fused kernel; returns ``out``.

    Trusts its inputs (2-D, same device, ``out`` of the promoted dtype).
    No autograd: ``sqdist`` sends calls that need gradients to the torch gemm
    path (same contract, with the caller's working-memory budget).
    """
    N, D = X.shape
    P = T.shape[0]
    if N == 0 or P == 0:
        return out
    _check_runnable(X.device)
    cdtype = compute_dtype(out.dtype)
    if D == 0:
        return out.zero_()
    p = _Prep(X, T, cdtype, matrix=True)
    cfg = _tiles(D, X.device, "direct" if p.direct else "matrix")
    grid = (triton.cdiv(N, cfg["BM"]) * triton.cdiv(P, cfg["BN"]),)
    _sqdist_kernel[grid](
        p.Xc, p.Tc, p.Xo, p.To, p.nx, p.nt, out, N, P, D, out.stride(0), out.stride(1), p.tau,
        BM=cfg["BM"], BN=cfg["BN"], BK=cfg["BK"], GROUP_M=8, DIRECT=p.direct, PREC="ieee",
        num_warps=cfg["num_warps"],
    )
    bad_r = p.bad_rows()
    if bad_r.numel():
        out.index_copy_(0, bad_r, direct_rows(p.Xo[bad_r], p.To).to(out.dtype))
    bad_c = p.bad_cols()
    if bad_c.numel():
        out.index_copy_(1, bad_c, direct_rows(p.Xo, p.To[bad_c]).to(out.dtype))
    return out


# --------------------------------------------------------------------------
# nearest centre
# --------------------------------------------------------------------------

def _nearest_core(
    p: _Prep, precision: str, gamma: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Kernel run + margin re-check + exact winner distance; returns (dist (N,), idx (N,), n_rechecked).

    For ``D > 4`` the kernel keeps the best and second-best product-path
    values of every row.  A row whose margin ``second - best`` is within
    ``2 gamma (||x_c||^2 + max ||t_c||^2)`` (``gamma`` from
    :func:`sqdist._numerics.assign_margin`) might have its winner decided by rounding:
    it is recomputed with the direct formula against all of T.  The labels
    are therefore the argmin of the direct-formula distances (ties to the
    smallest index) whatever ``precision`` the products used.  Non-finite
    rows/columns are handled by :func:`_nearest_fix_nonfinite`.
    """
    N, D = p.Xo.shape
    P = p.To.shape[0]
    dev = p.Xo.device
    cfg = _tiles(D, dev, "nearest")
    top2 = not p.direct
    if p.Xo.dtype != torch.float32:
        precision = "ieee"  # TF32 applies to float32 products only
    best = torch.empty(N, dtype=p.Xo.dtype, device=dev)  # (N,)
    idx = torch.empty(N, dtype=torch.int64, device=dev)  # (N,)
    second = torch.empty(N, dtype=p.Xo.dtype, device=dev) if top2 else best  # (N,)
    grid = (triton.cdiv(N, cfg["BM"]),)
    _nearest_kernel[grid](
        p.Xc, p.Tc, p.Xo, p.To, p.nt, best, idx, second, N, P, D,
        BM=cfg["BM"], BN=cfg["BN"], BK=cfg["BK"], DIRECT=p.direct,
        PREC=precision, TOP2=top2, num_warps=cfg["num_warps"],
    )
    n_re = 0
    if top2:
        g = assign_margin(p.Xo.dtype, D, precision) if gamma is None else gamma
        nt_max = torch.nan_to_num(p.nt, nan=0.0, posinf=0.0).max()
        bound = 2.0 * g * (p.nx + nt_max)  # (N,)
        redo = (second - best <= bound).nonzero().flatten()  # (r,)
        n_re = int(redo.numel())
        if n_re:
            sub = _Prep.__new__(_Prep)
            sub.D, sub.direct, sub.tau = p.D, True, p.tau
            sub.Xo = sub.Xc = sub.nx = p.Xo[redo].contiguous()
            sub.To = sub.Tc = sub.nt = p.To
            _, idx_re, _ = _nearest_core(sub, "ieee")
            idx.index_copy_(0, redo, idx_re)
    # exact distance of the winner, by the direct formula on the original values
    dist = ((p.Xo - p.To[idx]) ** 2).sum(1)  # (N,)
    return dist, idx, n_re


def _nearest_fix_nonfinite(p: _Prep, dist: torch.Tensor, idx: torch.Tensor) -> None:
    """Give rows/columns with NaN/Inf the torch path's semantics (in place).

    In direct mode the kernel reads a NaN distance as ``inf`` (so the running
    minimum stays ordered); the torch path lets a NaN win, so rows and columns
    with non-finite values are redone here in both modes.
    """
    if p.direct:
        bad_c = (~torch.isfinite(p.To).all(1)).nonzero().flatten()  # (b,)
        bad_r = (~torch.isfinite(p.Xo).all(1)).nonzero().flatten()  # (r,)
    else:
        bad_c, bad_r = p.bad_cols(), p.bad_rows()
    if bad_c.numel():
        bd = direct_rows(p.Xo, p.To[bad_c])  # (N, b)
        cand_d = torch.cat([dist[:, None], bd], 1)  # (N, 1+b)
        cand_i = torch.cat([idx[:, None], bad_c[None, :].expand(len(idx), -1)], 1)  # (N, 1+b)
        order = cand_i.argsort(dim=1, stable=True)  # column order, so min() keeps the first index
        cand_d, cand_i = cand_d.gather(1, order), cand_i.gather(1, order)
        v, j = cand_d.min(dim=1)  # (N,)
        dist.copy_(v)
        idx.copy_(cand_i.gather(1, j[:, None])[:, 0])
    if bad_r.numel():
        d = direct_rows(p.Xo[bad_r], p.To)  # (r, P)
        v, j = d.min(dim=1)
        dist.index_copy_(0, bad_r, v)
        idx.index_copy_(0, bad_r, j)


def nearest_triton(X: torch.Tensor, T: torch.Tensor, *, precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest row of ``T`` for every row of ``X`` with a fused distance + argmin kernel.

    Parameters
    ----------
    X : Tensor of shape (N, D)
    T : Tensor of shape (P, D), P >= 1
    precision : {"ieee", "tf32"}
        ``"ieee"`` -- exact fp32 products.  ``"tf32"`` -- TF32 tensor-core
        products for ``D > 4`` (faster at large D).  In both modes, rows
        whose two best candidates are closer than the mode's error bound
        (:func:`sqdist._numerics.assign_margin`) are recomputed with the direct formula, so the
        labels are the same in both modes: the argmin of the directly
        computed distances.

    Returns
    -------
    dist : Tensor of shape (N, 1), the inputs' promoted dtype
        Exact squared distance to the winner (direct formula).
    idx : int64 Tensor of shape (N, 1)
        Winner index; ties go to the smallest index.
    """
    check_choice(precision, "precision", PRECISIONS)
    dtype = torch.promote_types(X.dtype, T.dtype)
    N = X.shape[0]
    if N == 0:
        return (torch.empty((0, 1), dtype=dtype, device=X.device),
                torch.empty((0, 1), dtype=torch.int64, device=X.device))
    _check_runnable(X.device)
    p = _Prep(X, T, compute_dtype(dtype))
    dist, idx, _ = _nearest_core(p, precision)
    _nearest_fix_nonfinite(p, dist, idx)
    return dist.to(dtype)[:, None], idx[:, None]


# --------------------------------------------------------------------------
# k-means: assignment + deterministic update
# --------------------------------------------------------------------------


def _segment_sums(X: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor, K: int) -> torch.Tensor:
    """float64 (K, D) per-cluster sums of the rows of X, in a fixed order (deterministic)."""
    N, D = X.shape
    dev = X.device
    # stable sort by label; int32 keys halve the radix passes (K < 2**31)
    order = torch.argsort(labels.to(torch.int32), stable=True)  # (N,)
    starts = torch.cumsum(counts, 0) - counts  # (K,)
    interp = dev.type == "cpu"
    BR = 16 if interp else 128
    BD = max(2, min(triton.next_power_of_2(D), 256 if interp else 64))
    # G slices per cluster keep all programs busy when K is small (shape-only choice -> reproducible)
    G = max(1, min(256, N // max(1, K * BR * 4)))
    partial = torch.empty((K, G, D), dtype=torch.float64, device=dev)  # (K, G, D)
    grid = (K, G, triton.cdiv(D, BD))
    _segment_sum_kernel[grid](X, order, starts, counts, partial, D, G, BR=BR, BD=BD,
                              num_warps=1 if interp else 4)
    return partial.sum(1)  # (K, D), fixed-order reduction


# Tiny problems (one program does the whole pass): work N*K*max(D,4) at most this, K, D at most 64.
_TINY_WORK = 2**18
_TINY_MAX_KD = 64


def _is_tiny(n: int, K: int, D: int) -> bool:
    return K <= _TINY_MAX_KD and D <= _TINY_MAX_KD and n * K * max(D, 4) <= _TINY_WORK


def _assign_tiny(X, C, cdtype, dtype):
    n, D = X.shape
    K = C.shape[0]
    dev = X.device
    Xo = X.detach().to(cdtype).contiguous()  # (n, D)
    Co = C.detach().to(cdtype).contiguous()  # (K, D)
    labels = torch.empty(n, dtype=torch.int64, device=dev)
    mind = torch.empty(n, dtype=cdtype, device=dev)
    sums = torch.empty((K, D), dtype=torch.float64, device=dev)
    counts = torch.empty(K, dtype=torch.int64, device=dev)
    inertia = torch.empty((), dtype=torch.float64, device=dev)
    BM = 32 if dev.type == "cpu" else 128
    _tiny_kernel[(1,)](Xo, Co, labels, mind, sums, counts, inertia, n, K, D, BM=BM,
                       KP=max(2, triton.next_power_of_2(K)), DP=max(2, triton.next_power_of_2(D)),
                       num_warps=1 if dev.type == "cpu" else 4)
    return labels, mind.to(dtype), sums, counts, inertia


def assign_accumulate_triton(
    X: torch.Tensor, C: torch.Tensor, *, precision: str = "ieee", _tiny: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One k-means step's data pass: nearest centre for every point plus per-cluster sums.

    Parameters
    ----------
    X : Tensor of shape (n, D)
        Points (finite; k-means validates that).
    C : Tensor of shape (K, D)
        Current centres.
    precision : {"ieee", "tf32"}
        As in :func:`nearest_triton`; the labels are the same in both modes.

    Returns
    -------
    labels : int64 Tensor of shape (n,)
        Nearest centre, ties to the smallest index.
    mind : Tensor of shape (n,)
        Exact squared distance to that centre (promoted dtype of X and C).
    sums : float64 Tensor of shape (K, D)
        Sum of the points of each cluster (original values), reduced in a
        fixed order: bitwise the same from run to run.
    counts : int64 Tensor of shape (K,)
    inertia : float64 0-d Tensor
        ``mind.sum()`` in float64 (stays on the device: no host sync).

    Notes
    -----
    Tiny problems (``n * K * max(D, 4) <= 2**18``, ``K, D <= 64``) run as a
    single one-program kernel launch (direct distances, exact); otherwise
    the nearest-centre kernel and a segment-sum kernel run.  ``_tiny``
    forces either path (tests).
    """
    check_choice(precision, "precision", PRECISIONS)
    dtype = torch.promote_types(X.dtype, C.dtype)
    n, D = X.shape
    K = C.shape[0]
    dev = X.device
    if n == 0:
        return (torch.empty(0, dtype=torch.int64, device=dev), torch.empty(0, dtype=dtype, device=dev),
                torch.zeros((K, D), dtype=torch.float64, device=dev), torch.zeros(K, dtype=torch.int64, device=dev),
                torch.zeros((), dtype=torch.float64, device=dev))
    _check_runnable(dev)
    cdtype = compute_dtype(dtype)
    if _tiny is None:
        _tiny = _is_tiny(n, K, D)
    if _tiny:
        return _assign_tiny(X, C, cdtype, dtype)
    p = _Prep(X, C, cdtype)
    mind, labels, _ = _nearest_core(p, precision)
    _nearest_fix_nonfinite(p, mind, labels)
    # integer scatter-add: deterministic, and no host sync (torch.bincount syncs on CUDA)
    counts = torch.zeros(K, dtype=torch.int64, device=dev).scatter_add_(0, labels, torch.ones_like(labels))  # (K,)
    sums = _segment_sums(X.detach().contiguous(), labels, counts, K)  # (K, D)
    inertia = mind.to(torch.float64).sum()
    return labels, mind.to(dtype), sums, counts, inertia
