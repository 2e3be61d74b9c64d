"""GPU benchmark for the Triton kernels (issue 6): one prepared run, < 5 minutes on an H100/H200.

In one process it

1. measures the card's own ceilings: device-to-device copy bandwidth (bytes
   read + written), fp32 matrix-product rate with TF32 off, and with TF32 on;
2. checks correctness against float64 before timing anything (relative error
   of the distances on points near 1000, labels vs the float64 argmin,
   cluster sums vs a float64 index_add);
3. times (``triton.testing.do_bench``, median, ms) the distance matrix at
   N = P = 16384, D in {2, 16, 128, 256}: sqdist's Triton kernel, sqdist's
   torch path, the plain expansion, ``torch.cdist**2`` (and broadcasting at
   D = 2), each as a ratio to a bare ``torch.mm`` writing the same N x P output;
4. times one Lloyd iteration (assignment + update) at (N, D, K) =
   (2^20, 4, 1024), (2^20, 128, 1024), (10^6, 100, 1000) and the exercise
   size (250, 2, 5): ours (exact fp32, and tf32 where D > 4) vs naive torch
   (TF32 off and on) vs fast-pytorch-kmeans when it imports, with the
   arithmetic and memory floors from the ceilings of step 1;
5. counts kernel launches per iteration at the exercise size (torch.profiler);
6. prints the tables last and writes JSON to ``$OUT/gpu-bench.json`` if
   ``$OUT`` is set, else ``./gpu-bench.json`` (or ``--out``).

Usage::

    python benchmarks/gpu.py                 # on a CUDA machine with Triton
    python benchmarks/gpu.py --cpu-smoke     # tiny sizes, CPU tensors, Triton interpreter:
                                             # checks the script's logic, times mean nothing
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="run tiny sizes on CPU tensors under TRITON_INTERPRET=1 (script logic only)")
    ap.add_argument("--out", default=None, help="JSON path (default $OUT/gpu-bench.json or ./gpu-bench.json)")
    ap.add_argument("--skip-fpk", action="store_true", help="skip fast-pytorch-kmeans (slow at large D)")
    ap.add_argument("--rep-ms", type=float, default=100.0, help="do_bench repetition time per measurement (ms)")
    ap.add_argument("--budget-s", type=float, default=240.0,
                    help="after this many seconds, skip the slow optional peers (default 240)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before Triton defines the kernels
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    import sqdist
    from sqdist import _triton as tr

    if args.cpu_smoke:
        dev = torch.device("cpu")
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --cpu-smoke to check the script on the CPU", file=sys.stderr)
            return 2
        dev = torch.device("cuda")
    if not tr.available():
        print("Triton is not installed", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    results: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (interpreter smoke)",
                     "torch": torch.__version__, "triton": __import__("triton").__version__,
                     "cpu_smoke": args.cpu_smoke, "ceilings": {}, "checks": [], "distance": [], "lloyd": [],
                     "launches": {}, "notes": []}
    t_start = time.perf_counter()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def bench(fn, rep_ms=None) -> float:
        """Median milliseconds of fn()."""
        if dev.type == "cuda":
            from triton.testing import do_bench

            return float(do_bench(fn, warmup=max(5, (rep_ms or args.rep_ms) / 4), rep=rep_ms or args.rep_ms,
                                  return_mode="median"))
        fn()
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ts)

    def timed(row, key, fn, *, optional=False, rep_ms=None):
        """row[key] = bench(fn); peers that fail (OOM, ...) or would overrun the budget are noted, not fatal."""
        if optional and time.perf_counter() - t_start > args.budget_s:
            where = {k: row[k] for k in ("N", "D", "K") if k in row}
            results["notes"].append(f"skipped {key} at {where}: past --budget-s {args.budget_s:.0f} s")
            return
        try:
            row[key] = bench(fn, rep_ms)
        except Exception as exc:  # a peer failing must not lose the rest of the run
            results["notes"].append(f"{key} failed at {dict((k, row[k]) for k in ('N', 'D', 'K') if k in row)}: "
                                    f"{type(exc).__name__}: {str(exc)[:200]}")
            if dev.type == "cuda":
                torch.cuda.empty_cache()

    gen = torch.Generator(device=dev).manual_seed(0)

    def randn(*shape, offset=0.0):
        return torch.randn(*shape, generator=gen, device=dev) + offset

    def ref64(A, B):
        """float64 distances via the centred expansion: error ~1e-16 * (||a||^2 + ||b||^2), no (n, m, D) temporary."""
        c = B.double().mean(0)
        A64, B64 = A.double() - c, B.double() - c
        return ((A64 * A64).sum(1)[:, None] + (B64 * B64).sum(1)[None, :] - 2 * A64 @ B64.T).clamp_min_(0)

    # ------------------------------------------------------------------ ceilings
    n_copy = 2**28 if dev.type == "cuda" else 2**16
    a, b = randn(n_copy), torch.empty(n_copy, device=dev)
    ms = bench(lambda: b.copy_(a))
    results["ceilings"]["copy_GBps"] = 2 * 4 * n_copy / ms / 1e6
    a = b = None  # free them (rebinding rather than del: the lambda above reads these names)
    m = 8192 if dev.type == "cuda" else 128
    A, B = randn(m, m), randn(m, m)
    C = torch.empty(m, m, device=dev)
    ms = bench(lambda: torch.mm(A, B, out=C))
    results["ceilings"]["fp32_TFLOPs"] = 2 * m**3 / ms / 1e9
    torch.backends.cuda.matmul.allow_tf32 = True
    ms = bench(lambda: torch.mm(A, B, out=C))
    torch.backends.cuda.matmul.allow_tf32 = False
    results["ceilings"]["tf32_TFLOPs"] = 2 * m**3 / ms / 1e9
    A = B = C = None  # free them (rebinding rather than del: the lambdas above read these names)
    ceil = results["ceilings"]

    def check(name, ok, detail):
        results["checks"].append({"name": name, "ok": bool(ok), "detail": detail})

    # ------------------------------------------------------------------ distance matrix
    Nd = 16384 if dev.type == "cuda" else 96
    for D in ([2, 16, 128, 256] if dev.type == "cuda" else [2, 16]):
        # correctness first: points near 1000, a sample of rows against all columns, vs float64
        Xo, To = randn(Nd, D, offset=1000.0), randn(Nd, D, offset=1000.0)
        out = torch.full((Nd, Nd), float("nan"), device=dev)
        tr.sqdist_triton(Xo, To, out)
        rows = torch.arange(0, Nd, max(1, Nd // 256), device=dev)
        ref = ref64(Xo[rows], To)  # (r, Nd)
        rel = ((out[rows].double() - ref).abs() / ref.clamp_min(1e-300)).max().item()
        check(f"sqdist_triton D={D} offset 1000, max rel err vs float64", rel <= 1e-5 and not torch.isnan(out).any(), rel)
        X, T = randn(Nd, D), randn(Nd, D)
        tr.sqdist_triton(X, T, out)
        ref = ref64(X[rows], T)
        rel0 = ((out[rows].double() - ref).abs() / ref.clamp_min(1e-300)).max().item()
        check(f"sqdist_triton D={D} centred data, max rel err vs float64", rel0 <= 1e-5, rel0)
        del Xo, To, ref

        row = {"N": Nd, "P": Nd, "D": D}
        row["mm_ms"] = bench(lambda: torch.mm(X, T.T, out=out))
        row["ours_triton_ms"] = bench(lambda: tr.sqdist_triton(X, T, out))
        row["ours_path"] = "direct" if tr._Prep(X[:1], T[:1], torch.float32, matrix=True).direct else "product"
        if D > 4:  # the alternative the kernel does not pick for float32: product + epilogue + close tiles
            saved, tr._DIRECT_TAU = tr._DIRECT_TAU, 2.0
            try:
                tr.sqdist_triton(X, T, out)
                ref = ref64(X[rows], T)
                relp = ((out[rows].double() - ref).abs() / ref.clamp_min(1e-300)).max().item()
                check(f"sqdist_triton product path D={D}, max rel err vs float64", relp <= 1e-5, relp)
                row["ours_product_path_ms"] = bench(lambda: tr.sqdist_triton(X, T, out))
            finally:
                tr._DIRECT_TAU = saved
        timed(row, "ours_torch_ms", lambda: sqdist.sqdist(X, T, backend="torch", out=out), optional=True)

        def expansion():
            return ((X * X).sum(1)[:, None] + (T * T).sum(1)[None, :] - 2 * (X @ T.T)).clamp_min_(0)

        timed(row, "expansion_ms", expansion)
        timed(row, "cdist2_ms", lambda: torch.cdist(X, T) ** 2)
        if D == 2:
            timed(row, "broadcast_ms", lambda: ((X[:, None, :] - T[None, :, :]) ** 2).sum(-1), optional=True)
        # fraction of entries the exactness step recomputes (tau * (nx + nt) test), centred data
        p = tr._Prep(X[:1024], T, torch.float32)
        if not p.direct:
            thr = p.tau * (p.nx[:, None] + p.nt[None, :])
            d = (p.nx[:, None] + p.nt[None, :] - 2 * p.Xc @ p.Tc.T).clamp_min(0)
            row["close_fraction"] = (d < thr).float().mean().item()
            del thr, d
        results["distance"].append(row)
        X = T = out = None  # free them (rebinding rather than del: the closures above read these names)
        sync()

    # ------------------------------------------------------------------ Lloyd iteration
    try:
        try:
            import psutil  # noqa: F401  (fast-pytorch-kmeans imports it only to size CPU chunks)
        except ImportError:
            import types

            stub = types.ModuleType("psutil")
            stub.virtual_memory = lambda: types.SimpleNamespace(available=8 * 2**30)
            sys.modules["psutil"] = stub
            results["notes"].append("psutil missing: stubbed (fast-pytorch-kmeans uses it for CPU memory only)")
        from fast_pytorch_kmeans import KMeans as FPK
    except Exception as exc:  # optional peer
        FPK = None
        results["notes"].append(f"fast-pytorch-kmeans unavailable: {type(exc).__name__}: {exc}")
    if args.skip_fpk:
        FPK = None

    if dev.type == "cuda":
        sizes = [(2**20, 4, 1024), (2**20, 128, 1024), (10**6, 100, 1000), (250, 2, 5)]
    else:
        sizes = [(600, 4, 120), (300, 33, 40), (250, 2, 5)]  # general, general + margin re-check, tiny
    for N, D, K in sizes:
        X = randn(N, D)
        C = X[torch.randperm(N, generator=gen, device=dev)[:K]].clone()

        def ours(precision="ieee"):
            labels, mind, sums, counts, inertia = tr.assign_accumulate_triton(X, C, precision=precision)
            newC = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], C.double()).to(C.dtype)
            return labels, newC

        def naive():
            d = (X * X).sum(1, keepdim=True) - 2 * (X @ C.T) + (C * C).sum(1)  # (N, K)
            labels = d.argmin(1)
            sums = torch.zeros(K, D, device=dev, dtype=X.dtype).index_add_(0, labels, X)
            counts = torch.bincount(labels, minlength=K)
            newC = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], C)
            return labels, newC

        # correctness before timing
        lab, newC = ours()
        r = min(N, 4096)
        ref = ref64(X[:r], C)  # (r, K)
        agree = (lab[:r] == ref.argmin(1)).float().mean().item()
        check(f"lloyd ({N},{D},{K}) labels == float64 argmin (first {r} rows)", agree == 1.0, agree)
        cnt = torch.bincount(lab, minlength=K)
        want = torch.zeros(K, D, dtype=torch.float64, device=dev).index_add_(0, lab, X.double())
        wantC = torch.where(cnt[:, None] > 0, want / cnt.clamp_min(1)[:, None], C.double())
        relc = ((newC.double() - wantC).abs().max() / wantC.abs().max().clamp_min(1e-300)).item()
        check(f"lloyd ({N},{D},{K}) centres vs float64 index_add", relc < 1e-6, relc)
        lab2, newC2 = ours()
        check(f"lloyd ({N},{D},{K}) bitwise deterministic", torch.equal(lab, lab2) and torch.equal(newC, newC2), "")
        row = {"N": N, "D": D, "K": K}
        if D > 4:
            labf, _ = ours("tf32")
            check(f"lloyd ({N},{D},{K}) tf32 labels == ieee labels", torch.equal(labf, lab), "")
            p = tr._Prep(X, C, torch.float32)
            row["recheck_fraction_ieee"] = tr._nearest_core(p, "ieee")[2] / N
            row["recheck_fraction_tf32"] = tr._nearest_core(p, "tf32")[2] / N
            del p
        try:
            labn, _ = naive()
            row["naive_label_agreement"] = (labn == lab).float().mean().item()
            del labn
        except Exception as exc:
            results["notes"].append(f"naive torch failed at ({N},{D},{K}): {type(exc).__name__}: {str(exc)[:200]}")
        del ref, want, wantC
        sync()

        row["ours_ms"] = bench(ours)
        if D > 4:
            row["ours_tf32_ms"] = bench(lambda: ours("tf32"))
        timed(row, "naive_ms", naive)
        if D > 4:
            torch.backends.cuda.matmul.allow_tf32 = True
            timed(row, "naive_tf32_ms", naive)
            torch.backends.cuda.matmul.allow_tf32 = False
        row["ours_assign_only_ms"] = bench(lambda: tr.assign_accumulate_triton(X, C))
        if dev.type == "cuda" and tr._is_tiny(N, K, D):
            # tiny problems are launch-bound: replay the whole iteration as one CUDA graph
            try:
                s_ = torch.cuda.Stream()
                s_.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s_):
                    for _ in range(3):
                        ours()
                torch.cuda.current_stream().wait_stream(s_)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    g_lab, g_C = ours()
                graph.replay()
                sync()
                check(f"lloyd ({N},{D},{K}) CUDA-graph replay == eager", torch.equal(g_lab, lab) and torch.equal(g_C, newC), "")
                row["ours_graph_ms"] = bench(graph.replay)
            except Exception as exc:
                results["notes"].append(f"CUDA graph capture failed at ({N},{D},{K}): {type(exc).__name__}: {exc}")
        if FPK is not None:
            def fpk():
                km = FPK(n_clusters=K, max_iter=1, tol=-1.0, verbose=0, mode="euclidean")
                return km.fit_predict(X, centroids=C.clone())
            try:
                timed(row, "fast_pytorch_kmeans_ms", fpk, optional=True, rep_ms=min(args.rep_ms, 50.0))
            except Exception as exc:
                results["notes"].append(f"fast-pytorch-kmeans failed at ({N},{D},{K}): {exc}")
        # floors: the assignment's multiply-adds at the fp32 mm rate; reading X once at copy bandwidth
        row["floor_arith_ms"] = 2 * N * K * D / (ceil["fp32_TFLOPs"] * 1e9)
        row["floor_arith_tf32_ms"] = 2 * N * K * D / (ceil["tf32_TFLOPs"] * 1e9)
        row["floor_mem_ms"] = 4 * N * D / (ceil["copy_GBps"] * 1e6)
        results["lloyd"].append(row)
        del X, C
        sync()

    # ------------------------------------------------------------------ launches at the exercise size
    if dev.type == "cuda":
        try:
            from torch.profiler import ProfilerActivity, profile

            for (N, D, K) in [(250, 2, 5), (20000, 16, 64)]:
                X = randn(N, D)
                C = X[:K].clone()
                tr.assign_accumulate_triton(X, C)
                sync()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    tr.assign_accumulate_triton(X, C)
                    sync()
                kern = [e for e in prof.events() if e.device_type.name == "CUDA"]
                results["launches"][f"assign_accumulate ({N},{D},{K})"] = len(kern)
                results["launches"][f"kernels ({N},{D},{K})"] = sorted({e.name[:60] for e in kern})
        except Exception as exc:
            results["notes"].append(f"launch count failed: {type(exc).__name__}: {exc}")
    results["wall_s"] = time.perf_counter() - t_start

    # ------------------------------------------------------------------ output
    path = Path(args.out) if args.out else Path(os.environ.get("OUT") or ".") / "gpu-bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, path)
    print_tables(results)
    print(f"JSON: {path}")
    return 0 if all(c["ok"] for c in results["checks"]) else 1


def print_tables(res: dict) -> None:
    c = res["ceilings"]
    print(f"\n# {res['device']}  torch {res['torch']}  triton {res['triton']}  ({res['wall_s']:.0f} s)")
    print(f"ceilings: copy {c['copy_GBps']:.0f} GB/s, fp32 mm {c['fp32_TFLOPs']:.1f} TFLOP/s, "
          f"tf32 mm {c['tf32_TFLOPs']:.1f} TFLOP/s")
    bad = [k for k in res["checks"] if not k["ok"]]
    print(f"checks: {len(res['checks']) - len(bad)}/{len(res['checks'])} passed")
    for k in bad:
        print(f"  FAILED {k['name']}: {k['detail']}")
    for n in res["notes"]:
        print(f"note: {n}")
    for k, v in res["launches"].items():
        if not k.startswith("kernels"):
            print(f"GPU kernels per call, {k}: {v}")
    print("\ndistance matrix, ms and ratio to bare mm writing the same output (TF32 off)")
    cols = ["ours_triton", "ours_product_path", "ours_torch", "expansion", "cdist2", "broadcast"]
    print(f"{'N=P':>6} {'D':>4} {'mm ms':>8} " + " ".join(f"{k[:14]:>14}" for k in cols) + f" {'close%':>7}")
    for r in res["distance"]:
        cells = []
        for k in cols:
            v = r.get(k + "_ms")
            cells.append(f"{v:7.2f} {v / r['mm_ms']:5.2f}x" if v is not None else f"{'-':>14}")
        cf = r.get("close_fraction")
        close = f"{100 * cf:6.2f}%" if cf is not None else f"{'-':>7}"
        print(f"{r['N']:>6} {r['D']:>4} {r['mm_ms']:8.3f} " + " ".join(cells) + f" {close}")
    print("\none Lloyd iteration (assignment + update), ms; floors from the measured ceilings")
    cols = ["ours", "ours_tf32", "ours_graph", "naive", "naive_tf32", "fast_pytorch_kmeans"]
    print(f"{'N':>8} {'D':>4} {'K':>5} " + " ".join(f"{k:>12}" for k in cols)
          + f" {'naive/ours':>10} {'floor fp32':>10} {'floor mem':>9} {'recheck tf32':>12}")
    for r in res["lloyd"]:
        cells = [f"{r[k + '_ms']:12.3f}" if k + "_ms" in r else f"{'-':>12}" for k in cols]
        rc = r.get("recheck_fraction_tf32")
        print(f"{r['N']:>8} {r['D']:>4} {r['K']:>5} " + " ".join(cells)
              + (f" {r['naive_ms'] / r['ours_ms']:10.2f}" if "naive_ms" in r else f" {'-':>10}")
              + f" {r['floor_arith_ms']:10.3f} {r['floor_mem_ms']:9.4f} "
              + (f"{100 * rc:11.2f}%" if rc is not None else f"{'-':>12}"))


if __name__ == "__main__":
    sys.exit(main())
