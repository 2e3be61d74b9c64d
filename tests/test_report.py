"""``sqdist report``: the folder, the page, the numbers, the atomic write."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import json
import os
import re
import struct
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

import sqdist
from sqdist import report as R
from sqdist._report_context import Progress, lookup

SECTIONS = ("machine", "task1", "rbf", "task2", "task3", "extras")
_SUP = str.maketrans("\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079", "-0123456789")
EXERCISE_PAIRS = [  # Task 2 of the exercise, as printed there
    ((3, 1, 3), (2, 3, 3)), ((4, 1), (3, 1, 1, 5)), ((3,), (3, 1, 1, 5)), ((1, 4), (7, 1)),
    ((6, 3, 1, 7), (2, 7)), ((6, 3, 1, 7), (2, 1, 7)), ((1, 2, 3, 1, 6), (8, 1, 3, 2, 6)),
    ((2, 5, 1, 7), (9, 2, 3, 2, 1)),
]


# ---- helpers ------------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Collects what the tests need from index.html."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs: list[str] = []
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.spans: list[dict] = []  # {"key", "kind", "value", "text"}
        self.cells: list[dict] = []  # {"text", "keys"}
        self.section_ids: list[str] = []
        self.style = ""
        self.headings: list[int] = []  # levels of h1..h6 in page order
        self.ths: list[dict] = []  # attributes of every <th>
        self.scripts: list[dict] = []  # attributes of every <script>
        self.listings: list[dict] = []  # {"section", "text"} of every <pre> in a listing
        self.table_parents: list[str] = []  # class of the element around every <table>
        self._stack: list[tuple[str, dict]] = []
        self._span_depth: list[dict] = []
        self._cell: dict | None = None
        self._pre: dict | None = None
        self._in_style = False
        self.open_count = 0

    _VOID = {"img", "br", "meta", "input", "hr", "link"}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        if tag == "th":
            self.ths.append(a)
        if tag == "script":
            self.scripts.append(a)
        if tag == "table":
            parent = self._stack[-1] if self._stack else ("", {})
            self.table_parents.append(f"{parent[0]}.{parent[1].get('class', '')}")
        if tag == "pre":
            self._pre = {"section": self.section_ids[-1] if self.section_ids else "", "text": "",
                         "class": a.get("class", "")}
        if tag not in self._VOID:
            self._stack.append((tag, a))
        for name in ("src", "href"):
            if a.get(name):
                self.urls.append(a[name])
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "section":
            self.section_ids.append(a.get("id", ""))
        if tag == "style":
            self._in_style = True
        if tag == "td":
            self._cell = {"text": "", "keys": []}
        if tag == "span" and "data-key" in a:
            span = {"key": a["data-key"], "kind": a["data-kind"], "value": json.loads(a["data-value"]), "text": ""}
            self.spans.append(span)
            self._span_depth.append(span)
            if self._cell is not None:
                self._cell["keys"].append(a["data-key"])
        elif tag == "span":
            self._span_depth.append({})

    def handle_endtag(self, tag):
        if tag not in self._VOID and self._stack and self._stack[-1][0] == tag:
            self._stack.pop()
        if tag == "pre" and self._pre is not None:
            self.listings.append(self._pre)
            self._pre = None
        if tag == "style":
            self._in_style = False
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None
        if tag == "span" and self._span_depth:
            self._span_depth.pop()

    def handle_data(self, data):
        if self._pre is not None:
            self._pre["text"] += data
        if self._in_style:
            self.style += data
        if self._cell is not None:
            self._cell["text"] += data
        for span in self._span_depth:
            if span:
                span["text"] += data


def _parse_page(folder: Path) -> _Page:
    page = _Page()
    page.feed((folder / "index.html").read_text(encoding="utf-8"))
    page.close()
    return page


def _check_png(path: Path) -> tuple[int, int]:
    """Signature, IHDR first with a valid CRC and sane size, IEND last. Returns (width, height)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name}: not a PNG signature"
    length, ctype = struct.unpack(">I4s", data[8:16])
    assert ctype == b"IHDR" and length == 13, f"{path.name}: first chunk is not IHDR"
    ihdr = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF == crc, f"{path.name}: IHDR CRC mismatch"
    width, height, depth, color = struct.unpack(">IIBB", ihdr[:10])
    assert 100 <= width <= 10000 and 100 <= height <= 10000, (width, height)
    assert depth == 8 and color in (2, 6)
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", f"{path.name}: no IEND chunk at the end"
    return width, height


_UNITS = {"\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def _check_display(span: dict) -> None:
    """The text shown equals the JSON value, up to the shown precision."""
    text, kind, value = span["text"].strip(), span["kind"], span["value"]
    msg = f"{span['key']}: shown {text!r} for {value!r} ({kind})"
    if value is None:
        assert text == "\u2014", msg
        return
    if kind in ("time", "bytes"):
        num, unit = text.split(" ")
        assert float(num) * _UNITS[unit] == pytest.approx(value, rel=6e-3), msg
    elif kind == "ratio":
        assert text.endswith("\u00d7") and "e+" not in text and "e-" not in text, msg
        assert _number(text[:-1]) == pytest.approx(value, rel=6e-3), msg
    elif kind in ("sci", "float"):
        assert _number(text) == pytest.approx(value, rel=6e-3, abs=1e-12), msg
    elif kind == "int":
        assert int(text) == value, msg
    elif kind == "bool":
        assert text == ("yes" if value else "no"), msg
    elif kind == "shape":
        assert tuple(int(s) for s in re.findall(r"\d+", text)) == tuple(value), msg
    elif kind == "list":
        parts = [p.strip() for p in text.split(",")]
        assert len(parts) == len(value), msg
        for p, v in zip(parts, value):
            assert float(p) == pytest.approx(v, rel=6e-3), msg
    elif kind == "point":
        shown = [float(s) for s in text.strip("()").split(",")]
        assert shown == pytest.approx(value, abs=5.1e-4), msg
    else:
        assert text == str(value), msg


def _number(text: str) -> float:
    """A number as the page prints it: ``1,024``, ``2.2\u00b710\u00b3``, ``1.23\u00b710\u207b\u2075`` or ``0.5``."""
    text = text.replace(",", "")
    if "\u00b710" in text:
        mant, exp = text.split("\u00b710")
        return float(mant) * 10.0 ** int(exp.translate(_SUP))
    return float(text)


def test_number_formats():
    from sqdist._report_context import fmt

    assert fmt(1024.2, "ratio") == "1,024\u00d7"
    assert fmt(2.2e6, "ratio") == "2.2\u00b710\u2076\u00d7"
    assert fmt(12.34, "ratio") == "12.3\u00d7"
    assert fmt(1.234e-5, "sci") == "1.23\u00b710\u207b\u2075"
    for v in (0.5, 3.0, 99.4, 1000.0, 1234.5, 99_999.0, 3.3e5, 2.2e6, 7.7e9):
        assert "e" not in fmt(v, "ratio")
        assert _number(fmt(v, "ratio")[:-1]) == pytest.approx(v, rel=6e-3)
    for v in (1.234e-5, 3e-12, 0.5, 1234.0, 0.0):
        assert _number(fmt(v, "sci")) == pytest.approx(v, rel=6e-3)


# ---- one quick report through the CLI (replacing a previous report), shared by the checks below ----


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    from sqdist import cli

    out = tmp_path_factory.mktemp("cli") / "rep"
    _fake_previous_report(out)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = cli.main(["report", "--quick", "--quiet", "--device", "cpu", "--out", str(out)])
    assert rc == 0, stderr.getvalue()
    assert stdout.getvalue() == "" and stderr.getvalue() == ""  # --quiet: no bar, no summary
    return out


def test_write_report_returns_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "_SECTIONS", (("machine", dict(R._SECTIONS)["machine"]),))
    out = tmp_path / "rep"
    assert R.write_report(out, mode="quick", device="cpu", progress=False) == out.absolute()


def test_quick_report_files(quick_report):
    names = {p.name for p in quick_report.iterdir()}
    assert {"index.html", "results.json", "report.md"} <= names
    results = json.loads((quick_report / "results.json").read_text())
    assert results["meta"]["generator"] == "sqdist report"
    assert results["meta"]["mode"] == "quick"
    assert set(results["meta"]["figures"]) == {n for n in names if n.endswith(".png")}
    # no hidden temporary or backup folders left next to it
    assert [p.name for p in quick_report.parent.iterdir()] == ["rep"]


def test_html_parses_and_is_self_contained(quick_report):
    page = _parse_page(quick_report)
    assert page.section_ids == list(SECTIONS)
    assert "link" not in page.tags and "iframe" not in page.tags
    assert page.scripts and all("src" not in a for a in page.scripts)  # the copy buttons' script, inline
    for url in page.urls:  # only in-page anchors and relative files next to the page
        assert url.startswith("#") or ("/" not in url and ":" not in url), url
    assert "url(" not in page.style and "@import" not in page.style and "@font-face" not in page.style


def test_every_image_exists_and_is_png(quick_report):
    page = _parse_page(quick_report)
    assert len(page.imgs) >= 4
    for src in page.imgs:
        _check_png(quick_report / src)
    md = (quick_report / "report.md").read_text()
    assert sorted(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)) == sorted(page.imgs)


def test_numbers_in_html_match_results_json(quick_report):
    results = json.loads((quick_report / "results.json").read_text())
    page = _parse_page(quick_report)
    assert len(page.spans) > 100
    for span in page.spans:
        assert lookup(results, span["key"]) == span["value"], span["key"]
        _check_display(span)
    # hovering a number shows its data-key (the title attribute), as the page says
    html_text = (quick_report / "index.html").read_text()
    keys = re.findall(r'<span class="n" title="results\.json: ([^"]+)" data-key="([^"]+)"', html_text)
    assert len(keys) == len(page.spans) and all(a == b for a, b in keys)
    # every table cell that shows a number carries a data-key
    for cell in page.cells:
        if re.search(r"\d", cell["text"]):
            assert cell["keys"], f"table cell {cell['text']!r} shows a number without a data-key"


def test_page_structure(quick_report):
    page = _parse_page(quick_report)
    # headings: one h1, then no level skipped (h1 > h2 > h3 ...)
    assert page.headings[0] == 1 and page.headings.count(1) == 1
    assert all(b <= a + 1 for a, b in zip(page.headings, page.headings[1:])), page.headings
    # every header cell says what it heads
    assert page.ths and all(a.get("scope") in ("col", "row") for a in page.ths)
    # every table sits in a wrapper that scrolls sideways on a narrow screen; the cards scroll too
    assert all(p in ("div.scroll", "div.card") for p in page.table_parents), set(page.table_parents)
    assert re.search(r"\.scroll\s*\{[^}]*overflow-x:\s*auto", page.style)
    assert re.search(r"\.card\s*\{[^}]*overflow-x:\s*auto", page.style)
    # no speed-up printed in e-notation anywhere
    ratio = [s["text"] for s in page.spans if s["kind"] == "ratio"]
    assert ratio and not any("e+" in t or "e-" in t for t in ratio)


def test_code_of_every_task_is_the_code_that_ran(quick_report):
    from sqdist import _report_sections, _report_task3, bench, exercise

    page = _parse_page(quick_report)
    shown = {}
    for lst in page.listings:
        shown.setdefault(lst["section"], []).append(lst["text"])
    for sid in ("task1", "task2", "task3"):
        assert shown.get(sid), f"no code in {sid}"
    # Task 1: the source of every function that was timed, exactly
    t1 = [inspect.getsource(f) for f in (exercise.distances_loops, exercise.distances_numpy,
                                          exercise.distances_torch, exercise.distances_torch_expansion)]
    for src in t1:
        assert src in shown["task1"]
    assert [bench.EXERCISE_FUNCTIONS[m] for m in ("loops", "numpy", "torch", "expansion")] == [
        exercise.distances_loops, exercise.distances_numpy, exercise.distances_torch, exercise.distances_torch_expansion]
    assert any("sqdist.sqdist(X, T)" in t for t in shown["task1"])
    # Task 2: the np.broadcast_shapes and explain_broadcast calls that produced the page's answers
    assert inspect.getsource(_report_sections.broadcast_shapes_answers) in shown["task2"]
    assert inspect.getsource(_report_sections.explained_pairs) in shown["task2"]
    # Task 3: the student's loop, the library call and the scikit-learn cross-check
    for f in (exercise.kmeans_torch, _report_task3.library_kmeans, _report_task3.sklearn_kmeans):
        assert inspect.getsource(f) in shown["task3"]
    # each listing has a copy button; the text is highlighted by Pygments when it is installed
    html_text = (quick_report / "index.html").read_text()
    assert html_text.count('class="copy"') == len(page.listings)
    try:
        import pygments  # noqa: F401
    except ImportError:
        pass
    else:
        assert all("hl" in lst["class"].split() for lst in page.listings)


def test_code_listing_without_pygments(monkeypatch):
    from sqdist._report_page import code_html

    monkeypatch.setitem(sys.modules, "pygments", None)
    out = code_html("x = a < b and 'c'\n", "caption")
    assert '<pre class="code"><code>x = a &lt; b and &#x27;c&#x27;\n</code></pre>' in out
    assert 'class="copy"' in out


def test_task1_labels_name_what_ran(quick_report):
    from sqdist._bench_result import LABELS
    from sqdist.bench import sqdist_engine

    results = json.loads((quick_report / "results.json").read_text())
    rows = results["task1"]["rows"]
    for r in rows:
        if r["method"] == "sqdist":
            # the engine sqdist.sqdist dispatches to for this size and dtype (checked against the kernel
            # that really runs in tests/test_bench.py)
            X, T = torch.zeros(r["timed_rows"], r["D"]), torch.zeros(r["timed_cols"], r["D"])
            assert r["label"] == f"sqdist ({sqdist_engine(X, T)})"
            if sqdist_engine(X, T) != "PyTorch":
                assert "torch" not in r["label"].lower()
        else:
            assert r["label"] == LABELS[(r["method"], r["device"])]
    labels = {r["label"] for r in rows}
    assert {"Python loops", "NumPy broadcasting", "PyTorch CPU (broadcasting)", "PyTorch CPU (expansion, matmul)"} <= labels
    assert not any(lab in ("torch", "torch gemm", "torch broadcast") or "auto" in lab for lab in labels)
    # the validation sentence lists the labels that were compared
    html_text = (quick_report / "index.html").read_text()
    sq = next(r["label"] for r in rows if r["method"] == "sqdist")
    sentence = re.search(r'<p class="verdict ok">(.*?)</p>', html_text).group(1)
    assert f"PyTorch CPU (broadcasting), {sq} equal the Python loops / NumPy broadcasting results" in sentence
    assert "PyTorch CPU (expansion, matmul)" in sentence


def test_report_content(quick_report):
    results = json.loads((quick_report / "results.json").read_text())
    # Task 1: every method timed and validated against float64
    t1 = results["task1"]
    assert {"loops", "numpy", "torch", "expansion", "sqdist"} <= {r["method"] for r in t1["rows"]}
    assert t1["validation"]["passed"] is True
    assert t1["validation"]["max_rel_err_vs_f64"] < 1e-4
    for r in t1["rows"]:
        assert r["naive_intermediate_bytes"] == r["N"] * r["P"] * r["D"] * 4
    # the RBF example: exactly 1 on the diagonal, brighter within blobs
    assert results["rbf"]["diag_min"] == 1.0
    assert results["rbf"]["mean_same_blob"] > 10 * results["rbf"]["mean_other_blob"]
    # Task 2: the eight pairs, verdicts equal NumPy's
    pairs = results["task2"]["pairs"]
    assert [(tuple(p["a"]), tuple(p["b"])) for p in pairs] == EXERCISE_PAIRS
    for p in pairs:
        try:
            expected = list(np.broadcast_shapes(tuple(p["a"]), tuple(p["b"])))
        except ValueError:
            expected = None
        assert p["result"] == expected and p["compatible"] == (expected is not None)
        assert p["table"].strip()
    # Task 3: P = 2, 5, 8 on 250 points; sizes add up, inertia never increases
    runs = results["task3"]["runs"]
    assert [r["P"] for r in runs] == [2, 5, 8]
    # the exercise's rule (stop once every centre moved less than the threshold, that pass counted):
    # 4 / 2 / 6 iterations, the same for the student's loop, sqdist.kmeans and scikit-learn
    assert [(r["exercise"]["n_iter"], r["n_iter"], r["sklearn"]["n_iter"]) for r in runs] == [(4, 4, 4), (2, 2, 2), (6, 6, 6)]
    for r in runs:
        assert r["history"][-1]["max_shift"] < results["task3"]["tol"]
        for other in ("exercise", "sklearn"):
            assert r[other]["labels_equal"] is True
            assert r[other]["inertia"] == pytest.approx(r["inertia"], rel=1e-9)
            assert r[other]["max_center_diff"] < 1e-9
    for r in runs:
        assert sum(r["sizes"]) == results["task3"]["n_points"] == 250
        assert min(r["sizes"]) > 0 and len(r["centers"]) == r["P"]
        h = [e["inertia"] for e in r["history"]]
        assert len(h) == r["n_iter"] + 1  # iteration 0 = the initial centres
        assert all(b <= a * (1 + 1e-12) for a, b in zip(h, h[1:]))
        assert h[-1] == pytest.approx(r["inertia"], rel=1e-9)
    # cross-checks: SciPy and scikit-learn (a core dependency) give the same distances, marked as cross-checks
    libs = {r["library"] for r in results["extras"]["distances"]}
    assert {"sqdist", "sklearn"} <= libs
    if importlib.util.find_spec("scipy") is not None:
        assert "scipy" in libs
    assert all(r["max_rel_err_vs_f64"] < 1e-4 for r in results["extras"]["distances"])
    html_text = (quick_report / "index.html").read_text()
    assert html_text.count('class="extra"') == len(libs) - 1
    assert "not installed" not in html_text


def test_quick_report_via_cli_replaces_previous_report(quick_report):
    out = quick_report
    page = _parse_page(out)
    assert page.section_ids == list(SECTIONS)
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["mode"] == "quick"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.html", "report.md", "results.json", *results["meta"]["figures"]]
    )
    for name in results["meta"]["figures"]:
        _check_png(out / name)
    assert "old report" not in (out / "index.html").read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["rep"]  # old report and temporary folder gone


def test_cli_help_and_summary_line(tmp_path, monkeypatch, capsys):
    from sqdist import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["report", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(o in out for o in ("--out", "--quick", "--full", "--device", "--quiet"))
    # with one cheap section: a summary line on stdout, no progress bar when not a terminal
    monkeypatch.setattr(R, "_SECTIONS", (("machine", dict(R._SECTIONS)["machine"]),))
    assert cli.main(["report", "--quick", "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"report written to {tmp_path / 'r' / 'index.html'}\n"
    assert captured.err == ""


# ---- the atomic write -------------------------------------------------------------------------------


def _fake_previous_report(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True)
    files = {
        "results.json": json.dumps({"meta": {"generator": "sqdist report", "mode": "old"}}).encode(),
        "index.html": b"<!DOCTYPE html><html><body>old report</body></html>",
        "old.png": b"\x89PNG old",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_interrupted_run_keeps_previous_report(tmp_path, monkeypatch, exc):
    out = tmp_path / "rep"
    before = _fake_previous_report(out)
    reached = []

    def boom(ctx):
        reached.append(sorted(p.name for p in ctx.folder.iterdir()))  # a figure was already written
        raise exc

    sections = dict(R._SECTIONS)
    monkeypatch.setattr(R, "_SECTIONS", (("machine", sections["machine"]), ("rbf", sections["rbf"]), ("task2", boom)))
    with pytest.raises(type(exc)):
        R.write_report(out, mode="quick", device="cpu", progress=False)
    assert reached and reached[0], "the section did not fail mid-way"
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no temporary folder left behind


def test_failed_rename_restores_previous_report(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    before = _fake_previous_report(out)
    monkeypatch.setattr(R, "_SECTIONS", (("machine", dict(R._SECTIONS)["machine"]),))
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # old report moved aside; moving the new one in fails
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(R.os, "rename", rename)
    with pytest.raises(OSError):
        R.write_report(out, mode="quick", device="cpu", progress=False)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_refuses_to_replace_a_folder_that_is_not_a_report(tmp_path, capsys):
    from sqdist import cli

    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(sqdist.SqdistError, match="not a sqdist report"):
        R.write_report(precious, mode="quick", progress=False)
    assert cli.main(["report", "--quick", "--out", str(precious)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a sqdist report" in err
    assert (precious / "thesis.tex").read_text() == "do not delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(sqdist.SqdistError, match="not a folder"):
        R.write_report(afile, mode="quick", progress=False)


def test_bad_options(tmp_path, capsys):
    from sqdist import cli

    with pytest.raises(sqdist.SqdistError, match="mode"):
        R.write_report(tmp_path / "r", mode="huge")
    with pytest.raises(sqdist.SqdistError, match="device"):
        R.write_report(tmp_path / "r", device="tpu")
    with pytest.raises(SystemExit) as e:
        cli.main(["report", "--quick", "--full"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["report", "--quick", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert "cuda" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_without_matplotlib_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(sqdist.SqdistError, match=r"pip install 'sqdist\[plot\]'"):
        R.write_report(tmp_path / "r", mode="quick", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_progress_bar():
    buf = io.StringIO()
    bar = Progress(10, enabled=True, stream=buf, width=10)
    bar.set(5, "half")
    bar.set(10, "done")
    bar.close()
    out = buf.getvalue()
    assert "\r" in out and "[#####.....]  50%  half" in out and "[##########] 100%  done" in out
    assert out.endswith("\n")
    buf = io.StringIO()
    bar = Progress(10, enabled=False, stream=buf)
    bar.set(5, "x")
    bar.close()
    assert buf.getvalue() == ""


def test_extras_without_scipy_and_sklearn(tmp_path, monkeypatch):
    # the optional libraries missing: only sqdist's own row, nothing marked EXTRA
    for mod in ("scipy.spatial.distance", "sklearn.metrics.pairwise", "sklearn.cluster"):
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setattr(R, "_SECTIONS", (("extras", dict(R._SECTIONS)["extras"]),))
    out = R.write_report(tmp_path / "r", mode="quick", device="cpu", progress=False)
    results = json.loads((out / "results.json").read_text())
    assert [r["library"] for r in results["extras"]["distances"]] == ["sqdist"]
    page = (out / "index.html").read_text()
    assert 'class="extra"' not in page
    assert "SciPy and scikit-learn are not installed" in page and "sqdist[report]" in page
