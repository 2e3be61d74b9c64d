"""notebooks/exercise.ipynb: committed as a fresh build of notebooks/build_notebook.py (its
solution cells are the source of sqdist.exercise), without outputs, and it runs top to bottom
with Task 3 results equal to sqdist.kmeans and scikit-learn from the same initial rows."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

import sqdist
from sqdist import exercise
from sqdist.datasets import EXERCISE_INIT_INDICES, make_blobs

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOK = NB_DIR / "exercise.ipynb"
EXPECTED_ITERATIONS = {2: 4, 5: 2, 8: 6}  # the exercise's blobs, fixed rows j * 250 // P, threshold 1e-4


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebook", NB_DIR / "build_notebook.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _strip(nb) -> dict:
    """The notebook as plain data, without outputs and execution counts."""
    d = json.loads(json.dumps(nb))
    for c in d["cells"]:
        c.pop("outputs", None)
        c.pop("execution_count", None)
    return d


def test_committed_notebook_is_a_fresh_build_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    builder = _builder()
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert _strip(committed) == _strip(builder.build()), "stale notebook: run python notebooks/build_notebook.py"
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "commit the notebook without outputs"


def test_solution_cells_are_the_module_source():
    pytest.importorskip("nbformat")
    sources = {c.source for c in _builder().build().cells if c.cell_type == "code"}
    for name in exercise.__all__:
        assert inspect.getsource(getattr(exercise, name)).rstrip("\n") in sources, name


@pytest.mark.slow
def test_notebook_runs_and_task3_matches_sqdist_and_sklearn(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from sklearn.cluster import KMeans

    builder = _builder()
    out = tmp_path / "task3.json"
    monkeypatch.setenv(builder.RESULTS_ENV, str(out))  # the kernel inherits this environment
    src = str(ROOT / "src")
    monkeypatch.setenv("PYTHONPATH", src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # Jupyter's own inline backend, as in a notebook server: a headless run's MPLBACKEND=Agg (CI sets it)
    # would otherwise reach the kernel, and figures would never become outputs
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}}).execute()
    print(f"notebook executed in {time.perf_counter() - t0:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    images = [o for c in nb.cells if c.id.startswith("task3-plot") for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the two Task 3 figures: initial and converged centres

    results = json.loads(out.read_text())
    assert sorted(int(p) for p in results) == [2, 5, 8]
    X, _ = make_blobs()
    for P, iters in EXPECTED_ITERATIONS.items():
        r = results[str(P)]
        idx = EXERCISE_INIT_INDICES[P]
        assert r["init_index"] == idx
        np.testing.assert_array_equal(np.array(r["initial_centers"]), X[idx])
        lib = sqdist.kmeans(X, P, init=idx, max_iter=100, tol=1e-4, tol_mode="absolute")
        sk = KMeans(P, init=X[idx], n_init=1, algorithm="lloyd", max_iter=100, tol=0.0).fit(X)
        assert r["n_iter"] == iters == lib.n_iter == sk.n_iter_
        np.testing.assert_array_equal(r["labels"], lib.labels)
        np.testing.assert_array_equal(r["labels"], sk.labels_)
        np.testing.assert_allclose(r["centers"], lib.centers, rtol=0, atol=1e-10)
        np.testing.assert_allclose(r["centers"], sk.cluster_centers_, rtol=0, atol=1e-10)
        assert r["inertia"] == pytest.approx(lib.inertia, rel=1e-10)
        assert r["inertia"] == pytest.approx(sk.inertia_, rel=1e-10)
