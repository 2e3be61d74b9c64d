"""Build notebooks/exercise.ipynb from the source of sqdist.exercise (one source, no drift).

The code cells that show the solutions are ``inspect.getsource`` of the
functions in ``src/sqdist/exercise.py``; the rest of the notebook is written
here.  The notebook is committed without outputs; tests/test_notebook.py
checks that the committed file equals a fresh build and executes it.

Usage::

    python notebooks/build_notebook.py            # rewrite notebooks/exercise.ipynb
    python notebooks/build_notebook.py --check    # exit 1 if the committed notebook is stale
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from sqdist import exercise
from sqdist.broadcast import EXERCISE_PAIRS  # the exercise's eight pairs, written out in the cell

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "exercise.ipynb"
#: environment variable naming a JSON file the notebook writes its Task 3 results to
RESULTS_ENV = "SQDIST_NOTEBOOK_RESULTS"


def _src(obj) -> str:
    return inspect.getsource(obj).rstrip("\n")


def _cells() -> list[tuple[str, str, str]]:
    """(kind, id, source) of every cell, in order."""
    md, code = "markdown", "code"
    return [
        (md, "title", """# IN3310 week 2 — broadcasting, distances on the GPU, k-means in PyTorch

The exercise (`shared/seed/exercise.md`) answered in code you can run, top to bottom, in well under a minute on a CPU.

* The solutions are the functions of [`src/sqdist/exercise.py`](../src/sqdist/exercise.py): the cells that define them are
  **generated from that file** by `notebooks/build_notebook.py`, so the notebook and the tested module never drift apart
  (edit the module, then run `python notebooks/build_notebook.py`).
* The notebook is committed **without outputs**: the diffs stay small and reviewable, and outputs come from running it
  on *your* machine (timings depend on it). The project's report (`sqdist report`) has rendered results and figures.
* `tests/test_exercise.py` checks every function against float64 references, SciPy and scikit-learn;
  `tests/test_notebook.py` executes this notebook and checks its Task 3 results."""),
        (code, "setup", f"""import json
import numbers
import os
import timeit
import tracemalloc
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch

import sqdist
from sqdist import SqdistError
from sqdist.datasets import exercise_init_indices, make_blobs

rng = np.random.default_rng(0)  # all randomness of this notebook comes from this generator
RESULTS_PATH = os.environ.get("{RESULTS_ENV}")  # set by tests/test_notebook.py to collect the Task 3 results
print("torch", torch.__version__, "| numpy", np.__version__, "| CUDA available:", torch.cuda.is_available())"""),
        # ---- Task 0 ----
        (md, "task0", """## Task 0 — recap: indexing and math operations

A few lines on what the rest relies on: slicing, inserting axes with `None`, reductions along an axis."""),
        (code, "task0-indexing", """a = np.arange(12).reshape(3, 4)  # (3, 4)
print(a)
print("row 1:", a[1], "| column 2:", a[:, 2], "| rows 0 and 2:", a[[0, 2]].tolist())
print("entries > 5:", a[a > 5])
print("a[None].shape =", a[None].shape, "| a[:, None, :].shape =", a[:, None, :].shape)
print("a[..., None].shape =", a[..., None].shape)"""),
        (code, "task0-math", """print("sum over axis 0:", a.sum(axis=0), "| over axis 1:", a.sum(axis=1))
print("keepdims keeps the axis:", a.sum(axis=1, keepdims=True).shape)
print("elementwise a * a:", (a * a)[0], "| matrix product a @ a.T:", (a @ a.T).shape)
t = torch.from_numpy(a)  # shares memory with a
print("torch: t.sum(dim=1) =", t.sum(dim=1), "| t.argmin(dim=1) =", t.argmin(dim=1))
print("t[:, None, :].shape =", tuple(t[:, None, :].shape))"""),
        # ---- Task 1 ----
        (md, "task1", r"""## Task 1 — the squared distance matrix $d_{ij} = \|X[i,:] - T[j,:]\|^2$

$X$ is $(N, D)$, $T$ is $(P, D)$. Decomposed: take the difference of every row of $X$ with every row of $T$,
square it elementwise, sum over the $D$ features. Broadcasting does "every row with every row" without loops:
`X[:, None, :]` is $(N, 1, D)$, `T[None, :, :]` is $(1, P, D)$, their difference is $(N, P, D)$.

Another way: expand $\|x - t\|^2 = \|x\|^2 + \|t\|^2 - 2\,x \cdot t$. The cross term for all pairs is one matrix
product `X @ T.T` $(N, P)$: no $(N, P, D)$ temporary, and fast — but less accurate far from the origin (see its docstring).

All four functions check their inputs with this helper:"""),
        (code, "check-shapes", _src(exercise.check_shapes)),
        (md, "task1-loops-md", "**1. Two for-loops** over $i$ and $j$ (NumPy arrays, one pair at a time):"),
        (code, "task1-loops", _src(exercise.distances_loops)),
        (md, "task1-numpy-md", "**2. NumPy broadcasting** — no loops, an $(N, P, D)$ temporary:"),
        (code, "task1-numpy", _src(exercise.distances_numpy)),
        (md, "task1-torch-md", """**3. PyTorch broadcasting** — the same expression on tensors. It runs wherever `X` lives:
on CUDA tensors this *is* the GPU version."""),
        (code, "task1-torch", _src(exercise.distances_torch)),
        (md, "task1-expansion-md", r"**4. PyTorch with the expansion** $\|x\|^2 + \|t\|^2 - 2\,XT^\top$:"),
        (code, "task1-expansion", _src(exercise.distances_torch_expansion)),
        (md, "task1-validate-md", """### Validation

PyTorch (CPU) must give the same numbers as the loops and NumPy broadcasting (`torch.allclose`), and all of them the
same as a float64 reference (SciPy's `cdist` in the test suite)."""),
        (code, "task1-validate", """N, P, D = 60, 25, 8
X = rng.standard_normal((N, D))  # (N, D) float64
T = rng.standard_normal((P, D))  # (P, D)
d_loops = distances_loops(X, T)  # (N, P)
d_numpy = distances_numpy(X, T)  # (N, P)
d_torch = distances_torch(torch.from_numpy(X), torch.from_numpy(T))  # (N, P) tensor
d_expan = distances_torch_expansion(torch.from_numpy(X), torch.from_numpy(T))  # (N, P) tensor
print("torch == loops:    ", torch.allclose(d_torch, torch.from_numpy(d_loops)))
print("torch == numpy:    ", torch.allclose(d_torch, torch.from_numpy(d_numpy)))
print("expansion == loops:", torch.allclose(d_expan, torch.from_numpy(d_loops)))
print("largest difference torch vs loops:", float((d_torch - torch.from_numpy(d_loops)).abs().max()))
assert torch.allclose(d_torch, torch.from_numpy(d_loops)) and torch.allclose(d_expan, torch.from_numpy(d_numpy))"""),
        (md, "task1-timing-md", """### Timing

`timeit` runs every way a few times after one warm-up call (the first call pays for allocations and lazy
initialisation) and we keep the median. The loops are timed on a smaller problem and their time per pair is
scaled up — running them on the large one would take minutes. CUDA work is asynchronous, so the GPU timer
synchronises before reading the clock. Absolute numbers depend on your machine; the project's benchmarks
(`benchmarks/`) do this carefully (interleaved rounds, CPU model recorded)."""),
        (code, "task1-timer", """def median_time(fn, repeat=5, sync=False):
    \"\"\"Median seconds of one call of fn(), after one warm-up call.\"\"\"
    def call():
        fn()
        if sync:
            torch.cuda.synchronize()
    call()  # warm-up
    return float(np.median(timeit.repeat(call, number=1, repeat=repeat)))


N, P, D = 1500, 300, 32  # "nicely large" for the vectorised ways, still quick on a laptop CPU
X = rng.standard_normal((N, D)).astype(np.float32)
T = rng.standard_normal((P, D)).astype(np.float32)
Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)

n_small = 20  # the loops: 20 x 300 pairs, scaled to N x P
t_loops = median_time(lambda: distances_loops(X[:n_small], T), repeat=3) * N / n_small
times = {
    "two for-loops (scaled)": t_loops,
    "numpy broadcasting": median_time(lambda: distances_numpy(X, T)),
    "torch cpu broadcasting": median_time(lambda: distances_torch(Xt, Tt)),
    "torch cpu expansion": median_time(lambda: distances_torch_expansion(Xt, Tt)),
}
for name, s in times.items():
    print(f"{name:26s} {s * 1e3:10.2f} ms   (speed-up over the loops: {t_loops / s:6.0f}x)")"""),
        (code, "task1-gpu", """if torch.cuda.is_available():
    Xg, Tg = Xt.cuda(), Tt.cuda()  # the same functions, CUDA tensors
    for name, fn in [("torch gpu broadcasting", distances_torch), ("torch gpu expansion", distances_torch_expansion)]:
        times[name] = median_time(lambda: fn(Xg, Tg), sync=True)
        print(f"{name:26s} {times[name] * 1e3:10.3f} ms   (speed-up over the loops: {t_loops / times[name]:6.0f}x)")
    print("GPU == CPU:", torch.allclose(distances_torch(Xg, Tg).cpu(), distances_torch(Xt, Tt), rtol=1e-4, atol=1e-4))
else:
    print("no CUDA GPU on this machine: the GPU timing is skipped (distances_torch(X.cuda(), T.cuda()) would run it)")"""),
        (md, "task1-memory-md", """### Memory

The ways differ more in memory than in code. Broadcasting builds the $(N, P, D)$ difference and its square —
$2D$ times the result (NumPy reuses a temporary's buffer for `(X - T) ** 2` written in one expression, but not for
a named `diff`); the expansion needs only $(N, P)$ arrays; the loops only the result. For NumPy, `tracemalloc` sees NumPy's
allocations and reports the peak; for PyTorch on the CPU we count the bytes of the intermediates (PyTorch's CPU
allocator is invisible to `tracemalloc`); on a GPU `torch.cuda.max_memory_allocated` measures it."""),
        (code, "task1-memory", """def numpy_peak_bytes(fn):
    \"\"\"Peak bytes NumPy allocated while fn() ran (tracemalloc).\"\"\"
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


item = X.itemsize  # 4 bytes (float32)
analytic = {  # the largest intermediates, by counting
    "two for-loops": N * P * item,  # the result only
    "broadcasting (numpy/torch)": (2 * N * P * D + N * P) * item,  # diff and diff**2 (N, P, D), the result (N, P)
    "torch expansion": (3 * N * P + N + P) * item,  # X @ T.T, the sum, the clamped result; the norms
}
measured = {
    "two for-loops": numpy_peak_bytes(lambda: distances_loops(X[:n_small], T)) * N / n_small,
    "broadcasting (numpy/torch)": numpy_peak_bytes(lambda: distances_numpy(X, T)),
}
if torch.cuda.is_available():
    for name, fn in [("broadcasting (numpy/torch)", distances_torch), ("torch expansion", distances_torch_expansion)]:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn(Xg, Tg)
        measured[name + " [cuda]"] = torch.cuda.max_memory_allocated() - before
for name, b in analytic.items():
    print(f"{name:28s} analytic {b / 2**20:8.2f} MiB")
for name, b in measured.items():
    print(f"{name:28s} measured {b / 2**20:8.2f} MiB")"""),
        # ---- Task 2 ----
        (md, "task2", """## Task 2 — which shapes broadcast?

The rule: write the two shapes **aligned on the right**; a missing axis counts as size 1. On every axis the two
sizes must be **equal or one of them 1**; the result takes the larger size. Any other pair of sizes (say 3 and 2)
makes the shapes incompatible. `np.broadcast_shapes` applies exactly this rule (and `torch.broadcast_shapes` agrees)."""),
        (code, "task2-pairs", "pairs = [\n" + "".join(f"    {a!r},\n" for a in EXERCISE_PAIRS) + """]
for a, b in pairs:
    try:
        result = np.broadcast_shapes(a, b)
        assert tuple(torch.broadcast_shapes(a, b)) == result
        print(f"{str(a):16s} with {str(b):16s} -> {result}")
    except ValueError:
        print(f"{str(a):16s} with {str(b):16s} -> incompatible")"""),
        (md, "task2-explain-md", "`sqdist.explain_broadcast` shows the aligned table and says *why*, axis by axis:"),
        (code, "task2-explain", """print(sqdist.explain_broadcast((6, 3, 1, 7), (2, 7)))
print()
print(sqdist.explain_broadcast((6, 3, 1, 7), (2, 1, 7)))"""),
        # ---- Task 3 ----
        (md, "task3", """## Task 3 — k-means in PyTorch

Data: five 2-D Gaussian blobs, 50 points each (`sqdist.datasets.make_blobs()`: means on a circle of radius 5,
standard deviation 0.5). Initial centres: **fixed rows** of X, `j * N // P` for `j = 0 .. P-1`, so anyone can
reproduce the run. Every iteration assigns each point to its nearest centre (Task 1's distances, then `argmin` over
the **P axis**, `dim=1`) and moves each centre to the mean of its points. Stop after `M` iterations, or when
**every** centre moved less than the threshold. The pass that finds all moves below the threshold counts as an
iteration (as scikit-learn counts)."""),
        (code, "task3-solution-type", _src(exercise.KMeansSolution)),
        (code, "task3-inertia", _src(exercise.inertia_torch)),
        (code, "task3-kmeans", _src(exercise.kmeans_torch)),
        (code, "task3-run", """X_np, blob_id = make_blobs()  # (250, 2) float64, (250,) which blob each point came from
X = torch.from_numpy(X_np)
M, threshold = 100, 1e-4
solutions, task3 = {}, {}
for P in (2, 5, 8):
    init_index = exercise_init_indices(P, X.shape[0])  # [j * 250 // P for j in range(P)]
    sol = kmeans_torch(X, init_index, max_iter=M, threshold=threshold)
    solutions[P] = sol
    task3[P] = {"init_index": init_index, "n_iter": sol.n_iter, "inertia": inertia_torch(X, sol.centers),
                "centers": sol.centers.tolist(), "initial_centers": sol.initial_centers.tolist(),
                "labels": sol.labels.tolist()}
    sizes = torch.bincount(sol.labels, minlength=P).tolist()
    print(f"P={P}: init rows {init_index}, {sol.n_iter} iterations, inertia {task3[P]['inertia']:.6f}, sizes {sizes}")
if RESULTS_PATH:
    with open(RESULTS_PATH, "w") as f:
        json.dump({str(P): r for P, r in task3.items()}, f)"""),
        (code, "task3-plot-initial", """fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True, sharey=True)
for ax, (P, sol) in zip(axes, solutions.items()):
    ax.scatter(X_np[:, 0], X_np[:, 1], c=blob_id, cmap="tab10", s=10, alpha=0.6)
    C0 = sol.initial_centers.numpy()
    ax.scatter(C0[:, 0], C0[:, 1], marker="X", s=160, c="k", edgecolor="w", label="initial centres")
    ax.set_title(f"P = {P}: data (coloured by blob) and initial centres")
    ax.set_aspect("equal")
axes[0].legend(loc="lower left")
plt.show()"""),
        (code, "task3-plot-converged", """fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True, sharey=True)
for ax, (P, sol) in zip(axes, solutions.items()):
    ax.scatter(X_np[:, 0], X_np[:, 1], c=sol.labels.numpy(), cmap="tab10", s=10, alpha=0.6)
    path = torch.stack(sol.history).numpy()  # (n_iter + 1, P, 2): how every centre moved
    for j in range(P):
        ax.plot(path[:, j, 0], path[:, j, 1], "k-", lw=1)
    C = sol.centers.numpy()
    ax.scatter(C[:, 0], C[:, 1], marker="*", s=260, c="k", edgecolor="w", label="converged centres")
    ax.set_title(f"P = {P}: clusters and converged centres ({sol.n_iter} iterations)")
    ax.set_aspect("equal")
axes[0].legend(loc="lower left")
plt.show()"""),
        # ---- the library way ----
        (md, "library", """## The library way

`sqdist` does the same with exact, fast, memory-bounded kernels: `sqdist.sqdist` for the distances (never builds
the $(N, P, D)$ temporary and keeps the digits the expansion loses), `sqdist.kmeans` / `sqdist.KMeans`
(scikit-learn's API) for k-means; `tol_mode="absolute"` is the exercise's stopping rule."""),
        (code, "library-sqdist", """d_lib = sqdist.sqdist(Xt, Tt)  # (N, P), the Task 1 matrix
print("sqdist.sqdist == distances_torch:", torch.allclose(d_lib, distances_torch(Xt, Tt), rtol=1e-4, atol=1e-4))
far = 1000.0 + torch.from_numpy(rng.standard_normal((200, 4)))  # points 1000 from the origin, float64 reference
ref = distances_torch(far, far[:50])
err = {name: float((fn(far.float(), far[:50].float()).double() - ref).abs().max())
       for name, fn in [("broadcasting", distances_torch), ("expansion", distances_torch_expansion), ("sqdist", sqdist.sqdist)]}
print("float32 error 1000 from the origin:", {k: f"{v:.2e}" for k, v in err.items()})"""),
        (code, "library-kmeans", """for P in (2, 5, 8):
    res = sqdist.kmeans(X, P, init=task3[P]["init_index"], max_iter=M, tol=threshold, tol_mode="absolute")
    same = torch.equal(res.labels, solutions[P].labels) and torch.allclose(res.centers, solutions[P].centers)
    print(f"P={P}: sqdist.kmeans {res.n_iter} iterations, inertia {res.inertia:.6f}, same as kmeans_torch: {same}")

km = sqdist.KMeans(n_clusters=5, init=task3[5]["init_index"], tol=threshold, tol_mode="absolute").fit(X_np)
print("sqdist.KMeans: n_iter_ =", km.n_iter_, "| inertia_ =", round(km.inertia_, 6))
print("predict([[5, 0]]) =", km.predict(np.array([[5.0, 0.0]])))"""),
    ]


def build() -> nbformat.NotebookNode:
    """The notebook, without outputs, with stable cell ids (so rebuilding gives the same file)."""
    cells = []
    for kind, cid, source in _cells():
        make = new_markdown_cell if kind == "markdown" else new_code_cell
        cells.append(make(source, id=cid))
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> int:
    nb = build()
    if "--check" in argv:
        current = nbformat.read(NOTEBOOK, as_version=4) if NOTEBOOK.exists() else None
        if current != nb:
            print(f"{NOTEBOOK} is stale: run python notebooks/build_notebook.py", file=sys.stderr)
            return 1
        return 0
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
