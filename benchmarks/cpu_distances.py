"""CPU distance-matrix benchmark: sqdist.sqdist against every importable peer.

Run (from the repository root)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \
        python benchmarks/cpu_distances.py --threads 2 --json cpu_distances.json

Every peer computes the same float32 N x P squared-distance matrix in one
process with all thread pools pinned; the candidates are interleaved round
by round with no pause between calls (see ``_common.interleaved``).  The
ratio table is time / time of a bare ``torch.mm`` writing the same N x P
output (the floor): the ratio of the medians over the rounds, with the ratio
of the minimums beside it.  The JSON keeps ``seconds`` / ``ratio_to_mm``
(minimums, as before) and adds ``median_seconds`` / ``ratio_to_mm_median``
and the CPU (``env.cpu``: model, AVX2 / AVX-512).
Accuracy of sqdist (vs float64, on normal data and data offset to 1000 and
5e5) is checked on the same shapes.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))

import sqdist  # noqa: E402
from _common import cpu_line, interleaved, pin_threads, table, write_json  # noqa: E402

SHAPES = [(4096, 4096, 2), (4096, 4096, 128), (16384, 1024, 256)]


def peers(X: torch.Tensor, T: torch.Tensor) -> dict:
    out = torch.empty(X.shape[0], T.shape[0], dtype=X.dtype)
    TtT = T.T.contiguous()
    Xn, Tn = X.numpy(), T.numpy()
    fns = {
        "torch.mm floor": lambda: torch.mm(X, TtT, out=out),
        "sqdist": lambda: sqdist.sqdist(X, T, out=out),
        "sqdist (alloc)": lambda: sqdist.sqdist(X, T),
        "naive torch": lambda: (X * X).sum(1)[:, None] + (T * T).sum(1)[None, :] - 2 * X @ T.T,
        "torch.cdist**2": lambda: torch.cdist(X, T) ** 2,
    }
    try:
        from sklearn.metrics.pairwise import euclidean_distances

        fns["sklearn"] = lambda: euclidean_distances(Xn, Tn, squared=True)
    except ImportError:
        pass
    try:
        from scipy.spatial.distance import cdist

        fns["scipy cdist"] = lambda: cdist(Xn, Tn, "sqeuclidean")
    except ImportError:
        pass
    try:
        import faiss

        fns["faiss"] = lambda: faiss.pairwise_distances(Xn, Tn)
    except ImportError:
        pass
    return fns


def accuracy(N: int, P: int, D: int, seed: int = 0) -> dict:
    """Relative error of sqdist vs float64 on rows of normal and offset data (+ exact zeros)."""
    g = torch.Generator().manual_seed(seed)
    res = {}
    n = min(N, 512)
    for offset in (0.0, 1000.0, 5e5):
        X = (torch.randn(n, D, generator=g) + offset).float()
        T = (torch.randn(P, D, generator=g) + offset).float()
        T[:8] = X[:8]  # identical rows -> exact zeros expected
        d = sqdist.sqdist(X, T).double()
        ref = ((X.double()[:, None, :] - T.double()[None, :, :]) ** 2).sum(-1) if n * P * D <= 2**27 else torch.cat(
            [((X.double()[i : i + 32, None, :] - T.double()[None]) ** 2).sum(-1) for i in range(0, n, 32)]
        )
        m = ref > 0
        rel = ((d - ref).abs()[m] / ref[m]).float()
        res[f"offset {offset:g}"] = {
            "median_rel": float(rel.median()),
            "max_rel": float(rel.max()),
            "exact_zeros": bool((d[torch.arange(8), torch.arange(8)] == 0).all()),
            "min": float(d.min()),
        }
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--shapes", default=None, help="e.g. 4096x4096x2,1024x1024x16")
    ap.add_argument("--json", default="cpu_distances.json")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of timing rounds per shape")
    args = ap.parse_args(argv)
    env = pin_threads(args.threads)
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    results = {"env": env, "shapes": {}}
    rows = []
    names = None
    for N, P, D in shapes:
        g = torch.Generator().manual_seed(0)
        X = torch.randn(N, D, generator=g)
        T = torch.randn(P, D, generator=g)
        fns = peers(X, T)
        names = names or list(fns)
        st = interleaved(fns, args.rounds, budget_s=args.budget)
        t = {k: v["min"] for k, v in st.items()}
        tm = {k: v["median"] for k, v in st.items()}
        floor, floor_m = t["torch.mm floor"], tm["torch.mm floor"]
        acc = accuracy(N, P, D)
        results["shapes"][f"{N}x{P}x{D}"] = {
            "seconds": t, "ratio_to_mm": {k: v / floor for k, v in t.items()},
            "median_seconds": tm, "ratio_to_mm_median": {k: v / floor_m for k, v in tm.items()}, "accuracy": acc}
        rows.append([f"{N}x{P}x{D}", f"{floor_m * 1e3:.2f} ({floor * 1e3:.2f})"]
                    + [f"{tm[k] / floor_m:.2f}x ({t[k] / floor:.2f}x)" if k in t else "-" for k in names])
        print(f"done {N}x{P}x{D}", file=sys.stderr, flush=True)
    print(f"float32, {args.threads} threads, {cpu_line(env['cpu'])}")
    print("time / bare torch.mm writing the same N x P output: median of interleaved rounds (minimum), no pauses")
    print(table(rows, ["N x P x D", "mm ms"] + names))
    print()
    arows = []
    for shp, r in results["shapes"].items():
        for off, a in r["accuracy"].items():
            arows.append([shp, off, f"{a['median_rel']:.2e}", f"{a['max_rel']:.2e}", str(a["exact_zeros"]), f"{a['min']:.3g}"])
    print("sqdist accuracy vs float64 (first 512 rows; targets: median <= 1e-6, max <= 1e-4, exact zeros, min >= 0)")
    print(table(arows, ["shape", "data", "median rel", "max rel", "exact 0", "min"]))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
