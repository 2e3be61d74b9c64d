"""Saving and loading a fitted :class:`sqdist.KMeans` as an ``.npz`` file (no pickle: no code runs on load)."""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np
import torch

from ._atomic import atomic_write
from ._results import Iteration, KMeansResult
from ._validation import SqdistError

__all__ = ["FORMAT", "load", "save"]

FORMAT = "sqdist.KMeans/1"


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def save(path: str | os.PathLike, params: dict[str, Any], r: KMeansResult) -> None:
    """Write the estimator's constructor ``params`` and its fitted result ``r`` to ``path``.

    The file is written under a temporary name in the same folder and
    renamed, so an interrupted save never leaves a half-written model.
    """
    params = dict(params)
    arrays: dict[str, np.ndarray] = {}
    init = params["init"]
    if not isinstance(init, str):
        arrays["init"] = _np(init)
        params["init"] = {"array": True}
    if isinstance(params["seed"], torch.Generator):
        params["seed"] = None
    if params["device"] is not None:
        params["device"] = str(params["device"])
    arrays["cluster_centers"] = _np(r.centers)
    if r.labels is not None:  # None after an out-of-core fit (labels not kept in memory)
        arrays["labels"] = _np(r.labels)
    arrays["init_centers"] = _np(r.init_centers)
    state = {
        "format": FORMAT, "params": params, "inertia": r.inertia, "n_iter": r.n_iter,
        "converged": r.converged, "torch": isinstance(r.centers, torch.Tensor),
        "history": [
            {k: (v.tolist() if k == "sizes" else v) for k, v in h.items() if k != "centers"} for h in r.history
        ],
    }
    arrays["history_centers"] = np.stack([_np(h["centers"]) for h in r.history])
    arrays["state_json"] = np.frombuffer(json.dumps(state).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path: str | os.PathLike) -> tuple[dict[str, Any], KMeansResult]:
    """Read a model written by :func:`save`: ``(constructor params, fitted result)``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SqdistError(f"path: {os.fspath(path)!r} is not a sqdist KMeans file ({exc})") from None
    try:
        state = json.loads(arrays["state_json"].tobytes().decode("utf-8"))
        if state.get("format") != FORMAT:
            raise ValueError(f"format {state.get('format')!r}")
        params = state["params"]
        if isinstance(params["init"], dict):
            params["init"] = arrays["init"]
        conv = (lambda a: torch.from_numpy(a)) if state["torch"] else (lambda a: a)
        history = [
            Iteration(**dict(h, centers=conv(c), sizes=np.asarray(h["sizes"], dtype=np.int64)))
            for h, c in zip(state["history"], arrays["history_centers"])
        ]
        r = KMeansResult(
            centers=conv(arrays["cluster_centers"]), labels=conv(arrays["labels"]) if "labels" in arrays else None,
            inertia=float(state["inertia"]), n_iter=int(state["n_iter"]), converged=bool(state["converged"]),
            history=history, init_centers=conv(arrays["init_centers"]),
        )
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise SqdistError(f"path: {os.fspath(path)!r} is not a valid sqdist KMeans file ({type(exc).__name__}: {exc})") from None
    return params, r
