"""Out-of-core data: .npy paths, memory maps and re-iterable chunks give the in-memory results;
bad streamed input is named; peak resident memory stays bounded by the budget, not the file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import sqdist
from sqdist import SqdistError

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(c, 3.0, size=(700, 4)) for c in range(0, 50, 10)]).astype(np.float32)
    rng.shuffle(X)
    folder = tmp_path_factory.mktemp("stream")
    np.save(folder / "X.npy", X)
    return X, folder / "X.npy"


class Reiterable:
    """A custom re-iterable: every iter() reads the blocks again (like a file-backed loader)."""

    def __init__(self, X, step):
        self.X, self.step, self.passes = X, step, 0

    def __iter__(self):
        self.passes += 1
        return (self.X[i : i + self.step] for i in range(0, len(self.X), self.step))


@pytest.mark.parametrize("init", [[0, 10, 20, 30, 40, 50, 60], "k-means++", "random"])
def test_every_source_gives_the_in_memory_result(blobs, init, one_thread):
    X, path = blobs
    ref = sqdist.kmeans(X, 7, init=init, random_state=5, tol=0.0, max_iter=40)
    sources = {
        "path": str(path),
        "pathlib": path,
        "memmap": np.load(path, mmap_mode="r"),
        "list": [X[i : i + 333] for i in range(0, len(X), 333)],
        "reiterable": Reiterable(X, 1000),
        "torch chunks": [torch.from_numpy(X[i : i + 900]) for i in range(0, len(X), 900)],
    }
    for name, src in sources.items():
        r = sqdist.kmeans(src, 7, init=init, random_state=5, tol=0.0, max_iter=40, working_memory=0.2)
        centers = r.centers.numpy() if isinstance(r.centers, torch.Tensor) else r.centers
        np.testing.assert_array_equal(np.asarray(r.init_centers), ref.init_centers, err_msg=name)
        np.testing.assert_array_max_ulp(centers, ref.centers, maxulp=1)
        assert r.n_iter == ref.n_iter and r.converged == ref.converged, name
        assert r.inertia == pytest.approx(ref.inertia, rel=1e-12), name
        if name == "memmap":  # a memory map is data in memory: labels kept
            np.testing.assert_array_equal(r.labels, ref.labels)
        else:
            assert r.labels is None, name  # out-of-core: labels only through labels_out
    # labels through a file, written atomically, equal to the in-memory labels
    r = sqdist.kmeans_stream(str(path), 7, init=init, random_state=5, tol=0.0, max_iter=40, working_memory=0.05,
                             labels_out=path.parent / "lab.npy")
    np.testing.assert_array_equal(np.asarray(r.labels), ref.labels)
    assert not [p for p in os.listdir(path.parent) if p.endswith(".partial")]


def test_one_pass_per_iteration(blobs, one_thread):
    X, _ = blobs
    src = Reiterable(X, 500)
    r = sqdist.kmeans(src, 5, init=[0, 1, 2, 3, 4], tol=0.0, max_iter=6, working_memory=0.05)
    # probe of chunk 0 + 1 validation scan + 1 to pick the init rows + (1 + n_iter) assignment passes
    assert r.n_iter == 6 and src.passes == 1 + 1 + 1 + (1 + r.n_iter)


def test_nearest_streams_paths_memmaps_and_chunks(blobs, one_thread):
    X, path = blobs
    T = X[:9].astype(np.float64) + 0.5
    d0, i0 = sqdist.nearest(X, T, k=2)
    for src in (str(path), np.load(path, mmap_mode="r"), [X[:1000], X[1000:]]):
        d, i = sqdist.nearest(src, T, k=2, working_memory=0.05)
        np.testing.assert_array_equal(i, i0)
        np.testing.assert_array_equal(d, d0)


def test_odd_files_fortran_order_and_integers(tmp_path, one_thread):
    rng = np.random.default_rng(0)
    Xi = rng.integers(-50, 50, size=(400, 3))
    np.save(tmp_path / "i.npy", Xi)
    np.save(tmp_path / "f.npy", np.asfortranarray(Xi.astype(np.float64)))
    ref = sqdist.kmeans(Xi.astype(np.float64), 4, init=[0, 1, 2, 3], tol=0.0)
    for f in ("i.npy", "f.npy"):
        r = sqdist.kmeans(str(tmp_path / f), 4, init=[0, 1, 2, 3], tol=0.0, working_memory=0.01)
        np.testing.assert_array_max_ulp(r.centers, ref.centers, maxulp=1)
        assert r.centers.dtype == np.float64 and r.n_iter == ref.n_iter


def test_bad_streamed_input_is_named(tmp_path, one_thread):
    X = np.zeros((300, 2), np.float32)
    X[:, 0] = np.arange(300)
    X[217, 1] = np.nan
    np.save(tmp_path / "nan.npy", X)
    with pytest.raises(SqdistError, match="row 217"):
        sqdist.kmeans(str(tmp_path / "nan.npy"), 2, working_memory=0.01)
    with pytest.raises(SqdistError, match="one-shot iterator"):
        sqdist.kmeans((c for c in [X[:10]]), 2)
    with pytest.raises(SqdistError, match="chunk 1"):
        sqdist.kmeans([np.ones((5, 2)), np.ones((5, 3))], 2)
    np.save(tmp_path / "three.npy", np.zeros((2, 2, 2)))
    with pytest.raises(SqdistError, match=r"2-D"):
        sqdist.kmeans(str(tmp_path / "three.npy"), 2)
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(SqdistError, match="not a valid .npy"):
        sqdist.kmeans(str(tmp_path / "junk.npy"), 2)
    with pytest.raises(FileNotFoundError):
        sqdist.kmeans(str(tmp_path / "missing.npy"), 2)
    with pytest.raises(SqdistError, match="n_clusters"):
        sqdist.kmeans(str(tmp_path / "i.npy") if False else [X[:3, :1]], 5)
    with pytest.raises(SqdistError, match="index 400 is out of range"):
        sqdist.kmeans([X[:200, :1], X[200:, :1]], init=[0, 400])


def test_fixed_point_sums_are_order_independent_and_accurate():
    from sqdist._shard import grid_exponents as _grid_exponents
    from sqdist._shard import quantise as _quantise

    rng = np.random.default_rng(1)
    parts = torch.from_numpy(rng.normal(1e3, 1.0, size=(64, 5, 3)) * rng.choice([1e-3, 1.0, 1e3], size=(1, 1, 3)))
    N = 64 * 100
    e = _grid_exponents(N, parts.abs().amax(dim=(0, 1)) * 100)
    scale = torch.ldexp(torch.ones(3, dtype=torch.float64), (-e).double())
    q = [_quantise(p, scale) for p in parts]
    fwd, bwd = sum(q), sum(reversed(q))
    assert torch.equal(fwd, bwd)  # integers: any order, same bits
    total = fwd.double() * torch.ldexp(torch.ones(3, dtype=torch.float64), e.double())
    exact = parts.sum(0)
    assert torch.allclose(total, exact, rtol=1e-12, atol=0)


PEAK_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, torch
    torch.set_num_threads(1)
    import sqdist

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    sqdist.kmeans(np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32), 4, max_iter=2)  # warm up
    base = hwm()
    r = sqdist.kmeans_stream(sys.argv[1], 4, random_state=0, max_iter=2, working_memory=8)  # 96 MB file, 8 MiB budget
    print(base, hwm(), r.n_iter)
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_peak_memory_is_bounded_by_the_budget_not_the_file(tmp_path):
    N, D = 1_500_000, 16  # 96 MB of float32
    X = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(N, D))
    rng = np.random.default_rng(0)
    for a in range(0, N, 250_000):
        X[a : a + 250_000] = rng.random((250_000, D), dtype=np.float32)
    X.flush()
    del X
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "big.npy")], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    base, peak, n_iter = map(int, r.stdout.split())
    assert n_iter == 2
    growth = peak - base
    file_bytes = N * D * 4
    assert growth < 48 * 2**20, f"peak RSS grew by {growth / 2**20:.1f} MiB on a {file_bytes / 2**20:.0f} MiB file"


def test_estimator_on_a_file_saves_loads_and_takes_a_device(blobs, tmp_path, one_thread):
    """KMeans.fit on a .npy path: the device is applied per chunk, the model
    saves and loads although an out-of-core fit keeps no labels, and the
    history's shifts are those of the in-memory fit (same stopping rule)."""
    X, path = blobs
    km = sqdist.KMeans(5, init=[0, 700, 1400, 2100, 2800], tol=0.0, max_iter=15, device="cpu").fit(str(path))
    ref = sqdist.kmeans(X, 5, init=[0, 700, 1400, 2100, 2800], tol=0.0, max_iter=15)
    assert km.labels_ is None and km.n_iter_ == ref.n_iter
    assert [h["max_shift"] for h in km.history_] == [h["max_shift"] for h in ref.history]
    km.save(tmp_path / "m.npz")
    back = sqdist.KMeans.load(tmp_path / "m.npz")
    assert back.labels_ is None
    np.testing.assert_array_equal(np.asarray(back.cluster_centers_), np.asarray(km.cluster_centers_))
    np.testing.assert_array_equal(back.predict(X), ref.labels)


def test_fixed_init_with_n_init_warns_like_in_memory(blobs, tmp_path):
    """A fixed init with n_init > 1 runs once with the same SqdistWarning as the
    in-memory kmeans (the streamed path used to drop n_init silently), and a
    checkpoint is then allowed (n_init is 1)."""
    X, path = blobs
    init = [0, 700, 1400]
    with pytest.warns(sqdist.SqdistWarning, match="only one init instead of n_init=3"):
        r = sqdist.kmeans_stream(str(path), init=init, n_init=3, max_iter=5, checkpoint=tmp_path / "c.npz")
    with pytest.warns(sqdist.SqdistWarning, match="only one init instead of n_init=3"):
        ref = sqdist.kmeans(X, init=init, n_init=3, max_iter=5)
    assert r.n_iter == ref.n_iter and r.inertia == pytest.approx(ref.inertia, rel=1e-12)
