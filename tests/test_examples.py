"""The scripts in examples/ run (as a user runs them: a subprocess, small sizes) and print what is true:
their numbers are checked against independent references -- a float64 NumPy Lloyd loop written here,
``numpy.broadcast_shapes``, brute-force nearest colours, the in-memory fit, and a single-process fit
for the torchrun example."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SRC = ROOT / "src"


def _env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")}
    e["PYTHONPATH"] = str(SRC) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    e["MPLBACKEND"] = "Agg"
    return e


def _run(script: str, *args: str, launcher: list[str] | None = None, timeout: float = 180) -> str:
    cmd = [*(launcher or [sys.executable]), str(EXAMPLES / script), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _module(script: str):
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), EXAMPLES / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_example_has_a_docstring_header_and_a_docs_page():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == ["distributed_kmeans.py", "exercise.py", "out_of_core.py", "quantize_image.py"]
    pages = "\n".join(p.read_text() for p in (ROOT / "docs" / "examples").glob("*.md"))
    for name in scripts:
        src = (EXAMPLES / name).read_text()
        assert src.startswith('"""') and "Run::" in src, name
        assert f'--8<-- "examples/{name}"' in pages, f"{name} is not included in any docs/examples page"


def _lloyd_exercise(X: np.ndarray, init: list[int], tol: float, max_iter: int = 100):
    """The exercise's k-means in float64 NumPy: stop when every centre moved less than tol."""
    C, n_iter, moved = X[init].copy(), 0, np.inf
    while n_iter < max_iter and moved >= tol:
        labels = ((X[:, None, :] - C[None]) ** 2).sum(-1).argmin(1)
        new = np.stack([X[labels == j].mean(0) for j in range(len(C))])
        moved = np.sqrt(((new - C) ** 2).sum(1)).max()
        C, n_iter = new, n_iter + 1
    labels = ((X[:, None, :] - C[None]) ** 2).sum(-1).argmin(1)
    return C, labels, float(((X - C[labels]) ** 2).sum()), n_iter


def test_exercise_example():
    out = _run("exercise.py", "--n", "30", "--p", "5", "--d", "3")
    task1 = re.findall(r"^\s+(loops|numpy|broadcast|gemm)\s+(ndarray|Tensor)\s.*equal to the loops: (\w+)$", out, re.M)
    assert [(m, ok) for m, _, ok in task1] == [("loops", "True"), ("numpy", "True"), ("broadcast", "True"), ("gemm", "True")]
    assert [k for _, k, _ in task1] == ["ndarray", "ndarray", "Tensor", "Tensor"]  # NumPy in -> NumPy out, torch -> torch
    # Task 2: every verdict is NumPy's
    for a, b, res in re.findall(r"^\s+(\([\d, ]+\)) with (\([\d, ]+\)): (.*)$", out, re.M):
        try:
            expected = str(np.broadcast_shapes(eval(a), eval(b)))
        except ValueError:
            expected = "not compatible"
        assert res.startswith(expected), (a, b, res)
    # Task 3: iterations, inertia and centres of an independent float64 Lloyd loop with the exercise's rule
    from sqdist.datasets import exercise_init_indices, make_blobs

    X, _ = make_blobs()
    runs = re.findall(r"P=(\d+): init rows \[[\d, ]+\], (\d+) iterations, converged True, inertia ([\d.]+), sizes \[([\d, ]+)\]"
                      r"\n\s+centres (.*)", out)
    assert [int(r[0]) for r in runs] == [2, 5, 8]
    for P, n_iter, inertia, sizes, centres in runs:
        C, labels, ref_inertia, ref_iter = _lloyd_exercise(X, exercise_init_indices(int(P)), 1e-4)
        assert int(n_iter) == ref_iter
        assert float(inertia) == pytest.approx(ref_inertia, abs=1e-4)
        assert [int(s) for s in sizes.split(",")] == np.bincount(labels, minlength=int(P)).tolist()
        got = np.array([[float(v) for v in c.split(",")] for c in re.findall(r"\(([^)]*)\)", centres)])
        np.testing.assert_allclose(got, C, atol=5e-4)
    assert [int(r[1]) for r in runs] == [4, 2, 6]  # the exercise's counts on its blobs


def test_quantize_image_example(tmp_path):
    out_npy, png = tmp_path / "q.npy", tmp_path / "q.png"
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    out = _run("quantize_image.py", "--size", "24x40", "--colors", "4", "--sample", "500", "--out", str(out_npy),
               *(["--out", str(png)] if has_mpl else []))
    img = _module("quantize_image.py").synthetic_image(24, 40, 0)
    q = np.load(out_npy).astype(np.float64)
    assert q.shape == img.shape
    palette = np.unique(q.reshape(-1, 3), axis=0)
    assert len(palette) == 4
    # every pixel got its nearest palette colour (brute force in float64; ties within rounding allowed)
    d = ((img.reshape(-1, 1, 3) - palette[None]) ** 2).sum(-1)
    chosen = ((img.reshape(-1, 3) - q.reshape(-1, 3)) ** 2).sum(-1)
    assert np.all(chosen <= d.min(1) + 1e-6)
    mse = float(re.search(r"mean squared error ([\d.]+)", out).group(1))
    assert mse == pytest.approx(np.mean((q - img) ** 2), abs=2e-6)
    assert "2 bits per pixel" in out
    if has_mpl:  # the .png route: the same 4 colours, rounded to 8 bits
        import matplotlib.image

        rgb = matplotlib.image.imread(png)[..., :3]
        assert rgb.shape == (24, 40, 3) and len(np.unique(rgb.reshape(-1, 3), axis=0)) == 4
        np.testing.assert_allclose(rgb, q, atol=1 / 255 + 1e-6)  # 8 bits per channel


def test_out_of_core_example(tmp_path):
    out = _run("out_of_core.py", "--rows", "6000", "--dim", "3", "-k", "4", "--working-memory", "0.05",
               "--dir", str(tmp_path), "--keep")
    assert "same centres as kmeans_stream: True" in out and "equals labels.npy: True" in out
    import sqdist

    X = np.load(tmp_path / "X.npy")
    labels = np.load(tmp_path / "labels.npy")
    assert X.shape == (6000, 3) and labels.shape == (6000,)
    # N is below k-means++'s sample size, so the streamed fit is the in-memory fit (docs/scaling.md)
    ref = sqdist.kmeans(X, 4, random_state=0, working_memory=0.05)
    np.testing.assert_array_equal(labels, ref.labels)
    streamed_inertia = float(re.search(r"kmeans_stream: \d+ iterations .*inertia ([\d.e+]+)", out).group(1))
    assert streamed_inertia == pytest.approx(ref.inertia, rel=1e-5)
    # and the labels are the nearest centres by brute force in float64
    d = ((X.astype(np.float64)[:, None] - np.asarray(ref.centers, np.float64)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d.argmin(1))


@pytest.mark.skipif(sys.platform == "win32", reason="gloo over TCP on 127.0.0.1")
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_distributed_example_equals_one_process(tmp_path, one_thread):
    import sqdist

    data, res = tmp_path / "X.npy", tmp_path / "two.json"
    _module("distributed_kmeans.py").write_blobs(data, 12000, 4, 5, 3)
    args = ["--data", str(data), "-k", "5", "--seed", "3", "--working-memory", "0.25", "--json", str(res)]
    out = _run("distributed_kmeans.py", *args, launcher=["torchrun", "--nproc_per_node=2", "--standalone"])
    assert "2 process(es), torch.distributed: True" in out
    two = json.loads(res.read_text())
    one = sqdist.kmeans_stream(str(data), 5, random_state=3, working_memory=0.25)  # this process, no group
    assert two["world_size"] == 2 and one.n_iter >= 2
    np.testing.assert_array_equal(np.array(two["centers"], dtype=two["dtype"]), one.centers)  # bit-identical
    assert two["inertia"] == one.inertia and two["n_iter"] == one.n_iter
    assert f"inertia {one.inertia!r};" in out
