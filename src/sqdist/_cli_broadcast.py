"""``sqdist broadcast``: the command that prints the broadcasting table of shapes given as text (Task 2)."""

from __future__ import annotations

import argparse
import sys

from ._validation import SqdistError
from .broadcast import EXERCISE_PAIRS, broadcast_table, explain_broadcast, format_shape, parse_shape, render_table

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Explain whether shapes broadcast together (NumPy/PyTorch rule) and to what. "
        "Prints the right-aligned table with a verdict per axis and the result shape. "
        "Exit status: 0 compatible, 1 incompatible, 2 malformed input."
    )
    parser.epilog = 'examples: sqdist broadcast "(4,1)" "(3,1,1,5)";  sqdist broadcast 3x1x3 2,3,3;  sqdist broadcast --exercise'
    parser.add_argument("shapes", nargs="*", metavar="SHAPE",
                        help="a shape: '(3,1,3)', '3,1,3', '3x1x3', '(3)', '(3,)' or '()' (quote parentheses in the shell)")
    parser.add_argument("--exercise", action="store_true",
                        help="explain the eight pairs of the exercise's Task 2 (exit 0)")


def run(args: argparse.Namespace) -> int:
    if args.exercise:
        if args.shapes:
            raise SqdistError("give either SHAPE arguments or --exercise, not both")
        blocks = []
        for k, pair in enumerate(EXERCISE_PAIRS, 1):
            blocks.append(f"# {k}. {' and '.join(format_shape(s) for s in pair)}\n{explain_broadcast(*pair)}")
        print("\n\n".join(blocks))
        return 0
    if not args.shapes:
        raise SqdistError("no SHAPE given; e.g. sqdist broadcast '(4,1)' '(3,1,1,5)' (or --exercise)")
    shapes = [parse_shape(t, name=f"SHAPE {i + 1}") for i, t in enumerate(args.shapes)]
    table = broadcast_table(*shapes)
    print(render_table(table))
    sys.stdout.flush()
    return 0 if table["compatible"] else 1
