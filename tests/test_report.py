"""``sqdist report``: the folder, the page, the numbers, the atomic write."""

from __future__ import annotations

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
        self._span_depth: list[dict] = []
        self._cell: dict | None = None
        self._in_style = False
        self.open_count = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
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
        if tag == "style":
            self._in_style = False
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None
        if tag == "span" and self._span_depth:
            self._span_depth.pop()

    def handle_data(self, data):
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
        assert text.endswith("\u00d7") and float(text[:-1]) == pytest.approx(value, rel=6e-3), msg
    elif kind in ("sci", "float"):
        assert float(text) == pytest.approx(value, rel=6e-3, abs=1e-12), msg
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


# ---- one quick report through the API, shared by the checks below --------------------------------


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "rep"
    path = R.write_report(out, mode="quick", device="cpu", progress=False)
    assert path == out.absolute()
    return path


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
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
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
    # every table cell that shows a number carries a data-key
    for cell in page.cells:
        if re.search(r"\d", cell["text"]):
            assert cell["keys"], f"table cell {cell['text']!r} shows a number without a data-key"


def test_report_content(quick_report):
    results = json.loads((quick_report / "results.json").read_text())
    # Task 1: every method timed and validated against float64
    t1 = results["task1"]
    assert {"loops", "numpy", "broadcast", "gemm"} <= {r["method"] for r in t1["rows"]}
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
    for r in runs:
        assert sum(r["sizes"]) == results["task3"]["n_points"] == 250
        assert min(r["sizes"]) > 0 and len(r["centers"]) == r["P"]
        h = [e["inertia"] for e in r["history"]]
        assert len(h) == r["n_iter"] + 1  # iteration 0 = the initial centres
        assert all(b <= a * (1 + 1e-12) for a, b in zip(h, h[1:]))
        assert h[-1] == pytest.approx(r["inertia"], rel=1e-9)
    # extra comparisons: scikit-learn's Lloyd from the same start agrees; marked as extra in the page
    pytest.importorskip("sklearn")
    assert [r["P"] for r in results["extras"]["kmeans"]] == [2, 5, 8]
    for r in results["extras"]["kmeans"]:
        assert r["labels_equal"] is True
        assert r["inertia"] == pytest.approx(r["sqdist_inertia"], rel=1e-6)
    assert {r["library"] for r in results["extras"]["distances"]} == {"sqdist", "scipy", "sklearn"}
    html_text = (quick_report / "index.html").read_text()
    assert html_text.count('class="extra"') >= 1


def test_quick_report_via_cli_replaces_previous_report(run_cli, tmp_path):
    out = tmp_path / "cli-rep"
    _fake_previous_report(out)
    r = run_cli("report", "--quick", "--quiet", "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""  # --quiet: no bar, no summary
    page = _parse_page(out)
    assert page.section_ids == list(SECTIONS)
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["mode"] == "quick"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.html", "report.md", "results.json", *results["meta"]["figures"]]
    )
    for name in results["meta"]["figures"]:
        _check_png(out / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli-rep"]  # old report and temporary folder gone


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
    assert results["extras"]["kmeans"] == []
    page = (out / "index.html").read_text()
    assert 'class="extra"' not in page
    assert "SciPy and scikit-learn are not installed" in page and "sqdist[bench]" in page
