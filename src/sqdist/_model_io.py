"""Saving and loading a fitted :class:`sqdist.KMeans` as an ``.npz`` file (no pickle: no code runs on load).

The file holds plain numeric arrays -- ``cluster_centers`` (K, D),
``init_centers`` (K, D), ``history_centers`` (H, K, D), ``labels`` (N,) when
kept, array-valued constructor parameters as ``param_NAME`` -- and
``state_json``, a UTF-8 JSON object: the format, the constructor parameters,
inertia, iteration count, convergence flag and the per-iteration history
without its centres.

Constructor parameters are stored generically: JSON values as they are,
array-likes (``init`` as indices or centres) as arrays, dtypes and devices by
name, and what cannot be stored (random generators, callables) as ``null``,
listed under ``"unsaved"`` in the file.  Loading checks every field -- JSON
types, array dtypes, shapes that must agree (K, D, H), value ranges -- and
ends any malformed file in a :class:`~sqdist.SqdistError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Collection
from typing import Any

import numpy as np
import torch

from ._atomic import atomic_write
from ._files import Schema, read_npz
from ._results import Iteration, KMeansResult
from ._validation import SqdistError

__all__ = ["FORMAT", "load", "save"]

FORMAT = "sqdist.KMeans/2"
_FORMATS = ("sqdist.KMeans/1", FORMAT)  # 1: params without tags ({"array": true} for init); still read
_KIND = "a sqdist KMeans file"
_TAG = "__sqdist__"
# the constructor's parameters until a caller passes its own list (KMeans.load passes _get_param_names())
_DEFAULT_PARAMS = frozenset({"n_clusters", "init", "n_init", "max_iter", "tol", "verbose", "random_state", "copy_x",
                             "algorithm", "tol_mode", "working_memory", "backend", "device", "dtype"})
_RENAMED = {"seed": "random_state"}  # old name -> new name (files written before the rename)
_OLD_NAMES = {new: old for old, new in _RENAMED.items()}
_HISTORY_KEYS = ("iteration", "inertia", "max_shift", "sizes", "relocated", "time")
_MAX_STATE_BYTES = 1 << 28
# the KMeansResult fields stored as arrays or checked one by one; any other (scalar) field goes to "result"
_RESULT_FIELDS = frozenset({"centers", "labels", "inertia", "n_iter", "converged", "history", "init_centers"})


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _type_name(v: Any) -> str:
    t = type(v)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


def _encode(name: str, v: Any, arrays: dict[str, np.ndarray]) -> Any:
    """One constructor parameter as a JSON value (arrays go to ``arrays``)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (np.bool_, np.integer, np.floating)):
        return v.item()
    if isinstance(v, torch.device):
        return str(v)
    if isinstance(v, torch.dtype):
        return {_TAG: "dtype", "lib": "torch", "name": str(v).removeprefix("torch.")}
    if isinstance(v, (np.dtype, type)) and v is not bool:
        try:
            dt = np.dtype(v)
        except (TypeError, ValueError):
            dt = None
        if dt is not None and dt.kind in "biufc" and dt.fields is None:
            return {_TAG: "dtype", "lib": "numpy", "name": dt.name}
    if isinstance(v, (np.ndarray, torch.Tensor, list, tuple)):
        try:
            a = _np(v)
        except (ValueError, TypeError, RuntimeError):
            a = None
        if a is not None and a.dtype.kind in "biuf" and a.dtype.itemsize <= 8:
            arrays["param_" + name] = np.ascontiguousarray(a)
            return {_TAG: "array", "key": "param_" + name, "torch": isinstance(v, torch.Tensor)}
    if isinstance(v, (list, tuple, dict)):
        try:
            return {_TAG: "json", "value": json.loads(json.dumps(v, allow_nan=False))}
        except (TypeError, ValueError, RecursionError):
            pass
    return {_TAG: "unsaved", "type": _type_name(v)}


def _plain(v: Any) -> Any:
    """JSON for the NumPy / torch scalars and small arrays a history record may hold."""
    if isinstance(v, (np.generic, np.ndarray, torch.Tensor)):
        return _np(v).tolist()
    raise TypeError(f"cannot store a {type(v).__name__} in a model file")


def save(path: str | os.PathLike, params: dict[str, Any], r: KMeansResult) -> None:
    """Write the estimator's constructor ``params`` and its fitted result ``r`` to ``path``.

    The file is written under a temporary name in the same folder and
    renamed, so an interrupted save never leaves a half-written model.
    Parameters that cannot be stored (generators, callables) are stored as
    ``null`` and named in the file's ``"unsaved"`` list.
    """
    arrays: dict[str, np.ndarray] = {}
    enc = {str(k): _encode(str(k), v, arrays) for k, v in params.items()}
    unsaved = {k: v["type"] for k, v in enc.items() if isinstance(v, dict) and v.get(_TAG) == "unsaved"}
    arrays["cluster_centers"] = _np(r.centers)
    if r.labels is not None:  # None after an out-of-core fit (labels not kept in memory)
        arrays["labels"] = _np(r.labels).astype(np.int64, copy=False)
    arrays["init_centers"] = _np(r.init_centers)
    extra = {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name not in _RESULT_FIELDS}
    state = {
        "format": FORMAT, "params": enc, "unsaved": unsaved, "inertia": float(r.inertia), "n_iter": int(r.n_iter),
        "converged": bool(r.converged), "torch": isinstance(r.centers, torch.Tensor),
        "result": {k: v for k, v in extra.items() if v is None or isinstance(v, (bool, int, float, str))},
        "history": [
            {k: ([int(s) for s in _np(v).tolist()] if k == "sizes" else v) for k, v in h.items() if k != "centers"}
            for h in r.history
        ],
    }
    arrays["history_centers"] = np.stack([_np(h["centers"]) for h in r.history])
    arrays["state_json"] = np.frombuffer(json.dumps(state, default=_plain).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


# ----------------------------------------------------------------------------------------------
# loading: every field checked
# ----------------------------------------------------------------------------------------------


def _brief(v: Any) -> str:
    """A short description of a JSON value for an error message (never the repr of a deep structure)."""
    if v is None or isinstance(v, (bool, int, float)):
        return repr(v)[:40]
    if isinstance(v, str):
        return repr(v[:40])
    return f"a {type(v).__name__}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _history_entry(h: Any, i: int, K: int, fail: Any) -> dict[str, Any]:
    if not isinstance(h, dict):
        raise fail(f"history[{i}] is not an object")
    missing = [k for k in _HISTORY_KEYS if k not in h]
    unknown = [k for k in h if k not in Iteration._keys() or k == "centers"]
    if missing or unknown:
        raise fail(f"history[{i}] misses {missing} or has unknown keys {unknown}")
    if not _is_int(h["iteration"]) or h["iteration"] < 0:
        raise fail(f"history[{i}].iteration is not an integer >= 0")
    for k in ("inertia", "max_shift", "time"):
        if not _is_real(h[k]) or h[k] < 0:
            raise fail(f"history[{i}].{k} is not a finite number >= 0")
    sizes, reloc = h["sizes"], h["relocated"]
    if not isinstance(sizes, list) or len(sizes) != K or not all(_is_int(s) and 0 <= s < 2**63 for s in sizes):
        raise fail(f"history[{i}].sizes is not a list of {K} counts")
    if not isinstance(reloc, list) or not all(_is_int(j) and 0 <= j < K for j in reloc):
        raise fail(f"history[{i}].relocated is not a list of cluster ids in [0, {K})")
    for k in h:
        if k not in _HISTORY_KEYS and not (h[k] is None or isinstance(h[k], (bool, int, float, str))):
            raise fail(f"history[{i}].{k} is not a plain value")
    return dict(h, sizes=np.asarray(sizes, dtype=np.int64), relocated=list(reloc),
                inertia=float(h["inertia"]), max_shift=float(h["max_shift"]), time=float(h["time"]))


def _decode(name: str, v: Any, sc: Schema, fail: Any) -> Any:
    """One stored constructor parameter back as a value (see :func:`_encode`)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if not isinstance(v, dict):
        raise fail(f"parameter {name!r} holds a {type(v).__name__}")
    if v == {"array": True} and name == "init":  # format 1
        v = {_TAG: "array", "key": "init", "torch": False}
    tag = v.get(_TAG)
    if tag == "array" and isinstance(v.get("key"), str) and isinstance(v.get("torch", False), bool):
        if v["key"] not in (f"param_{name}", "init") or not sc.has(v["key"]):
            raise fail(f"parameter {name!r} points at array {v['key']!r}, which the file lacks")
        a = sc.arrays[v["key"]]  # numeric (read_npz refuses anything else)
        if name == "init" and not ((a.ndim == 1 and a.dtype.kind in "iu") or (a.ndim == 2 and a.dtype.kind == "f")):
            raise fail(f"parameter 'init' is an array of shape {a.shape} and dtype {a.dtype}; expected row indices "
                       f"(1-D integers) or centres (2-D floats)")
        if name == "init" and a.ndim == 2 and (a.shape[1] != sc.sizes["D"] or not np.isfinite(a).all()):
            raise fail(f"parameter 'init' holds centres of shape {a.shape} with D != {sc.sizes['D']} or NaN / Inf")
        return torch.from_numpy(a.copy()) if v.get("torch") else a.copy()
    if tag == "dtype" and v.get("lib") in ("torch", "numpy") and isinstance(v.get("name"), str):
        if v["lib"] == "torch":
            dt = getattr(torch, v["name"], None) if v["name"].isidentifier() else None
            if isinstance(dt, torch.dtype):
                return dt
        else:
            try:
                dt = np.dtype(v["name"])
            except (TypeError, ValueError, SyntaxError):
                dt = None
            if dt is not None and dt.kind in "biufc" and dt.fields is None:
                return dt
        raise fail(f"parameter {name!r} names no dtype ({_brief(v['name'])})")
    if tag == "json" and "value" in v:
        return v["value"]
    if tag == "unsaved":
        return None
    raise fail(f"parameter {name!r} holds an unknown object")


def _params(raw: Any, sc: Schema, fail: Any, allowed: frozenset[str], path: str) -> dict[str, Any]:
    """The stored constructor parameters, decoded; names outside ``allowed`` (after renames) are refused."""
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise fail("params is not an object with string keys")
    params, unknown = {}, []
    for k, v in raw.items():
        name = k
        if k not in allowed:  # a parameter renamed since the file was written (or the other way round)
            name = next((n for n in (_RENAMED.get(k), _OLD_NAMES.get(k)) if n in allowed), k)
        if name not in allowed:
            unknown.append(k)
            continue
        params[name] = _decode(name, v, sc, fail)
    if unknown:
        raise SqdistError(f"path: {path!r} holds constructor parameter(s) {sorted(unknown)} that this KMeans does not "
                          f"take (a file of another version?); expected names among {sorted(allowed)}")
    if params.get("device") is not None:
        dev = params["device"]
        try:
            torch.device(dev)
        except (RuntimeError, ValueError, TypeError, OverflowError):
            raise fail(f"parameter 'device' is {_brief(dev)}, not a device") from None
    return params


def load(path: str | os.PathLike, allowed_params: Collection[str] | None = None) -> tuple[dict[str, Any], KMeansResult]:
    """Read a model written by :func:`save`: ``(constructor params, fitted result)``.

    ``allowed_params``: the constructor's parameter names (``KMeans.load``
    passes ``_get_param_names()``); a file holding other names is refused
    (after renaming ``seed`` to ``random_state``).  Every array and JSON field
    is checked; any malformed file raises :class:`SqdistError`.
    """
    p = os.fspath(path)
    arrays = read_npz(p, "path", _KIND)
    allowed = frozenset(_DEFAULT_PARAMS if allowed_params is None else allowed_params)

    def path_error(msg: str) -> SqdistError:
        return SqdistError(f"path: {p!r} is not a valid sqdist KMeans file ({msg})")

    sc = Schema(arrays, path_error)
    text = sc.text("state_json", limit=_MAX_STATE_BYTES)
    try:
        state = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise path_error(f"state_json is not JSON: {type(exc).__name__}") from None
    if not isinstance(state, dict):
        raise path_error(f"state_json is a {type(state).__name__}, not an object")
    if state.get("format") not in _FORMATS:
        raise path_error(f"format {_brief(state.get('format'))}, expected one of {list(_FORMATS)}")
    centers = sc.floats("cluster_centers", ("K", "D"))
    K = sc.sizes["K"]
    if K < 1 or sc.sizes["D"] < 1:
        raise path_error(f"cluster_centers has shape {centers.shape}")
    init_centers = sc.floats("init_centers", ("K", "D"))
    labels = sc.ints("labels", (None,), lo=0, hi=K) if sc.has("labels") else None
    hist_centers = sc.floats("history_centers", ("H", "K", "D"))
    for key, ok in (("inertia", lambda v: _is_real(v) and v >= 0), ("n_iter", lambda v: _is_int(v) and v >= 0),
                    ("converged", lambda v: isinstance(v, bool)), ("torch", lambda v: isinstance(v, bool)),
                    ("history", lambda v: isinstance(v, list) and len(v) == sc.sizes["H"] >= 1)):
        if key not in state or not ok(state[key]):
            raise path_error(f"{key} is missing or not valid ({_brief(state.get(key))})")
    history_raw = [_history_entry(h, i, K, path_error) for i, h in enumerate(state["history"])]
    if any(b["iteration"] <= a["iteration"] for a, b in zip(history_raw, history_raw[1:])):
        raise path_error("the history's iterations do not increase")
    params = _params(state.get("params"), sc, path_error, allowed, p)
    conv = torch.from_numpy if state["torch"] else (lambda a: a)
    history = [Iteration(**dict(h, centers=conv(c.copy()))) for h, c in zip(history_raw, hist_centers)]
    extra = state.get("result", {})
    fields = {f.name for f in dataclasses.fields(KMeansResult)} - _RESULT_FIELDS
    if not isinstance(extra, dict) or not all(k in fields and (v is None or isinstance(v, (bool, int, float, str)))
                                              for k, v in extra.items()):
        raise path_error("result holds unknown fields")
    r = KMeansResult(
        centers=conv(centers.copy()), labels=None if labels is None else conv(labels.copy()),
        inertia=float(state["inertia"]), n_iter=int(state["n_iter"]), converged=bool(state["converged"]),
        history=history, init_centers=conv(init_centers.copy()), **extra,
    )
    return params, r
