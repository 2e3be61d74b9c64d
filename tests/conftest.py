"""Shared test fixtures: tests import the package from this tree's ``src``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

# Without CUDA, the Triton kernels are tested on CPU tensors under Triton's interpreter.
# Triton fixes interpreted-vs-compiled when it is first imported, and doctest collection
# may import it before tests/test_triton.py runs: set the flag here, before any collection.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture
def run_cli():
    """Run ``python -m sqdist ARGS...`` from this tree; returns the CompletedProcess."""

    def _run(*args: str, timeout: float = 300, cwd: str | None = None, env: dict | None = None):
        e = dict(os.environ)
        e["PYTHONPATH"] = str(SRC) + os.pathsep + e.get("PYTHONPATH", "")
        e.setdefault("MPLBACKEND", "Agg")
        if env:
            e.update(env)
        return subprocess.run(
            [sys.executable, "-m", "sqdist", *args],
            capture_output=True, text=True, timeout=timeout, cwd=cwd, env=e,
        )

    return _run


@pytest.fixture
def run_python():
    """Run ``python -c CODE ARGS...`` with this tree's ``src`` on the path; returns the CompletedProcess."""

    def _run(code: str, *args: str, timeout: float = 300):
        e = dict(os.environ)
        e["PYTHONPATH"] = str(SRC) + os.pathsep + e.get("PYTHONPATH", "")
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=e)

    return _run


# ``python -m sqdist ARGS`` run through runpy, then the names of every module it imported on a last stderr line
_MODULES_MARK = "sqdist-test-modules:"
_RUN_MAIN_THEN_LIST_MODULES = f"""
import runpy, sys
try:
    runpy.run_module("sqdist", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exc:
    code = exc.code
print({_MODULES_MARK!r}, *sorted(sys.modules), file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture
def run_cli_modules(run_python):
    """Run ``python -m sqdist ARGS...``; returns the CompletedProcess (its ``stderr`` without the
    module list) and the set of every module the run imported (``sys.modules`` at exit)."""

    def _run(*args: str, timeout: float = 300):
        r = run_python(_RUN_MAIN_THEN_LIST_MODULES, *args, timeout=timeout)
        err, _, mods = r.stderr.rpartition(_MODULES_MARK)
        assert mods, r.stderr
        r.stderr = err
        return r, set(mods.split())

    return _run


@pytest.fixture
def one_thread():
    """Run the test with one torch thread, restoring the count afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_addoption(parser):
    parser.addoption("--skipslow", action="store_true", default=False,
                     help="skip tests marked slow (e.g. the 20000 x 20000 memory contract) for a quick local run")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s on 2 cores; skipped with --skipslow")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--skipslow"):
        return
    skip = pytest.mark.skip(reason="slow: skipped with --skipslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
