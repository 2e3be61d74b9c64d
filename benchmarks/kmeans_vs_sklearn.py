"""Lloyd k-means: sqdist vs scikit-learn on one larger data set, identical initial centres.

Both run ``max_iter`` Lloyd iterations with ``tol=0`` from the same k-means++
centres (drawn once by sqdist), threads pinned for torch and BLAS/OpenMP.
Reports time per iteration (median of ``--repeats`` full runs / iterations),
inertia, label agreement, and the fraction of each method's labels that are
the argmin of the float64 distances to its own final centres ("exact"), and
writes JSON.

    PYTHONPATH=src python benchmarks/kmeans_vs_sklearn.py --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import warnings

import numpy as np
import torch
from torch.utils import benchmark

import sqdist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("-d", type=int, default=16)
    ap.add_argument("-k", type=int, default=32)
    ap.add_argument("--max-iter", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from sklearn.cluster import KMeans as SKKMeans
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    X64, _ = sqdist.datasets.make_blobs(n_blobs=args.k, n_per_blob=args.n // args.k, dim=args.d, std=1.0, seed=0, radius=6.0)
    rows = []
    with threadpool_limits(limits=args.threads):
        C0 = sqdist.kmeans(X64, args.k, init="k-means++", random_state=0, max_iter=1).init_centers
        for dt in args.dtypes.split(","):
            X = X64.astype(dt)
            init = C0.astype(dt)

            def run_sq():
                return sqdist.kmeans(X, init=init, max_iter=args.max_iter, tol=0)

            def run_sk():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return SKKMeans(args.k, init=init, n_init=1, max_iter=args.max_iter, tol=0, algorithm="lloyd").fit(X)

            r, s = run_sq(), run_sk()
            X64c = X.astype(np.float64)  # the data as stored, compared in float64

            def exact_agree(centers, labels):
                _, idx = sqdist.nearest(X64c, np.asarray(centers, dtype=np.float64))
                return float((idx[:, 0] == labels).mean())

            # median of --repeats separately timed runs (timeit(n) would time one block of n runs: its mean)
            t_sq = statistics.median(benchmark.Timer("f()", globals={"f": run_sq}, num_threads=args.threads).timeit(1).mean
                                     for _ in range(args.repeats))
            t_sk = statistics.median(benchmark.Timer("f()", globals={"f": run_sk}, num_threads=args.threads).timeit(1).mean
                                     for _ in range(args.repeats))
            rows.append(dict(
                dtype=dt, n_iter_sqdist=r.n_iter, n_iter_sklearn=int(s.n_iter_),
                ms_per_iter_sqdist=1e3 * t_sq / r.n_iter, ms_per_iter_sklearn=1e3 * t_sk / s.n_iter_,
                ratio_sqdist_over_sklearn=(t_sq / r.n_iter) / (t_sk / s.n_iter_),
                inertia_sqdist=r.inertia, inertia_sklearn=float(s.inertia_),
                inertia_rel_diff=abs(r.inertia - s.inertia_) / s.inertia_,
                labels_equal_fraction=float((r.labels == s.labels_).mean()),
                exact_argmin_fraction_sqdist=exact_agree(r.centers, r.labels),
                exact_argmin_fraction_sklearn=exact_agree(s.cluster_centers_, s.labels_),
            ))
    print(f"N={args.n // args.k * args.k} D={args.d} K={args.k} max_iter={args.max_iter} tol=0 threads={args.threads} "
          f"torch {torch.__version__} on {platform.processor() or platform.machine()}")
    hdr = (f"{'dtype':8} {'iters sq/sk':>11} {'ms/iter sqdist':>15} {'ms/iter sklearn':>16} {'ratio':>6} "
           f"{'inertia sqdist':>16} {'rel diff':>9} {'labels eq':>9} {'exact sq':>8} {'exact sk':>8}")
    print(hdr)
    for r in rows:
        print(f"{r['dtype']:8} {r['n_iter_sqdist']:>5}/{r['n_iter_sklearn']:<5} "
              f"{r['ms_per_iter_sqdist']:15.2f} {r['ms_per_iter_sklearn']:16.2f} "
              f"{r['ratio_sqdist_over_sklearn']:6.2f} {r['inertia_sqdist']:16.8g} {r['inertia_rel_diff']:9.1e} "
              f"{r['labels_equal_fraction']:9.5f} {r['exact_argmin_fraction_sqdist']:8.5f} "
              f"{r['exact_argmin_fraction_sklearn']:8.5f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
