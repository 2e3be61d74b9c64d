"""Worker for tests/test_distributed.py: one rank (or a single process) of a streamed k-means fit.

Run as ``python tests/dist_worker.py DATA OUT [options]``; the rank comes from
RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT when they are set.  Rank 0
writes centres, labels, inertia and n_iter to OUT (.npz).  ``--die-rank R
--die-at-pass P`` makes rank R exit abruptly (os._exit) when it starts its
P-th pass over the data -- a crashed process, for the fault tests.
``--minibatch array|file|sparse`` fits ``MiniBatchKMeans`` instead (tests/test_minibatch.py,
tests/test_distributed.py).
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("-k", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default="k-means++")
    p.add_argument("--max-iter", type=int, default=30)
    p.add_argument("--tol", type=float, default=0.0)
    p.add_argument("--working-memory", type=float, default=0.25)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--checkpoint")
    p.add_argument("--resume")
    p.add_argument("--weights", help="a .npy of sample weights, one per row")
    p.add_argument("--die-rank", type=int, default=-1)
    p.add_argument("--die-at-pass", type=int, default=-1)
    p.add_argument("--minibatch", choices=["array", "file", "sparse"],
                   help="fit sqdist's MiniBatchKMeans instead (on the loaded array, on the .npy path, or on the "
                        "SciPy CSR matrix of a .npz made by scipy.sparse.save_npz); every rank writes OUT.RANK.npz")
    p.add_argument("--batch-size", type=int, default=256)
    a = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    import sqdist
    from sqdist import _comm, _engine

    created = _comm.init_from_env(a.timeout, None)
    rank = int(os.environ.get("RANK", "0"))
    if rank == a.die_rank:
        real_pass, calls = _engine.Streamed.assign, [0]

        def dying_pass(*args, **kw):
            calls[0] += 1
            if calls[0] == a.die_at_pass:
                os._exit(17)
            return real_pass(*args, **kw)

        _engine.Streamed.assign = dying_pass
    if a.minibatch:
        from sqdist.minibatch import MiniBatchKMeans

        if a.minibatch == "sparse":
            import scipy.sparse

            X = scipy.sparse.load_npz(a.data).tocsr()
        else:
            X = np.load(a.data) if a.minibatch == "array" else a.data
        m = MiniBatchKMeans(a.k, random_state=a.seed, batch_size=a.batch_size, max_iter=a.max_iter).fit(X)
        np.savez(f"{a.out}.{rank}.npz", centers=m.cluster_centers_, counts=m.counts_, inertia=m.inertia_,
                 n_steps=m.n_steps_, n_iter=m.n_iter_, labels=np.asarray(m.labels_ if m.labels_ is not None else []))
        if created:
            _comm.destroy()
        return 0
    try:
        r = sqdist.kmeans_stream(
            a.data, a.k, init=a.init, random_state=a.seed, max_iter=a.max_iter, tol=a.tol, working_memory=a.working_memory,
            labels_out=a.out + ".labels.npy", checkpoint=a.checkpoint, resume=a.resume, sample_weight=a.weights,
        )
    except sqdist.SqdistError as exc:
        print(f"worker rank {rank}: error: {exc}", file=sys.stderr)
        _comm.destroy()
        return 3
    if rank == 0:
        np.savez(a.out, centers=r.centers, labels=np.asarray(r.labels), inertia=r.inertia, n_iter=r.n_iter,
                 converged=r.converged, init_centers=r.init_centers,
                 hist_inertia=np.array([h["inertia"] for h in r.history]))
    if created:
        _comm.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
