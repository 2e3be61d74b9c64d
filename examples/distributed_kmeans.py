"""Distributed k-means with ``torchrun``: every process fits its share of one ``.npy`` file.

``torchrun`` starts the processes and sets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; the script joins the process group
(gloo, on the CPU) and calls ``sqdist.kmeans_stream(path, K)``, which uses the
default group: rank ``r`` of ``W`` reads its own contiguous chunks of the
file, and one all-reduce per iteration adds the per-cluster sums as exact
integers.  So the centres, inertia and iteration count are **bit-identical**
to a single-process fit of the same file with the same settings -- whatever
the number of processes.  Run without ``torchrun`` it is that single-process
fit.

Run::

    torchrun --nproc_per_node=2 --standalone examples/distributed_kmeans.py
    python examples/distributed_kmeans.py                  # one process: the same numbers

On several machines, start the same command on each with ``--nnodes``,
``--node_rank`` and a ``--rdzv_endpoint`` every machine can reach, and give a
``--data`` file on a shared file system (see docs/scaling.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import sqdist


def write_blobs(path: Path, rows: int, dim: int, n_blobs: int, seed: int) -> None:
    """Write ``rows`` float32 points from ``n_blobs`` Gaussian blobs to a .npy file."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-20.0, 20.0, size=(n_blobs, dim))
    X = means[rng.integers(0, n_blobs, size=rows)] + rng.normal(scale=4.0, size=(rows, dim))
    np.save(path, X.astype(np.float32))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a .npy file every process can read (default: blobs written by rank 0 to a temporary folder)")
    p.add_argument("--rows", type=int, default=200_000, help="rows of the generated data (default 200000)")
    p.add_argument("--dim", type=int, default=8, help="features of the generated data (default 8)")
    p.add_argument("-k", type=int, default=8, help="clusters K (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and random_state of k-means++ (default 0)")
    p.add_argument("--working-memory", type=float, default=4.0,
                   help="MiB budget; fixes the chunks, so compare runs with the same value (default 4)")
    p.add_argument("--json", help="rank 0 writes the result (centres, inertia, n_iter) here as JSON")
    args = p.parse_args(argv)

    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")  # the rendezvous comes from torchrun's environment variables
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)

    tmp = None
    if args.data:
        data = args.data
    else:  # rank 0 writes the data; every rank learns where
        if rank == 0:
            tmp = tempfile.TemporaryDirectory(prefix="sqdist-example-")
            data = str(Path(tmp.name) / "X.npy")
            write_blobs(Path(data), args.rows, args.dim, args.k, args.seed)
        box = [data if rank == 0 else None]
        if distributed:
            dist.broadcast_object_list(box, src=0)  # also a barrier: the file exists after it
        data = box[0]

    try:
        t0 = time.perf_counter()
        r = sqdist.kmeans_stream(data, args.k, random_state=args.seed, working_memory=args.working_memory)
        seconds = time.perf_counter() - t0
        if distributed:
            dist.barrier()  # rank 0 removes the temporary file only after every rank is done with it
        if rank == 0:
            centers = np.asarray(r.centers)
            digest = hashlib.sha256(centers.tobytes()).hexdigest()[:16]
            print(f"{world} process(es), torch.distributed: {sqdist.is_distributed()}; {r.n_iter} iterations in "
                  f"{seconds:.2f} s, converged {r.converged}")
            print(f"inertia {r.inertia!r}; centres {centers.shape} {centers.dtype}, sha256 {digest}")
            if args.json:
                Path(args.json).write_text(json.dumps({"world_size": world, "n_iter": r.n_iter, "inertia": r.inertia,
                                                       "centers": centers.tolist(), "dtype": str(centers.dtype)}))
    finally:
        if tmp is not None:
            tmp.cleanup()
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)  # one core per process, as torchrun's default OMP_NUM_THREADS=1
    main()
