"""The exercise in a few lines with sqdist.

Task 1 -- the pairwise squared Euclidean distances ``d[i, j] = ||X[i] - T[j]||**2``
computed the four ways (two Python loops, NumPy broadcasting, PyTorch
broadcasting, PyTorch through the expansion ``||x||² + ||t||² - 2 x·t``), each
checked against the others; Task 2 -- which shapes broadcast together, and to
what; Task 3 -- k-means on the five blobs for P = 2, 5 and 8 from fixed row
indices, stopping when every centre moved less than ``tol``.

Run::

    python examples/exercise.py                   # N = 300, P = 40, D = 16
    python examples/exercise.py --n 50 --p 8      # smaller
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import sqdist
from sqdist.datasets import exercise_init_indices, make_blobs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="points N (default 300)")
    p.add_argument("--p", type=int, default=40, help="prototypes P (default 40)")
    p.add_argument("--d", type=int, default=16, help="features D (default 16)")
    args = p.parse_args(argv)

    # --- Task 1: the distance matrix four ways -------------------------------------------
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.n, args.d))
    T = rng.normal(size=(args.p, args.d))
    reference = sqdist.sqdist(X, T, method="loops")  # the exercise's two for-loops
    print(f"Task 1: distances of N={args.n} points to P={args.p} prototypes in D={args.d}")
    for method, x, t in [
        ("loops", X, T),
        ("numpy", X, T),  # X[:, None, :] - T[None, :, :], squared and summed
        ("broadcast", torch.from_numpy(X), torch.from_numpy(T)),  # the same in PyTorch
        ("gemm", torch.from_numpy(X), torch.from_numpy(T)),  # ||x||^2 + ||t||^2 - 2 X @ T.T, made exact
    ]:
        sqdist.sqdist(x, t, method=method)  # warm-up: the first call pays one-off set-up costs
        t0 = time.perf_counter()
        d = sqdist.sqdist(x, t, method=method)
        ms = 1e3 * (time.perf_counter() - t0)
        kind = type(d).__name__  # NumPy in -> ndarray out, torch in -> Tensor out
        ok = np.allclose(np.asarray(d), reference, rtol=1e-12, atol=1e-12)
        print(f"  {method:<9} {kind:<7} shape {tuple(d.shape)}  {ms:8.2f} ms  equal to the loops: {ok}")

    # --- Task 2: broadcasting ----------------------------------------------------------
    print("\nTask 2: broadcasting")
    for a, b in [((4, 1), (3, 1, 5)), ((2, 1), (8, 4, 3)), ((3, 1, 5), (1, 4, 1)), ((5, 4), (1, 4, 2))]:
        try:
            result = str(sqdist.broadcast_shapes(a, b))
        except sqdist.BroadcastError as exc:
            result = f"not compatible ({exc})"
        print(f"  {a} with {b}: {result}")
    print(sqdist.explain_broadcast((4, 1), (3, 1, 5)))

    # --- Task 3: k-means on the exercise's blobs -----------------------------------------
    print("\nTask 3: k-means on 5 blobs x 50 points, fixed initial rows, tol 1e-4 (data units)")
    points, _ = make_blobs()
    for P in (2, 5, 8):
        init = exercise_init_indices(P, len(points))
        r = sqdist.kmeans(points, init=init, max_iter=100, tol=1e-4, tol_mode="absolute")
        sizes = np.bincount(r.labels, minlength=P).tolist()
        print(f"  P={P}: init rows {init}, {r.n_iter} iterations, converged {r.converged}, "
              f"inertia {r.inertia:.4f}, sizes {sizes}")
        print("        centres " + "  ".join(f"({c[0]:+.3f}, {c[1]:+.3f})" for c in r.centers))


if __name__ == "__main__":
    main()
