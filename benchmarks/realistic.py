"""sqdist where users run it: between their own torch operations, back to back, fresh outputs.

Run (from the repository root; about 8 minutes on a 2-core machine)::

    PYTHONPATH=src python benchmarks/realistic.py --threads 2 --out realistic.json

Sections (``--sections``, all by default):

``loop``
    One training-style step, timed whole: the user's own layer
    ``torch.relu(B @ W) + B`` with ``B`` (N, 128), ``W`` (128, 128) -- a small
    MLP layer on the same N rows as ``X`` --, then the distances ``d`` (N, P)
    between ``X`` (N, D) and ``T`` (P, D), then ``torch.exp(-d / 2).sum()``.
    Peers: ``sqdist.sqdist(X, T)``, ``torch.cdist(X, T) ** 2`` and the naive
    expansion ``(X*X).sum(1)[:, None] + (T*T).sum(1)[None] - 2 * X @ T.T``
    clamped at 0.  "user work only" is the step without distances (for
    reference).  Ratios: sqdist / the best of cdist and the expansion.
``isolated``
    The distances alone, back to back, fresh outputs: ``sqdist.sqdist(X, T)``
    against ``torch.mm(X, T.T)`` (the product floor, also a fresh output).
``nearest``
    The same step with the nearest row instead of the matrix:
    ``sqdist.nearest(X, T)`` against ``torch.cdist(X, T).argmin(1)`` and the
    expansion's argmin ``((T*T).sum(1)[None] - 2 * X @ T.T).argmin(1)`` (the
    row-constant ``|x|^2`` dropped, which only helps that peer).
``kmeans``
    Lloyd fits from the same initial centres (the first K rows of one
    Gaussian cloud), ``--iters`` iterations, ``tol=0``: ``sqdist.kmeans``
    against scikit-learn's ``KMeans(algorithm="lloyd")`` and FAISS's
    ``Kmeans``, per iteration (fit time / the fit's iteration count).  Two
    modes: fits back to back ("alone"), and each fit right after the user's
    training step ``torch.relu(B @ W) + B`` with B (8192, 256), W (256, 256)
    ("after torch work"; the step is not timed, its threads' after-effects
    are).  The "alone" rounds also time one-iteration fits, for the cost of
    one more iteration: the median over rounds of (``--iters``-iteration fit
    - one-iteration fit) / (``--iters`` - 1), which leaves out what a fit
    costs besides its iterations (sqdist and scikit-learn assign once more
    than they iterate, for the labels of the returned centres; FAISS does
    not).  Then repeated ``predict`` of all N rows by the fitted models
    (FAISS: ``index.search(X, 1)``), after the user's step as well.
``alloc``
    Fresh results back to back: five 64 MiB float32 (4096, 4096) results in a
    row, each written once (``fill_``), from ``torch.empty`` and from a
    private anonymous mapping advised ``MADV_HUGEPAGE`` (the trick sqdist
    used for large results until 2026-11-29), both replaced one after the
    other and kept alive; and ``sqdist.sqdist(X, T)`` at 4096 x 4096 x 2
    with its own result, with ``out=`` a fresh ``torch.empty`` / fresh
    huge-page mapping, against ``torch.mm(X, T.T)`` (fresh).
``exercise``
    A whole fit on the exercise's size: 250 points in 5 Gaussian blobs,
    D = 2, K = 5, at most 20 iterations, against FAISS and scikit-learn
    (blocks of 20 back-to-back fits).

Every peer runs in one process on the same float32 data, all thread pools
pinned to ``--threads``; times are the **median of interleaved rounds**
(minimum beside it; at least ``--rounds`` rounds, more until
``--min-seconds`` per shape and mode, so that a fast step's median rests on
more than five samples), **no pause** between calls, every output fresh (no
``out=``).  The JSON records the CPU (model, AVX2 / AVX-512, torch's kernel
level, any variable forcing a code path) and the command; its times are in
seconds (the printed tables in ms).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))

import sqdist  # noqa: E402
from _common import cpu_line, interleaved, interleaved_runs, median, pin_threads, stats, table, write_json  # noqa: E402
from sqdist import _cpu_kernels  # noqa: E402

DIST_SHAPES = [(4096, 4096, 2), (4096, 1024, 16), (4096, 4096, 128), (16384, 1024, 256)]
KMEANS_SHAPES = [(1_000_000, 2, 8), (200_000, 64, 256), (100_000, 128, 1024)]
SECTIONS = ("loop", "isolated", "nearest", "kmeans", "exercise", "alloc")
HIDDEN = 128  # width of the user's layer in the distance loops
KM_BATCH, KM_HIDDEN = 8192, 256  # the user's training step between k-means fits


def user_layer(n: int, h: int, seed: int = 1):
    """The user's own work: ``torch.relu(B @ W) + B`` on B (n, h), W (h, h)."""
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(n, h, generator=g)
    W = torch.randn(h, h, generator=g) / h**0.5
    return lambda: torch.relu(B @ W) + B


def expansion(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    return ((X * X).sum(1)[:, None] + (T * T).sum(1)[None, :] - 2 * X @ T.T).clamp_min_(0)


def loop_peers(X: torch.Tensor, T: torch.Tensor, user) -> dict:
    def step(dist):
        def run():
            user()
            d = dist()
            return torch.exp(-d / 2).sum()
        return run

    return {
        "sqdist": step(lambda: sqdist.sqdist(X, T)),
        "torch.cdist**2": step(lambda: torch.cdist(X, T) ** 2),
        "expansion": step(lambda: expansion(X, T)),
        "user work only": user,
    }


def nearest_peers(X: torch.Tensor, T: torch.Tensor, user) -> dict:
    def step(near):
        def run():
            user()
            return near()
        return run

    return {
        "sqdist.nearest": step(lambda: sqdist.nearest(X, T)),
        "cdist.argmin": step(lambda: torch.cdist(X, T).argmin(1)),
        "expansion.argmin": step(lambda: ((T * T).sum(1)[None, :] - 2 * X @ T.T).argmin(1)),
        "user work only": user,
    }


def ratio_rows(res: dict, ours: str, peers: list[str]) -> tuple[float, float, str]:
    """ours / best peer by medians and by minimums, and the best peer's name (by median)."""
    best = min(peers, key=lambda k: res[k]["median"])
    return (res[ours]["median"] / res[best]["median"],
            res[ours]["min"] / min(res[k]["min"] for k in peers), best)


def fmt(s: dict) -> str:
    return f"{s['median'] * 1e3:.2f} ({s['min'] * 1e3:.2f})"


def dist_data(N: int, P: int, D: int):
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, D, generator=g), torch.randn(P, D, generator=g)


def run_loop(shapes, args, out: dict, section: str) -> None:
    peers_of = {"loop": loop_peers, "nearest": nearest_peers}.get(section)
    rows = []
    for N, P, D in shapes:
        X, T = dist_data(N, P, D)
        if section == "isolated":
            fns = {"sqdist": lambda: sqdist.sqdist(X, T), "torch.mm": lambda: torch.mm(X, T.T)}
            ours, peers = "sqdist", ["torch.mm"]
        else:
            fns = peers_of(X, T, user_layer(N, HIDDEN))
            ours, peers = next(iter(fns)), [k for k in list(fns)[1:] if k != "user work only"]
        res = interleaved(fns, args.rounds, budget_s=args.budget, min_s=args.min_seconds)
        rm, rmin, best = ratio_rows(res, ours, peers)
        key = f"{N}x{P}x{D}"
        out[key] = {"seconds": res, "ratio_median": rm, "ratio_min": rmin, "best_peer": best}
        rows.append([key] + [fmt(res[k]) for k in fns] + [f"{rm:.2f}x", f"{rmin:.2f}x"])
        print(f"done {section} {key}", file=sys.stderr, flush=True)
    if rows:
        what = {"loop": "per step", "nearest": "per step", "isolated": "per call"}[section]
        print(f"\n[{section}] ms {what}, median (min) of interleaved rounds")
        print(table(rows, ["N x P x D"] + list(fns) + [f"{ours}/best median", "by min"]))


def blobs_or_cloud(n: int, d: int, k: int, seed: int = 0):
    """float32 data and initial centres (its first K rows): K blobs for small n, one Gaussian cloud else."""
    rng = np.random.default_rng(seed)
    if n <= 10_000:
        X = rng.normal(scale=4.0, size=(k, d))[rng.integers(0, k, n)] + rng.normal(size=(n, d))
    else:
        X = rng.normal(size=(n, d))
    X = np.ascontiguousarray(X[rng.permutation(n)].astype(np.float32))
    return X, X[:k].copy()


def fitters(X: np.ndarray, C0: np.ndarray, iters: int) -> dict:
    """Each peer's fit from C0 for ``iters`` iterations; each returns (model, iterations run)."""
    import faiss
    from sklearn.cluster import KMeans

    Xt, Ct = torch.from_numpy(X), torch.from_numpy(C0)
    K = C0.shape[0]

    def ours():
        m = sqdist.KMeans(K, init=Ct, n_init=1, max_iter=iters, tol=0.0).fit(Xt)
        return m, int(m.n_iter_)

    def sk():
        m = KMeans(n_clusters=K, init=C0, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd").fit(X)
        return m, int(m.n_iter_)

    def fa():
        m = faiss.Kmeans(X.shape[1], K, niter=iters, nredo=1, verbose=False, seed=0, min_points_per_centroid=1,
                         max_points_per_centroid=10**9, update_index=True)
        m.train(X, init_centroids=C0)
        return m, iters

    return {"sqdist.KMeans": ours, "sklearn": sk, "faiss": fa}


def marginal(times: dict, peers: list[str], iters: int) -> dict:
    """Seconds per extra Lloyd iteration of each peer: the median over rounds of (its
    ``iters``-iteration fit - its one-iteration fit) / (iters - 1), the two fits timed in the same
    round.  What a fit costs beyond its iterations (validation, initial copies, and the final
    assignment that gives the labels of the returned centres: sqdist and scikit-learn assign
    ``max_iter + 1`` times, FAISS ``max_iter`` times and returns no labels) cancels out."""
    return {k: median([(a - b) / (iters - 1) for a, b in zip(times[k], times[f"{k} (1 iteration)"])])
            for k in peers}


def run_kmeans(shapes, args, out: dict) -> None:
    rows, prow, mrow = [], [], []
    user = user_layer(KM_BATCH, KM_HIDDEN, seed=2)
    for N, D, K in shapes:
        X, C0 = blobs_or_cloud(N, D, K)
        fit = fitters(X, C0, args.iters)
        models = {k: f() for k, f in fit.items()}  # warm-up, iteration counts and fitted models
        n_it = {k: v[1] for k, v in models.items()}
        key = f"{N}x{D}x{K}"
        out[key] = {"iters": n_it}
        # "alone" also times one-iteration fits in the same rounds, for the cost per extra iteration
        one = {f"{k} (1 iteration)": f for k, f in fitters(X, C0, 1).items()} if args.iters > 1 else {}
        for mode, before in (("alone", None), ("after torch work", user)):
            fns = fit | one if mode == "alone" else fit
            times = interleaved_runs(fns, args.rounds, warmup=0, budget_s=args.budget, before=before,
                                     min_s=args.min_seconds)
            res = stats({k: times[k] for k in fit})
            per = {k: {s: v[s] / max(1, n_it[k]) for s in ("median", "min")} | {"rounds": v["rounds"]} for k, v in res.items()}
            rm, rmin, best = ratio_rows(per, "sqdist.KMeans", ["sklearn", "faiss"])
            out[key][mode] = {"seconds_per_iter": per, "ratio_median": rm, "ratio_min": rmin, "best_peer": best}
            rows.append([key, mode] + [fmt(per[k]) for k in fit] + [f"{rm:.2f}x", f"{rmin:.2f}x"])
            if mode == "alone" and one and all(n_it[k] == args.iters for k in fit):
                m = marginal(times, list(fit), args.iters)
                mb = min(("sklearn", "faiss"), key=m.get)
                fixed = {k: median(times[f"{k} (1 iteration)"]) - m[k] for k in fit}
                out[key]["per extra iteration"] = {"seconds": m, "fixed_seconds": fixed, "one_iteration": stats(
                    {k: times[f"{k} (1 iteration)"] for k in fit}), "ratio_median": m["sqdist.KMeans"] / m[mb],
                    "best_peer": mb}
                mrow.append([key] + [f"{m[k] * 1e3:.1f}" for k in fit] + [f"{fixed[k] * 1e3:.1f}" for k in fit]
                            + [f"{m['sqdist.KMeans'] / m[mb]:.2f}x"])
        Xt = torch.from_numpy(X)
        pred = {"sqdist.KMeans": lambda m=models["sqdist.KMeans"][0]: m.predict(Xt),
                "sklearn": lambda m=models["sklearn"][0]: m.predict(X),
                "faiss": lambda m=models["faiss"][0]: m.index.search(X, 1)}
        res = interleaved(pred, args.rounds, budget_s=args.budget, before=user, min_s=args.min_seconds)
        rm, rmin, best = ratio_rows(res, "sqdist.KMeans", ["sklearn", "faiss"])
        out[key]["predict after torch work"] = {"seconds": res, "ratio_median": rm, "ratio_min": rmin, "best_peer": best}
        prow.append([key] + [fmt(res[k]) for k in pred] + [f"{rm:.2f}x", f"{rmin:.2f}x"])
        print(f"done kmeans {key}", file=sys.stderr, flush=True)
    if rows:
        print(f"\n[kmeans] ms per Lloyd iteration (fit / its iterations, {args.iters} at most), median (min)")
        print(table(rows, ["N x D x K", "mode", "sqdist.KMeans", "sklearn", "faiss", "sqdist/best median", "by min"]))
    if mrow:
        print(f"\n[kmeans] alone: ms per extra iteration (median over rounds of ({args.iters}-iteration fit - "
              f"1-iteration fit) / {args.iters - 1}), and the rest of a fit (ms)")
        print(table(mrow, ["N x D x K", "sqdist.KMeans", "sklearn", "faiss", "rest: sqdist", "sklearn", "faiss",
                           "sqdist/best per extra iteration"]))
    if prow:
        print("\n[kmeans predict] ms per predict of all N rows, each after the user's torch step, median (min)")
        print(table(prow, ["N x D x K", "sqdist.KMeans", "sklearn", "faiss", "sqdist/best median", "by min"]))


def run_exercise(args, out: dict) -> None:
    import faiss
    from sklearn.cluster import KMeans

    X, C0 = blobs_or_cloud(250, 2, 5)
    Xt = torch.from_numpy(X)

    def fa():
        m = faiss.Kmeans(2, 5, niter=20, nredo=1, verbose=False, seed=0, min_points_per_centroid=1)
        m.train(X, init_centroids=C0)

    fns = {
        "sqdist.kmeans": lambda: sqdist.kmeans(Xt, 5, init=C0, max_iter=20, tol=0.0),
        "faiss": fa,
        "sklearn": lambda: KMeans(5, init=C0, n_init=1, max_iter=20, tol=0.0, algorithm="lloyd").fit(X),
    }
    res = interleaved(fns, args.rounds, budget_s=args.budget, number=20, min_s=args.min_seconds)
    out["250x2x5"] = {"seconds": res, "vs_faiss_median": res["sqdist.kmeans"]["median"] / res["faiss"]["median"],
                      "vs_sklearn_median": res["sqdist.kmeans"]["median"] / res["sklearn"]["median"],
                      "n_iter_sqdist": int(sqdist.kmeans(Xt, 5, init=C0, max_iter=20, tol=0.0).n_iter)}
    e = out["250x2x5"]
    print("\n[exercise] whole fit at (250, 2, 5), at most 20 iterations, ms median (min): "
          + ", ".join(f"{k} {fmt(v)}" for k, v in res.items())
          + f"; sqdist/faiss {e['vs_faiss_median']:.2f}x, sqdist/sklearn {e['vs_sklearn_median']:.2f}x"
          + f" (sqdist stops after {e['n_iter_sqdist']} iterations on unchanged labels)")


def huge_page_empty(shape: tuple[int, int]) -> torch.Tensor:
    """A float32 tensor on a fresh private anonymous mapping advised MADV_HUGEPAGE (Linux)."""
    import mmap

    n = shape[0] * shape[1]
    buf = mmap.mmap(-1, 4 * n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(buf, dtype=torch.float32, count=n).view(shape)


def run_alloc(args, out: dict) -> None:
    shape = (4096, 4096)
    allocs = {"torch.empty": lambda: torch.empty(shape), "huge-page mapping": lambda: huge_page_empty(shape)}
    for pattern in ("replaced", "kept alive"):
        series: dict = {k: [] for k in allocs}
        for _ in range(max(1, args.rounds // 2)):
            for k, f in allocs.items():
                keep, ts = [], []
                for _ in range(5):
                    t = time.perf_counter()
                    d = f().fill_(1.0)
                    ts.append(time.perf_counter() - t)
                    if pattern == "kept alive":
                        keep.append(d)
                    del d
                del keep
                series[k].append(ts)
        out[f"five 64 MiB results, {pattern}"] = series
        print(f"\n[alloc] five 64 MiB results in a row ({pattern}), ms each, every repetition:")
        for k, v in series.items():
            print(f"  {k:18s} " + " | ".join(" ".join(f"{x * 1e3:.0f}" for x in ts) for ts in v))
    X, T = dist_data(4096, 4096, 2)
    fns = {"sqdist (own result)": lambda: sqdist.sqdist(X, T),
           "sqdist out=torch.empty": lambda: sqdist.sqdist(X, T, out=torch.empty(shape)),
           "sqdist out=huge-page": lambda: sqdist.sqdist(X, T, out=huge_page_empty(shape)),
           "torch.mm fresh": lambda: torch.mm(X, T.T)}
    res = interleaved(fns, args.rounds, budget_s=args.budget)
    out["sqdist 4096x4096x2 back to back"] = res
    print("[alloc] back to back at 4096 x 4096 x 2, ms median (min): " + ", ".join(f"{k} {fmt(v)}" for k, v in res.items()))


def kernels_in_use() -> str | None:
    """Name of the compiled CPU kernel module sqdist uses here (None: the torch code)."""
    pick = getattr(_cpu_kernels, "kernels", None)
    if pick is not None:
        mod = pick()
        return None if mod is None else mod.__name__
    return "sqdist._cpu_nb" if _cpu_kernels.available() else None


def parse_shapes(s: str | None, default: list) -> list:
    return default if not s else [tuple(int(v) for v in x.split("x")) for x in s.split(",") if x]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--shapes", default=None, help="distance / nearest shapes N x P x D, e.g. 4096x4096x2,4096x1024x16")
    ap.add_argument("--kmeans-shapes", default=None, help="k-means shapes N x D x K, e.g. 1000000x2x8")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--iters", type=int, default=5, help="Lloyd iterations per timed k-means fit")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of timing rounds per shape and mode")
    ap.add_argument("--min-seconds", type=float, default=5.0,
                    help="more rounds than --rounds until this many seconds per shape and mode (within --budget)")
    ap.add_argument("--out", default="realistic.json", help="JSON file to write")
    args = ap.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    bad = sorted(set(sections) - set(SECTIONS))
    if bad:
        ap.error(f"--sections: unknown {bad}, expected some of {list(SECTIONS)}")
    env = pin_threads(args.threads)
    print(f"float32, {args.threads} threads, {cpu_line(env['cpu'])}; torch {torch.__version__}; "
          f"sqdist kernels {kernels_in_use()}")
    results: dict = {"env": env, "command": " ".join(sys.argv), "rounds_at_least": args.rounds,
                     "min_seconds": args.min_seconds, "budget_seconds": args.budget,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
                     "sqdist_cpu_kernels": kernels_in_use(),
                     "user_work": {"loop": f"relu(B @ W) + B, B (N, {HIDDEN}), W ({HIDDEN}, {HIDDEN})",
                                   "kmeans": f"relu(B @ W) + B, B ({KM_BATCH}, {KM_HIDDEN}), W ({KM_HIDDEN}, {KM_HIDDEN})"}}
    dshapes = parse_shapes(args.shapes, DIST_SHAPES)
    for sec in ("loop", "isolated", "nearest"):
        if sec in sections:
            results[sec] = {}
            run_loop(dshapes, args, results[sec], sec)
            write_json(args.out, results)
    if "kmeans" in sections:
        results["kmeans"] = {}
        run_kmeans(parse_shapes(args.kmeans_shapes, KMEANS_SHAPES), args, results["kmeans"])
        write_json(args.out, results)
    if "exercise" in sections:
        results["exercise"] = {}
        run_exercise(args, results["exercise"])
    if "alloc" in sections:
        results["alloc"] = {}
        run_alloc(args, results["alloc"])
    results["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
