"""Mini-batch k-means: sqdist's MiniBatchKMeans vs scikit-learn's, and full-batch sqdist.KMeans, on dense blobs.

Every round fits each candidate once with the round's seed (the order of the
candidates rotates from round to round, so all see the same background load),
threads pinned for torch, numba and BLAS/OpenMP.  The mini-batch estimators
run with the same settings (scikit-learn's defaults: ``batch_size=1024``,
k-means++ on ``3 * batch_size`` rows, early stopping after 10 steps without
improvement of the smoothed batch inertia, ``compute_labels=True`` so the
final inertia is measured on all N rows and is part of the time).  Reported:
median time, median final inertia, and the time ratio *to scikit-learn's
final inertia*: sqdist's median time over scikit-learn's when sqdist's median
final inertia is within 1 % of scikit-learn's (else "not reached").

    PYTHONPATH=src python benchmarks/minibatch.py -n 1000000 -d 32 -k 64 --rounds 3 --json out.json

``--sparse``: instead of blobs, the TF-IDF-like CSR matrix of benchmarks/sparse.py
(``-n`` rows, 2**16 features, 0.1 % stored), given as SciPy CSR to both.

    PYTHONPATH=src python benchmarks/minibatch.py --sparse -n 100000 -k 64 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np

import sqdist
from _common import cpu_info, pin_threads, table, write_json
from sqdist.minibatch import MiniBatchKMeans


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("-d", type=int, default=32)
    ap.add_argument("-k", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--sparse", action="store_true", help="the TF-IDF-like CSR matrix of benchmarks/sparse.py")
    ap.add_argument("--full-batch", action="store_true", help="also time full-batch sqdist.KMeans (the docs' table)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from sklearn.cluster import MiniBatchKMeans as SkMiniBatchKMeans

    pinned = pin_threads(args.threads)
    if args.sparse:
        from sparse import tfidf_like

        X = tfidf_like(args.n, 1 << 16, 1e-3).astype(args.dtype)
        args.d = X.shape[1]
    else:
        X, _ = sqdist.datasets.make_blobs(n_blobs=args.k, n_per_blob=args.n // args.k, dim=args.d, std=1.0, seed=0,
                                          radius=6.0)
        X = np.ascontiguousarray(X, dtype=args.dtype)
    kw = dict(n_clusters=args.k, batch_size=args.batch_size)
    fits = {
        "sqdist MiniBatchKMeans": lambda seed: MiniBatchKMeans(random_state=seed, **kw).fit(X),
        "scikit-learn MiniBatchKMeans": lambda seed: SkMiniBatchKMeans(random_state=seed, **kw).fit(X),
    }
    if args.full_batch:
        fits["sqdist KMeans (full batch)"] = lambda seed: sqdist.KMeans(args.k, random_state=seed).fit(X)
    fits["sqdist MiniBatchKMeans"](0)  # warm-up: compiled kernels, thread pools
    runs: dict[str, list[dict]] = {k: [] for k in fits}
    names = list(fits)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                est = fits[name](r)
                dt = time.perf_counter() - t
            runs[name].append({"seconds": dt, "inertia": float(est.inertia_),
                               "steps": int(getattr(est, "n_steps_", getattr(est, "n_iter_", 0)))})
            print(f"round {r} {name}: {dt:.2f} s, inertia {est.inertia_:.6g}", flush=True)

    med = {k: {m: statistics.median(x[m] for x in v) for m in ("seconds", "inertia", "steps")} for k, v in runs.items()}
    sk = med["scikit-learn MiniBatchKMeans"]
    ours = med["sqdist MiniBatchKMeans"]
    reached = ours["inertia"] <= 1.01 * sk["inertia"]
    rows = [[k, f"{v['seconds']:.2f}", f"{v['inertia']:.6g}", f"{v['inertia'] / sk['inertia']:.4f}", f"{v['steps']:.0f}",
             f"{v['seconds'] / sk['seconds']:.2f}"] for k, v in med.items()]
    cpu = cpu_info()
    print(f"\n{args.n} x {args.d}{' CSR' if args.sparse else ''}, K={args.k}, {args.dtype}, batch {args.batch_size}, "
          f"{args.threads} thread(s), "
          f"median of {args.rounds} interleaved rounds; CPU: {cpu.get('model')} (AVX2 {cpu.get('avx2')}, "
          f"AVX-512 {bool(cpu.get('avx512'))})")
    print(table(rows, ["estimator", "time (s)", "final inertia", "inertia / sklearn's", "steps (iterations)",
                       "time / sklearn's"]))
    ratio = ours["seconds"] / sk["seconds"] if reached else None
    print("time to scikit-learn's final inertia (within 1 %): "
          + (f"{ratio:.2f}x scikit-learn's" if reached else "not reached"))
    if args.json:
        write_json(args.json, {"args": vars(args), "pinned": pinned, "cpu": cpu, "runs": runs, "median": med,
                               "reached_sklearn_inertia_within_1pct": reached, "time_ratio_to_same_inertia": ratio})


if __name__ == "__main__":
    main()
