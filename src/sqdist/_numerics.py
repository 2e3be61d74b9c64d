"""The accuracy contract, in one place: centring, the recompute threshold tau, the
assignment margin, the direct formula, the unsafe-norm rule and ordered accumulation.

The fast way to compute ``||x - t||**2`` is the expansion

    ||x - t||**2 = ||x||**2 + ||t||**2 - 2 x.t

which turns the work into one matrix product.  In floating point it suffers
*catastrophic cancellation*: the three terms are of size ``||x||**2`` while
their sum can be far smaller.  The rounding error of the product is about
``sqrt(D) * eps * (||x||**2 + ||t||**2)``, so for points near 1000 with
spread 1 (``||x||**2 ~ 1e6``) float32 (``eps ~ 1.2e-7``) loses every digit
of a distance of order 1 -- ``torch.cdist`` and FAISS are wrong by percents
there.  Every product path of sqdist (torch, the compiled CPU kernels, Triton)
defends with the rules below, and takes them from here:

1. **Centring** (:func:`centre`, :func:`prepare_right`).  Distances do not
   change when the same vector ``c`` is subtracted from every point; sqdist
   subtracts the mean of the finite rows of ``T``, so the norms above are those
   of the *spread* of the data, not of its offset from the origin.
2. **Recomputing the close pairs** (:func:`tau`).  An entry of a distance
   matrix below ``tau * (||x_c||**2 + ||t_c||**2)`` -- where the product's
   error bound could exceed the accuracy target -- is recomputed by the direct
   formula ``sum((x - t)**2)`` (:func:`direct_rows`) on the original data, so
   identical rows give exactly ``0.0``.  The rest is clamped at zero.
3. **The assignment margin** (:func:`assign_margin`).  A nearest-centre search
   on the product values ``e_k = ||t_c||**2 - 2 x_c.t_c`` keeps a row's argmin
   only when the second best value is more than ``2 gamma (||x_c||**2 +
   max_k ||t_k,c||**2)`` above the best; otherwise the direct formula decides.
   Labels are therefore those of the direct formula (ties: smallest index).
4. **Unsafe norms** (:func:`unsafe_norms`).  Rows with NaN/Inf, or so large
   that the expansion overflows, take the direct formula (IEEE propagation,
   confined to their own row or column).
5. **Ordered accumulation** (:func:`segment_add`).  Per-cluster sums are added
   in row order in float64, so results do not depend on the thread count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "RightOperand",
    "block_moments",
    "merge_moments",
    "assign_margin",
    "centre",
    "direct_rows",
    "prepare_right",
    "ordered_sum",
    "segment_add",
    "tau",
    "unsafe_norms",
]

# Relative accuracy the product path aims at before it recomputes a pair directly: 1e-5 for
# float32 (10x below the 1e-4 contract), the same number of units of roundoff (~84 eps)
# for other dtypes -- a fixed 1e-5 let float64 results be off by 5e-7 relative.
_REL_TARGET = 1e-5
_REL_TARGET_EPS = _REL_TARGET / torch.finfo(torch.float32).eps

# Safety factor on the error bound of the assignment margin (see assign_margin).
_SAFETY = 2.0


def tau(dtype: torch.dtype, d: int) -> float:
    """Threshold factor below which a product entry is recomputed directly.

    The expansion's error is about ``c * sqrt(d) * eps * (||x||^2 + ||t||^2)``;
    an entry smaller than ``tau * (||x||^2 + ||t||^2)`` could therefore be off
    by more than the relative target and is recomputed.  Measured on
    adversarial data (close pairs far from the centre, float32, d = 1..1000,
    tests/test_distances.py::test_error_constant_of_the_expansion) the
    constant ``c`` stays below 1.8; ``c = 2`` keeps a margin, and the target
    is itself 10x below the 1e-4 contract.  (A factor of 8 made ``tau`` reach
    1 from d ~ 100 on, so that half of all pairs of random data were
    recomputed.)  ``tau`` does not depend on the dtype: the target scales with
    ``eps``.  It grows from 0.04 at d = 1 to 1 from d ~ 1750 on.

    Examples
    --------
    >>> import torch
    >>> from sqdist._numerics import tau
    >>> round(tau(torch.float32, 2), 4), round(tau(torch.float32, 128), 4), tau(torch.float32, 2000)
    (0.0477, 0.2718, 1.0)
    """
    eps = torch.finfo(dtype).eps
    target = _REL_TARGET_EPS * eps  # 1e-5 for float32, ~1.9e-14 for float64
    return min(1.0, 2.0 * math.sqrt(d + 2) * eps / target)


def assign_margin(dtype: torch.dtype, d: int, precision: str = "ieee") -> float:
    """Relative bound ``gamma`` of the nearest-centre margin re-check.

    A row is *ambiguous* -- its winner is decided by the direct formula -- when
    its second best product value lies within ``2 gamma (||x_c||^2 + max_k
    ||t_k,c||^2)`` of its best one.  Derivation: a product-path distance
    ``d~_j = ||x_c||^2 + ||t_c||^2 - 2 x_c.t_c`` is within ``e_j = (2u + (d +
    3) eps) (||x_c||^2 + ||t_c||^2)`` of the truth, where ``eps`` is the unit
    roundoff of ``dtype`` (accumulation over d terms, the norms, the final
    sums) and ``u`` that of the product's operands (0 for exact products,
    ``2**-11`` for TF32, which keeps 10 explicit mantissa bits);
    ``2 |x_c . t_c| <= ||x_c||^2 + ||t_c||^2`` is used.  The direct formula the
    answer must agree with is within ``(d + 1) eps * d_j <= 2 (d + 1) eps
    (||x_c||^2 + ||t_c||^2)``.  Adding both for the winner and any rival gives
    ``2u + (3d + 5) eps`` per unit of ``2 ||x_c||^2 + ||t_b||^2 + max_j
    ||t_j||^2 <= 2 (||x_c||^2 + max_j ||t_j||^2)``; a safety factor 2 also
    covers a TF32 conversion that truncates instead of rounding (u = 2**-10).

    Examples
    --------
    >>> import torch
    >>> from sqdist._numerics import assign_margin
    >>> assign_margin(torch.float32, 4) == 2 * 17 * 2.0**-24
    True
    """
    eps = torch.finfo(dtype).eps / 2  # unit roundoff
    u = {"ieee": 0.0, "tf32": 2.0**-11}[precision]
    return _SAFETY * (2 * u + (3 * d + 5) * eps)


def centre(T: torch.Tensor) -> torch.Tensor:
    """Mean of the finite rows of ``T`` (P, D): shape (D,); zeros if there are none."""
    finite = torch.isfinite(T).all(dim=1)  # (P,)
    if bool(finite.all()):
        return T.mean(dim=0) if T.shape[0] else T.new_zeros(T.shape[1])
    n = int(finite.sum())
    return T[finite].mean(dim=0) if n else T.new_zeros(T.shape[1])


def direct_rows(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Direct ``sum((x - t)**2)`` for a few rows of X (n, D) against all of T (P, D): (n, P)."""
    return ((X[:, None, :] - T[None, :, :]) ** 2).sum(-1)


def unsafe_norms(n: torch.Tensor) -> torch.Tensor:
    """Rows whose centred squared norm ``n`` (in the compute dtype) makes the
    expansion unusable: NaN/Inf in the row, or so large that
    ``|x_c|^2 + |t_c|^2 - 2 x_c.t_c`` can overflow to ``inf - inf = NaN`` (4 n
    not finite).  Those rows take the direct formula."""
    return ~torch.isfinite(n * 4)


@dataclass(frozen=True)
class RightOperand:
    """The right operand ``T`` of a product path, prepared once and reused for every row block.

    ``T`` (P, D) original values in the compute dtype; ``c`` (D,) the centre
    (mean of the finite rows); ``Ta`` (P, D+2) the augmented right factor
    ``[-2 (T - c), 1, ||T - c||^2]`` so that ``[x_c, ||x_c||^2, 1] @ Ta.T`` is
    ``||x_c||^2 + ||t_c||^2 - 2 x_c.t_c``; ``nt`` (P,) the centred squared
    norms; ``tau`` the recompute threshold (:func:`tau`); ``bad_cols`` the rows
    of ``T`` with unsafe norms (:func:`unsafe_norms`), which take the direct
    formula.  Built by :func:`prepare_right` (torch) or
    ``sqdist._cpu_product.prepare_right`` (one compiled pass, same values).
    """

    T: torch.Tensor
    c: torch.Tensor
    Ta: torch.Tensor
    nt: torch.Tensor
    tau: float
    bad_cols: torch.Tensor

    @property
    def Tc(self) -> torch.Tensor:
        """The centred rows ``T - c`` (P, D), exactly (``-0.5 * -2 v`` is ``v``)."""
        return self.Ta[:, : self.T.shape[1]] * -0.5


def prepare_right(T: torch.Tensor, cdtype: torch.dtype) -> RightOperand:
    """:class:`RightOperand` of ``T`` (P, D) with torch operations (autograd flows through ``Ta``)."""
    T = T.to(cdtype)  # (P, D)
    c = centre(T)  # (D,)
    Tc = T - c  # (P, D)
    nt = (Tc * Tc).sum(1)  # (P,)
    Ta = torch.cat([-2.0 * Tc, torch.ones_like(nt)[:, None], nt[:, None]], dim=1)  # (P, D+2)
    return RightOperand(T, c, Ta, nt, tau(cdtype, T.shape[1]), unsafe_norms(nt.detach()).nonzero().flatten())


def segment_add(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``out[index[i]] += src[i]`` in row order.

    On the CPU ``index_add_`` along dim 0 adds the rows sequentially, so the
    result is independent of the thread count.  On CUDA ``index_put_`` with
    ``accumulate=True`` uses the sort-based kernel.
    """
    if out.device.type == "cpu":
        return out.index_add_(0, index, src)
    return out.index_put_((index,), src, accumulate=True)


def ordered_sum(v: torch.Tensor) -> torch.Tensor:
    """Sum of a 1-D float64 tensor, added in row order (thread-count independent): a 0-d tensor."""
    zero = torch.zeros(v.shape[0], dtype=torch.int64, device=v.device)  # every row into bucket 0
    return segment_add(torch.zeros(1, dtype=torch.float64, device=v.device), zero, v)[0]


def block_moments(x: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``(rows, mean (D,), sum of squared deviations (D,))`` of a row block, in float64: one term of
    :func:`merge_moments`."""
    p = x.to(torch.float64)  # (n, D)
    m = p.mean(0)  # (D,)
    return p.shape[0], m, ((p - m) ** 2).sum(0)


def merge_moments(parts: list[tuple[int, torch.Tensor, torch.Tensor]]) -> float:
    """Mean over the features of their population variance, from per-block moments.

    ``parts``: ``(n, mean (D,), M2 (D,))`` of consecutive row blocks (float64;
    ``M2`` the sum of squared deviations from the block's mean), merged in the
    given order with Chan et al.'s pairwise update -- no ``E[x^2] - E[x]^2``
    cancellation, so data far from the origin keeps its digits.
    """
    n, mean, m2 = 0, None, None
    for nb, mb, m2b in parts:
        if nb == 0:
            continue
        if mean is None:
            n, mean, m2 = nb, mb, m2b
            continue
        delta = mb - mean  # (D,)
        tot = n + nb
        mean = mean + delta * (nb / tot)
        m2 = m2 + m2b + delta * delta * (n * nb / tot)
        n = tot
    return 0.0 if mean is None else float((m2 / n).mean())
