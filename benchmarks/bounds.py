"""How much of Lloyd's work Hamerly's bounds would skip on the realistic benchmark's hardest shape.

Issue 14 asks k-means per iteration at (10^5, 128, 1024) for 0.7x the best of
scikit-learn and FAISS, below the floor of the (N x K x D) product.  Bounds
(Hamerly 2010: one upper bound on the distance to the own centre, one lower
bound on the distance to any other, moved by the centres' shifts) skip the
rows whose assignment cannot change.  This script runs Lloyd in float64 on
the data of ``benchmarks/realistic.py`` (one Gaussian cloud, the first K rows
as centres) and prints, per iteration, the share of rows whose bounds still
overlap after tightening the upper bound (a full recomputation), the share
whose label changed, and the centres' largest and mean shift.

    PYTHONPATH=src python benchmarks/bounds.py -n 100000 -d 128 -k 1024 --iters 7
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))

from realistic import blobs_or_cloud  # noqa: E402  (the benchmark's own data)


def distances(X: torch.Tensor, C: torch.Tensor, rows: int = 8192) -> torch.Tensor:
    return torch.cat([torch.cdist(X[a : a + rows], C) for a in range(0, X.shape[0], rows)])  # (N, K)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("-d", type=int, default=128)
    ap.add_argument("-k", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=7)
    a = ap.parse_args()
    X = torch.from_numpy(blobs_or_cloud(a.n, a.d, a.k)[0].astype(np.float64))  # float32 data, computed in float64
    C = X[: a.k].clone()
    top = distances(X, C).topk(2, largest=False)
    lab, up, low = top.indices[:, 0], top.values[:, 0].clone(), top.values[:, 1].clone()
    for it in range(1, a.iters + 1):
        sums = torch.zeros_like(C).index_add_(0, lab, X)
        cnt = torch.bincount(lab, minlength=a.k).to(X.dtype)
        Cn = torch.where(cnt[:, None] > 0, sums / cnt.clamp_min(1)[:, None], C)
        shift = (Cn - C).norm(dim=1)  # (K,)
        C = Cn
        up = up + shift[lab]
        s2 = shift.topk(2).values
        low = low - torch.where(lab == shift.argmax(), s2[1], s2[0])  # the largest shift of another centre
        d = distances(X, C)
        up = torch.where(up > low, d.gather(1, lab[:, None])[:, 0], up)  # tighten where the bounds overlap
        full = up > low  # (N,) rows that need every distance
        top = d.topk(2, largest=False)
        changed = top.indices[:, 0] != lab
        lab = torch.where(full, top.indices[:, 0], lab)
        up = torch.where(full, top.values[:, 0], up)
        low = torch.where(full, top.values[:, 1], low)
        print(f"iteration {it}: full recomputation {float(full.double().mean()):.3f} of the rows, labels changed "
              f"{float(changed.double().mean()):.3f}, largest shift {float(shift.max()):.3f}, mean {float(shift.mean()):.3f}",
              flush=True)


if __name__ == "__main__":
    main()
