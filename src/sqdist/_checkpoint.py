"""Atomic, pickle-free checkpoints of a streaming / distributed k-means fit.

A checkpoint is a ``.npz`` file of plain numeric arrays (loaded with
``allow_pickle=False``, so loading never executes code).  It holds the
centres after the last completed iteration, the iteration number, whether the
fit had converged, the per-iteration history, the state of the random
generator after initialisation and a fingerprint of the data and settings
(number of rows, features, clusters, dtype, tolerance, chunk rows), so that a
checkpoint is never resumed on other data or with other settings.

It is written to a temporary name in the destination folder, flushed to disk
and then renamed over the destination (``os.replace``), so a crash while
writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np
import torch

from ._atomic import atomic_write
from ._results import Iteration
from ._validation import SqdistError

FORMAT = 1

# fingerprint fields that must match between the checkpoint and the resumed run
_FINGERPRINT = ("n_rows", "n_features", "n_clusters", "dtype", "tol", "chunk_rows")


def _as_str_array(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("utf-8"), dtype=np.uint8)


def _from_str_array(a: np.ndarray) -> str:
    return bytes(np.asarray(a, dtype=np.uint8)).decode("utf-8")


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
    for key in _FINGERPRINT:
        v = fingerprint[key]
        arrays["fp_" + key] = _as_str_array(v) if isinstance(v, str) else np.array(v)
    atomic_write(path, lambda f: np.savez(f, **arrays), fsync=True)


def load(path: str | os.PathLike, fingerprint: dict[str, Any], was_numpy: bool = True) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to the same data and settings.

    History entries come back as :func:`sqdist.kmeans` makes them (NumPy or
    tensors after ``was_numpy``).
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SqdistError(f"resume: {path!r} is not a sqdist k-means checkpoint ({exc})") from None
    try:
        if "format" not in data or int(data["format"]) != FORMAT:
            raise SqdistError(f"resume: {path!r} is not a sqdist k-means checkpoint of format {FORMAT}")
        for key in _FINGERPRINT:
            stored = data["fp_" + key]
            want = fingerprint[key]
            got = _from_str_array(stored) if isinstance(want, str) else stored.item()
            if got != want:
                raise SqdistError(
                    f"resume: checkpoint {path!r} was written for {key}={got!r}, this run has {key}={want!r}; "
                    f"resume with the same data and settings"
                )
        conv = (lambda a: a.copy()) if was_numpy else (lambda a: torch.from_numpy(a.copy()))
        offsets = np.concatenate([[0], np.cumsum(data["hist_relocated_n"])])
        history = [
            Iteration(
                iteration=int(data["hist_iteration"][i]),
                centers=conv(data["hist_centers"][i]),
                inertia=float(data["hist_inertia"][i]),
                max_shift=float(data["hist_max_shift"][i]),
                sizes=data["hist_sizes"][i].copy(),
                relocated=data["hist_relocated"][offsets[i] : offsets[i + 1]].tolist(),
                time=float(data["hist_time"][i]),
            )
            for i in range(len(data["hist_inertia"]))
        ]
        rng = data["rng_state"]
        return {
            "centers": torch.from_numpy(data["centers"]),
            "init_centers": torch.from_numpy(data["init_centers"]),
            "iteration": int(data["iteration"]),
            "converged": bool(data["converged"]),
            "history": history,
            "rng_state": torch.from_numpy(rng.copy()) if rng.size else None,
        }
    except SqdistError:
        raise
    except (KeyError, ValueError, TypeError, IndexError) as exc:  # a foreign .npz with some of our keys
        raise SqdistError(f"resume: {path!r} is not a valid sqdist k-means checkpoint "
                          f"({type(exc).__name__}: {exc})") from None
