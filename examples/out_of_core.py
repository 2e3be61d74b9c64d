"""Out-of-core k-means: fit a ``.npy`` file streamed from disk, never holding the data in memory.

The script writes a data set of ``--rows`` points to ``X.npy`` block by block
(through a memory map, so the data never exists in memory as a whole), then

* fits k-means on the file with ``sqdist.kmeans_stream(path, K)``: one pass
  over the file per Lloyd iteration, in chunks that fit ``--working-memory``;
  the labels go to ``labels.npy`` (``labels_out=``), not into memory;
* fits the scikit-learn estimator on the same path, ``sqdist.KMeans(K).fit(path)``
  -- the same fit, bit for bit;
* maps the file to the fitted centres with the streamed ``sqdist.nearest(path, centres)``,
  which must agree with the labels file.

Run::

    python examples/out_of_core.py                       # 1,000,000 x 8 float32 (32 MB), K = 16
    python examples/out_of_core.py --rows 20000 --dir /tmp/ooc --keep
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

import sqdist


def write_blobs(path: Path, rows: int, dim: int, n_blobs: int, seed: int, block: int = 65536) -> None:
    """Write ``rows`` float32 points from ``n_blobs`` Gaussian blobs to a .npy file, one block at a time."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-20.0, 20.0, size=(n_blobs, dim))
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    for start in range(0, rows, block):
        n = min(block, rows - start)
        X[start:start + n] = means[rng.integers(0, n_blobs, size=n)] + rng.normal(size=(n, dim))
    X.flush()
    del X


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="points in the file (default 1000000)")
    p.add_argument("--dim", type=int, default=8, help="features (default 8)")
    p.add_argument("-k", type=int, default=16, help="clusters K (default 16)")
    p.add_argument("--working-memory", type=float, default=16.0,
                   help="MiB budget for temporaries; sets the chunk size (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and random_state of k-means++ (default 0)")
    p.add_argument("--dir", help="folder for X.npy and labels.npy (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the files (with --dir)")
    args = p.parse_args(argv)

    tmp = None if args.dir else tempfile.TemporaryDirectory()
    folder = Path(args.dir or tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    data, labels_file = folder / "X.npy", folder / "labels.npy"
    try:
        write_blobs(data, args.rows, args.dim, args.k, args.seed)
        print(f"data: {data.name}, {args.rows} x {args.dim} float32, {data.stat().st_size / 2**20:.1f} MiB "
              f"(out of core: {sqdist.is_out_of_core(str(data))})")

        t0 = time.perf_counter()
        r = sqdist.kmeans_stream(str(data), args.k, random_state=args.seed, working_memory=args.working_memory,
                                 labels_out=labels_file)
        t1 = time.perf_counter()
        print(f"kmeans_stream: {r.n_iter} iterations in {t1 - t0:.2f} s, converged {r.converged}, "
              f"inertia {r.inertia:.6g}; labels: a {type(r.labels).__name__} of {labels_file.name}")

        km = sqdist.KMeans(args.k, random_state=args.seed, working_memory=args.working_memory).fit(str(data))
        print(f"KMeans.fit(path): {km.n_iter_} iterations, inertia {km.inertia_:.6g}, "
              f"same centres as kmeans_stream: {np.array_equal(km.cluster_centers_, r.centers)}")

        _, nearest = sqdist.nearest(str(data), r.centers, working_memory=args.working_memory)  # (N, 1): k = 1
        labels = np.load(labels_file, mmap_mode="r")
        print(f"nearest(path, centres) equals labels.npy: {np.array_equal(nearest[:, 0], labels)}; "
              f"cluster sizes {np.bincount(labels, minlength=args.k).tolist()}")
        del labels, r
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        print(f"peak resident memory of this process: {peak:.0f} MiB (torch itself takes about 200-250)")
    finally:
        if tmp is not None:
            tmp.cleanup()
        elif not args.keep:
            data.unlink(missing_ok=True)
            labels_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
