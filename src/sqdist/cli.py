"""The ``sqdist`` command line: one sub-command per feature module.

Each feature module used here exposes ``configure_parser(parser)`` and
``run(args) -> int``.  Errors from bad input (:class:`SqdistError`, unreadable
files) print one line on stderr and exit with status 2 -- never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from . import _cli_broadcast, _cli_kmeans, bench, report
from ._validation import SqdistError
from ._version import __version__

# sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "bench": (bench, "Task 1 benchmark: loops vs NumPy vs torch CPU/GPU, timed, measured and validated"),
    "broadcast": (_cli_broadcast, "explain whether shapes broadcast, and to what (Task 2)"),
    "kmeans": (_cli_kmeans, "Lloyd k-means on blobs or a data file, with summary, plots and model output"),
    "report": (report, "run the whole exercise and write an offline HTML report"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sqdist", description="Exact pairwise squared distances, RBF kernel, broadcasting and k-means.")
    parser.add_argument("--version", action="version", version=f"sqdist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (mod, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().splitlines()[0])
        mod.configure_parser(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_module", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._module.run(args) or 0)
    except SqdistError as exc:
        print(f"sqdist {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sqdist {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sqdist {args.command}: interrupted", file=sys.stderr)
        return 130
