"""``sqdist broadcast``: the command that prints the broadcasting table of shapes given as text (Task 2).

It imports neither torch nor NumPy (only :mod:`sqdist.broadcast` and
:mod:`sqdist._errors`), so it answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ._errors import SqdistError
from .broadcast import EXERCISE_PAIRS, LEGEND, broadcast_table, format_shape, parse_shape, render_table

__all__ = ["configure_parser", "run", "summary_table"]

_SUMMARY_LEGEND = "(shapes aligned on the right, a missing axis counts as 1; axis -1 is the last; --explain: per-axis tables)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Explain whether shapes broadcast together (NumPy/PyTorch rule) and to what. "
        "Prints the right-aligned table with a verdict per axis and the result shape. "
        "Exit status: 0 compatible, 1 incompatible, 2 malformed input; --exercise exits 0."
    )
    parser.epilog = ('examples: sqdist broadcast "(4,1)" "(3,1,1,5)";  sqdist broadcast 3x1x3 2,3,3;  '
                     'sqdist broadcast --exercise [--explain]')
    parser.add_argument("shapes", nargs="*", metavar="SHAPE",
                        help="a shape: '(3,1,3)', '3,1,3', '3x1x3', '(3)', '(3,)' or '()' (quote parentheses in the shell)")
    parser.add_argument("--exercise", action="store_true",
                        help="the eight pairs of the exercise's Task 2 as one table: verdict and result shape or "
                             "conflicting axis per pair (exit 0)")
    parser.add_argument("--explain", action="store_true",
                        help="with --exercise: print each pair's per-axis table instead of the one-line rows "
                             "(SHAPE arguments always get the per-axis table)")


def _outcome(table: dict[str, Any]) -> tuple[str, str]:
    """(verdict, result shape or the first conflicting axis counted from the right with its two sizes)."""
    if table["compatible"]:
        return "broadcasts", format_shape(table["result"])
    entry = next(a for a in reversed(table["axes"]) if a["kind"] == "conflict")
    i, j = entry["conflict"]
    return "incompatible", f"axis {entry['axis']}: {entry['sizes'][i]} vs {entry['sizes'][j]}"


def summary_table(pairs: Sequence[tuple[Any, Any]]) -> str:
    """One row per pair of shapes (index, the two shapes, verdict, result or conflict), a line
    saying how many broadcast, and the legend once.

    Examples
    --------
    >>> print(summary_table([((4, 1), (3, 1, 1, 5)), ((3,), (3, 1, 1, 5))]))
    #  shape A  shape B       verdict       result / conflict
    1  (4, 1)   (3, 1, 1, 5)  broadcasts    (3, 1, 4, 5)
    2  (3,)     (3, 1, 1, 5)  incompatible  axis -1: 3 vs 5
    1 of 2 pairs broadcast
    (shapes aligned on the right, a missing axis counts as 1; axis -1 is the last; --explain: per-axis tables)
    """
    rows = [("#", "shape A", "shape B", "verdict", "result / conflict")]
    n_ok = 0
    for k, (a, b) in enumerate(pairs, 1):
        table = broadcast_table(a, b)
        n_ok += table["compatible"]
        rows.append((str(k), format_shape(table["shapes"][0]), format_shape(table["shapes"][1]), *_outcome(table)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"{n_ok} of {len(rows) - 1} pairs broadcast")
    lines.append(_SUMMARY_LEGEND)
    return "\n".join(lines)


def _explained(pairs: Sequence[tuple[Any, Any]]) -> str:
    """Each pair's per-axis table under a ``# k. A and B`` heading, then the legend and the count once."""
    blocks, n_ok = [], 0
    for k, pair in enumerate(pairs, 1):
        table = broadcast_table(*pair)
        n_ok += table["compatible"]
        heading = f"# {k}. {' and '.join(format_shape(s) for s in table['shapes'])}"
        blocks.append(f"{heading}\n{render_table(table, legend=False)}")
    return "\n\n".join(blocks) + f"\n\n{LEGEND}\n{n_ok} of {len(pairs)} pairs broadcast"


def run(args: argparse.Namespace) -> int:
    if args.exercise:
        if args.shapes:
            raise SqdistError("give either SHAPE arguments or --exercise, not both")
        print(_explained(EXERCISE_PAIRS) if args.explain else summary_table(EXERCISE_PAIRS))
        return 0
    if not args.shapes:
        raise SqdistError("no SHAPE given; e.g. sqdist broadcast '(4,1)' '(3,1,1,5)' (or --exercise)")
    shapes = [parse_shape(t, name=f"SHAPE {i + 1}") for i, t in enumerate(args.shapes)]
    table = broadcast_table(*shapes)
    print(render_table(table))
    sys.stdout.flush()
    return 0 if table["compatible"] else 1
