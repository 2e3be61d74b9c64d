"""Bit-for-bit fingerprints of k-means results, to compare two versions of sqdist.

Run it before and after a change that must not change any result (a refactor)
and compare the printed JSON: every SHA-256 covers the raw bytes of the
centres, labels, inertia, iteration count and the whole history.

    PYTHONPATH=src python benchmarks/fingerprint.py > before.json
    ... change ...
    PYTHONPATH=src python benchmarks/fingerprint.py > after.json && diff before.json after.json

Cases: the exercise's blobs (P = 2, 5, 8, fixed indices; float64 and float32),
a 2e5 x 16 fit with K = 32 (k-means++, seed 0), n_init = 3 random restarts on
tensors, and a streamed .npy fit on one process and on two ``torch.distributed``
ranks (gloo, spawned here).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np


def _digest(r) -> dict:
    h = hashlib.sha256()
    for a in (r.centers, r.labels, r.init_centers):
        if a is not None:
            h.update(np.ascontiguousarray(np.asarray(a.cpu() if hasattr(a, "cpu") else a)).tobytes())
    h.update(np.float64(r.inertia).tobytes())
    h.update(str((r.n_iter, bool(r.converged))).encode())
    for e in r.history:
        c = e["centers"]
        h.update(np.ascontiguousarray(np.asarray(c.cpu() if hasattr(c, "cpu") else c)).tobytes())
        h.update(np.float64(e["inertia"]).tobytes() + np.float64(e["max_shift"]).tobytes())
        h.update(np.asarray(e["sizes"], dtype=np.int64).tobytes() + str(list(e["relocated"])).encode())
    return {"sha256": h.hexdigest()[:16], "n_iter": r.n_iter, "inertia": repr(float(r.inertia))}


_WORKER = r"""
import os, sys, json
import numpy as np, torch
torch.set_num_threads(1)
import torch.distributed as dist
dist.init_process_group("gloo")
import sqdist
sys.path.insert(0, os.path.dirname(sys.argv[3]))
from fingerprint import _digest
r = sqdist.kmeans_stream(sys.argv[1], 6, random_state=0, max_iter=30, tol=0.0, working_memory=0.25,
                         labels_out=sys.argv[2] + ".labels.npy")
if dist.get_rank() == 0:
    r.labels = np.load(sys.argv[2] + ".labels.npy")
    json.dump(_digest(r), open(sys.argv[2], "w"))
dist.destroy_process_group()
"""


def _two_ranks(path: str, tmp: str) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = os.path.join(tmp, "worker.py")
    with open(script, "w") as f:
        f.write(_WORKER)
    out = os.path.join(tmp, "ranks.json")
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen([sys.executable, script, path, out, os.path.abspath(__file__)], env=env))
    for p in procs:
        if p.wait(timeout=300) != 0:
            raise SystemExit(f"a rank failed with status {p.returncode}")
    with open(out) as f:
        return json.load(f)


def main() -> None:
    import torch

    import sqdist
    from sqdist import datasets

    torch.set_num_threads(2)
    res: dict = {}
    X, _ = datasets.make_blobs(seed=0)
    for dt in ("float64", "float32"):
        for P in (2, 5, 8):
            r = sqdist.kmeans(X.astype(dt), init=datasets.exercise_init_indices(P, X.shape[0]))
            res[f"blobs {dt} P={P}"] = _digest(r)
    rng = np.random.default_rng(0)
    Y = (rng.normal(size=(200_000, 16)) + rng.integers(0, 8, size=(200_000, 1))).astype(np.float32)
    res["2e5x16 K=32 k-means++"] = _digest(sqdist.kmeans(Y, 32, random_state=0, max_iter=50))
    G = (rng.normal(size=(20_000, 64)) + 100.0).astype(np.float32)
    res["2e4x64 K=128 (product path) k-means++"] = _digest(sqdist.kmeans(G, 128, random_state=0, max_iter=8))
    E = np.r_[np.zeros((40, 2)), np.ones((40, 2)), [[50.0, 50.0]]]
    res["empty-cluster relocation"] = _digest(
        sqdist.kmeans(E, init=np.array([[0.0, 0.0], [1.0, 1.0], [-9.0, -9.0], [99.0, 0.0]]))
    )
    Z = torch.from_numpy(Y[:20_000, :4].copy())
    res["tensor 2e4x4 K=7 random n_init=3"] = _digest(sqdist.kmeans(Z, 7, init="random", n_init=3, random_state=1))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npy")
        np.save(path, (rng.normal(size=(30_000, 8)) * 3 + rng.integers(0, 5, size=(30_000, 1))).astype(np.float32))
        r = sqdist.kmeans_stream(path, 6, random_state=0, max_iter=30, tol=0.0, working_memory=0.25,
                                 labels_out=os.path.join(tmp, "l.npy"))
        r.labels = np.load(os.path.join(tmp, "l.npy"))
        res["streamed 3e4x8 K=6, 1 process"] = _digest(r)
        res["streamed 3e4x8 K=6, 2 ranks"] = _two_ranks(path, tmp)
    json.dump(res, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
