"""``sqdist kmeans``: k-means on the exercise's blobs or a data file (in memory, streamed, or under torchrun).

Prints a summary; optionally writes the labels, the model and a plot.  A
``.npy`` file is streamed chunk by chunk (memory bounded by
``--working-memory``); under ``torchrun --nproc_per_node=N`` each rank reads
its slice and rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from typing import Any

import numpy as np
import torch

from . import datasets, plotting
from ._atomic import atomic_write, sweep_stale, temp_prefix
from ._comm import Comm, destroy, init_from_env, launched_by_torchrun
from ._init import INITS
from ._results import KMeansResult
from ._sources import STREAMED_SUFFIXES, as_source
from ._validation import SqdistError, check_finite_rows, check_no_alias, check_output_path, resolve_device
from .clustering import kmeans_stream
from .estimator import KMeans

__all__ = ["configure_parser", "run"]


def _parse_init_arg(text: str) -> Any:
    if text in INITS:
        return text
    try:
        return [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise SqdistError(
            f"--init: expected 'k-means++', 'random' or comma-separated row indices like 0,50,100, got {text!r}"
        ) from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``sqdist kmeans``."""
    parser.add_argument("--data", metavar="FILE",
                        help="points as .npy, .csv (with or without a header), .parquet or .arrow/.feather (these two need "
                             "pyarrow); default: the exercise's 5 blobs x 50 points")
    parser.add_argument("-k", "--n-clusters", type=int, default=None, metavar="K",
                        help="number of clusters (default 5, or the number of --init indices)")
    parser.add_argument("--init", default=None,
                        help="k-means++, random, or row indices like 0,50,100 (default: evenly spaced fixed indices)")
    parser.add_argument("--n-init", type=int, default=1, help="restarts for random inits (default 1)")
    parser.add_argument("--max-iter", type=int, default=300, help="maximum number of iterations M (default 300)")
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="stop when every centre moved less than this (data units, default 1e-4)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data and random inits (default 0)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                        help="compute in this precision (default float64; float32 is faster)")
    parser.add_argument("--plot", metavar="PNG",
                        help="save a figure: data with initial and converged centres, trajectories, inertia")
    parser.add_argument("--save", metavar="MODEL", help="save the fitted model (.npz, loadable with sqdist.KMeans.load)")
    parser.add_argument("--labels", metavar="NPY", help="save the labels as an int64 .npy array")
    parser.add_argument("--working-memory", type=float, default=None, metavar="MIB",
                        help="budget in MiB for temporaries and streamed chunks (default 256)")
    _add_streaming_arguments(parser)  # --checkpoint, --checkpoint-every, --resume, --timeout


def _resolve_init(init: Any, K: int | None, n_rows: int) -> tuple[Any, int | None]:
    """CLI default: the exercise's fixed indices for K (5 if not given), else k-means++."""
    if init is None:
        k = 5 if K is None else K
        if isinstance(k, int) and 1 <= k <= n_rows:
            init = datasets.exercise_init_indices(k, n_rows)
        else:
            init, K = "k-means++", k
    if isinstance(init, str) and K is None:
        K = 5
    return init, K


def _print_summary(data_desc: str, r: KMeansResult, init: Any, sizes: np.ndarray, args: argparse.Namespace) -> None:
    """The CLI's summary of a fit (shared by the in-memory and the streamed/distributed runs)."""
    init_desc = init if isinstance(init, str) else "indices " + ",".join(str(i) for i in init)
    print(f"data: {data_desc}")
    print(f"k-means: K={r.centers.shape[0]}, init {init_desc}, max_iter {args.max_iter}, tol {args.tol:g}")
    print(f"iterations: {r.n_iter} ({'converged' if r.converged else 'not converged'})")
    print(f"inertia: {r.inertia:.10g}")
    print("cluster sizes: " + " ".join(str(int(s)) for s in sizes))
    C = np.asarray(r.centers.cpu() if hasattr(r.centers, "cpu") else r.centers)
    if C.shape[0] * C.shape[1] <= 200:  # the centres themselves, when they fit on a screen
        print("centres:")
        for k, c in enumerate(C):
            print(f"  {k}: " + " ".join(f"{v:.6g}" for v in c))
    relocs = sum(len(h["relocated"]) for h in r.history)
    if relocs:
        print(f"empty-cluster relocations: {relocs}")


_OUTPUTS = (("--labels", "labels"), ("--save", "save"), ("--plot", "plot"), ("--checkpoint", "checkpoint"))


def check_outputs(args: argparse.Namespace) -> None:
    """Before any work: every output is a file in an existing folder, none is an input (``--data``;
    ``--resume`` for all but ``--checkpoint``, which may continue the same file) or another output;
    stale temporaries of killed runs next to them are removed."""
    outs = {opt: getattr(args, attr) for opt, attr in _OUTPUTS}
    for opt, path in outs.items():
        if path is not None:
            check_output_path(path, opt)
    check_no_alias(outs, {"--data": args.data})
    check_no_alias({k: v for k, v in outs.items() if k != "--checkpoint"}, {"--resume": args.resume})
    for path in outs.values():
        if path is not None:
            sweep_stale(path)


def run(args: argparse.Namespace) -> int:
    """Run ``sqdist kmeans``; prints a summary."""
    check_outputs(args)
    device = resolve_device(args.device, "--device")
    if _wants_streaming(args):  # .npy data, torchrun, checkpoints: streamed (and distributed) path
        return _run_streamed(args, device)
    if args.data is not None:
        X = datasets.load_points(args.data)
        truth = None
    else:
        X, truth = datasets.make_blobs(seed=args.seed)
    X = X.astype(args.dtype)
    check_finite_rows(torch.from_numpy(X), "--data")
    init = _parse_init_arg(args.init) if args.init is not None else None
    K = args.n_clusters
    init, K = _resolve_init(init, K, X.shape[0])
    data = X if device is None else torch.from_numpy(X).to(device)
    km = KMeans(K, init=init, n_init=args.n_init, max_iter=args.max_iter, tol=args.tol, tol_mode="absolute",
                random_state=args.seed, working_memory=args.working_memory)
    km.fit(data)
    r = km.result_
    labels = r.labels.cpu().numpy() if isinstance(r.labels, torch.Tensor) else r.labels
    sizes = np.bincount(labels, minlength=int(r.centers.shape[0]))
    src = args.data if args.data is not None else f"blobs (5 x 50, 2-D, seed {args.seed})"
    _print_summary(f"{src}, {X.shape[0]} points x {X.shape[1]} features", r, init, sizes, args)
    if args.labels:
        atomic_write(args.labels, lambda f: np.save(f, labels.astype(np.int64)))
        print(f"labels -> {args.labels}")
    if args.save:
        km.save(args.save)
        print(f"model -> {args.save}")
    if args.plot:
        fig = plotting.plot_kmeans_summary(X, r, truth=truth)
        plotting.save_figure(fig, args.plot)
        print(f"plot -> {args.plot}")
    return 0


def _add_streaming_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sqdist kmeans`` for streamed / distributed / checkpointed runs."""
    g = parser.add_argument_group(
        "out-of-core and distributed runs",
        "A .npy, .parquet or .arrow --data file is streamed chunk by chunk (memory bounded by --working-memory); under "
        "torchrun --nproc_per_node=N each rank reads its slice and rank 0 writes the outputs.",
    )
    g.add_argument("--checkpoint", metavar="NPZ", help="write a checkpoint (centres, iteration, seed state) here")
    g.add_argument("--checkpoint-every", type=int, default=1, metavar="N", help="checkpoint every N iterations (default 1)")
    g.add_argument("--resume", metavar="NPZ", help="continue from this checkpoint (same data and settings)")
    g.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="process-group timeout: if a rank dies or stops answering, the others stop with an error "
                        "after at most this long (default 300)")


def _wants_streaming(args: argparse.Namespace) -> bool:
    """The streamed path serves .npy / Parquet / Arrow data, torchrun launches and checkpointed runs."""
    npy = args.data is not None and str(args.data).lower().endswith(STREAMED_SUFFIXES)
    multi = launched_by_torchrun() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return npy or multi or args.checkpoint is not None or args.resume is not None


def _run_streamed(args: argparse.Namespace, device: torch.device | None) -> int:
    """``sqdist kmeans`` on a .npy file, streamed; distributed when launched by torchrun."""
    if args.data is None or not str(args.data).lower().endswith(STREAMED_SUFFIXES):
        raise SqdistError(
            f"--data: distributed, checkpointed and resumed runs read a .npy, .parquet or .arrow file, got {args.data!r}"
        )
    if not (math.isfinite(args.timeout) and 0 < args.timeout <= 1e9):
        raise SqdistError(f"--timeout: expected a number of seconds in (0, 1e9], got {args.timeout!r}")
    created = init_from_env(args.timeout, None if device is None else str(device))
    try:
        return _run_streamed_in_group(args, device)
    finally:
        if created:
            destroy()


def _run_streamed_in_group(args: argparse.Namespace, device: torch.device | None) -> int:
    comm = Comm()
    source = as_source(args.data, "--data")
    N, D = source.n_rows, source.n_features
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    init = _parse_init_arg(args.init) if args.init is not None else None
    init, K = _resolve_init(init, args.n_clusters, N)
    labels_path = args.labels
    tmp_labels = None
    if labels_path is None and (args.save or args.plot):
        # the labels of a file are written to disk: a temporary named after the model (or plot), which
        # later runs sweep away if this one is killed (the ranks of a process group share one name)
        out = os.path.abspath(args.save or args.plot)
        prefix = temp_prefix(out) if not comm.active else f".{os.path.basename(out)}.tmp-0-"
        tmp_labels = labels_path = os.path.join(os.path.dirname(out), prefix + "labels")
    try:
        r = kmeans_stream(
            source, K, init=init, n_init=args.n_init, max_iter=args.max_iter, tol=args.tol, tol_mode="absolute",
            random_state=args.seed, working_memory=args.working_memory, device=device, dtype=dtype,
            labels_out=labels_path, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
            resume=args.resume,
        )
        if comm.rank != 0:
            return 0
        sizes = np.asarray(r.history[-1]["sizes"])
        ranks = f" over {comm.world} ranks ({comm.backend})" if comm.active else ""
        _print_summary(f"{args.data}, {N} points x {D} features (streamed{ranks})", r, init, sizes, args)
        if args.labels:
            print(f"labels -> {args.labels}")
        if args.save:
            km = KMeans.from_result(r, init=init, n_init=args.n_init, max_iter=args.max_iter, tol=args.tol,
                                    tol_mode="absolute", random_state=args.seed, working_memory=args.working_memory)
            km.save(args.save)
            print(f"model -> {args.save}")
        if args.plot:
            X = source.rows(0, N).numpy().astype(args.dtype)  # any streamed format: .npy, Parquet, Arrow
            r.labels = np.asarray(r.labels)
            fig = plotting.plot_kmeans_summary(X, r, truth=None)
            plotting.save_figure(fig, args.plot)
            print(f"plot -> {args.plot}")
        return 0
    finally:
        if tmp_labels is not None and comm.rank == 0:
            with contextlib.suppress(OSError):
                os.unlink(tmp_labels)
