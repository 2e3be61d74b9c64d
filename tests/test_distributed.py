"""Distributed k-means on torch.distributed (gloo, 2 ranks on 127.0.0.1) equals one process;
a dead rank ends the run with an error in bounded time; checkpoint -> kill -> resume equals
an uninterrupted run; the torchrun CLI gives the same model as the plain CLI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sqdist

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
WORKER = HERE / "dist_worker.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gloo over TCP on 127.0.0.1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")}
    e["PYTHONPATH"] = str(SRC) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    e.update(extra)
    return e


def _run_ranks(args: list[str], world: int, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Start ``world`` worker processes as ranks of one gloo group; wait for all."""
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            env=_env(RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for r in range(world)
    ]
    out = []
    for p in procs:
        try:
            so, se = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append(subprocess.CompletedProcess(p.args, p.returncode, so, se))
    return out


def _load(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Overlapping blobs (several iterations, 8 chunks at the workers' 0.25 MiB budget)."""
    rng = np.random.default_rng(7)
    X = np.concatenate([rng.normal(c, 4.0, size=(2500, 3)) for c in range(0, 60, 10)]).astype(np.float32)
    rng.shuffle(X)
    path = tmp_path_factory.mktemp("dist") / "X.npy"
    np.save(path, X)
    return path


@pytest.fixture(scope="module")
def single(data) -> dict:
    """The reference: the workers' fit in this process (no process group), one thread like them."""
    import torch

    import sqdist

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = sqdist.kmeans_stream(str(data), 6, init="k-means++", random_state=0, max_iter=30, tol=0.0, working_memory=0.25,
                                 labels_out=data.parent / "single.labels.npy")
    finally:
        torch.set_num_threads(n)
    return {"centers": r.centers, "labels": np.asarray(r.labels), "inertia": r.inertia, "n_iter": r.n_iter,
            "converged": r.converged, "init_centers": r.init_centers,
            "hist_inertia": np.array([h["inertia"] for h in r.history])}


def test_two_ranks_equal_one_process(data, single, one_thread):
    import sqdist

    # the reference is a real run, and equals in-memory sqdist.kmeans (same init, same stopping rule)
    X = np.load(data)
    assert single["n_iter"] >= 3 and single["labels"].shape == (X.shape[0],)
    ref = sqdist.kmeans(X, 6, init=single["init_centers"], max_iter=30, tol=0.0)
    np.testing.assert_array_equal(single["labels"], ref.labels)
    np.testing.assert_array_max_ulp(single["centers"], ref.centers, maxulp=1)
    assert single["n_iter"] == ref.n_iter

    out = data.parent / "two.npz"
    res = _run_ranks([str(data), str(out)], world=2)
    assert [r.returncode for r in res] == [0, 0], [r.stderr[-2000:] for r in res]
    two = _load(out)
    np.testing.assert_array_equal(two["labels"], single["labels"])
    np.testing.assert_array_equal(two["centers"], single["centers"])  # bit-identical, not just 1 ulp
    np.testing.assert_array_equal(two["init_centers"], single["init_centers"])
    assert two["inertia"] == single["inertia"] and two["n_iter"] == single["n_iter"]
    np.testing.assert_array_equal(two["hist_inertia"], single["hist_inertia"])


def test_weighted_two_ranks_equal_one_process_and_in_memory(data, one_thread):
    """Sample weights from a .npy beside the data: 2 ranks give the single process's bits, and the
    in-memory weighted fit's labels and centres (sums differ only in their float64 rounding)."""
    import sqdist

    X = np.load(data)
    w = np.random.default_rng(11).uniform(0.0, 3.0, size=X.shape[0])
    wpath = data.parent / "w.npy"
    np.save(wpath, w)
    one = sqdist.kmeans_stream(str(data), 6, init="k-means++", random_state=0, max_iter=30, tol=0.0,
                               working_memory=0.25, sample_weight=str(wpath), labels_out=data.parent / "w1.labels.npy")
    ref = sqdist.kmeans(X, 6, init=one.init_centers, max_iter=30, tol=0.0, sample_weight=w)
    np.testing.assert_array_equal(np.load(data.parent / "w1.labels.npy"), ref.labels)
    np.testing.assert_allclose(one.centers, ref.centers, rtol=1e-6)
    assert one.n_iter == ref.n_iter and one.inertia == pytest.approx(ref.inertia, rel=1e-9)
    out = data.parent / "wtwo.npz"
    res = _run_ranks([str(data), str(out), "--weights", str(wpath)], world=2)
    assert [r.returncode for r in res] == [0, 0], [r.stderr[-2000:] for r in res]
    two = _load(out)
    np.testing.assert_array_equal(two["centers"], one.centers)  # bit-identical
    assert two["inertia"] == one.inertia and two["n_iter"] == one.n_iter


def test_dead_rank_errors_in_bounded_time_and_resume_equals_uninterrupted(data, single, tmp_path):
    ck = tmp_path / "ck.npz"
    out = tmp_path / "res.npz"
    # 2 ranks, checkpoint every iteration; rank 1 crashes (os._exit) at its 5th pass, i.e. during iteration 4
    t0 = time.monotonic()
    res = _run_ranks([str(data), str(out), "--checkpoint", str(ck), "--die-rank", "1", "--die-at-pass", "5",
                      "--timeout", "15"], world=2, timeout=90)
    assert time.monotonic() - t0 < 90
    assert res[1].returncode == 17  # the crashed rank
    assert res[0].returncode == 3, res[0].stderr[-2000:]  # the survivor: a clean error, neither a hang nor a crash
    assert "rank 0 of 2: lost contact with the other ranks" in res[0].stderr.strip().splitlines()[-1]
    assert ck.exists() and not out.exists()
    with np.load(ck) as z:
        assert int(z["iteration"]) == 3 and not bool(z["converged"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []  # no half-written files
    # resume in a single process (the rank count may change): same result as the uninterrupted run
    r = subprocess.run([sys.executable, str(WORKER), str(data), str(out), "--resume", str(ck)], env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = _load(out)
    for k in ("labels", "centers", "inertia", "n_iter", "init_centers", "hist_inertia"):
        np.testing.assert_array_equal(got[k], single[k], err_msg=k)


def test_resume_refuses_other_settings(data, tmp_path, one_thread):
    import sqdist

    ck = tmp_path / "ck.npz"
    sqdist.kmeans_stream(str(data), 6, random_state=0, max_iter=1, tol=0.0, working_memory=0.25, checkpoint=ck)
    with pytest.raises(sqdist.SqdistError, match="n_clusters"):
        sqdist.kmeans_stream(str(data), 5, random_state=0, tol=0.0, working_memory=0.25, resume=ck)
    with pytest.raises(sqdist.SqdistError, match="chunk_rows"):
        sqdist.kmeans_stream(str(data), 6, random_state=0, tol=0.0, working_memory=0.5, resume=ck)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(sqdist.SqdistError, match="not a sqdist k-means checkpoint"):
        sqdist.kmeans_stream(str(data), 6, random_state=0, tol=0.0, working_memory=0.25, resume=tmp_path / "junk.npz")
    # a foreign .npz that happens to carry a matching "format" key: a clear error, not a KeyError
    from sqdist import _checkpoint

    np.savez(tmp_path / "foreign.npz", format=np.array(_checkpoint.FORMAT), other=np.zeros(3))
    with pytest.raises(sqdist.SqdistError, match="not a valid sqdist k-means checkpoint"):
        sqdist.kmeans_stream(str(data), 6, random_state=0, tol=0.0, working_memory=0.25, resume=tmp_path / "foreign.npz")


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_torchrun_cli_gives_the_same_model_as_the_plain_cli(data, tmp_path, capsys, one_thread):
    from sqdist import cli

    common = ["kmeans", "--data", str(data), "-k", "8", "--seed", "0", "--working-memory", "0.25"]
    rc = cli.main([*common, "--save", str(tmp_path / "m1.npz"), "--labels", str(tmp_path / "l1.npy")])
    out1 = capsys.readouterr().out
    assert rc == 0
    port = str(_free_port())
    r2 = subprocess.run(
        ["torchrun", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "sqdist",
         *common, "--save", str(tmp_path / "m2.npz"), "--labels", str(tmp_path / "l2.npy")],
        env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "over 2 ranks (gloo)" in r2.stdout
    summary = lambda text: [ln for ln in text.splitlines()[1:] if "->" not in ln]  # noqa: E731
    assert summary(out1) == summary(r2.stdout) and "iterations:" in out1
    m1, m2 = _load(tmp_path / "m1.npz"), _load(tmp_path / "m2.npz")
    for k in ("cluster_centers", "labels", "init_centers", "history_centers"):
        np.testing.assert_array_equal(m1[k], m2[k], err_msg=k)
    s1, s2 = (json.loads(m["state_json"].tobytes()) for m in (m1, m2))
    for s in (s1, s2):
        for h in s["history"]:
            h.pop("time")
    assert s1 == s2
    np.testing.assert_array_equal(np.load(tmp_path / "l1.npy"), np.load(tmp_path / "l2.npy"))
    import sqdist

    km = sqdist.KMeans.load(tmp_path / "m2.npz")
    assert km.cluster_centers_.shape == (8, 3)


def test_sparse_minibatch_across_ranks(tmp_path):
    """MiniBatchKMeans on a SciPy CSR matrix under torch.distributed: each rank draws its batches from
    its own rows (kept sparse), the steps are all-reduced, so every rank ends with the same model;
    the inertia and the gathered labels are those of the final centres on all the rows."""
    sp = pytest.importorskip("scipy.sparse")
    X = sp.random(3000, 200, density=0.05, format="csr", random_state=3, dtype=np.float64)
    X.data = np.abs(X.data) + 0.1
    sp.save_npz(tmp_path / "X.npz", X)
    out = tmp_path / "mb"
    res = _run_ranks([str(tmp_path / "X.npz"), str(out), "--minibatch", "sparse", "-k", "5", "--max-iter", "10"],
                     world=2, timeout=240)
    assert [r.returncode for r in res] == [0, 0], [r.stderr[-2000:] for r in res]
    r0, r1 = (_load(Path(f"{out}.{r}.npz")) for r in (0, 1))
    for key in ("centers", "counts", "inertia", "n_steps", "labels"):
        np.testing.assert_array_equal(r0[key], r1[key])
    dense = X.toarray()
    d = ((dense[:, None, :] - r0["centers"][None].astype(np.float64)) ** 2).sum(-1)  # (N, K) float64 reference
    np.testing.assert_array_equal(r0["labels"], d.argmin(1))
    assert float(r0["inertia"]) == pytest.approx(d.min(1).sum(), rel=1e-9)
    full = sqdist.KMeans(5, random_state=0).fit(X)  # full-batch Lloyd on one process: a bound on the quality
    assert float(r0["inertia"]) <= 1.05 * full.inertia_
