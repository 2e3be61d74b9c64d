"""One pool of threads: sqdist's C kernels (torch's OpenMP pool) vs numba (its own pool) vs torch code.

Run (from the repository root; about 3 minutes on a 2-core machine)::

    PYTHONPATH=src python benchmarks/pool.py --threads 2 --out pool.json

Every step, timed whole and back to back (no pause): the user's own layer
``torch.relu(B @ W) + B`` (B (N, 128), W (128, 128)), then one sqdist call --
``sqdist.sqdist(X, T)`` followed by ``torch.exp(-d / 2).sum()``,
``sqdist.nearest(X, T)``, or one k-means assignment step
(``_cpu_kernels.assign_accumulate(X, T)``: labels, distances and per-cluster
sums of X against the K = P centres T) -- under each kernel implementation
(``SQDIST_CPU_KERNELS`` = ``c``, ``numba``, ``torch``, switched per call in one
process), against the torch peers ``torch.cdist(X, T)**2``,
``torch.cdist(X, T).argmin(1)`` and cdist + argmin + ``index_add_``.  Then the
exercise's whole fit (250 points, D = 2, K = 5, at most 20 iterations):
``sqdist.kmeans`` under each implementation, FAISS and scikit-learn, blocks of
20 fits.  Times: median (minimum) of interleaved rounds; the JSON records the
CPU and the thread pools.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))

import sqdist  # noqa: E402
from _common import cpu_line, interleaved, pin_threads, table, write_json  # noqa: E402
from sqdist import _cpu_kernels  # noqa: E402

SHAPES = [(4096, 4096, 128), (4096, 1024, 16)]
HIDDEN = 128


def with_kernels(kind: str, f):
    def run():
        os.environ["SQDIST_CPU_KERNELS"] = kind
        return f()
    return run


def usable_kernels(wanted: list[str]) -> list[str]:
    ok = []
    for k in wanted:
        os.environ["SQDIST_CPU_KERNELS"] = k
        try:
            _cpu_kernels.kernels()
            ok.append(k)
        except sqdist.SqdistError as e:
            print(f"skipping {k}: {e}", file=sys.stderr)
    return ok


def torch_step(X: torch.Tensor, T: torch.Tensor):
    lab = torch.cdist(X, T).argmin(1)
    return torch.zeros(T.shape[0], X.shape[1], dtype=torch.float64).index_add_(0, lab, X.double())


def ops(X: torch.Tensor, T: torch.Tensor) -> dict:
    """op -> (sqdist call, torch peer), each followed by what the user does with the result."""
    return {
        "sqdist": (lambda: torch.exp(-sqdist.sqdist(X, T) / 2).sum(), lambda: torch.exp(-(torch.cdist(X, T) ** 2) / 2).sum()),
        "nearest": (lambda: sqdist.nearest(X, T), lambda: torch.cdist(X, T).argmin(1)),
        "kmeans step": (lambda: _cpu_kernels.assign_accumulate(X, T), lambda: torch_step(X, T)),
    }


def run_fight(kinds: list[str], args, out: dict) -> None:
    rows = []
    for N, P, D in SHAPES:
        g = torch.Generator().manual_seed(0)
        X, T = torch.randn(N, D, generator=g), torch.randn(P, D, generator=g)
        B, W = torch.randn(N, HIDDEN, generator=g), torch.randn(HIDDEN, HIDDEN, generator=g) / HIDDEN**0.5

        def step(f):
            def run():
                torch.relu(B @ W) + B
                return f()
            return run

        for op, (ours, peer) in ops(X, T).items():
            # the k-means step calls _cpu_kernels directly: "torch" there would still run numba's chunked kernel
            fns = {k: step(with_kernels(k, ours)) for k in kinds if not (op == "kmeans step" and k == "torch")}
            fns["torch.cdist"] = step(peer)
            res = interleaved(fns, args.rounds, budget_s=args.budget)
            key = f"{op} {N}x{P}x{D}"
            out[key] = {k: {"median_ms": v["median"] * 1e3, "min_ms": v["min"] * 1e3, "rounds": v["rounds"]}
                        for k, v in res.items()}
            rows.append([key] + [f"{res[k]['median'] * 1e3:.1f} ({res[k]['min'] * 1e3:.1f})" if k in res else "-"
                                 for k in [*kinds, "torch.cdist"]])
            print(f"done {key}", file=sys.stderr, flush=True)
    print("\n[fight] ms per step (user layer + call), median (min) of interleaved rounds")
    print(table(rows, ["step"] + [f"sqdist[{k}]" for k in kinds] + ["torch.cdist"]))


def run_exercise(kinds: list[str], args, out: dict) -> None:
    import faiss
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    X = (rng.normal(scale=4.0, size=(5, 2))[rng.integers(0, 5, 250)] + rng.normal(size=(250, 2))).astype(np.float32)
    C0 = X[:5].copy()
    Xt = torch.from_numpy(X)

    def fa():
        m = faiss.Kmeans(2, 5, niter=20, nredo=1, verbose=False, seed=0, min_points_per_centroid=1)
        m.train(X, init_centroids=C0)

    fns = {f"sqdist[{k}]": with_kernels(k, lambda: sqdist.kmeans(Xt, 5, init=C0, max_iter=20, tol=0.0)) for k in kinds}
    fns["faiss"] = fa
    fns["sklearn"] = lambda: KMeans(5, init=C0, n_init=1, max_iter=20, tol=0.0, algorithm="lloyd").fit(X)
    res = interleaved(fns, args.rounds, budget_s=args.budget, number=20)
    out["exercise 250x2x5"] = {k: {"median_ms": v["median"] * 1e3, "min_ms": v["min"] * 1e3} for k, v in res.items()}
    print("\n[exercise] whole fit (250, 2, 5), ms median (min): "
          + ", ".join(f"{k} {v['median'] * 1e3:.3f} ({v['min'] * 1e3:.3f})" for k, v in res.items()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--budget", type=float, default=40.0, help="seconds per comparison at most")
    ap.add_argument("--kernels", default="c,numba,torch", help="comma-separated SQDIST_CPU_KERNELS values")
    ap.add_argument("--sections", default="fight,exercise")
    ap.add_argument("--out", default="pool.json")
    args = ap.parse_args(argv)
    if "numba" in args.kernels and importlib.util.find_spec("numba") is not None:
        # numba's threading layer as sqdist sets it (workqueue), before pin_threads starts numba's
        # default ("omp": a second OpenMP runtime that would handicap the numba path)
        _cpu_kernels._nb()
    env = pin_threads(args.threads)
    kinds = usable_kernels(args.kernels.split(","))
    print(cpu_line(env["cpu"]), f"threads={args.threads}", f"kernels={kinds}")
    out: dict = {"env": env, "command": " ".join(sys.argv), "kernels": kinds}
    if "fight" in args.sections:
        run_fight(kinds, args, out)
    if "exercise" in args.sections:
        run_exercise(kinds, args, out)
    write_json(args.out, out)


if __name__ == "__main__":
    main()
