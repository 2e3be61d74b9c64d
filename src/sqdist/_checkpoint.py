"""Atomic, pickle-free checkpoints of a streaming / distributed k-means fit.

A checkpoint is a ``.npz`` file of plain numeric arrays (loaded with
``allow_pickle=False``, so loading never executes code).  It holds the
centres after the last completed iteration, the iteration number, whether the
fit had converged, the per-iteration history, the state of the random
generator after initialisation and a fingerprint of the data and settings
(number of rows, features, clusters, dtype, tolerance, chunk rows, and a
digest of the data's content computed during the validation pass), so that
a checkpoint is never resumed on other data or with other settings.

Loading checks every field's dtype, shape and range against the fingerprint
of the resumed run (:class:`sqdist._files.Schema`), so a crafted or
corrupted file ends in a :class:`~sqdist.SqdistError`, never in a shape
error deep in the engine.

It is written to a temporary name in the destination folder, flushed to disk
and then renamed over the destination (``os.replace``), so a crash while
writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from ._atomic import atomic_write
from ._files import Schema, read_npz
from ._results import Iteration
from ._validation import SqdistError

FORMAT = 2  # 2: the fingerprint as JSON (any fields, e.g. the content digest); 1 (still read): six fp_* arrays

# fingerprint fields every checkpoint holds, compared first (in this order); the engine may add more
# (``content``: the data's digest from sqdist._shard.scan), each compared when this run has it
_FINGERPRINT = ("n_rows", "n_features", "n_clusters", "dtype", "tol", "chunk_rows")
_KIND = "a sqdist k-means checkpoint"


def _as_str_array(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("utf-8"), dtype=np.uint8)


def _plain(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint as stored: JSON values (others as their text), None fields left out."""
    return json.loads(json.dumps({k: v for k, v in fingerprint.items() if v is not None}, default=str))


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def save(
    path: str | os.PathLike,
    *,
    centers: torch.Tensor,
    init_centers: torch.Tensor,
    iteration: int,
    converged: bool,
    history: list[Iteration],
    rng_state: torch.Tensor | None,
    fingerprint: dict[str, Any],
) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename)."""
    path = os.fspath(path)
    relocated = [np.asarray(h["relocated"], dtype=np.int64) for h in history]
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT, dtype=np.int64),
        "centers": _np(centers),
        "init_centers": _np(init_centers),
        "iteration": np.array(iteration, dtype=np.int64),
        "converged": np.array(bool(converged)),
        "hist_iteration": np.array([h["iteration"] for h in history], dtype=np.int64),
        "hist_centers": np.stack([_np(h["centers"]) for h in history]),
        "hist_inertia": np.array([h["inertia"] for h in history], dtype=np.float64),
        "hist_max_shift": np.array([h["max_shift"] for h in history], dtype=np.float64),
        "hist_time": np.array([h["time"] for h in history], dtype=np.float64),
        "hist_sizes": np.stack([_np(h["sizes"]).astype(np.int64) for h in history]),
        "hist_relocated": np.concatenate(relocated) if relocated else np.zeros(0, np.int64),
        "hist_relocated_n": np.array([len(r) for r in relocated], dtype=np.int64),
        "rng_state": (rng_state.numpy() if rng_state is not None else np.zeros(0, np.uint8)),
    }
    arrays["fp_json"] = _as_str_array(json.dumps(_plain(fingerprint)))
    atomic_write(path, lambda f: np.savez(f, **arrays), fsync=True)


def _brief(v: Any) -> str:
    """A fingerprint value for an error message (never the repr of a deep structure)."""
    return repr(v)[:80] if v is None or isinstance(v, (bool, int, float, str)) else f"a {type(v).__name__}"


def _stored_fingerprint(sc: Schema) -> dict[str, Any]:
    """The fingerprint a checkpoint was written with (format 2: JSON; format 1: fp_* arrays)."""
    if sc.has("fp_json"):
        try:
            fp = json.loads(sc.text("fp_json", limit=1 << 16))
        except (ValueError, RecursionError):
            raise sc.fail("field 'fp_json' is not JSON") from None
        if not isinstance(fp, dict):
            raise sc.fail("field 'fp_json' is not a JSON object")
        return fp
    fp = {}
    for key in _FINGERPRINT:
        k = "fp_" + key
        if key == "dtype":
            fp[key] = sc.text(k, limit=64)
        elif key == "tol":
            fp[key] = float(sc.array(k, "f", ()))
        else:
            fp[key] = sc.scalar_int(k)
    return fp


def load(path: str | os.PathLike, fingerprint: dict[str, Any], was_numpy: bool = True) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to the same data and settings.

    Every field is checked (dtype, shape, range) against the fingerprint of
    this run before anything is used.  History entries come back as
    :func:`sqdist.kmeans` makes them (NumPy or tensors after ``was_numpy``).
    """
    path = os.fspath(path)
    data = read_npz(path, "resume", _KIND)

    def fail(msg: str) -> SqdistError:
        return SqdistError(f"resume: {path!r} is not a valid {_KIND[2:]} ({msg})")

    if "format" not in data or data["format"].shape != () or data["format"].dtype.kind not in "iu" \
            or int(data["format"]) not in (1, FORMAT):
        raise SqdistError(f"resume: {path!r} is not {_KIND} of format 1 or {FORMAT}")
    sc = Schema(data, fail)
    stored = _stored_fingerprint(sc)
    run = _plain(fingerprint)
    for key in (*_FINGERPRINT, *sorted(k for k in run if k not in _FINGERPRINT)):
        if key not in stored:
            raise SqdistError(
                f"resume: checkpoint {path!r} has no {key!r} fingerprint (written by an older sqdist?), so it cannot "
                f"be checked against this run; start a new fit"
            )
        if key == "content" and stored[key] != run[key]:
            raise SqdistError(
                f"resume: checkpoint {path!r} was written for other data: the content digest of this run's data "
                f"differs (same shape and settings, other values); resume with the data it was written for"
            )
        if stored[key] != run.get(key):
            raise SqdistError(
                f"resume: checkpoint {path!r} was written for {key}={_brief(stored[key])}, this run has "
                f"{key}={_brief(run.get(key))}; resume with the same data and settings"
            )
    K, D = int(fingerprint["n_clusters"]), int(fingerprint["n_features"])
    sc.sizes.update(K=K, D=D)
    centers = sc.floats("centers", ("K", "D"))
    init_centers = sc.floats("init_centers", ("K", "D"))
    iteration = sc.scalar_int("iteration", lo=0)
    converged = sc.scalar_bool("converged")
    hist_it = sc.ints("hist_iteration", ("H",), lo=0)
    H = sc.sizes["H"]
    if H < 1 or hist_it[0] != 0 or np.any(np.diff(hist_it) <= 0) or hist_it[-1] != iteration:
        raise fail("the history's iterations are not 0 < ... < iteration")
    hist_centers = sc.floats("hist_centers", ("H", "K", "D"))
    hist_inertia = sc.floats("hist_inertia", ("H",), lo=0.0)
    hist_shift = sc.floats("hist_max_shift", ("H",), lo=0.0)
    hist_time = sc.floats("hist_time", ("H",), lo=0.0)
    hist_sizes = sc.ints("hist_sizes", ("H", "K"), lo=0)
    relocated = sc.ints("hist_relocated", (None,), lo=0, hi=K)
    reloc_n = sc.ints("hist_relocated_n", ("H",), lo=0)
    if int(reloc_n.sum()) != relocated.shape[0]:
        raise fail("hist_relocated_n does not add up to the length of hist_relocated")
    rng = sc.array("rng_state", "u", (None,))
    if rng.size and (rng.dtype != np.uint8 or rng.size != torch.Generator().get_state().numel()):
        raise fail(f"rng_state of {rng.size} {rng.dtype} values is not a torch CPU generator state")
    conv = (lambda a: a.copy()) if was_numpy else (lambda a: torch.from_numpy(a.copy()))
    offsets = np.concatenate([[0], np.cumsum(reloc_n)])
    history = [
        Iteration(
            iteration=int(hist_it[i]),
            centers=conv(hist_centers[i]),
            inertia=float(hist_inertia[i]),
            max_shift=float(hist_shift[i]),
            sizes=hist_sizes[i].copy(),
            relocated=relocated[offsets[i] : offsets[i + 1]].tolist(),
            time=float(hist_time[i]),
        )
        for i in range(H)
    ]
    return {
        "centers": torch.from_numpy(centers.copy()),
        "init_centers": torch.from_numpy(init_centers.copy()),
        "iteration": iteration,
        "converged": converged,
        "history": history,
        "rng_state": torch.from_numpy(rng.copy()) if rng.size else None,
    }
