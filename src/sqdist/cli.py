"""The ``sqdist`` command line: one sub-command per feature module.

Each feature module used here exposes ``configure_parser(parser)`` and
``run(args) -> int``.  Errors from bad input (:class:`SqdistError`, unreadable
files, a problem too large for this machine's memory) print one line on
stderr, ``sqdist COMMAND: error: ...``, and exit with status 2 -- never a
traceback.  Before a command runs, stale temporaries that killed runs left next
to its ``--out`` are removed (:func:`sqdist._atomic.sweep_stale`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable

from ._atomic import sweep_stale
from ._errors import SqdistError
from ._version import __version__

# sub-command -> (module that implements it, one-line help).  Only the chosen command's module is
# imported: ``sqdist --help`` and ``sqdist broadcast`` never import torch (~4 s), the others do
# when they need it.
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("bench", "Task 1 benchmark: loops vs NumPy vs torch CPU/GPU, timed, measured and validated"),
    "broadcast": ("_cli_broadcast", "explain whether shapes broadcast, and to what (Task 2)"),
    "kmeans": ("_cli_kmeans", "Lloyd k-means on blobs or a data file, with summary, plots and model output"),
    "report": ("report", "run the whole exercise and write an offline HTML report"),
}


def _out_of_memory_errors() -> tuple[type[BaseException], ...]:
    """``MemoryError`` and, when a command has loaded torch, torch's out-of-memory error
    (``torch.OutOfMemoryError`` since 2.5, ``torch.cuda.OutOfMemoryError`` before)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return (MemoryError,)
    return MemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def chosen_command(argv: Iterable[str]) -> str | None:
    """The sub-command named on a command line: its first word that is not an option
    (``sqdist`` itself takes no option with a value), or ``None``."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``sqdist`` parser; the sub-commands in ``commands`` (default: all) get their options,
    which imports their modules; the others are listed by name and help only."""
    configure = set(COMMANDS) if commands is None else set(commands)
    parser = _Parser(prog="sqdist", description="Exact pairwise squared distances, RBF kernel, broadcasting and k-means.")
    parser.add_argument("--version", action="version", version=f"sqdist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                                help="one of these; sqdist COMMAND --help lists its options")
    for name, (module, help_) in COMMANDS.items():
        if name not in configure:
            sub.add_parser(name, help=help_)
            continue
        mod = importlib.import_module(f".{module}", __package__)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().splitlines()[0])
        mod.configure_parser(p)
        p.set_defaults(_module=mod)
    return parser


def _one_line(command: str, message: str) -> int:
    text = " ".join(str(message).split()) or "unknown error"
    print(f"sqdist {command}: error: {text}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = chosen_command(argv)
    parser = build_parser([] if command is None else [command])
    args = parser.parse_args(argv)
    if getattr(args, "_module", None) is None:
        parser.print_help(sys.stderr)
        return 2
    cmd = args.command
    try:
        if isinstance(getattr(args, "out", None), str):  # report folder, bench results
            sweep_stale(args.out)
        return int(args._module.run(args) or 0)
    except SqdistError as exc:
        return _one_line(cmd, str(exc))
    except ValueError as exc:  # a library's own check of the input (scikit-learn's validation, ...)
        return _one_line(cmd, str(exc) or type(exc).__name__)
    except OSError as exc:
        where = exc.filename if exc.filename is not None else ""
        return _one_line(cmd, f"{exc.strerror or exc}: {where}".rstrip(": "))
    except _out_of_memory_errors() as exc:
        return _one_line(cmd, f"out of memory ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                              f"try smaller sizes or a smaller --working-memory")
    except OverflowError as exc:
        return _one_line(cmd, f"a number is too large: {exc}")
    except RuntimeError as exc:  # torch's CPU allocator failing is a plain RuntimeError
        if "can't allocate memory" not in str(exc):
            raise
        return _one_line(cmd, f"out of memory ({str(exc).splitlines()[0]}); try smaller sizes or a smaller "
                              f"--working-memory")
    except KeyboardInterrupt:
        print(f"sqdist {cmd}: interrupted", file=sys.stderr)
        return 130
