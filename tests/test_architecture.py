"""The package's structure, checked by tools: the import-linter layer contract
(pyproject.toml, docs/architecture.md), ruff, module size, no hidden imports
and no hand-made global state."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "sqdist"
MODULES = sorted(PKG.glob("*.py"))

# imports of sqdist modules that may sit inside a function: optional, costly
# modules imported on first use (documented where they are).  Two more are lazy
# for cost and go through importlib by a name from a table, not an import
# statement: the package's public names (``__init__.__getattr__``, PEP 562, so
# ``import sqdist`` loads neither torch nor scikit-learn) and the chosen
# sub-command's module (``cli.build_parser``, so ``sqdist --help`` and
# ``sqdist broadcast`` never import torch).
LAZY = {("_backend.py", "_triton"), ("_cpu_kernels.py", "_cpu_nb"),
        ("_sparse.py", "_sparse_nb")}  # _sparse_nb imports numba (~0.5 s), needed only for sparse input


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def _lint_imports(cwd: Path, src: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    return _run([sys.executable, "-c", code, "--no-cache"], cwd, env)


def test_layer_contracts_hold():
    pytest.importorskip("importlinter")
    r = _lint_imports(ROOT, ROOT / "src")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 kept, 0 broken" in r.stdout


@pytest.mark.parametrize("module,line", [
    ("_numerics.py", "from . import clustering"),  # the bottom layer importing the public API
    ("_engine.py", "from . import estimator"),  # the engine importing the estimator above it
    ("distances.py", "import argparse"),  # a library module parsing command lines
    ("_dense.py", "from . import _sources"),  # the numerical core reading data sources
])
def test_an_upward_import_breaks_the_contract(tmp_path, module, line):
    """The contract is not vacuous: the same check fails on a copy of the package with one bad import."""
    pytest.importorskip("importlinter")
    src = tmp_path / "src"
    shutil.copytree(PKG, src / "sqdist", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    f = src / "sqdist" / module
    f.write_text(f.read_text() + f"\n{line}  # injected by the test\n")
    r = _lint_imports(tmp_path, src)
    assert r.returncode != 0 and "BROKEN" in r.stdout.upper(), r.stdout + r.stderr


def test_ruff_is_clean():
    pytest.importorskip("ruff")
    r = _run([sys.executable, "-m", "ruff", "check", "--no-cache", "src", "tests", "benchmarks"], ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_module_shape(path):
    """Under 700 lines; sqdist imported at module level only (but the documented lazy
    imports of costly optional modules); no ``global`` statements (hand-made caches)."""
    text = path.read_text()
    assert text.count("\n") <= 700, f"{path.name} has {text.count(chr(10))} lines"
    tree = ast.parse(text)
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            assert not isinstance(node, ast.Global), f"{path.name}:{node.lineno} uses `global`"
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("sqdist")):
                names = {(path.name, a.name) for a in node.names}
                assert names <= LAZY, f"{path.name}:{node.lineno} imports sqdist inside a function"


def test_one_lloyd_loop():
    """Exactly one function iterates the centre update: sqdist._engine.lloyd."""
    loops = []
    for path in MODULES:
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for loop in (n for n in ast.walk(fn) if isinstance(n, (ast.For, ast.While))):
                    calls = {c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", "")
                             for c in ast.walk(loop) if isinstance(c, ast.Call)}
                    if calls & {"update_centers", "update_assign"}:
                        loops.append(f"{path.name}:{fn.name}")
    assert loops == ["_engine.py:lloyd"]


def test_import_does_not_load_scikit_learn():
    """``import sqdist`` stays light: scikit-learn (~1.5 s to import) comes with ``sqdist.KMeans`` only."""
    code = ("import sys, sqdist; a = 'sklearn' in sys.modules; sqdist.KMeans; "
            "print(a, 'sklearn' in sys.modules, 'KMeans' in dir(sqdist))")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = _run([sys.executable, "-c", code], ROOT, env)
    assert r.stdout.split() == ["False", "True", "True"], r.stdout + r.stderr
