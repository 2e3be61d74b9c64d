"""Process-group communication for k-means on several ranks (``torch.distributed``: gloo on CPU, NCCL on GPU).

When a default process group is initialised (for example by ``torchrun``),
:func:`sqdist.kmeans_stream` (and :func:`sqdist.kmeans`) runs one Lloyd loop
per rank:

* every rank holds a *shard*: a contiguous range of whole global chunks of
  rows (``chunk_rows`` rows each, fixed by the data, never by the number of
  ranks);
* initialisation is done identically on every rank from the same seeded
  sample of global row indices, so it does not depend on the rank count;
* assignment is local;
* per iteration, one ``all_reduce`` (SUM) of an ``int64`` vector of
  ``K * (D + 1)`` entries carries the per-cluster sums (exact fixed point,
  see :mod:`sqdist._shard`) and counts, and one ``all_gather`` of the
  per-chunk inertias (one ``float64`` per chunk) gives the inertia summed in
  global chunk order.  Both are independent of the rank count, so centres,
  labels and inertia are bit-identical to a single-process run.

Faults: every collective runs under the process group's timeout; a rank that
dies or stops answering makes the others raise :class:`sqdist.SqdistError`
("lost contact with the other ranks ...") instead of hanging.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from ._validation import SqdistError

__all__ = ["Comm", "destroy", "init_from_env", "is_distributed", "launched_by_torchrun"]


def is_distributed() -> bool:
    """True when a ``torch.distributed`` default process group with more than one rank is initialised.

    Examples
    --------
    >>> import sqdist
    >>> sqdist.is_distributed()
    False
    """
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


class Comm:
    """The collectives the Lloyd loop needs; a no-op stand-in for one process.

    Every call wraps a failure of the backend (peer died, timeout) in a
    :class:`SqdistError` naming the rank, the step and the timeout.
    """

    def __init__(self) -> None:
        self.active = is_distributed()
        if not self.active:
            self.rank, self.world = 0, 1
            self.device = torch.device("cpu")
            self.backend = None
            return
        self.dist = dist
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.backend = str(dist.get_backend())
        if self.backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")

    def _fail(self, what: str, exc: BaseException) -> SqdistError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return SqdistError(
            f"rank {self.rank} of {self.world}: lost contact with the other ranks during {what} "
            f"(a rank died, or did not answer within the process group timeout): {first}"
        )

    def _all_reduce(self, t: torch.Tensor, op: str, what: str) -> torch.Tensor:
        """``t`` reduced over the ranks with ``ReduceOp.<op>``; failures become a SqdistError naming the rank."""
        if not self.active:
            return t
        buf = t.to(self.device)
        try:
            self.dist.all_reduce(buf, op=getattr(self.dist.ReduceOp, op))
        except (RuntimeError, ValueError) as exc:  # gloo/NCCL raise RuntimeError (DistBackendError)
            raise self._fail(what, exc) from None
        return buf.to(t.device)

    def all_reduce_sum(self, t: torch.Tensor, what: str) -> torch.Tensor:
        return self._all_reduce(t, "SUM", what)

    def all_reduce_max(self, t: torch.Tensor, what: str) -> torch.Tensor:
        return self._all_reduce(t, "MAX", what)

    def all_reduce_min(self, t: torch.Tensor, what: str) -> torch.Tensor:
        return self._all_reduce(t, "MIN", what)

    def all_gather_rows(self, t: torch.Tensor, what: str) -> list[torch.Tensor]:
        """Gather a (n_r, ...) tensor from every rank (n_r may differ); list in rank order."""
        if not self.active:
            return [t]
        n = torch.tensor([t.shape[0]], dtype=torch.int64)
        sizes = self.all_gather_fixed(n, what).flatten().tolist()
        m = max(sizes)
        pad = t.new_zeros((m,) + tuple(t.shape[1:]))
        pad[: t.shape[0]] = t
        parts = self.all_gather_fixed(pad, what)
        return [p[:s] for p, s in zip(parts.unbind(0), sizes)]

    def all_gather_fixed(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """Gather a same-shape tensor from every rank: (world, *t.shape)."""
        if not self.active:
            return t[None]
        buf = t.to(self.device).contiguous()
        out = [torch.empty_like(buf) for _ in range(self.world)]
        try:
            self.dist.all_gather(out, buf)
        except (RuntimeError, ValueError) as exc:
            raise self._fail(what, exc) from None
        return torch.stack(out).to(t.device)

    def barrier(self, what: str) -> None:
        if not self.active:
            return
        try:
            # all_reduce of one element instead of barrier(): works on every backend, honours the timeout
            self.dist.all_reduce(torch.zeros(1, device=self.device))
        except (RuntimeError, ValueError) as exc:
            raise self._fail(what, exc) from None

    def agree_error(self, message: str | None, what: str) -> None:
        """Raise on every rank if any rank has an error message (lowest rank's message wins)."""
        if not self.active:
            if message is not None:
                raise SqdistError(message)
            return
        flag = torch.tensor([self.rank if message is not None else self.world], dtype=torch.int64)
        first = int(self.all_reduce_min(flag, what).item())
        if first < self.world:
            if message is not None:
                raise SqdistError(message)
            raise SqdistError(f"rank {first} of {self.world} stopped with an error during {what}; see its message")


# --------------------------------------------------------------------------
# process group set-up for the CLI (torchrun sets the environment)
# --------------------------------------------------------------------------


def launched_by_torchrun() -> bool:
    """True when the environment of ``torchrun`` (RANK, WORLD_SIZE, MASTER_ADDR) is present."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_from_env(timeout_s: float, device: str | None) -> bool:
    """Initialise the default process group from torchrun's environment.

    Returns True when this call created the group (the caller destroys it).
    gloo for CPU runs, NCCL when ``device`` is CUDA.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1 or dist.is_initialized():
        return False
    cuda = device is not None and str(device).startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SqdistError(
            f"rank {os.environ['RANK']}: could not join the process group at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {timeout_s:g} s: {first}"
        ) from None
    return True


def destroy() -> None:
    """Destroy the default process group (nothing when there is none, or a peer is already gone)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except (RuntimeError, ValueError):  # peer already gone: nothing left to tear down cleanly
            pass
