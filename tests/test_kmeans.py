"""k-means: agreement with scikit-learn, empty clusters, determinism, estimator, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sqdist
from sqdist import ConvergenceWarning, KMeans, NotFittedError, SqdistError, kmeans
from sqdist._step import assign_accumulate as _assign_accumulate
from sqdist._step import assign_labels as _assign_labels
from sqdist._step import order_far
from sqdist._step import update_centers as _update_centers
from sqdist.datasets import EXERCISE_INIT_INDICES, make_blobs

sklearn_cluster = pytest.importorskip("sklearn.cluster")

SRC = Path(__file__).resolve().parents[1] / "src"


def _sk(X, init_centers, max_iter):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sklearn_cluster.KMeans(
            n_clusters=len(init_centers), init=np.asarray(init_centers), n_init=1, max_iter=max_iter, tol=0, algorithm="lloyd"
        ).fit(X)


def _datasets():
    rng = np.random.default_rng(1)
    X, _ = make_blobs()
    yield "blobs-P2", X, EXERCISE_INIT_INDICES[2]
    yield "blobs-P5", X, EXERCISE_INIT_INDICES[5]
    yield "blobs-P8", X, EXERCISE_INIT_INDICES[8]
    G = rng.normal(size=(1500, 5)) * np.array([1.0, 2.0, 0.5, 3.0, 1.0])
    yield "gauss-5d-K7", G, list(rng.choice(1500, 7, replace=False))
    A = rng.normal(size=(800, 3)) @ np.array([[2.0, 0.3, 0], [0, 0.5, 0], [0.1, 0, 1.0]]) + 1000.0
    yield "offset-aniso-K4", A, [0, 1, 2, 3]
    B, _ = make_blobs(n_blobs=6, n_per_blob=120, dim=8, std=1.5, seed=3)
    yield "blobs8d-K10", B, list(range(0, 720, 72))


DATA = list(_datasets())


@pytest.mark.parametrize("name,X,idx", DATA, ids=[d[0] for d in DATA])
@pytest.mark.parametrize("max_iter", [1, 3, 300])
def test_matches_sklearn_lloyd(name, X, idx, max_iter):
    r = kmeans(X, init=idx, max_iter=max_iter, tol=0)
    sk = _sk(X, X[idx], max_iter)
    np.testing.assert_array_equal(r.labels, sk.labels_)
    assert abs(r.inertia - sk.inertia_) <= 1e-6 * sk.inertia_
    np.testing.assert_allclose(r.centers, sk.cluster_centers_, rtol=1e-9, atol=1e-9)
    assert r.labels.dtype == np.int64 and r.centers.dtype == np.float64
    # own reference: labels are the argmin of brute-force float64 distances, inertia their sum
    d = ((X[:, None, :] - r.centers[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(r.labels, d.argmin(1))
    assert r.inertia == pytest.approx(d.min(1).sum(), rel=1e-12)
    if max_iter == 300:
        assert r.converged
        # sklearn counts the iteration that detects the fixed point, sqdist stops at it
        assert r.n_iter in (sk.n_iter_, sk.n_iter_ - 1)


def test_relocation_matches_sklearn_and_is_in_history():
    X, _ = make_blobs()
    C0 = X[EXERCISE_INIT_INDICES[5]].copy()
    C0[2] = [100.0, 100.0]  # gets no point: must move to the farthest point
    r = kmeans(X, init=C0, max_iter=300, tol=0)
    sk = _sk(X, C0, 300)
    np.testing.assert_array_equal(r.labels, sk.labels_)
    assert r.inertia == pytest.approx(sk.inertia_, rel=1e-6)
    assert r.history[1]["relocated"] == [2]
    assert np.bincount(r.labels, minlength=5).min() > 0


def test_p8_fixed_indices_on_five_blobs():
    X, _ = make_blobs()
    r = kmeans(X, init=EXERCISE_INIT_INDICES[8], max_iter=100, tol=1e-6)
    assert np.isfinite(r.centers).all()
    assert np.bincount(r.labels, minlength=8).min() > 0
    assert r.history[-1]["sizes"].tolist() == np.bincount(r.labels, minlength=8).tolist()
    # the same with three centres far away: they are relocated, never NaN or origin
    C0 = X[EXERCISE_INIT_INDICES[8]].copy()
    C0[[1, 4, 6]] = [[50.0, 50.0], [60.0, -40.0], [-70.0, 10.0]]
    r = kmeans(X, init=C0, max_iter=100, tol=0)
    assert sorted(r.history[1]["relocated"]) == [1, 4, 6]
    assert np.isfinite(r.centers).all()
    sizes = np.bincount(r.labels, minlength=8)
    assert sizes.min() > 0 and sizes.sum() == 250
    # every relocated centre landed on a data point
    reloc_centres = r.history[1]["centers"][[1, 4, 6]]
    assert all((np.abs(X - c).sum(1) == 0).any() for c in reloc_centres)
    assert (r.history[1]["sizes"] > 0).all()


def test_duplicated_points_enough_distinct():
    # rows 0 and 1 identical: two equal initial centres, cluster 1 is empty at first
    X = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [9.0, 0.0], [9.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = kmeans(X, init=np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]]), max_iter=50, tol=0)
    assert r.history[1]["relocated"] == [1]
    assert np.bincount(r.labels, minlength=3).min() > 0
    assert np.isfinite(r.centers).all()


def test_fewer_distinct_points_than_clusters_warns():
    X = np.repeat(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]]), 10, axis=0)
    with pytest.warns(ConvergenceWarning, match=r"Number of distinct clusters \(\d\) found smaller than n_clusters"):
        r = kmeans(X, 5, init="random", random_state=0, max_iter=20)
    assert np.isfinite(r.centers).all()
    assert not (np.abs(r.centers).sum(1) == 0).any()  # never the origin
    assert len(np.unique(r.labels)) == 3
    assert r.inertia == 0.0


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(5, 60),
    d=st.integers(1, 4),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**31),
    dup=st.booleans(),
)
def test_inertia_never_increases(n, d, k, seed, dup):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).round(1 if dup else 6)
    k = min(k, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = kmeans(X, k, init="random", random_state=seed, max_iter=30, tol=0)
    vals = [h["inertia"] for h in r.history]
    assert all(b <= a * (1 + 1e-12) + 1e-12 for a, b in zip(vals, vals[1:])), vals
    assert np.isfinite(r.centers).all()
    assert r.history[-1]["inertia"] == r.inertia
    np.testing.assert_array_equal(r.history[-1]["centers"], r.centers)
    if len(np.unique(X, axis=0)) >= k and r.converged:
        assert np.bincount(r.labels, minlength=k).min() > 0


def test_stopping_rule_and_history():
    X, _ = make_blobs()
    r = kmeans(X, init=EXERCISE_INIT_INDICES[8], max_iter=100, tol=0.05, tol_mode="absolute")
    shifts = [h["max_shift"] for h in r.history[1:]]
    assert r.converged and len(r.history) == r.n_iter + 1
    assert shifts[-1] < 0.05 and all(s >= 0.05 for s in shifts[:-1])
    assert [h["iteration"] for h in r.history] == list(range(r.n_iter + 1))
    for a, b in zip(r.history, r.history[1:]):
        assert b["max_shift"] == pytest.approx(np.sqrt(((a["centers"] - b["centers"]) ** 2).sum(1)).max(), rel=1e-12, abs=1e-15)
    assert all(h["time"] >= 0 and h["sizes"].sum() == 250 for h in r.history)
    r1 = kmeans(X, init=EXERCISE_INIT_INDICES[8], max_iter=2, tol=0)
    assert r1.n_iter == 2 and not r1.converged


def _combine(parts):
    """Chunk stats in row order as one: labels concatenated, sums/counts/inertia added, K farthest kept."""
    K = parts[0].sums.shape[0]
    d = torch.cat([p.far_d for p in parts])
    sel = order_far(d, torch.cat([p.far_idx for p in parts]))[:K]
    return (torch.cat([p.labels for p in parts]), sum(p.sums for p in parts), sum(p.counts for p in parts),
            sum(float(p.inertia) for p in parts), torch.cat([p.far_idx for p in parts])[sel],
            torch.cat([p.far_x for p in parts])[sel])


def test_chunked_stats_equal_whole_and_small_budget():
    rng = np.random.default_rng(5)
    X = torch.from_numpy(rng.normal(size=(1000, 3)))
    C = X[:6].clone()
    C[5] = 1e6  # an empty cluster: the farthest-point candidates are kept
    whole = _assign_accumulate(X, C, budget=2**26, backend="torch")
    parts = [_assign_accumulate(X[s : s + 300], C, budget=2**26, backend="torch", offset=s) for s in range(0, 1000, 300)]
    labels, sums, counts, inertia, far_idx, far_x = _combine(parts)
    assert torch.equal(labels, whole.labels) and torch.equal(counts, whole.counts)
    # partial sums per chunk, added in order: equal up to float64 rounding
    torch.testing.assert_close(sums, whole.sums, rtol=1e-13, atol=1e-12)
    assert torch.equal(_combine(parts)[1], sums)  # and deterministic
    assert inertia == pytest.approx(float(whole.inertia), rel=1e-14)
    assert whole.far_idx.numel() == 6 and torch.equal(far_idx, whole.far_idx) and torch.equal(far_x, whole.far_x)
    assert torch.equal(whole.far_x, X[whole.far_idx])
    C = X[:6].clone()
    whole = _assign_accumulate(X, C, budget=2**26, backend="torch")
    small = _assign_accumulate(X, C, budget=4096, backend="torch")  # many tiny chunks, one accumulator
    assert torch.equal(small.labels, whole.labels) and torch.equal(small.sums, whole.sums)
    new, reloc, counts = _update_centers(whole, C)
    np.testing.assert_allclose(new.numpy(), (whole.sums / whole.counts[:, None]).numpy())
    r_small = kmeans(X.numpy(), init=list(range(6)), max_iter=5, working_memory=0.01)
    r_big = kmeans(X.numpy(), init=list(range(6)), max_iter=5)
    np.testing.assert_array_equal(r_small.centers, r_big.centers)


def test_inits_and_seeds():
    X, _ = make_blobs()
    a = kmeans(X, 5, init="k-means++", random_state=3, max_iter=3)
    b = kmeans(X, 5, init="k-means++", random_state=torch.Generator().manual_seed(3), max_iter=3)
    assert a.init_centers.tobytes() == b.init_centers.tobytes() and a.centers.tobytes() == b.centers.tobytes()
    rows = {tuple(x) for x in X}
    assert all(tuple(c) in rows for c in a.init_centers) and len({tuple(c) for c in a.init_centers}) == 5
    r = kmeans(X, 5, init="random", random_state=1, max_iter=1)
    assert all(tuple(c) in rows for c in r.init_centers) and len({tuple(c) for c in r.init_centers}) == 5
    # k-means++ on well separated blobs picks one centre per blob
    _, y = make_blobs()
    lab = [int(y[np.flatnonzero((X == c).all(1))[0]]) for c in a.init_centers]
    assert sorted(lab) == [0, 1, 2, 3, 4]
    # restarts keep the lowest inertia among the runs drawn from the same generator
    single = [kmeans(X, 8, init="random", n_init=1, random_state=g, max_iter=50).inertia
              for g in [torch.Generator().manual_seed(7)] * 1]
    multi = kmeans(X, 8, init="random", n_init=4, random_state=7, max_iter=50)
    assert multi.inertia <= single[0]
    # global RNG untouched
    state = torch.get_rng_state()
    kmeans(X, 5, random_state=0, max_iter=2)
    assert torch.equal(state, torch.get_rng_state())
    with pytest.warns(sqdist.SqdistWarning, match="n_init"):
        kmeans(X, init=[0, 1], n_init=3, max_iter=1)
    with pytest.warns(RuntimeWarning, match="Explicit initial center position passed"):  # scikit-learn's warning
        kmeans(X, init=[0, 1], n_init=3, max_iter=1)
    # n_init="auto": one run for k-means++ and fixed inits, ten for "random" (scikit-learn's rule)
    auto = kmeans(X, 8, init="random", random_state=7, max_iter=50)
    assert auto.inertia == kmeans(X, 8, init="random", n_init=10, random_state=7, max_iter=50).inertia
    # NumPy generators seed the fit too (one draw from them), never a global RNG
    r1 = kmeans(X, 5, random_state=np.random.default_rng(0), max_iter=3)
    r2 = kmeans(X, 5, random_state=np.random.default_rng(0), max_iter=3)
    r3 = kmeans(X, 5, random_state=np.random.RandomState(0), max_iter=3)
    assert r1.init_centers.tobytes() == r2.init_centers.tobytes() and r3.init_centers.shape == (5, 2)


_DET_SCRIPT = """
import hashlib, sys, torch, numpy as np
import sqdist

def digest():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40000, 4)) * np.arange(1, 5)  # > 32768 values per reduction
    r = sqdist.kmeans(X, 8, init='k-means++', random_state=11, max_iter=4, tol=0)
    h = hashlib.sha256(r.centers.tobytes() + r.labels.tobytes() + np.float64(r.inertia).tobytes() + r.init_centers.tobytes())
    r32 = sqdist.kmeans(torch.from_numpy(X).float(), 8, init='random', random_state=11, max_iter=3, tol=0)
    h.update(r32.centers.numpy().tobytes() + r32.labels.numpy().tobytes() + np.float64(r32.inertia).tobytes())
    return h.hexdigest()

if __name__ == "__main__":
    out = []
    for t in sys.argv[1:]:
        torch.set_num_threads(int(t))
        out.append(digest())
    print(" ".join(out))
"""


def test_bit_identical_across_runs_and_threads():
    env = dict(os.environ, PYTHONPATH=str(SRC))
    o = subprocess.run([sys.executable, "-c", _DET_SCRIPT, "1", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert o.returncode == 0, o.stderr
    d1, d2 = o.stdout.split()
    ns: dict = {}
    exec(_DET_SCRIPT, ns)  # a second run, in this process, with its own thread count
    assert len(d1) == 64 and d1 == d2 == ns["digest"]()


def test_torch_in_torch_out_and_dtypes():
    X, _ = make_blobs()
    ref = kmeans(X, init=EXERCISE_INIT_INDICES[5], max_iter=10)
    Xt = torch.from_numpy(X)
    rt = kmeans(Xt, init=torch.tensor(EXERCISE_INIT_INDICES[5]), max_iter=10)
    assert isinstance(rt.centers, torch.Tensor) and isinstance(rt.labels, torch.Tensor)
    assert rt.labels.dtype == torch.int64 and rt.centers.dtype == torch.float64
    np.testing.assert_array_equal(rt.labels.numpy(), ref.labels)
    assert isinstance(rt.history[0]["centers"], torch.Tensor)
    r32 = kmeans(Xt.float(), init=EXERCISE_INIT_INDICES[5], max_iter=10)
    assert r32.centers.dtype == torch.float32
    np.testing.assert_array_equal(r32.labels.numpy(), ref.labels)
    np.testing.assert_allclose(r32.centers.numpy(), ref.centers, rtol=1e-5, atol=1e-5)
    r16 = kmeans(Xt.half(), init=EXERCISE_INIT_INDICES[5], max_iter=10)
    assert r16.centers.dtype == torch.float32  # computed and returned in float32
    np.testing.assert_array_equal(r16.labels.numpy(), ref.labels)
    np.testing.assert_allclose(r16.centers.numpy(), ref.centers, atol=5e-3)


def test_estimator_api(tmp_path):
    X, _ = make_blobs()
    km = KMeans(5, init=EXERCISE_INIT_INDICES[5], max_iter=50, tol=0)
    labels = km.fit_predict(X)
    np.testing.assert_array_equal(labels, km.labels_)
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    D = km.transform_squared(X[:7])
    np.testing.assert_allclose(D, ((X[:7, None] - km.cluster_centers_[None]) ** 2).sum(-1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(km.transform(X[:7]), np.sqrt(D), rtol=1e-15)  # Euclidean, as scikit-learn
    assert km.score(X) == pytest.approx(-km.inertia_, rel=1e-12)
    assert km.n_iter_ == len(km.history_) - 1 and km.converged_
    assert km.get_params()["n_clusters"] == 5
    assert km.set_params(max_iter=7) is km and km.max_iter == 7
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):  # scikit-learn's set_params
        km.set_params(nope=1)
    # torch prediction with numpy-fitted centres
    np.testing.assert_array_equal(km.predict(torch.from_numpy(X)).numpy(), km.labels_)
    # save / load round trip, no pickle
    path = tmp_path / "model.npz"
    km.save(path)
    with np.load(path, allow_pickle=False) as z:
        assert "cluster_centers" in z.files
    km2 = KMeans.load(path)
    assert km2.cluster_centers_.tobytes() == km.cluster_centers_.tobytes()
    np.testing.assert_array_equal(km2.labels_, km.labels_)
    assert (km2.inertia_, km2.n_iter_, km2.converged_) == (km.inertia_, km.n_iter_, km.converged_)
    assert km2.get_params()["init"].tolist() == EXERCISE_INIT_INDICES[5] and km2.max_iter == 7
    assert len(km2.history_) == len(km.history_)
    np.testing.assert_array_equal(km2.history_[-1]["centers"], km.history_[-1]["centers"])
    np.testing.assert_array_equal(km2.predict(X), km.labels_)
    kt = KMeans(3, init="k-means++", random_state=0, max_iter=5).fit(torch.from_numpy(X))
    kt.save(tmp_path / "t.npz")
    assert isinstance(KMeans.load(tmp_path / "t.npz").cluster_centers_, torch.Tensor)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(SqdistError, match="not a"):
        KMeans.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(SqdistError, match="not a valid"):
        KMeans.load(other)
    with pytest.raises(OSError):
        KMeans.load(tmp_path / "missing.npz")
    obj = tmp_path / "obj.npz"
    np.savez(obj, state_json=np.array([{"a": 1}], dtype=object))
    with pytest.raises(SqdistError):
        KMeans.load(obj)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n_clusters=0), "n_clusters"),
        (dict(n_clusters=-2), "n_clusters"),
        (dict(n_clusters=11), "at most the number of points 10"),
        (dict(init=[0, 10]), "index 10 is out of range"),
        (dict(init=[0, -1]), "index -1 is out of range"),
        (dict(init=[3, 3]), "index 3 is repeated"),
        (dict(init=[]), "empty"),
        (dict(init=np.zeros((2, 3))), r"shape \(K, 2\)"),
        (dict(init=np.zeros(2)), "init"),
        (dict(init="kmeans++", n_clusters=2), "init"),
        (dict(init=[0, 1], n_clusters=3), "2 indices given"),
        (dict(init=np.array([[0.0, np.nan]]), n_clusters=1), "NaN"),
        (dict(n_clusters=2, max_iter=0), "max_iter"),
        (dict(n_clusters=2, tol=-1.0), "tol"),
        (dict(n_clusters=2, n_init=0), "n_init"),
        (dict(n_clusters=2, random_state="x"), "random_state"),
        # a fixed init draws nothing and builds no generator, but random_state is still checked
        (dict(init=[0, 1], random_state="x"), "random_state: expected None, an integer"),
        (dict(init=np.zeros((2, 2)), random_state=-1), "random_state: expected None, an integer"),
        (dict(init=[0, 1], random_state=2**63), "random_state"),
        (dict(init=[0, 1], random_state=True), "random_state"),
        (dict(init=[0, 1], random_state=1.5), "random_state"),
        (dict(n_clusters=2, backend="cuda"), "backend"),
        (dict(), "n_clusters: required"),
    ],
)
def test_bad_arguments(kwargs, match):
    X = np.arange(20.0).reshape(10, 2)
    n = kwargs.pop("n_clusters", None)
    with pytest.raises(SqdistError, match=match):
        kmeans(X, n, **kwargs)


def test_bad_data_and_predict():
    X = np.arange(20.0).reshape(10, 2)
    X[6, 1] = np.nan
    X[8, 0] = np.inf
    with pytest.raises(SqdistError, match="row 6"):
        kmeans(X, 2)
    with pytest.raises(SqdistError, match="X"):
        kmeans(np.zeros((0, 2)), 1)
    with pytest.raises(SqdistError, match="X"):
        kmeans(np.zeros(5), 1)
    km = KMeans(2, init=[0, 5])
    with pytest.raises(NotFittedError, match="not fitted"):
        km.predict(np.zeros((3, 2)))
    with pytest.raises(SqdistError, match="not fitted"):  # sqdist.NotFittedError is both
        km.transform(np.zeros((3, 2)))
    with pytest.raises(SqdistError, match="not fitted"):
        km.save("never-written.npz")
    assert not os.path.exists("never-written.npz")
    km.fit(np.arange(20.0).reshape(10, 2))
    with pytest.raises(ValueError, match="X has 3 features, but KMeans is expecting 2 features"):
        km.predict(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        km.transform(np.array([[0.0, 0.0], [np.nan, 1.0]]))
    with pytest.raises(SqdistError, match="X has 3 features"):  # tensors: the same words, sqdist's error
        km.predict(torch.zeros((3, 3)))


# ---------------------------------------------------------------- CLI


def test_cli_default_blobs_with_outputs(run_cli, tmp_path):
    r = run_cli("kmeans", "--plot", "k.png", "--save", "m.npz", "--labels", "l.npy", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "iterations: 2 (converged)" in r.stdout  # the exercise's count: the pass that finds nothing moves
    assert "cluster sizes: 50 50 50 50 50" in r.stdout
    png = (tmp_path / "k.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    img = mpimg.imread(tmp_path / "k.png")
    assert img.shape[0] > 300 and img.shape[1] > 300
    labels = np.load(tmp_path / "l.npy")
    X, y = make_blobs()
    np.testing.assert_array_equal(labels, y)  # one centre per blob finds the blobs
    km = KMeans.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(km.labels_, labels)
    assert sorted(os.listdir(tmp_path)) == ["k.png", "l.npy", "m.npz"]
    # the centres are printed, one line each, as the saved model holds them (6 significant digits)
    lines = r.stdout.split("centres:\n")[1].splitlines()[:5]
    printed = np.array([[float(v) for v in ln.split(":")[1].split()] for ln in lines])
    np.testing.assert_allclose(printed, km.cluster_centers_, rtol=1e-5)


def test_cli_data_files_and_options(tmp_path, capsys):
    from sqdist import cli

    X, _ = make_blobs()
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "h.csv", X, delimiter=",", header="a,b", comments="")
    np.savetxt(tmp_path / "n.csv", X, delimiter=",")
    outs = []
    for f in ("x.npy", "h.csv", "n.csv"):
        rc = cli.main(
            ["kmeans", "--data", str(tmp_path / f), "-k", "3", "--init", "k-means++", "--seed", "4", "--max-iter", "20"]
        )
        out = capsys.readouterr().out
        assert rc == 0
        outs.append(out.split("\n", 1)[1])
    assert outs[0] == outs[1] == outs[2] and "K=3" in outs[0]
    ref = kmeans(X, init=[0, 50, 100], max_iter=3, tol=0)
    rc = cli.main(["kmeans", "--init", "0,50,100", "--tol", "0", "--max-iter", "3", "--labels", str(tmp_path / "l.npy")])
    out = capsys.readouterr().out
    assert rc == 0 and "K=3" in out and f"iterations: {ref.n_iter} (" in out and f"inertia: {ref.inertia:.10g}" in out
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), ref.labels)


@pytest.mark.parametrize(
    "args,match",
    [
        (["--data", "missing.npy"], "No such file"),
        (["--data", "bad.csv"], "line 2"),
        (["--data", "bad.npy"], "not a valid .npy"),
        (["--data", "x.txtx"], "expected a .npy or .csv"),
        (["--init", "0,a"], "--init"),
        (["--init", "0,0"], "repeated"),
        (["-k", "0"], "n_clusters"),
        (["-k", "300"], "at most"),
        (["--max-iter", "0"], "max_iter"),
        (["--tol", "-1"], "tol"),
        (["--data", "nan.csv"], "row 1"),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, monkeypatch, capsys, args, match):
    from sqdist import cli

    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    (tmp_path / "nan.csv").write_text("1,2\nnan,3\n")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    (tmp_path / "x.txtx").write_text("1,2\n")
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["kmeans", *args, "--plot", "p.png", "--labels", "l.npy"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0]
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "l.npy").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_ties_far_from_origin_go_to_lowest_index(dtype):
    # points exactly halfway between two centres, 1e4 away from the origin: the
    # product's rounding would pick either; the exact distances tie -> lowest index
    off = 1e4
    C = torch.tensor([[off + 0.0], [off + 2.0], [off + 4.0], [off + 6.0]], dtype=dtype)
    X = torch.tensor([[off + 1.0], [off + 3.0], [off + 5.0], [off + 2.0], [off + 5.9]], dtype=dtype)
    st = _assign_accumulate(X, C, budget=2**20, backend="torch")
    assert st.labels.tolist() == [0, 1, 2, 1, 3]
    assert st.mind.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0, 0.01], abs=1e-3)
    rng = np.random.default_rng(0)
    Y = torch.from_numpy(off + rng.normal(size=(3000, 3))).to(dtype)
    Cs = Y[:9].clone()
    st = _assign_accumulate(Y, Cs, budget=2**20, backend="torch")
    exact = ((Y.double()[:, None] - Cs.double()[None]) ** 2).sum(-1)
    ok = exact.gather(1, st.labels[:, None])[:, 0] <= exact.min(1).values * (1 + 1e-4) + 1e-4
    assert bool(ok.all())


def test_dispatch_to_optional_kernels(monkeypatch):
    import types

    from sqdist import _engine, _step
    from sqdist._step import _assign_torch

    calls = []

    def fake(X, C, **kw):
        calls.append(kw)
        return _assign_torch(X, C, 2**20)

    cpu = types.ModuleType("sqdist._cpu_kernels")
    cpu.available = lambda: True
    cpu.supports = lambda X, C: X.dtype == torch.float64
    cpu.update_assign_step = lambda X, C: None
    cpu.assign_accumulate = fake
    monkeypatch.setattr(_step, "_cpu_kernels", cpu)
    monkeypatch.setattr(_engine, "_cpu_kernels", cpu)
    X = torch.from_numpy(make_blobs()[0])
    ref = kmeans(X, init=EXERCISE_INIT_INDICES[5], max_iter=3)
    # one assignment per computed iteration plus the initial one (the pass that finds a
    # fixed point is counted in n_iter but not recomputed)
    assigned = ref.n_iter + 1 - (ref.stopped == "fixed point")
    assert len(calls) == assigned
    kmeans(X.float(), init=EXERCISE_INIT_INDICES[5], max_iter=3)
    assert len(calls) == assigned  # supports() said no: torch path
    tri = types.ModuleType("sqdist._triton")

    def fake_triton(X, C, *, precision="ieee", _tiny=None):  # the real signature
        calls.append({"precision": precision})
        return _assign_torch(X, C, 2**20)

    tri.assign_accumulate_triton = fake_triton
    monkeypatch.setattr(_step, "triton_kernels", lambda: tri)
    st = _assign_accumulate(X, X[:5].clone(), budget=2**20, backend="triton")
    assert calls[-1] == {"precision": "ieee"} and st.labels.shape == (250,)


def _same_result(a, b):
    assert (a.n_iter, a.converged, a.inertia) == (b.n_iter, b.converged, b.inertia)
    assert np.array_equal(np.asarray(a.centers), np.asarray(b.centers))
    assert np.array_equal(np.asarray(a.labels), np.asarray(b.labels))
    assert len(a.history) == len(b.history)
    for h, g in zip(a.history, b.history):
        assert {k: v for k, v in h.items() if k not in ("time", "centers", "sizes")} == {
            k: v for k, v in g.items() if k not in ("time", "centers", "sizes")
        }
        assert np.array_equal(np.asarray(h["centers"]), np.asarray(g["centers"]))
        assert np.array_equal(np.asarray(h["sizes"]), np.asarray(g["sizes"]))


def test_predict_labels_are_the_assignment_labels():
    """predict's labels-only pass gives the labels of the full assignment (sums and all) bit for
    bit: direct-formula shapes (exact ties to the lowest index included) and product shapes."""
    rng = np.random.default_rng(9)
    for trial in range(40):
        n, D, K = int(rng.integers(70, 3000)), int(rng.integers(1, 40)), int(rng.integers(1, 70))
        X = np.round(rng.normal(size=(n, D)), 1).astype([np.float32, np.float64][trial % 2])
        C = np.round(rng.normal(size=(K, D)), 1).astype(X.dtype)
        if trial % 3 == 0 and K > 1:
            C[-1] = C[0]  # duplicated centres: exact ties
            X[: n // 2] = C[rng.integers(0, K, n // 2)]
        Xt, Ct = torch.from_numpy(X), torch.from_numpy(C)
        want = _assign_accumulate(Xt, Ct, budget=2**26, backend="torch").labels
        assert torch.equal(_assign_labels(Xt, Ct, budget=2**26, backend="torch"), want), trial
        m = KMeans(K, init=C, n_init=1, max_iter=1).fit(X)
        assert np.array_equal(m.predict(X), _assign_accumulate(Xt, torch.as_tensor(m.cluster_centers_),
                                                             budget=2**26, backend="torch").labels.numpy())


def test_callable_init_is_called_once_per_run_as_scikit_learn_does():
    """A callable init runs n_init times ("auto": 10, scikit-learn's rule), each call with
    ``random_state=`` a fresh RandomState seeded from the fit's random_state; the best run wins."""
    X, _ = make_blobs(seed=4)
    seen = []

    def init(X_, k, random_state):
        assert isinstance(random_state, np.random.RandomState) and X_ is X and k == 5
        seen.append(int(random_state.get_state()[1][0]))  # its seed (MT19937's first state word)
        return X_[random_state.choice(len(X_), k, replace=False)]

    r = kmeans(X, 5, init=init, random_state=0)
    assert len(seen) == 10 and len(set(seen)) == 10  # ten runs, ten different seeds
    assert np.random.RandomState(seen[0]).get_state()[1][0] == seen[0]
    first = list(seen)
    seen.clear()
    r2 = kmeans(X, 5, init=init, random_state=0)
    assert seen == first and r2.inertia == r.inertia  # the same seeds again
    seen.clear()
    r3 = kmeans(X, 5, init=init, n_init=3, random_state=0)
    assert len(seen) == 3 and r3.inertia >= r.inertia  # the best of 3 is no better than the best of 10
    # the result is the best of the runs: each run's centres given as a fixed init
    each = [kmeans(X, init=X[np.random.RandomState(s).choice(len(X), 5, replace=False)]).inertia for s in first]
    assert r.inertia == min(each)
    est = KMeans(5, init=init, random_state=0).fit(X)
    assert est.inertia_ == r.inertia
    with pytest.raises(SqdistError, match="the callable returned"):
        kmeans(X, 5, init=lambda X_, k, random_state: X_[0], n_init=1)
    with pytest.raises(SqdistError, match=r"init: expected centres of shape \(K, 2\)"):
        kmeans(X, 5, init=lambda X_, k, random_state: np.zeros((5, 3)), n_init=1)
    with pytest.raises(SqdistError, match="n_clusters"):
        kmeans(X, init=init)
    with pytest.raises(SqdistError, match="init: expected row indices or a"):
        kmeans(X, 5, init=lambda X_, k, random_state: np.array([["a", "b"]] * 5), n_init=1)
    # sparse centres are densified, as scikit-learn does (the same helper as MiniBatchKMeans's)
    scipy_sparse = pytest.importorskip("scipy.sparse")
    dense = kmeans(X, init=X[:5].copy())
    _same_result(kmeans(X, 5, init=lambda X_, k, random_state: scipy_sparse.csr_matrix(X_[:k]), n_init=1), dense)


def test_compiled_small_step_labels_belong_to_the_best_run():
    """With several runs, the fused step's labels (each run's own buffer) are the best run's, not
    the last run's: a callable init gives the first run good centres and the second bad ones."""
    ck = pytest.importorskip("sqdist._cpu_kernels")
    if not ck.available():  # no compiled kernels (or SQDIST_CPU_KERNELS=torch): no fused step to test
        pytest.skip("needs the compiled kernels")
    X, _ = make_blobs(n_per_blob=30, seed=3)  # 5 blobs, rows blob by blob
    good, bad = X[[0, 30, 60, 90]], X[[0, 1, 2, 3]]
    assert ck.update_assign_step(torch.from_numpy(X), torch.from_numpy(good)) is not None
    for Xin in (X, torch.from_numpy(X)):
        first, second = kmeans(Xin, init=good.copy(), tol=0.0), kmeans(Xin, init=bad.copy(), tol=0.0)
        assert first.inertia < second.inertia
        inits = iter([good, bad])
        both = kmeans(Xin, 4, init=lambda X_, k, random_state: next(inits).copy(), n_init=2, tol=0.0)
        _same_result(both, first)
        d = ((X[:, None, :] - np.asarray(both.centers, dtype=np.float64)[None]) ** 2).sum(-1)
        assert np.array_equal(np.asarray(both.labels), d.argmin(1))
        assert type(both.labels) is type(both.centers) is (np.ndarray if Xin is X else torch.Tensor)


def test_compiled_small_step_equals_separate_steps_bit_for_bit(monkeypatch):
    """The one-call iteration for tiny problems (_cpu_kernels.update_assign) gives
    the same bits, histories, stopping iteration and relocations as the separate
    update, shift and assignment steps."""
    ck = pytest.importorskip("sqdist._cpu_kernels")
    if not ck.available():
        pytest.skip("numba not installed")
    rng = np.random.default_rng(7)
    relocations = 0
    for trial in range(40):
        n = int(rng.integers(5, 300))
        D = int(rng.integers(1, 5))
        K = int(rng.integers(1, min(n, 10) + 1))
        X = (rng.normal(size=(n, D)) * rng.choice([1.0, 1e3])).astype([np.float32, np.float64][trial % 2])
        if trial % 3 == 0:
            X = np.round(X)  # exact ties between centres
        if trial % 5 == 0:
            X[: n // 2] = X[0]  # duplicates: empty clusters, relocations
        kw = dict(n_clusters=K, init=["random", "k-means++"][trial % 2], random_state=trial, n_init=1,
                  max_iter=int(rng.integers(1, 40)), tol=[0.0, 1e-4, 1e-2][trial % 3])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            assert ck.update_assign_step(torch.from_numpy(X), torch.from_numpy(X[:K])) is not None
            Xin = torch.from_numpy(X) if trial % 4 == 1 else X  # tensor input: tensors in the history too
            fast = kmeans(Xin, **kw)
            monkeypatch.setattr(ck, "update_assign_step", lambda X, C: None)
            general = kmeans(Xin, **kw)
            monkeypatch.undo()
        _same_result(fast, general)
        kind = torch.Tensor if trial % 4 == 1 else np.ndarray
        assert all(isinstance(h["centers"], kind) for h in fast.history) and isinstance(fast.centers, kind)
        # every history entry owns its centres (the result's centres are not a view of one)
        assert all(not np.shares_memory(np.asarray(h["centers"]), np.asarray(fast.centers)) for h in fast.history)
        relocations += sum(len(h["relocated"]) for h in fast.history) > 0
    assert relocations >= 3  # the empty-cluster hand-over was exercised


@pytest.mark.parametrize("data_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("init_kind", ["numpy64", "numpy32", "list", "tensor64", "tensor16", "bfloat16", "strided"])
def test_explicit_centres_round_as_tensor_to_and_never_alias(data_dtype, init_kind):
    """Explicit centres become the fit's initial centres as ``Tensor.to`` rounds them (the CPU path
    converts through NumPy), whatever their kind; the fit never writes into, or returns, the caller's array."""
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(40, 3, generator=gen, dtype=torch.float64).to(data_dtype)
    C64 = torch.randn(8, 3, generator=gen, dtype=torch.float64) * 1.000000123  # not exact in float32
    init = {"numpy64": C64.numpy().copy(), "numpy32": C64.float().numpy(), "list": C64.tolist(),
            "tensor64": C64.clone(), "tensor16": C64.half(), "bfloat16": C64.bfloat16(),
            "strided": torch.cat([C64, C64], 1)[:, ::2]}[init_kind][:4]
    before = init.copy() if isinstance(init, (np.ndarray, list)) else init.clone()
    r = kmeans(X, init=init, max_iter=3, tol=0.0)
    ref = (torch.as_tensor(np.asarray(init, dtype=np.float64)) if isinstance(init, (np.ndarray, list)) else init)
    assert r.init_centers.dtype == data_dtype
    assert torch.equal(r.init_centers, ref.to(data_dtype))
    assert torch.equal(r.history[0].centers, ref.to(data_dtype))
    if isinstance(init, torch.Tensor):
        assert torch.equal(init, before) and r.init_centers.data_ptr() != init.data_ptr()
    elif isinstance(init, np.ndarray):
        assert np.array_equal(init, before) and not np.shares_memory(r.init_centers.numpy(), init)


def test_fixed_init_draws_nothing_from_any_random_state():
    """Fixed indices and centres use no randomness: every valid random_state gives the same bits,
    and a NumPy generator handed in is not advanced (a name draws from it, as before)."""
    X = make_blobs(seed=3)[0]
    ref = kmeans(X, init=EXERCISE_INIT_INDICES[5], max_iter=20, tol=0.0)
    for rs in (None, 0, 2**63 - 1, torch.Generator().manual_seed(5), np.random.RandomState(1)):
        r = kmeans(X, init=EXERCISE_INIT_INDICES[5], max_iter=20, tol=0.0, random_state=rs)
        assert r.centers.tobytes() == ref.centers.tobytes() and r.labels.tobytes() == ref.labels.tobytes()
    g, fresh = np.random.default_rng(4), np.random.default_rng(4).bit_generator.state
    kmeans(X, init=X[:5].copy(), max_iter=3, random_state=g)
    assert g.bit_generator.state == fresh  # not advanced
    kmeans(X, 5, init="random", max_iter=3, random_state=g)
    assert g.bit_generator.state != fresh  # "random" drew its seed from it
