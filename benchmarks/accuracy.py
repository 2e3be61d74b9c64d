"""Accuracy of sqdist.sqdist (float32) against a float64 brute-force reference.

Prints a table of median / max relative error for data with spread 1 placed at
several offsets from the origin, several feature dimensions D, and a few
adversarial sets (many close pairs far from the centre), next to
``torch.cdist(...)**2`` for contrast.  Writes JSON with ``--out``.

    PYTHONPATH=src python benchmarks/accuracy.py [--n 1000] [--out accuracy.json]
"""

from __future__ import annotations

import argparse
import json

import torch

import sqdist


def ref64(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """float64 brute force, a few rows at a time ((rows, P, D) float64 stays near 64 MiB)."""
    X, T = X.double(), T.double()
    rows = max(1, (64 << 20) // max(1, 8 * T.shape[0] * T.shape[1]))
    return torch.cat([((X[s : s + rows, None, :] - T[None, :, :]) ** 2).sum(-1) for s in range(0, X.shape[0], rows)])  # (N, P)


def rel_err(d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    d = d.double()
    err = (d - r).abs()
    pos = r > 0
    assert bool((d[~pos] == 0).all()), "identical rows must give exactly 0"
    return err[pos] / r[pos]


def datasets(n: int, g: torch.Generator):
    for offset in (0.0, 1000.0, 5e5):
        for D in (1, 2, 3, 16, 64, 128, 300):
            X = (torch.randn(n, D, generator=g) + offset).float()
            T = (torch.randn(n, D, generator=g) + offset).float()
            yield f"offset {offset:g}, spread 1", D, X, T
    for D in (2, 64, 300):
        # two far clusters of near-duplicates: half the pairs are close, centre in between
        u = torch.randn(D, generator=g)
        u /= u.norm()
        lab = (torch.arange(n) % 2 * 2 - 1).float()[:, None]
        X = (1000 + lab * 100 * u + 0.05 * torch.randn(n, D, generator=g)).float()
        T = (1000 + lab * 100 * u + 0.05 * torch.randn(n, D, generator=g)).float()
        yield "two clusters (sep 200, spread 0.05) at 1000", D, X, T
        # duplicated points (every row of X is in T twice)
        T = torch.cat([X, X])[torch.randperm(2 * n, generator=g)]
        yield "duplicates of X in T", D, X, T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    rows = []
    print(f"{'data':45s} {'D':>4s} {'median rel':>11s} {'max rel':>10s} {'cdist**2 median':>16s} {'cdist**2 max':>13s}")
    for name, D, X, T in datasets(args.n, g):
        r = ref64(X, T)
        e = rel_err(sqdist.sqdist(X, T), r)
        ec = (torch.cdist(X, T) ** 2).double().sub(r).abs()[r > 0] / r[r > 0]
        row = dict(data=name, D=D, median=e.median().item(), max=e.max().item(),
                   cdist_median=ec.median().item(), cdist_max=ec.max().item())
        rows.append(row)
        print(f"{name:45s} {D:4d} {row['median']:11.2e} {row['max']:10.2e} {row['cdist_median']:16.2e} {row['cdist_max']:13.2e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
