"""Sparse k-means: sqdist vs scikit-learn per Lloyd iteration on a TF-IDF-like CSR matrix, same data and init.

The data (issue 13): N x 2**16 CSR, 0.1 % of the entries stored (about 65 terms
per row), columns drawn from a Zipf law (word frequencies), values ``(1 +
log tf) * idf``, rows normalised to unit length (TfidfVectorizer's defaults).
Both libraries start from the same centres (k-means++ drawn once by sqdist)
and run with ``tol=0``.  Time per iteration = ``(fit(max_iter=m) -
fit(max_iter=1)) / (m - 1)`` from the medians of interleaved rounds (the
fixed costs of a fit -- validation, the tolerance's variance, the first
assignment -- cancel).  Two sqdist paths are measured: the compiled CSR
kernel (numba, the default on the CPU) and the torch path
(``torch.sparse.mm``, the path on GPUs).  The CPU (model, cores, AVX2 /
AVX-512) is recorded.

    PYTHONPATH=src python benchmarks/sparse.py --rows 100000 --k 64 --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_line, interleaved_runs, pin_threads, stats, write_json  # noqa: E402


def tfidf_like(n: int, d: int, density: float, seed: int = 0):
    """A TF-IDF-like CSR matrix (n, d), float64, unit rows (see the module docstring)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    per_row = max(1, round(density * d))
    p = 1.0 / np.arange(1, d + 1) ** 1.1
    p /= p.sum()
    vocab = rng.permutation(d)  # Zipf law over a shuffled vocabulary
    tokens = per_row
    for _ in range(2):  # repeated words merge into term counts: draw enough tokens for per_row distinct terms
        probe = sp.csr_matrix((np.ones(1000 * tokens), (np.repeat(np.arange(1000), tokens),
                                                        rng.choice(d, size=1000 * tokens, p=p))), shape=(1000, d))
        tokens = max(tokens, round(tokens * per_row / (probe.nnz / 1000)))
    cols = vocab[rng.choice(d, size=n * tokens, p=p)]
    rows = np.repeat(np.arange(n), tokens)
    tf = sp.csr_matrix((np.ones(n * tokens), (rows, cols)), shape=(n, d))  # duplicates summed: term counts
    df = np.bincount(tf.indices, minlength=d)
    idf = np.log((1 + n) / (1 + df)) + 1
    tf.data = (1 + np.log(tf.data)) * idf[tf.indices]
    norms = np.sqrt(np.asarray(tf.multiply(tf).sum(1)).ravel())
    return sp.csr_matrix(sp.diags(1 / norms) @ tf)


@contextlib.contextmanager
def torch_path():
    """Run sqdist's sparse code on its torch path (``torch.sparse.mm``) instead of the compiled kernels."""
    from sqdist import _sparse

    old = _sparse._compiled
    _sparse._compiled = lambda X: False
    try:
        yield
    finally:
        _sparse._compiled = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=1 << 16)
    ap.add_argument("--density", type=float, default=1e-3)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--max-iter", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--no-torch-path", action="store_true", help="skip the torch.sparse.mm path")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from sklearn.cluster import KMeans as SKKMeans

    import sqdist

    info = pin_threads(args.threads)
    X = tfidf_like(args.rows, args.features, args.density)
    C0 = sqdist.kmeans_plusplus(X, args.k, random_state=0)[0]

    def sq(m):
        return lambda: sqdist.kmeans(X, init=C0, max_iter=m, tol=0)

    def sq_torch(m):
        def run():
            with torch_path():
                return sqdist.kmeans(X, init=C0, max_iter=m, tol=0)
        return run

    def sk(m):
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return SKKMeans(args.k, init=C0, n_init=1, max_iter=m, tol=0, algorithm="lloyd").fit(X)
        return run

    m = args.max_iter
    fns = {"sklearn m": sk(m), "sklearn 1": sk(1), "sqdist m": sq(m), "sqdist 1": sq(1)}
    if not args.no_torch_path:
        fns.update({"sqdist-torch m": sq_torch(m), "sqdist-torch 1": sq_torch(1)})
    st = stats(interleaved_runs(fns, args.rounds, warmup=1, budget_s=1800))
    per_iter = {name: (st[f"{name} m"]["median"] - st[f"{name} 1"]["median"]) / (m - 1)
                for name in ("sklearn", "sqdist") + (() if args.no_torch_path else ("sqdist-torch",))}
    r_sq, r_sk = sq(m)(), sk(m)()
    quality = {"inertia_sqdist": r_sq.inertia, "inertia_sklearn": float(r_sk.inertia_),
               "labels_equal": float(np.mean(r_sq.labels == r_sk.labels_))}
    print(f"CPU: {cpu_line(info['cpu'])}; threads {args.threads}")
    print(f"data: {X.shape[0]} x {X.shape[1]} CSR, {X.nnz / X.shape[0]:.1f} stored per row, K = {args.k}, "
          f"max_iter {m}, {args.rounds} interleaved rounds")
    for name, t in per_iter.items():
        print(f"{name:>14}: {t * 1e3:8.1f} ms / iteration  (ratio to scikit-learn {t / per_iter['sklearn']:.3f})")
    print(f"final inertia sqdist {quality['inertia_sqdist']:.6f}, scikit-learn {quality['inertia_sklearn']:.6f}, "
          f"labels equal {quality['labels_equal']:.4f}")
    if args.json:
        write_json(args.json, {"args": vars(args), "machine": info, "seconds": st, "per_iteration_s": per_iter,
                               "ratio_sqdist_to_sklearn": per_iter["sqdist"] / per_iter["sklearn"], **quality})


if __name__ == "__main__":
    main()
