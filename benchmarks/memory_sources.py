"""Peak memory of full passes over large out-of-core files: ``.npy``, Parquet and Arrow IPC (Feather).

    PYTHONPATH=src python benchmarks/memory_sources.py                     # 1.5 GB files (needs ~3.2 GB disk)
    PYTHONPATH=src python benchmarks/memory_sources.py --gb 0.2 --formats npy parquet
    PYTHONPATH=src python benchmarks/memory_sources.py --keep --dir /data  # keep the files for a rerun

For each format a file of ``--gb`` GB of float32 blobs (``--d`` features, K
true centres plus unit noise) is written in pieces of 2**20 rows -- never
held in memory -- and then, in a fresh subprocess per (format, entry point),
fitted by

* ``kmeans_stream`` -- full-batch Lloyd, ``--iters`` iterations (each
  iteration is a pass; a fit also makes the validation, sampling, variance
  and initial-assignment passes);
* ``KMeans.fit`` -- the estimator, same passes;
* ``MiniBatchKMeans.partial_fit`` -- one call over the whole file, when
  ``sqdist.minibatch`` exists in this tree.

Each subprocess reports its peak resident set (``VmHWM`` from
``/proc/self/status``, file pages included, and ``ru_maxrss``), the same
before the fit (torch, sqdist, pyarrow imported and a small warm-up fit), and
the wall time of the fit.  ``ru_maxrss`` survives ``exec``: it includes
the forked parent's resident set (this script, which wrote the file), so
VmHWM is the measure.  The files are deleted at the end unless --keep.
Writes a JSON file with every number (--out).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_info, cpu_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
STEP = 1 << 20  # rows written per piece

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[5]))
path, how, k, iters, wm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[6])
import sqdist
if not sys.argv[1].endswith(".npy"):
    import pyarrow, pyarrow.parquet  # noqa: F401 -- imported before the baseline, like torch
if how != "kmeans_stream":
    sqdist.KMeans  # noqa: B018 -- the estimators import scikit-learn: before the baseline too

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

sqdist.kmeans(np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32), 4, max_iter=2)  # warm up
base_hwm, base_maxrss = status("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
if how == "kmeans_stream":
    r = sqdist.kmeans_stream(path, k, max_iter=iters, random_state=0, working_memory=wm)
    n_iter, inertia = r.n_iter, r.inertia
elif how == "KMeans.fit":
    km = sqdist.KMeans(k, max_iter=iters, random_state=0, working_memory=wm).fit(path)
    n_iter, inertia = km.n_iter_, km.inertia_
else:
    mb = sqdist.MiniBatchKMeans(k, random_state=0, working_memory=wm).partial_fit(path)
    n_iter, inertia = 1, float("nan")
seconds = time.perf_counter() - t
print(json.dumps({"base_hwm": base_hwm, "peak_hwm": status("VmHWM"), "base_maxrss": base_maxrss,
                  "peak_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "seconds": seconds, "n_iter": n_iter, "inertia": inertia}))
"""


def _pieces(n: int, d: int, k: int, seed: int):
    """(rows, float32 array) pieces of blobs, 2**20 rows at a time: the whole file never exists in memory."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-20, 20, size=(k, d)).astype(np.float32)
    for a in range(0, n, STEP):
        m = min(STEP, n - a)
        yield centres[rng.integers(0, k, size=m)] + rng.standard_normal((m, d), dtype=np.float32)


def write_npy(path: Path, n: int, d: int, k: int) -> None:
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    a = 0
    for piece in _pieces(n, d, k, 0):
        X[a : a + len(piece)] = piece
        a += len(piece)
        X._mmap.madvise(mmap.MADV_DONTNEED)  # keep the writer's resident set small
    X.flush()
    del X


def _table(piece: np.ndarray):
    import pyarrow as pa

    return pa.table({f"f{j}": piece[:, j] for j in range(piece.shape[1])})


def write_parquet(path: Path, n: int, d: int, k: int) -> None:
    import pyarrow.parquet as pq

    writer = None
    for piece in _pieces(n, d, k, 0):
        t = _table(piece)
        if writer is None:
            writer = pq.ParquetWriter(path, t.schema, compression="snappy")
        writer.write_table(t, row_group_size=STEP)
    writer.close()


def write_feather(path: Path, n: int, d: int, k: int) -> None:
    import pyarrow as pa

    writer = None
    for piece in _pieces(n, d, k, 0):
        t = _table(piece)
        if writer is None:
            writer = pa.ipc.new_file(str(path), t.schema)
        writer.write_table(t, max_chunksize=1 << 16)
    writer.close()


WRITERS = {"npy": (".npy", write_npy), "parquet": (".parquet", write_parquet), "feather": (".arrow", write_feather)}


def measure(path: Path, how: str, k: int, iters: int, threads: int, wm: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), how, str(k), str(iters), str(threads), str(wm)],
                       capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.5, help="file size in GB (10**9 bytes of float32 data)")
    ap.add_argument("--d", type=int, default=32, help="features")
    ap.add_argument("--k", type=int, default=16, help="clusters")
    ap.add_argument("--iters", type=int, default=2, help="Lloyd iterations of the full-batch fits")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--working-memory", type=float, default=64.0, help="MiB")
    ap.add_argument("--formats", nargs="+", default=["npy", "parquet"], choices=sorted(WRITERS))
    ap.add_argument("--how", nargs="+", default=["kmeans_stream", "KMeans.fit", "MiniBatchKMeans.partial_fit"])
    ap.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument("--out", type=Path, default=None, help="JSON output")
    args = ap.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="sqdist-mem-"))
    folder.mkdir(parents=True, exist_ok=True)
    n = int(args.gb * 1e9) // (4 * args.d)
    free = shutil.disk_usage(folder).free
    if free < 1.2 * args.gb * 1e9 * len(args.formats):
        print(f"not enough disk in {folder}: {free / 1e9:.1f} GB free", file=sys.stderr)
        return 2
    hows = [h for h in args.how if h != "MiniBatchKMeans.partial_fit" or (SRC / "sqdist" / "minibatch.py").exists()]
    info = cpu_info()
    print(f"# {cpu_line(info)}; {n:,} rows x {args.d} float32 ({args.gb} GB of data), K = {args.k}, "
          f"{args.iters} iterations, working memory {args.working_memory} MiB, {args.threads} thread(s)")
    print("| format | file | entry point | time (s) | base VmHWM | peak VmHWM | growth | peak ru_maxrss |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    rows = []
    paths = []
    try:
        for fmt in args.formats:
            suffix, write = WRITERS[fmt]
            path = folder / f"blobs-{n}x{args.d}{suffix}"
            paths.append(path)
            if not path.exists():
                write(path, n, args.d, args.k)
            size = path.stat().st_size
            for how in hows:
                m = measure(path, how, args.k, args.iters, args.threads, args.working_memory)
                m.update(format=fmt, how=how, file_bytes=size)
                rows.append(m)
                if "error" in m:
                    print(f"| {fmt} | {size / 1e9:.2f} GB | {how} | error: {m['error']} |")
                    continue
                print(f"| {fmt} | {size / 1e9:.2f} GB | {how} | {m['seconds']:.1f} | {m['base_hwm'] / 1e6:.0f} MB | "
                      f"{m['peak_hwm'] / 1e6:.0f} MB | {(m['peak_hwm'] - m['base_hwm']) / 1e6:.0f} MB | "
                      f"{m['peak_maxrss'] / 1e6:.0f} MB |", flush=True)
    finally:
        if not args.keep:
            for p in paths:
                p.unlink(missing_ok=True)
            if args.dir is None:
                shutil.rmtree(folder, ignore_errors=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"cpu": info, "args": {k: str(v) for k, v in vars(args).items()},
                                        "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
