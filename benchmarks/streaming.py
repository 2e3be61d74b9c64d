"""Streaming k-means scaling: time per Lloyd iteration per row for .npy files of 1e6 .. 1e8 rows,
peak memory of a streamed fit, and 1 process vs 2 gloo ranks.

    PYTHONPATH=src python benchmarks/streaming.py                 # 1e6, 1e7, 1e8 rows (needs ~5 GB disk)
    PYTHONPATH=src python benchmarks/streaming.py --sizes 1e6 1e7 # smaller
    PYTHONPATH=src python benchmarks/streaming.py --no-ranks      # skip the 2-rank run

Data: D = 8 float32 blobs (K true centres + unit noise), written once to --dir.
The time of one Lloyd iteration is one assignment pass over the file (the
streamed loop's ``_pass``: read the chunks, assign, accumulate, reduce) plus
the K x D centre update (microseconds, not timed).  Passes are timed with one
thread, wall clock and process CPU time, in --rounds rounds that interleave
the sizes, keeping the fastest of each size (the machine is shared: the
minimum is the least disturbed run); the files are in the OS page cache
(written just before).  A full ``kmeans_stream`` fit (--iters iterations) of
every size is also timed end to end.  Peak memory is
measured in a fresh subprocess per file: VmHWM (peak resident set, including
file pages) and the peak of RssAnon (anonymous memory) sampled every 2 ms.
Writes a JSON file with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def make_file(path: Path, n: int, d: int, k: int, seed: int = 0) -> None:
    if path.exists() and np.load(path, mmap_mode="r").shape == (n, d):
        return
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-20, 20, size=(k, d)).astype(np.float32)
    tmp = path.with_suffix(".partial.npy")
    X = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    step = 1 << 20
    for a in range(0, n, step):
        b = min(a + step, n)
        lab = rng.integers(0, k, size=b - a)
        X[a:b] = centres[lab] + rng.standard_normal((b - a, d), dtype=np.float32)
        X._mmap.madvise(__import__("mmap").MADV_DONTNEED)  # keep this generator's RSS small
    X.flush()
    del X
    os.replace(tmp, path)


MEM_SCRIPT = r"""
import sys, threading, time, numpy as np, torch
torch.set_num_threads(1)
import sqdist
def st(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
peak = [0]
def mon():
    while True:
        peak[0] = max(peak[0], st("RssAnon")); time.sleep(0.002)
threading.Thread(target=mon, daemon=True).start()
base_hwm, base_anon = st("VmHWM"), st("RssAnon")
r = sqdist.kmeans_stream(sys.argv[1], int(sys.argv[2]), init=np.arange(int(sys.argv[2])), tol=0.0,
                         max_iter=int(sys.argv[3]), working_memory=float(sys.argv[4]))
time.sleep(0.01)
print(base_hwm, st("VmHWM"), base_anon, peak[0])
"""

RANK_SCRIPT = r"""
import sys, json, numpy as np, torch
torch.set_num_threads(1)
import sqdist
from sqdist import _comm
_comm.init_from_env(120, None)
r = sqdist.kmeans_stream(sys.argv[1], int(sys.argv[2]), init=np.arange(int(sys.argv[2])), tol=0.0,
                         max_iter=int(sys.argv[3]), working_memory=float(sys.argv[4]))
times = [h["time"] for h in r.history[1:]]
if _comm.Comm().rank == 0:
    np.save(sys.argv[5], r.centers)
    print(json.dumps({"iter_s": float(np.median(times)), "inertia": r.inertia}))
_comm.destroy()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    e["PYTHONPATH"] = str(SRC)
    e["OMP_NUM_THREADS"] = "1"
    return e


def run_ranks(world: int, path: Path, k: int, iters: int, wm: float, out: Path) -> dict:
    port = str(free_port())
    procs = []
    for r in range(world):
        e = env()
        if world > 1:
            e.update(RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(path), str(k), str(iters), str(wm), str(out)],
                                      env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate() for p in procs]
    for p, (_so, se) in zip(procs, outs):
        if p.returncode != 0:
            raise SystemExit(f"rank failed: {se[-2000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7, 1e8])
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("-k", type=int, default=16)
    ap.add_argument("--working-memory", type=float, default=64.0, help="MiB (default 64)")
    ap.add_argument("--iters", type=int, default=2, help="iterations of the end-to-end fit per size (default 2)")
    ap.add_argument("--rounds", type=int, default=2, help="timed passes per size, interleaved (default 2)")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "sqdist-bench"))
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-ranks", action="store_true")
    ap.add_argument("--json", default="streaming_results.json")
    a = ap.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    import sqdist

    torch.set_num_threads(1)
    from sqdist._comm import Comm
    from sqdist._engine import FitOptions, Streamed
    from sqdist._shard import open_shard
    from sqdist._sources import as_source

    folder = Path(a.dir)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [int(n) for n in a.sizes]
    results = {"dim": a.dim, "k": a.k, "working_memory_mib": a.working_memory, "threads": 1, "rounds": a.rounds,
               "sizes": []}
    print(f"streaming k-means, D={a.dim} float32, K={a.k}, working memory {a.working_memory:g} MiB, 1 thread, "
          f"files in page cache; torch {torch.__version__}")
    paths, shards = {}, {}
    budget = int(a.working_memory * 2**20)
    for n in sizes:
        paths[n] = folder / f"blobs_{n}_{a.dim}.npy"
        t0 = time.perf_counter()
        make_file(paths[n], n, a.dim, a.k)
        print(f"  data {paths[n].name}: {paths[n].stat().st_size / 1e6:.0f} MB ({time.perf_counter() - t0:.1f} s)",
              flush=True)
    wall = {n: [] for n in sizes}
    cpu = {n: [] for n in sizes}
    comm = Comm()
    opts = FitOptions(n_clusters=a.k, init="k-means++", n_init=1, max_iter=1, tol=0.0, budget=budget, backend="torch",
                      cdtype=torch.float32, was_numpy=True)
    with threadpool_limits(1):
        for n in sizes:
            shards[n] = Streamed(open_shard(as_source(str(paths[n])), a.k, budget, None, torch.device("cpu"), comm),
                                 comm, torch.device("cpu"), opts)
        C = torch.from_numpy(np.load(paths[sizes[0]], mmap_mode="r")[: a.k].copy())
        for rnd in range(a.rounds):
            for n in sizes:
                w0, c0 = time.perf_counter(), time.process_time()
                shards[n].assign(C)  # one pass over the file
                wall[n].append(time.perf_counter() - w0)
                cpu[n].append(time.process_time() - c0)
            print(f"  round {rnd + 1}/{a.rounds}: " + ", ".join(f"{n:.0e} {wall[n][-1]:.2f} s" for n in sizes),
                  flush=True)
        fits = {}
        for n in sizes:
            r = sqdist.kmeans_stream(str(paths[n]), a.k, init=np.arange(a.k), tol=0.0, max_iter=a.iters,
                                     working_memory=a.working_memory)
            fits[n] = [h["time"] for h in r.history[1:]]
    base_w = min(wall[sizes[0]]) / sizes[0]
    base_c = min(cpu[sizes[0]]) / sizes[0]
    mems = {}
    if not a.no_memory and os.path.exists("/proc/self/status"):
        for n in sizes:
            p = subprocess.run([sys.executable, "-c", MEM_SCRIPT, str(paths[n]), str(a.k), "1", str(a.working_memory)],
                               capture_output=True, text=True, env=env())
            mems[n] = tuple(map(int, p.stdout.split())) if p.returncode == 0 else None
    print(f"\n{'rows':>12} {'file MB':>8} {'pass s':>8} {'ns/row':>7} {'ratio':>6} {'CPU s':>8} {'CPU ns/row':>10} "
          f"{'ratio':>6} {'fit s/iter':>10} {'HWM+ MB':>8} {'anon+ MB':>9}")
    for n in sizes:
        w, c = min(wall[n]), min(cpu[n])
        row = {"rows": n, "file_bytes": paths[n].stat().st_size, "pass_wall_s": wall[n], "pass_cpu_s": cpu[n],
               "ns_per_row_wall": w / n * 1e9, "ns_per_row_cpu": c / n * 1e9, "ratio_wall": w / n / base_w,
               "ratio_cpu": c / n / base_c, "fit_iter_s": fits[n]}
        mem = ""
        if mems.get(n):
            bh, h, ba, pa = mems[n]
            row.update(hwm_base=bh, hwm_peak=h, anon_base=ba, anon_peak=pa)
            mem = f" {(h - bh) / 1e6:8.1f} {(pa - ba) / 1e6:9.1f}"
        print(f"{n:12,d} {row['file_bytes'] / 1e6:8.0f} {w:8.2f} {w / n * 1e9:7.0f} {w / n / base_w:6.2f} {c:8.2f} "
              f"{c / n * 1e9:10.0f} {c / n / base_c:6.2f} {float(np.median(fits[n])):10.2f}{mem}")
        results["sizes"].append(row)
    if mems:
        print(f"(memory: peak VmHWM / RssAnon growth during a 1-iteration fit over a process with torch imported: "
              f"base VmHWM {mems[sizes[0]][0] / 1e6:.0f} MB, RssAnon {mems[sizes[0]][2] / 1e6:.0f} MB)")
    if not a.no_ranks:
        n = sizes[min(1, len(sizes) - 1)]
        path = folder / f"blobs_{n}_{a.dim}.npy"
        print(f"\n1 process vs 2 gloo ranks on 127.0.0.1 ({n:,d} rows, {a.iters} iterations, 1 thread each):")
        one = run_ranks(1, path, a.k, a.iters, a.working_memory, folder / "c1.npy")
        two = run_ranks(2, path, a.k, a.iters, a.working_memory, folder / "c2.npy")
        same = bool(np.array_equal(np.load(folder / "c1.npy"), np.load(folder / "c2.npy")))
        print(f"{'ranks':>6} {'s/iter':>9} {'speed-up':>9} {'inertia':>20}")
        print(f"{1:6d} {one['iter_s']:9.3f} {1.0:9.2f} {one['inertia']:20.10g}")
        print(f"{2:6d} {two['iter_s']:9.3f} {one['iter_s'] / two['iter_s']:9.2f} {two['inertia']:20.10g}")
        print(f"centres bit-identical: {same}; inertia identical: {one['inertia'] == two['inertia']}")
        results["ranks"] = {"rows": n, "one": one, "two": two, "centres_identical": same}
    Path(a.json).write_text(json.dumps(results, indent=1))
    print(f"\nresults -> {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
