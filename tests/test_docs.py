"""The documentation site builds offline with the one documented command, warnings as errors
(``mkdocs build --strict``: a docstring griffe cannot parse, a parameter documented but not in the
signature, a broken link or a missing example file all fail it), and it documents every public name."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="the docs tools are not installed (pip install -e '.[docs]')",
)


def test_the_test_extra_installs_the_docs_tools():
    """So the test command builds the docs rather than skipping the tests below."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("test", "docs"):
        names = {re.split(r"[\[<>=;! ]", req, maxsplit=1)[0] for req in extras[extra]}
        assert {"mkdocs", "mkdocstrings"} <= names, extra
    assert any(req.startswith("mkdocstrings[python]") for req in extras["docs"])


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-5000:]
    assert not re.search(r"^\s*WARNING\b", log, re.M), log[-5000:]  # --strict aborts on warnings; belt and braces
    return out


@needs_mkdocs
def test_every_public_name_has_a_rendered_entry(site):
    import sqdist

    html = "\n".join(p.read_text(encoding="utf-8") for p in (site / "api").glob("*.html"))
    anchors = set(re.findall(r'id="(sqdist\.[\w.]+)"', html))
    for name in sqdist.__all__:
        if name in ("__version__", "datasets"):
            continue
        assert f"sqdist.{name}" in anchors, f"sqdist.{name} has no entry in the API reference (docs/api/)"
    for name in sqdist.datasets.__all__:
        assert f"sqdist.datasets.{name}" in anchors, name
    # the numpydoc sections were parsed into tables, not left as text
    page = (site / "api" / "sqdist.html").read_text(encoding="utf-8")
    assert "Parameters:" in page and "working_memory" in page and "Returns:" in page
    assert ":func:`" not in html  # Sphinx roles rendered as code (docs/api/griffe_roles.py)


@needs_mkdocs
def test_examples_are_rendered_and_nothing_is_fetched_from_the_network(site):
    for script in sorted((ROOT / "examples").glob("*.py")):
        pages = "\n".join(p.read_text(encoding="utf-8") for p in (site / "examples").glob("*.html"))
        first_def = re.search(r"^def (\w+)", script.read_text(), re.M).group(1)
        assert f'<span class="nf">{first_def}</span>' in pages, f"{script.name} is not rendered"
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        # scripts, stylesheets and images come from the site itself (links to other sites are fine)
        assert not re.search(r'<(script|img)[^>]+src="(https?:)?//', text), page
        assert not re.search(r'<link[^>]+href="(https?:)?//', text), page
