"""scikit-learn's own test files, run against sqdist with only their imports swapped.

The files ship with scikit-learn.  :func:`_run_swapped` copies one with a
replaced import and runs it in a subprocess with scikit-learn's conftest (its
``global_random_seed`` fixture); everything else runs as written.

* sklearn/cluster/tests/test_k_means.py: its line ``from sklearn.cluster import
  KMeans, MiniBatchKMeans, k_means, kmeans_plusplus`` becomes sqdist's
  ``KMeans``, ``MiniBatchKMeans`` and ``kmeans_plusplus`` (scikit-learn's
  ``k_means`` stays), dense and sparse inputs alike.  Every test must pass.
* sklearn/metrics/tests/test_pairwise.py: ``euclidean_distances`` and
  ``rbf_kernel`` become the sqdist-backed wrappers below; its euclidean / rbf
  tests (dense and sparse inputs) run, all but two, which must pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sqdist

sklearn = pytest.importorskip("sklearn")

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent
# observed with scikit-learn 1.9.1 (the swapped files must keep at least these passing, and fail none):
PASSED_KMEANS = 264  # 264 passed, 18 skipped (about 90 s on a loaded 2-core machine)
PASSED_PAIRWISE = 100  # 100 passed, 85 skipped (array API), 2 xpassed


def euclidean_distances(X, Y=None, *, Y_norm_squared=None, squared=False, X_norm_squared=None):
    """scikit-learn's ``euclidean_distances`` computed by :func:`sqdist.sqdist` (the norms are not taken:
    sqdist computes its own, exactly)."""
    d = sqdist.sqdist(X, X if Y is None else Y)
    return d if squared else np.sqrt(d)


def rbf_kernel(X, Y=None, gamma=None):
    """scikit-learn's ``rbf_kernel`` computed by :func:`sqdist.rbf` (whose gamma divides: 1 / scikit-learn's)."""
    gamma = 1.0 / X.shape[1] if gamma is None else gamma
    return sqdist.rbf(X, X if Y is None else Y, 1.0 / gamma)


def _run_swapped(tmp_path: Path, test_file: str, swaps: dict[str, str], *args: str) -> tuple[int, str]:
    """Copy scikit-learn's ``test_file`` (relative to the sklearn package) with each key of ``swaps`` replaced by
    its value, run it with pytest ``args``, and return (passed count, summary line); fails on any failure."""
    original = Path(sklearn.__file__).parent / test_file
    if not original.exists():
        pytest.skip("this scikit-learn install has no test files")
    text = original.read_text()
    for old, new in swaps.items():
        assert old in text, f"scikit-learn's {test_file} changed: {old!r} not found"
        text = text.replace(old, new)
    swapped = tmp_path / f"{original.stem}_sqdist.py"
    swapped.write_text(text)
    path = os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "sklearn.conftest", "-p", "no:cacheprovider",
                        swapped.name, *(a.replace("{file}", swapped.name) for a in args)], cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=path), capture_output=True, text=True, timeout=900)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr
    assert r.returncode == 0 and "failed" not in summary, r.stdout[-6000:] + r.stderr[-2000:]
    return int(re.search(r"(\d+) passed", summary).group(1)), summary


def test_scikit_learns_kmeans_tests_pass_on_sqdist(tmp_path):
    old = "from sklearn.cluster import KMeans, MiniBatchKMeans, k_means, kmeans_plusplus"
    new = "from sklearn.cluster import k_means\nfrom sqdist import KMeans, MiniBatchKMeans, kmeans_plusplus"
    passed, summary = _run_swapped(tmp_path, "cluster/tests/test_k_means.py", {old: new})
    assert passed >= PASSED_KMEANS, summary


def test_scikit_learns_pairwise_euclidean_and_rbf_tests_pass_on_sqdist(tmp_path):
    old = "from sklearn.preprocessing import normalize\n"  # the line after the import of scikit-learn's functions
    new = old + "from test_sklearn_suite import euclidean_distances, rbf_kernel  # sqdist's, shadowing them\n"
    passed, summary = _run_swapped(
        tmp_path, "metrics/tests/test_pairwise.py", {old: new},
        "-k", "(euclidean or rbf) and not nan_euclidean and not paired",
        # these two pass caller-computed squared norms (X_norm_squared / Y_norm_squared, wrong shapes among
        # them) and check they are used or rejected; sqdist takes no norms from the caller (it computes its own)
        "--deselect", "{file}::test_euclidean_distances_with_norms",
        "--deselect", "{file}::test_euclidean_distances_norm_shapes")
    assert passed >= PASSED_PAIRWISE, summary

