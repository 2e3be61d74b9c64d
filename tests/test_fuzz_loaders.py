"""Fuzzing of every file loader: ``.npy`` arrays, ``.csv`` points, KMeans model files (``.npz`` + JSON) and
checkpoints.  The invariant: a :class:`sqdist.SqdistError` or a correct result -- never another exception.

Each loader gets ``SQDIST_FUZZ_EXAMPLES`` examples (default 200, so the suite stays fast; raise it for a
long run, e.g. ``SQDIST_FUZZ_EXAMPLES=10000 python -m pytest tests/test_fuzz_loaders.py``).  Inputs are
valid files broken at random -- bytes flipped, cut, inserted; headers, JSON fields and arrays replaced by
random values of random types and shapes -- and files built from scratch.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sqdist
from hostile_files import lying_npy, npy_bytes, npz_arrays, npz_bytes, state_of, with_state  # tests/ is on sys.path
from sqdist import SqdistError, _checkpoint, _files, _model_io

EXAMPLES = int(os.environ.get("SQDIST_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))

_TMP = tempfile.TemporaryDirectory(prefix="sqdist-fuzz-")  # removed when the test process exits
_WORK = Path(_TMP.name)


# ------------------------------------------------------------------------------------------------
# strategies: byte mutations, random arrays, random JSON
# ------------------------------------------------------------------------------------------------


@st.composite
def mutated(draw, base: bytes) -> bytes:
    """``base`` with 1-4 random edits (flip, cut, insert, delete, overwrite), or random bytes."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=300))
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "overwrite"]))
        pos = draw(st.integers(0, max(0, n - 1)))
        if op == "flip" and n:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            blob = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(blob)] = blob
    return bytes(data)


_DTYPES = ["<f8", ">f8", "<f4", "<f2", "<i8", ">i4", "<i2", "|i1", "<u8", "|u1", "|b1", "<c16", "<U3", "|S2"]


def arrays():
    dtype = st.sampled_from(_DTYPES).map(np.dtype)
    return dtype.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated_json(draw, state):
    """``state`` with 1-3 random edits: a value replaced by random JSON, a key dropped or added."""
    state = json.loads(json.dumps(state))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(state))
        path = draw(st.sampled_from(paths))
        if not path:
            state = draw(json_values)
            continue
        parent = state
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if op == "replace":
            parent[path[-1]] = draw(json_values)
        elif op == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return state


@st.composite
def mutated_arrays(draw, base: dict):
    """``base`` (an archive's arrays) with 1-3 arrays dropped, added, cast, reshaped, cut or replaced."""
    out = dict(base)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(out) + ["extra"]))
        a = out.get(key)
        op = draw(st.sampled_from(["drop", "random", "cast", "reshape", "cut", "scale"]))
        if op == "drop" or a is None:
            if a is None:
                out[key] = draw(arrays())
            else:
                del out[key]
        elif op == "random":
            out[key] = draw(arrays())
        elif op == "cast" and a.dtype.kind in "biuf":
            with np.errstate(all="ignore"):
                out[key] = a.astype(draw(st.sampled_from(_DTYPES[:11])))
        elif op == "reshape":
            out[key] = a.reshape(draw(st.sampled_from([(-1,), (1, -1), (-1, 1), (1,) + a.shape]))) if a.size else a
        elif op == "cut":
            out[key] = a[: draw(st.integers(0, max(0, a.shape[0] - 1)))] if a.ndim else a
        elif op == "scale" and a.dtype.kind == "f":
            with np.errstate(all="ignore"):
                out[key] = (a * draw(st.sampled_from([-1, 0, 2, 1e300, np.nan]))).astype(a.dtype)
        elif op == "scale" and a.dtype.kind in "iu":
            out[key] = (a.astype(np.int64) + draw(st.integers(-5, 5))).astype(a.dtype)
    return out


def _write(name: str, data: bytes) -> Path:
    path = _WORK / name
    path.write_bytes(data)
    return path


def _numpy_reference(data: bytes):
    """NumPy's own reading of a .npy, or None when NumPy cannot read it safely."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:  # noqa: BLE001 - NumPy's failures are not under test, only ours
        return None


# ------------------------------------------------------------------------------------------------
# .npy
# ------------------------------------------------------------------------------------------------

_NPY_BASES = [npy_bytes(np.arange(12.0).reshape(4, 3)), npy_bytes(np.arange(5, dtype=np.int16)),
              npy_bytes(np.asfortranarray(np.ones((3, 2), ">f4"))), npy_bytes(np.zeros((0, 2)))]


@st.composite
def npy_files(draw):
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(mutated(draw(st.sampled_from(_NPY_BASES))))
    if kind == 1:  # a header built from random parts, data of a random length
        shape = draw(st.tuples(*[st.integers(-2, 6) | st.just(2**62)] * draw(st.integers(0, 3))))
        dtype = draw(st.sampled_from(_DTYPES + ["|O", "V8", "<f16", "float64", "{'x': 1}", ""]))
        body = draw(st.binary(max_size=200))
        return lying_npy(shape, dtype, body)
    a = draw(arrays())
    return npy_bytes(a)


@FUZZ
@given(data=npy_files())
def test_fuzz_npy(data):
    path = _write("f.npy", data)
    for name, read in (("read_points", lambda: _files.read_points(path)),
                       ("open_npy", lambda: np.asarray(_files.open_npy(path, "X", mmap=True)))):
        try:
            got = read()
        except SqdistError:
            event(f"{name}: SqdistError")
            continue
        event(f"{name}: read")
        ref = _numpy_reference(data)
        assert ref is not None and ref.dtype.kind in "biuf", "read a file NumPy cannot"
        if got.ndim == 2 and ref.ndim == 1:
            ref = ref.reshape(-1, 1)
        assert got.shape == ref.shape
        np.testing.assert_array_equal(got, ref.astype(got.dtype))


# ------------------------------------------------------------------------------------------------
# .csv
# ------------------------------------------------------------------------------------------------

_CSV_ALPHABET = st.sampled_from(list("0123456789.,,,-+eE \n\n\r\t") + ["nan", "inf", "x", "\ufeff", "\x0c", "\x85",
                                                                       "1_0", '"', "\xff", "\u2028", "٣"])


def _csv_reference(text: str):
    """The CSV rules, written again: rows, or None where sqdist must refuse."""
    text = text.removeprefix("\ufeff")
    lines = [ln for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if ln.strip()]

    def num(v):
        try:
            return float(v)
        except ValueError:
            return None

    if not lines:
        return None
    first = [num(v) for v in lines[0].split(",")]
    header = all(v is None for v in first)
    rows = []
    for ln in lines[1 if header else 0 :]:
        r = [num(v) for v in ln.split(",")]
        if any(v is None for v in r):
            return None
        rows.append(r)
    if not rows or len({len(r) for r in rows}) != 1 or (header and len(first) != len(rows[0])):
        return None
    return np.array(rows, dtype=np.float64)


@FUZZ
@given(text=st.lists(_CSV_ALPHABET, max_size=80).map("".join) | st.text(max_size=60),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]))
def test_fuzz_csv(text, encoding):
    raw = text.encode(encoding, errors="replace")
    path = _write("f.csv", raw)
    try:
        got = _files.read_points(path)
    except SqdistError:
        event("SqdistError")
        return
    event("read")
    ref = _csv_reference(raw.decode("utf-8", errors="replace"))
    assert ref is not None, "accepted a CSV the rules refuse"
    np.testing.assert_array_equal(got, ref)


# ------------------------------------------------------------------------------------------------
# KMeans model files
# ------------------------------------------------------------------------------------------------


def _model_base() -> dict:
    X = np.random.default_rng(0).normal(size=(40, 2))
    path = _WORK / "base-model.npz"
    sqdist.KMeans(3, init=[0, 1, 2], max_iter=3).fit(X).save(path)
    return npz_arrays(path)


_MODEL = _model_base()


@st.composite
def model_files(draw):
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(mutated(npz_bytes(_MODEL)))
    if kind == 1:
        return npz_bytes(with_state(_MODEL, draw(mutated_json(state_of(_MODEL)))))
    return npz_bytes(draw(mutated_arrays(_MODEL)))


def _check_model(params, r):
    K, D = r.centers.shape
    assert K >= 1 and D >= 1 and np.isfinite(r.centers).all() and r.init_centers.shape == (K, D)
    assert r.labels is None or (r.labels.ndim == 1 and (r.labels.size == 0 or 0 <= r.labels.min() <= r.labels.max() < K))
    assert len(r.history) >= 1 and all(h["centers"].shape == (K, D) and len(h["sizes"]) == K for h in r.history)
    assert math.isfinite(r.inertia) and r.inertia >= 0 and isinstance(params, dict)


@FUZZ
@given(data=model_files())
def test_fuzz_model_files(data):
    path = _write("m.npz", data)
    try:
        params, r = _model_io.load(path)
    except SqdistError:
        event("SqdistError")
        return
    event("loaded")
    _check_model(params, r)
    try:
        km = sqdist.KMeans.load(path)
        labels = km.predict(np.zeros((2, r.centers.shape[1])))
    except SqdistError:  # a crafted parameter (backend, working_memory, ...) named when it is used
        event("loaded; predict: SqdistError")
        return
    assert labels.shape == (2,) and 0 <= labels.min() <= labels.max() < r.centers.shape[0]


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------


def _checkpoint_base():
    X = np.random.default_rng(1).normal(size=(60, 2))
    path = _WORK / "base-ckpt.npz"
    sqdist.kmeans_stream(X, 3, init=[0, 1, 2], max_iter=3, tol=0.0, checkpoint=path)
    arrays = npz_arrays(path)
    return arrays, json.loads(arrays["fp_json"].tobytes())


_CKPT, _FP = _checkpoint_base()


@st.composite
def checkpoint_files(draw):
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(mutated(npz_bytes(_CKPT)))
    if kind == 1:
        fp = draw(mutated_json(_FP))
        return npz_bytes(dict(_CKPT, fp_json=np.frombuffer(json.dumps(fp).encode(), np.uint8)))
    return npz_bytes(draw(mutated_arrays(_CKPT)))


@FUZZ
@given(data=checkpoint_files())
def test_fuzz_checkpoints(data):
    path = _write("c.npz", data)
    try:
        state = _checkpoint.load(path, _FP)
    except SqdistError:
        event("SqdistError")
        return
    event("loaded")
    K, D = _FP["n_clusters"], _FP["n_features"]
    assert tuple(state["centers"].shape) == tuple(state["init_centers"].shape) == (K, D)
    assert bool(state["centers"].isfinite().all()) and state["iteration"] >= 0
    assert len(state["history"]) >= 1 and state["history"][-1]["iteration"] == state["iteration"]
    assert all(h["centers"].shape == (K, D) and len(h["sizes"]) == K for h in state["history"])
    assert state["rng_state"] is None or state["rng_state"].numel() == 5056
