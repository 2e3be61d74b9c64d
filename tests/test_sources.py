"""Data sources beyond arrays and .npy files: torch DataLoaders and other re-iterables of batches
(tensors, arrays, (x, y) tuples), Parquet and Arrow IPC (Feather) files through pyarrow.

Each source is checked against the same rows given as an array (bit for bit where the chunk grid
is the same), under torch.distributed too; bad inputs are named; a full pass over a file keeps the
resident set far below the file's size."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

import sqdist
from sqdist import SqdistError
from sqdist._sources import IterSource, as_source, chunk_rows

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
feather = pytest.importorskip("pyarrow.feather")

SRC = Path(__file__).resolve().parents[1] / "src"
WM = 0.3  # MiB: chunks of R rows below, so every file and loader spans several chunks
K, D = 5, 4


@pytest.fixture(scope="module")
def blobs():
    """Five overlapping float64 blobs (several Lloyd iterations), 4,321 rows: not a multiple of anything."""
    rng = np.random.default_rng(11)
    X = np.concatenate([rng.normal(c, 3.0, size=(900, D)) for c in range(0, 50, 10)])[:4321]
    rng.shuffle(X)
    return X


def _R(X) -> int:
    return chunk_rows(int(WM * 2**20), K, X.shape[1], 8)


def _same_fit(r, ref):
    """Bit-identical results: centres, initial centres, inertia, iterations, history."""
    np.testing.assert_array_equal(np.asarray(r.centers), np.asarray(ref.centers))
    np.testing.assert_array_equal(np.asarray(r.init_centers), np.asarray(ref.init_centers))
    assert r.inertia == ref.inertia and r.n_iter == ref.n_iter and r.converged == ref.converged
    assert [h["inertia"] for h in r.history] == [h["inertia"] for h in ref.history]


FIT = dict(n_clusters=K, random_state=4, tol=0.0, max_iter=50, working_memory=WM)


# -- DataLoaders and re-iterables ---------------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["k-means++", "random", [0, 900, 1800, 2700, 3600]])
def test_dataloader_is_bit_identical_to_the_array(blobs, init, one_thread):
    X = torch.from_numpy(blobs)
    assert _R(blobs) < len(blobs) and _R(blobs) % 333 != 0  # batches straddle the chunks
    ref = sqdist.kmeans_stream(X, **{**FIT, "init": init})
    assert ref.n_iter >= 3
    loaders = {
        "tensors": DataLoader(TensorDataset(X), batch_size=333, collate_fn=lambda b: torch.stack([r[0] for r in b])),
        "(x, y) tuples": DataLoader(TensorDataset(X, torch.arange(len(X))), batch_size=333),
        "workers": DataLoader(TensorDataset(X), batch_size=1000, num_workers=1),  # [x] lists from 1 worker
    }
    for name, loader in loaders.items():
        r = sqdist.kmeans_stream(loader, **{**FIT, "init": init})
        assert isinstance(r.centers, torch.Tensor), name  # torch in, torch out
        _same_fit(r, ref)


def test_estimator_fits_a_dataloader(blobs, one_thread):
    X = torch.from_numpy(blobs)
    loader = DataLoader(TensorDataset(X, torch.zeros(len(X))), batch_size=500)
    km = sqdist.KMeans(K, random_state=0, tol=0.0, working_memory=WM).fit(loader)
    ref = sqdist.KMeans(K, random_state=0, tol=0.0, working_memory=WM).fit(X)  # in memory: not chunk-quantised
    assert km.labels_ is None and km.n_features_in_ == D
    np.testing.assert_allclose(km.cluster_centers_.numpy(), ref.cluster_centers_.numpy(), rtol=1e-12)
    assert km.n_iter_ == ref.n_iter_
    np.testing.assert_array_equal(km.predict(X).numpy(), ref.labels_.numpy())


def test_numpy_tuples_and_lists_take_x_and_give_numpy(blobs, one_thread):
    y = np.arange(len(blobs))
    ref = sqdist.kmeans_stream(blobs, **FIT)
    tuples = [(blobs[a : a + 700], y[a : a + 700]) for a in range(0, len(blobs), 700)]
    lists = [[blobs[a : a + 1234], "meta"] for a in range(0, len(blobs), 1234)]
    for src in (tuples, lists):
        assert sqdist.is_out_of_core(src)
        r = sqdist.kmeans(src, **FIT)  # sqdist.kmeans streams them too
        assert isinstance(r.centers, np.ndarray)
        _same_fit(r, ref)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 70), min_size=1, max_size=12), rows=st.integers(1, 50))
def test_batches_are_cut_and_joined_into_whole_chunks(sizes, rows):
    """Any batch sizes (empty ones too): chunks of exactly ``rows`` rows but the last, the rows in order."""
    if sum(sizes) == 0:
        sizes = sizes + [1]
    X = torch.arange(sum(sizes) * 2, dtype=torch.float64).reshape(-1, 2)
    cuts = np.cumsum([0] + sizes)
    batches = [(X[a:b], torch.zeros(b - a)) for a, b in zip(cuts[:-1], cuts[1:])]
    if batches[0][0].shape[0] == 0:  # chunk 0 fixes D: give the source a non-empty first batch
        batches.insert(0, (X[:0] + 0, None))
        batches = [b for b in batches if b[0].shape[0]] or [(X, None)]
    pieces = list(IterSource(batches, "X").pieces(rows))
    assert all(p.shape[0] == rows for p in pieces[:-1]) and 0 < pieces[-1].shape[0] <= rows
    assert torch.equal(torch.cat(pieces), X)


def test_shuffling_loader_equals_up_to_summation_order(blobs, tmp_path, one_thread):
    """shuffle=True: another order every pass.  From the same initial centres the fit agrees to ~1e-12
    (sums in another order), a sampled init depends on the loader's shuffling, labels are refused."""
    X = torch.from_numpy(blobs)
    ref = sqdist.kmeans_stream(X, **FIT)
    loader = DataLoader(TensorDataset(X), batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert as_source(loader).reorders and not as_source(DataLoader(TensorDataset(X))).reorders
    r = sqdist.kmeans_stream(loader, **{**FIT, "init": ref.init_centers, "max_iter": ref.n_iter})
    np.testing.assert_allclose(r.centers.numpy(), ref.centers.numpy(), rtol=1e-12, atol=1e-12 * 50)
    assert r.inertia == pytest.approx(ref.inertia, rel=1e-12)
    with pytest.raises(SqdistError, match="labels_out: the DataLoader draws a new order"):
        sqdist.kmeans_stream(loader, K, labels_out=tmp_path / "labels.npy")


def test_bad_batches_are_named(blobs):
    X = torch.from_numpy(blobs)
    with pytest.raises(SqdistError, match="X: got a one-shot iterator"):
        sqdist.kmeans_stream((b for b in [blobs[:10]]), 2)
    with pytest.raises(SqdistError, match="X: got a one-shot iterator"):
        sqdist.KMeans(2).fit(iter(DataLoader(TensorDataset(X), batch_size=10)))
    with pytest.raises(SqdistError, match=r"chunk 0 is a dict \(keys 'x', 'y'\)"):
        sqdist.kmeans_stream(DataLoader([{"x": r, "y": 0} for r in X[:20]], batch_size=5), 2)
    with pytest.raises(SqdistError, match=r"chunk 0 as tensor of shape \(4,\).*give it a batch_size"):
        sqdist.kmeans_stream(DataLoader(TensorDataset(X[:20]), batch_size=None), 2)
    with pytest.raises(SqdistError, match=r"shape \(n_i, 4\).*got chunk 2 as tensor of shape \(5, 3\)"):
        sqdist.kmeans_stream([X[:5], X[5:10], X[10:15, :3]], 2)
    with pytest.raises(SqdistError, match="X: the iterable of chunks is empty"):
        sqdist.kmeans_stream(DataLoader(TensorDataset(X[:0]), batch_size=4), 2)


# -- Parquet and Arrow files ------------------------------------------------------------------------------------


def _table(X, extra=None):
    cols = {f"f{j}": X[:, j] for j in range(X.shape[1])}
    return pa.table({**(extra or {}), **cols})


@pytest.fixture(scope="module")
def files(blobs, tmp_path_factory):
    """The blobs as Parquet (row groups of 777 rows, with a string id column first) and as Arrow IPC."""
    folder = tmp_path_factory.mktemp("columnar")
    ids = pa.array([f"row{i}" for i in range(len(blobs))])
    pq.write_table(_table(blobs, {"id": ids}), folder / "X.parquet", row_group_size=777)
    pq.write_table(_table(blobs), folder / "plain.parquet", row_group_size=1000, use_dictionary=False)
    feather.write_feather(_table(blobs), folder / "X.feather", chunksize=600)  # lz4-compressed batches
    feather.write_feather(_table(blobs), folder / "X.arrow", chunksize=1000, compression="uncompressed")
    emb = pa.FixedSizeListArray.from_arrays(pa.array(blobs.ravel()), D)
    lists = pa.array(list(blobs), type=pa.list_(pa.float64()))
    pq.write_table(pa.table({"label": np.arange(len(blobs)), "emb": emb, "lst": lists}), folder / "emb.parquet",
                   row_group_size=1500)
    return folder


def test_parquet_and_arrow_files_are_bit_identical_to_the_array(blobs, files, one_thread):
    ref = sqdist.kmeans_stream(blobs, **FIT)
    sources = {
        "columns": sqdist.ParquetSource(files / "X.parquet", columns=[f"f{j}" for j in range(D)]),
        "ParquetFile": sqdist.ParquetSource(pq.ParquetFile(files / "X.parquet"), columns=[f"f{j}" for j in range(D)]),
        "plain path": str(files / "plain.parquet"),
        "raw ParquetFile": pq.ParquetFile(files / "plain.parquet"),
        "feather (lz4)": files / "X.feather",
        "arrow": str(files / "X.arrow"),
        "fixed-size list column": sqdist.ParquetSource(files / "emb.parquet", columns=["emb"]),
        "list column": sqdist.ParquetSource(files / "emb.parquet", columns=["lst"]),
    }
    for name, src in sources.items():
        r = sqdist.kmeans_stream(src, **FIT)
        assert isinstance(r.centers, np.ndarray), name
        _same_fit(r, ref)
    km = sqdist.KMeans(K, random_state=4, tol=0.0, max_iter=50, working_memory=WM).fit(files / "plain.parquet")
    np.testing.assert_array_equal(km.cluster_centers_, ref.centers)
    d, i = sqdist.nearest(files / "X.arrow", ref.centers)  # streamed nearest-centre search
    d0, i0 = sqdist.nearest(blobs, ref.centers)
    np.testing.assert_array_equal(i, i0)
    np.testing.assert_array_equal(d, d0)


def test_columns_types_and_order(blobs, files, tmp_path):
    src = sqdist.ParquetSource(files / "emb.parquet", columns=["emb", "label"])  # a list column, then an integer
    assert (src.n_rows, src.n_features, src.dtype) == (len(blobs), D + 1, torch.float64)
    np.testing.assert_array_equal(src.rows(0, len(blobs)).numpy(), np.c_[blobs, np.arange(len(blobs))])
    # float32 columns stay float32; ints and booleans become float64
    t = pa.table({"a": np.float32([1, 2]), "b": np.float32([3, 4])})
    pq.write_table(t, tmp_path / "f32.parquet")
    assert sqdist.ParquetSource(tmp_path / "f32.parquet").dtype == torch.float32
    pq.write_table(pa.table({"a": np.int8([1, 2]), "b": [True, False], "c": np.float32([0, 1])}), tmp_path / "i.pq")
    s = as_source(str(tmp_path / "i.pq"))
    assert s.dtype == torch.float64 and s.rows(0, 2).tolist() == [[1.0, 1.0, 0.0], [2.0, 0.0, 1.0]]


@settings(max_examples=60, deadline=None)
@given(spans=st.lists(st.tuples(st.integers(0, 4321), st.integers(0, 900)), min_size=1, max_size=6))
def test_any_row_range_in_any_order(blobs, files, spans):
    """The cursor: forward, backward, within and across row groups / record batches, empty ranges."""
    srcs = [sqdist.ParquetSource(files / "X.parquet", columns=[f"f{j}" for j in range(D)]),
            sqdist.FeatherSource(files / "X.feather")]
    for a, n in spans:
        b = min(a + n, len(blobs))
        for s in srcs:
            np.testing.assert_array_equal(s.rows(a, b).numpy(), blobs[a:b])
    idx = np.unique(np.array([a for a, _ in spans]).clip(0, len(blobs) - 1))
    for s in srcs:
        np.testing.assert_array_equal(s.take(idx, 100).numpy(), blobs[idx])


def test_bad_files_are_named(blobs, files, tmp_path):
    with pytest.raises(SqdistError, match=r"X: column 'id' of .*X.parquet' has type string, not numeric.*columns="):
        sqdist.kmeans_stream(files / "X.parquet", 2)
    with pytest.raises(SqdistError, match=r"columns: .* \('nope' is not one\)"):
        sqdist.ParquetSource(files / "X.parquet", columns=["f0", "nope"])
    with pytest.raises(SqdistError, match="columns: expected a list of column names"):
        sqdist.ParquetSource(files / "X.parquet", columns="f0")
    with pytest.raises(SqdistError, match="columns: expected distinct names"):
        sqdist.ParquetSource(files / "X.parquet", columns=["f0", "f0"])
    col = pa.array([1.0] * 2500 + [None] + [2.0] * 10)
    pq.write_table(pa.table({"a": np.ones(2511), "b": col}), tmp_path / "nulls.parquet", row_group_size=1000)
    with pytest.raises(SqdistError, match=r"column 'b' of .* has a null at row 2500; .*fill or drop"):
        sqdist.kmeans_stream(tmp_path / "nulls.parquet", 2)
    pq.write_table(pa.table({"a": pa.array([], pa.float64())}), tmp_path / "empty.parquet")
    with pytest.raises(SqdistError, match="X: .*empty.parquet' has no rows"):
        sqdist.kmeans_stream(tmp_path / "empty.parquet", 2)
    ragged = pa.array([[1.0, 2.0]] * 5 + [[1.0, 2.0, 3.0]], type=pa.list_(pa.float64()))
    pq.write_table(pa.table({"e": ragged}), tmp_path / "ragged.parquet")
    with pytest.raises(SqdistError, match=r"column 'e' .* lists of 2 values \(row 0\) and of 3 \(row 5\)"):
        sqdist.kmeans_stream(tmp_path / "ragged.parquet", 2)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SqdistError, match="X: .*junk.parquet' is not a valid Parquet file"):
        sqdist.kmeans_stream(tmp_path / "junk.parquet", 2)
    (tmp_path / "junk.arrow").write_bytes(b"not arrow either")
    with pytest.raises(SqdistError, match=r"X: .*junk.arrow' is not a valid Arrow IPC \(Feather v2\) file"):
        sqdist.kmeans_stream(tmp_path / "junk.arrow", 2)
    (tmp_path / "zero.feather").write_bytes(b"")
    with pytest.raises(SqdistError, match="zero.feather' is empty"):
        sqdist.kmeans_stream(tmp_path / "zero.feather", 2)
    with pytest.raises(FileNotFoundError):
        sqdist.kmeans_stream(tmp_path / "missing.parquet", 2)
    nan = blobs.copy()
    nan[3000, 2] = np.nan
    pq.write_table(_table(nan), tmp_path / "nan.parquet", row_group_size=1000)
    with pytest.raises(SqdistError, match="row 3000 contains NaN"):
        sqdist.kmeans_stream(tmp_path / "nan.parquet", 2, working_memory=WM)


# -- torch.distributed ----------------------------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import os, sys, numpy as np, torch
    torch.set_num_threads(1)
    from torch.utils.data import DataLoader, Subset, TensorDataset
    import sqdist
    from sqdist import _comm
    _comm.init_from_env(30.0, None)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    data, out, cut = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if data.endswith(".npy"):  # this rank's contiguous part, as a DataLoader of (x, y) batches
        X = torch.from_numpy(np.load(data))
        part = Subset(TensorDataset(X, torch.zeros(len(X))), range(0, cut) if rank == 0 else range(cut, len(X)))
        data = DataLoader(part, batch_size=333)
    r = sqdist.kmeans_stream(data, 5, random_state=4, tol=0.0, max_iter=50, working_memory=WM_MIB)
    if rank == 0:
        np.savez(out, centers=np.asarray(r.centers), inertia=r.inertia, n_iter=r.n_iter)
    _comm.destroy()
    """
).replace("WM_MIB", repr(WM))


def _two_ranks(tmp_path, *args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, *map(str, args)], env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for _, e in outs]
    with np.load(args[1]) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.skipif(sys.platform == "win32", reason="gloo over TCP on 127.0.0.1")
def test_two_ranks_read_a_parquet_file_or_their_loaders(blobs, files, tmp_path, one_thread):
    """A Parquet path is the global data (each rank reads its rows): the one-process bits.  DataLoaders
    are the ranks' shards: cut on a chunk boundary they give the one-process bits too."""
    ref = sqdist.kmeans_stream(blobs, **FIT)
    two = _two_ranks(tmp_path, files / "plain.parquet", tmp_path / "pq.npz", 0)
    np.testing.assert_array_equal(two["centers"], ref.centers)
    assert two["inertia"] == ref.inertia and two["n_iter"] == ref.n_iter
    np.save(tmp_path / "X.npy", blobs)
    R = _R(blobs)
    two = _two_ranks(tmp_path, tmp_path / "X.npy", tmp_path / "dl.npz", 2 * R)
    np.testing.assert_array_equal(two["centers"], ref.centers)
    assert two["inertia"] == ref.inertia and two["n_iter"] == ref.n_iter


# -- memory ---------------------------------------------------------------------------------------------------------

PEAK = textwrap.dedent(
    """
    import sys, numpy as np, torch
    torch.set_num_threads(1)
    import sqdist

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    fit = dict(random_state=0, max_iter=2, working_memory=8)
    sqdist.kmeans_stream(sys.argv[2], 4, **fit)  # warm up: the same reader on a small file of the same kind
    base = hwm()
    r = sqdist.kmeans_stream(sys.argv[1], 4, **fit)
    print(base, hwm(), r.n_iter)
    """
)


def _write(path, rows, cols, rng):
    """A file of float32 columns written 250,000 rows at a time (pyarrow's default encodings)."""
    schema = pa.schema([(f"f{j}", pa.float32()) for j in range(cols)])
    writer = pq.ParquetWriter(path, schema) if path.suffix == ".parquet" else pa.ipc.new_file(str(path), schema)
    for a in range(0, rows, 250_000):
        piece = rng.random((min(250_000, rows - a), cols), dtype=np.float32)
        writer.write_table(pa.table({f"f{j}": piece[:, j] for j in range(cols)}, schema=schema))
    writer.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_a_pass_over_a_file_keeps_memory_far_below_its_size(tmp_path, fmt):
    """Peak resident memory grows by the chunks plus pyarrow's buffers (for Parquet ~2-3 MB per column:
    the column's dictionary and current page), not by the file: measured 43 MiB for Parquet (16 columns)
    and 26 MiB for Arrow over 183 MiB of data."""
    N, cols = 3_000_000, 16  # 192 MB of float32
    rng = np.random.default_rng(0)
    _write(tmp_path / f"big.{fmt}", N, cols, rng)
    _write(tmp_path / f"small.{fmt}", 30_000, cols, rng)
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / f"big.{fmt}"), str(tmp_path / f"small.{fmt}")],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    base, peak, n_iter = map(int, r.stdout.split())
    assert n_iter == 2
    growth, data_bytes = peak - base, N * cols * 4
    assert growth < data_bytes / 3, f"peak RSS grew by {growth / 2**20:.1f} MiB over {data_bytes / 2**20:.0f} MiB of data"


def test_parquet_takes_weights_labels_and_checkpoints_like_npy(blobs, files, tmp_path, one_thread):
    w = np.random.default_rng(2).integers(0, 4, len(blobs)).astype(np.float64)
    src = sqdist.ParquetSource(files / "plain.parquet")
    ref = sqdist.kmeans_stream(blobs, **FIT, sample_weight=w)
    r = sqdist.kmeans_stream(src, **FIT, sample_weight=w, labels_out=tmp_path / "l.npy", checkpoint=tmp_path / "c.npz")
    _same_fit(r, ref)
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), sqdist.nearest(blobs, ref.centers)[1].ravel())
    np.save(tmp_path / "X.npy", blobs)  # the same rows as .npy: the checkpoint's content digest matches
    again = sqdist.kmeans_stream(tmp_path / "X.npy", **FIT, sample_weight=w, resume=tmp_path / "c.npz")
    np.testing.assert_array_equal(again.centers, ref.centers)


def test_cli_streams_parquet_like_npy(blobs, files, tmp_path, run_cli):
    np.save(tmp_path / "X.npy", blobs)
    outs = [run_cli("kmeans", "--data", str(p), "-k", "5", "--seed", "0", "--working-memory", "0.3")
            for p in (tmp_path / "X.npy", files / "plain.parquet")]
    assert [o.returncode for o in outs] == [0, 0], [o.stderr for o in outs]
    tail = [o.stdout[o.stdout.index("cluster sizes") :] for o in outs]
    assert tail[0] == tail[1]
    for p in (tmp_path / "X.npy", files / "plain.parquet"):  # the plot reads the rows of either format
        png = tmp_path / f"{p.stem}.png"
        out = run_cli("kmeans", "--data", str(p), "-k", "5", "--seed", "0", "--plot", str(png))
        assert out.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", out.stderr
    bad = run_cli("kmeans", "--data", str(files / "X.parquet"), "-k", "2")
    assert bad.returncode == 2 and "--data: column 'id'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
