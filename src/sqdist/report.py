"""Write the whole exercise -- measured, validated and explained -- as an offline web page.

``sqdist report`` runs every task of the exercise on this machine and writes a
self-contained folder (default ``./sqdist-report/``):

* ``index.html`` -- opens offline in any browser: inline CSS and one small
  inline script (the "copy" buttons of the code listings), nothing fetched
  (no external scripts, styles or fonts); figures are relative links to the
  PNG files;
* the figures as PNG files;
* ``results.json`` -- every number the page shows (each number on the page
  carries a ``data-key`` attribute: its dotted path in this file);
* ``report.md`` -- the same content as Markdown.

Sections: the machine; Task 1 (the exercise's solutions of
:mod:`sqdist.exercise` -- Python loops, NumPy broadcasting, PyTorch
broadcasting and expansion, on the GPU when present -- and ``sqdist.sqdist``
labelled by the engine it dispatched to: times, peak memory, validation
against float64, the code that was timed; the RBF kernel as a heat map);
Task 2 (the eight shape pairs with their aligned tables, NumPy's
``np.broadcast_shapes`` beside them, and the code); Task 3 (k-means on five
blobs from fixed initial rows for P = 2, 5, 8: the exercise's PyTorch loop,
``sqdist.kmeans`` and scikit-learn's Lloyd, equal, with the code); the
cross-checks of the distances with SciPy and scikit-learn.

The folder is written atomically: the report is built in a temporary folder
next to the target and renamed into place only when complete, so an
interrupted run leaves any previous report untouched.

This module runs the report: the modes, the order of the sections, the
progress bar's weights, the atomic install and the ``sqdist report`` command.
The sections are built in :mod:`sqdist._report_task1` (Task 1),
:mod:`sqdist._report_task3` (Task 3) and :mod:`sqdist._report_sections` (the
others), from the build context of
:mod:`sqdist._report_context`; :mod:`sqdist._report_page` renders the page.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ._atomic import sweep_stale
from ._machine import usable_cores
from ._report_context import Config, Context, Progress, Section, jsonable
from ._report_page import page_html, page_md
from ._report_sections import section_extras, section_machine, section_task2
from ._report_task1 import section_rbf, section_task1
from ._report_task3 import section_task3
from ._validation import SqdistError, check_choice
from ._version import __version__

__all__ = ["MODES", "write_report"]

MODES = ("quick", "default", "full")
DEVICES = ("auto", "cpu", "cuda")

#: Marker stored in ``results.json``; an existing folder is only replaced when it carries it.
_GENERATOR = "sqdist report"

_CONFIGS = {
    "quick": Config(
        mode="quick",
        bench_sizes=((64, 64, 8), (256, 256, 8)),
        extra_size=(256, 256, 8),
        bench_min_run_time=0.01,
        loops_max_pairs=1024,
        kmeans_grid=False,
        dpi=80,
    ),
    "default": Config(
        mode="default",
        bench_sizes=((128, 128, 16), (256, 256, 16), (512, 512, 16), (1024, 1024, 16), (2048, 2048, 16)),
        extra_size=(1024, 1024, 16),
        bench_min_run_time=0.05,
    ),
    "full": Config(
        mode="full",
        bench_sizes=(
            (256, 256, 32), (512, 512, 32), (1024, 1024, 32), (2048, 2048, 32), (4096, 4096, 32), (8192, 8192, 32),
        ),
        extra_size=(4096, 4096, 32),
        bench_min_run_time=0.2,
    ),
}


# --------------------------------------------------------------------------------------------
# the sections, in page order (looked up at run time: the tests replace them)
# --------------------------------------------------------------------------------------------

_SECTIONS: tuple[tuple[str, Callable[[Context], Section]], ...] = (
    ("machine", section_machine),
    ("task1", section_task1),
    ("rbf", section_rbf),
    ("task2", section_task2),
    ("task3", section_task3),
    ("extras", section_extras),
)
# rough share of the run time of each section, for the progress bar
_WEIGHTS = {"machine": 1, "task1": 50, "rbf": 6, "task2": 1, "task3": 34, "extras": 8}


# --------------------------------------------------------------------------------------------
# the device, the target folder and the atomic write
# --------------------------------------------------------------------------------------------


def _resolve_device(device: str) -> str:
    device = check_choice(device, "device", DEVICES)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SqdistError("device: 'cuda' was requested but torch.cuda.is_available() is False; use --device cpu or auto")
    return device


def _check_target(target: Path) -> None:
    """Refuse to replace anything but a previous sqdist report (or an empty folder)."""
    if not os.path.lexists(target):
        return
    if not target.is_dir() or target.is_symlink():
        raise SqdistError(f"out: {str(target)!r} exists and is not a folder; choose another --out")
    entries = list(target.iterdir())
    if not entries:
        return
    try:
        with open(target / "results.json", encoding="utf-8") as fh:
            if json.load(fh).get("meta", {}).get("generator") == _GENERATOR:
                return
    except (OSError, ValueError, AttributeError, RecursionError):  # unreadable, not JSON, not ours, nested too deep
        pass
    raise SqdistError(
        f"out: {str(target)!r} exists and is not a sqdist report (no results.json written by sqdist report); "
        "refusing to replace it -- choose another --out or remove it"
    )


def _free_name(target: Path, tag: str) -> Path:
    """An unused hidden name next to ``target`` (same file system, so renames are atomic)."""
    for _ in range(100):
        cand = target.parent / f".{target.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"
        if not os.path.lexists(cand):
            return cand
    raise OSError(f"no free temporary name next to {target}")


def _install(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing an old report only now."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    backup = _free_name(target, "old")
    os.rename(target, backup)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(backup, target)  # put the previous report back
        raise
    shutil.rmtree(backup, ignore_errors=True)


def write_report(
    out: str | os.PathLike = "sqdist-report",
    *,
    mode: str = "default",
    device: str = "auto",
    progress: bool | None = None,
) -> Path:
    """Run the whole exercise and write the report folder atomically.

    Parameters
    ----------
    out : str or path-like
        Folder to write (default ``./sqdist-report``).  An existing folder is
        replaced only when it holds a previous sqdist report (or is empty), and
        only once the new report is complete.
    mode : {"quick", "default", "full"}
        Problem sizes: ``"quick"`` (small sizes, for tests; docs/report.md
        gives the measured times), ``"default"``, ``"full"`` (larger benchmark sizes).
    device : {"auto", "cpu", "cuda"}
        Where the torch computations run; ``"auto"`` picks CUDA when available.
    progress : bool, optional
        Draw a progress bar on stderr; default: only when stderr is a terminal.

    Returns
    -------
    Path
        The report folder (holding ``index.html``, ``results.json``,
        ``report.md`` and the PNG figures).

    Raises
    ------
    SqdistError
        Unknown ``mode`` or ``device``, CUDA requested but absent, matplotlib
        missing, or ``out`` an existing file or a folder that is not a
        previous sqdist report (it is never replaced).

    Examples
    --------
    >>> import sqdist.report
    >>> path = sqdist.report.write_report("sqdist-report", mode="quick")  # doctest: +SKIP
    >>> sorted(p.name for p in path.iterdir())[:3]  # doctest: +SKIP
    ['index.html', 'report.md', 'results.json']
    """
    mode = check_choice(mode, "mode", MODES)
    dev = _resolve_device(device)
    target = Path(out).expanduser().absolute()
    _check_target(target)
    sweep_stale(target)  # temporary folders that a killed run of ours left beside the target
    target.parent.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    try:
        import matplotlib
    except ImportError:
        raise SqdistError(
            "the report draws its figures with matplotlib, which is not installed: pip install 'sqdist[plot]'"
        ) from None
    matplotlib.use("Agg")  # figures are written to files; never open a window

    t_start = time.perf_counter()
    tmp = _free_name(target, "tmp")
    tmp.mkdir()  # default permissions (umask), unlike tempfile.mkdtemp's 0700
    bar = Progress(sum(_WEIGHTS.values()), enabled=bool(progress))
    try:
        ctx = Context(folder=tmp, config=_CONFIGS[mode], device=dev, progress=bar)
        ctx.results["meta"] = {
            "generator": _GENERATOR,
            "version": __version__,
            "mode": mode,
            "device": dev,
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "section_seconds": {},
            "cores": usable_cores(),
            "load_average_start": _load_average(),
        }
        sections = []
        done = 0.0
        for sid, fn in _SECTIONS:
            bar.set(done, f"{sid}")
            t0 = time.perf_counter()
            ctx.share = _WEIGHTS[sid]
            sections.append(fn(ctx))
            ctx.results["meta"]["section_seconds"][sid] = time.perf_counter() - t0
            done += _WEIGHTS[sid]
            bar.set(done)
        ctx.results["meta"]["total_seconds"] = time.perf_counter() - t_start
        ctx.results["meta"]["load_average_end"] = _load_average()
        ctx.results["meta"]["figures"] = list(ctx.figures)
        ctx.results = jsonable(ctx.results)
        page = page_html(ctx, sections)
        (tmp / "index.html").write_text(page, encoding="utf-8")
        (tmp / "report.md").write_text(page_md(ctx, sections), encoding="utf-8")
        with open(tmp / "results.json", "w", encoding="utf-8") as fh:
            json.dump(ctx.results, fh, indent=1, allow_nan=False)
            fh.write("\n")
        bar.set(bar.total, "done")
        _install(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return target


def _load_average() -> float | None:
    """1-minute load average (None where the OS does not say)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="sqdist-report", metavar="DIR", help="report folder (default: ./sqdist-report)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick", help="small sizes (seconds)")
    size.add_argument("--full", dest="mode", action="store_const", const="full", help="larger benchmark sizes")
    parser.set_defaults(mode="default")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="where torch runs (default: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")


def run(args: argparse.Namespace) -> int:
    path = write_report(args.out, mode=args.mode, device=args.device, progress=False if args.quiet else None)
    if not args.quiet:
        print(f"report written to {path / 'index.html'}")
    return 0
