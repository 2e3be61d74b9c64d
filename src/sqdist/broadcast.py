"""Explain which shapes broadcast together, and to what (Task 2 of the exercise).

The rule (NumPy's, also PyTorch's): write the shapes one under the other,
aligned on the **right**.  A shape with fewer axes is treated as if it had
leading axes of size 1.  Then, axis by axis, the sizes must be equal or 1;
a size 1 is *stretched* to the other size, and the result has, on every
axis, the size that is not 1 (or 1 when all are 1).  A size 0 follows the
same rule: 0 with 1 gives 0, 0 with any other size > 1 is a conflict.

:func:`broadcast_shapes` gives the result shape (it agrees with
``numpy.broadcast_shapes`` and ``torch.broadcast_shapes``, which the tests
check on thousands of random shape tuples) or raises :class:`BroadcastError`
naming the first conflicting axis counted from the right.
:func:`explain_broadcast` draws the table a learner would draw;
:func:`broadcast_table` returns the same table as plain data (for HTML).

Examples
--------
>>> broadcast_shapes((4, 1), (3, 1, 1, 5))
(3, 1, 4, 5)
>>> print(explain_broadcast((4, 1), (3, 1, 1, 5)))
axis                                 -4     -3              -2              -1
operand 0  (4, 1)                     -      -               4               1
operand 1  (3, 1, 1, 5)               3      1               1               5
result                                3      1               4               5
verdict                  stretch 1 -> 3  equal  stretch 1 -> 4  stretch 1 -> 5
('-' = missing axis, counts as 1; shapes are aligned on the right)
result shape: (3, 1, 4, 5)
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from typing import Any

from ._errors import SqdistError

__all__ = [
    "EXERCISE_PAIRS",
    "LEGEND",
    "BroadcastError",
    "broadcast_shapes",
    "broadcast_table",
    "explain_broadcast",
    "format_shape",
    "parse_shape",
    "render_table",
]

#: The eight pairs of shapes of the exercise's Task 2, in its order.  The
#: exercise writes the third one as ``(3)``, which in Python is the int 3,
#: i.e. the 1-D shape ``(3,)``.
EXERCISE_PAIRS: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = (
    ((3, 1, 3), (2, 3, 3)),
    ((4, 1), (3, 1, 1, 5)),
    ((3,), (3, 1, 1, 5)),
    ((1, 4), (7, 1)),
    ((6, 3, 1, 7), (2, 7)),
    ((6, 3, 1, 7), (2, 1, 7)),
    ((1, 2, 3, 1, 6), (8, 1, 3, 2, 6)),
    ((2, 5, 1, 7), (9, 2, 3, 2, 1)),
)

#: The legend under a table (:func:`render_table`).
LEGEND = "('-' = missing axis, counts as 1; shapes are aligned on the right)"


class BroadcastError(SqdistError):
    """Shapes that do not broadcast together.

    Attributes
    ----------
    axis : int
        The first conflicting axis counted from the right (``-1`` is the last).
    operands : tuple of int
        Positions of the two operands whose sizes conflict there.
    sizes : tuple of int
        Their two sizes on that axis (both != 1 and different).
    indices : tuple of int
        The index of that axis within each of the two operands' own shapes.
    shapes : tuple of tuple of int
        All the operands' shapes, as given.
    """

    def __init__(self, message: str, *, axis: int, operands: tuple[int, int], sizes: tuple[int, int],
                 indices: tuple[int, int], shapes: tuple[tuple[int, ...], ...]) -> None:
        super().__init__(message)
        self.axis = axis
        self.operands = operands
        self.sizes = sizes
        self.indices = indices
        self.shapes = shapes


def format_shape(shape: Sequence[int]) -> str:
    """Python's tuple notation: ``()``, ``(3,)``, ``(3, 1)``."""
    return repr(tuple(shape))


def _check_shape(shape: Any, i: int) -> tuple[int, ...]:
    """Validate operand ``i``: a sequence of non-negative ints or one int."""
    name = f"operand {i}"
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    elif isinstance(shape, str) or not isinstance(shape, (tuple, list)):
        hint = "; parse text like '(3, 1)' with sqdist.broadcast.parse_shape" if isinstance(shape, str) else ""
        raise SqdistError(
            f"{name}: expected a shape (tuple or list of non-negative ints, or one int), "
            f"got {shape!r} ({type(shape).__name__}){hint}"
        )
    out = []
    for j, size in enumerate(shape):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral):
            raise SqdistError(
                f"{name} {shape!r}: size at index {j} is {size!r} ({type(size).__name__}); "
                f"expected a non-negative int"
            )
        if size < 0:
            raise SqdistError(f"{name} {shape!r}: size at index {j} is {size}; sizes must be >= 0")
        out.append(int(size))
    return tuple(out)


def _check_shapes(shapes: tuple[Any, ...]) -> tuple[tuple[int, ...], ...]:
    return tuple(_check_shape(s, i) for i, s in enumerate(shapes))


def _table_impl(shapes: tuple[tuple[int, ...], ...]) -> dict[str, Any]:
    """The broadcasting table of validated shapes (see :func:`broadcast_table`)."""
    ndim = max((len(s) for s in shapes), default=0)
    axes = []
    first_conflict = None
    for axis in range(-ndim, 0):
        sizes = [s[axis] if len(s) >= -axis else None for s in shapes]
        eff = [1 if v is None else v for v in sizes]
        not_one = [(i, v) for i, v in enumerate(eff) if v != 1]
        entry: dict[str, Any] = {"axis": axis, "sizes": sizes, "stretched": [], "conflict": None}
        if not not_one:
            entry.update(result=1, kind="equal", verdict="equal")
        else:
            i0, target = not_one[0]
            clash = next(((j, v) for j, v in not_one if v != target), None)
            if clash is not None:
                j, other = clash
                entry.update(result=None, kind="conflict", verdict=f"CONFLICT {target} vs {other}", conflict=(i0, j))
            elif all(v == target for v in eff):
                entry.update(result=target, kind="equal", verdict="equal")
            else:
                entry.update(result=target, kind="stretch", verdict=f"stretch 1 -> {target}",
                             stretched=[i for i, v in enumerate(eff) if v == 1])
        axes.append(entry)
    for entry in reversed(axes):  # first conflict counted from the right
        if entry["kind"] == "conflict":
            first_conflict = entry
            break
    compatible = first_conflict is None
    error = None
    if not compatible:
        error = _conflict_error(shapes, first_conflict)
    return {
        "shapes": [tuple(s) for s in shapes],
        "ndim": ndim,
        "axes": axes,
        "compatible": compatible,
        "result": tuple(e["result"] for e in axes) if compatible else None,
        "error": str(error) if error is not None else None,
        "_error": error,
    }


def _conflict_error(shapes: tuple[tuple[int, ...], ...], entry: dict[str, Any]) -> BroadcastError:
    axis = entry["axis"]
    i, j = entry["conflict"]
    a, b = shapes[i], shapes[j]
    ia, ib = len(a) + axis, len(b) + axis
    ops = ", ".join(format_shape(s) for s in shapes[:-1]) + " and " + format_shape(shapes[-1])
    msg = (
        f"shapes {ops} do not broadcast: axis {axis} (counted from the right) has size {a[axis]} in "
        f"operand {i} {format_shape(a)} (its index {ia}) but size {b[axis]} in operand {j} {format_shape(b)} "
        f"(its index {ib}); sizes on one axis must be equal or 1"
    )
    return BroadcastError(msg, axis=axis, operands=(i, j), sizes=(a[axis], b[axis]),
                          indices=(ia, ib), shapes=tuple(shapes))


def broadcast_shapes(*shapes: Any) -> tuple[int, ...]:
    """Shape that ``shapes`` broadcast to, under NumPy's (and PyTorch's) rule.

    Parameters
    ----------
    *shapes : tuple or list of int, or int
        Zero or more shapes.  An int ``n`` is the 1-D shape ``(n,)``;
        ``()`` is a scalar.  Sizes must be non-negative ints (not bools).

    Returns
    -------
    tuple of int
        The broadcast shape; ``()`` for no operands or only scalars.

    Raises
    ------
    BroadcastError
        If the shapes do not broadcast.  The message (and the error's
        attributes) name the first conflicting axis counted from the right,
        its index in each of the two operands, their two sizes, and the
        operands by position and shape.
    SqdistError
        If an operand is not a valid shape (message names the operand).

    Examples
    --------
    >>> broadcast_shapes((6, 3, 1, 7), (2, 7))
    (6, 3, 2, 7)
    >>> broadcast_shapes(3, (2, 1), ())
    (2, 3)
    >>> broadcast_shapes((0,), (1,))
    (0,)
    >>> broadcast_shapes((6, 3, 1, 7), (2, 1, 7))
    Traceback (most recent call last):
    ...
    sqdist.broadcast.BroadcastError: shapes (6, 3, 1, 7) and (2, 1, 7) do not broadcast: axis -3 (counted from the right)
    has size 3 in operand 0 (6, 3, 1, 7) (its index 1) but size 2 in operand 1 (2, 1, 7) (its index 0);
    sizes on one axis must be equal or 1
    """
    table = _table_impl(_check_shapes(shapes))
    if not table["compatible"]:
        raise table["_error"]
    return table["result"]


def broadcast_table(*shapes: Any) -> dict[str, Any]:
    """The broadcasting table as plain data, e.g. to render it as HTML.

    Same validation as :func:`broadcast_shapes`, but an incompatibility is
    reported in the result instead of raised.

    Returns
    -------
    dict
        ``shapes``: the operands as tuples; ``ndim``: number of axes of the
        table; ``axes``: one dict per axis, left to right, with ``axis``
        (negative, counted from the right), ``sizes`` (one per operand,
        ``None`` where the operand has no such axis -- it counts as 1),
        ``result`` (the size, or ``None`` on a conflict), ``kind``
        (``"equal"``, ``"stretch"`` or ``"conflict"``), ``verdict`` (the
        text shown in the table), ``stretched`` (operands stretched from 1,
        including missing axes) and ``conflict`` (``(i, j)``, the first two
        operands whose sizes clash, or ``None``); ``compatible``;
        ``result`` (the shape, or ``None``); ``error`` (the
        :class:`BroadcastError` message, or ``None``).

    Examples
    --------
    >>> t = broadcast_table((4, 1), (3, 1, 1, 5))
    >>> t["result"], [a["verdict"] for a in t["axes"]]
    ((3, 1, 4, 5), ['stretch 1 -> 3', 'equal', 'stretch 1 -> 4', 'stretch 1 -> 5'])
    >>> t["axes"][0]["sizes"]
    [None, 3]
    >>> broadcast_table((3,), (3, 1, 1, 5))["compatible"]
    False
    """
    table = _table_impl(_check_shapes(shapes))
    del table["_error"]
    return table


def explain_broadcast(*shapes: Any) -> str:
    """The right-aligned broadcasting table a learner would draw, as text.

    One row per operand (its shape at the left, then its size on every axis,
    ``-`` where it has no such axis: it counts as 1), the ``result`` row
    (``?`` on a conflicting axis), the ``verdict`` row (``equal``,
    ``stretch 1 -> n`` or ``CONFLICT a vs b`` per axis), a legend, and a
    last line with the result shape as a tuple or why there is none.
    :func:`broadcast_table` gives the same content as data.

    Examples
    --------
    >>> print(explain_broadcast((1, 4), (7, 1)))
    axis                           -2              -1
    operand 0  (1, 4)               1               4
    operand 1  (7, 1)               7               1
    result                          7               4
    verdict            stretch 1 -> 7  stretch 1 -> 4
    ('-' = missing axis, counts as 1; shapes are aligned on the right)
    result shape: (7, 4)
    >>> print(explain_broadcast((3,), (3, 1, 1, 5)).splitlines()[-3])
    verdict                  stretch 1 -> 3  equal  equal  CONFLICT 3 vs 5
    >>> print(explain_broadcast((), ()))
    operand 0  ()
    operand 1  ()
    (no axes: every operand is a scalar)
    result shape: ()
    """
    return render_table(broadcast_table(*shapes))


def render_table(table: dict[str, Any], *, legend: bool = True) -> str:
    """The text of :func:`explain_broadcast` from a :func:`broadcast_table` result.

    Parameters
    ----------
    table : dict
        What :func:`broadcast_table` returned.
    legend : bool, default True
        Include the legend line under the table; a caller printing several
        tables prints :data:`LEGEND` once instead.

    Examples
    --------
    >>> print(render_table(broadcast_table((2, 1), (3,)), legend=False))
    axis                           -2              -1
    operand 0  (2, 1)               2               1
    operand 1  (3,)                 -               3
    result                          2               3
    verdict            stretch 1 -> 2  stretch 1 -> 3
    result shape: (2, 3)
    """
    shapes, axes = table["shapes"], table["axes"]
    labels = ["axis"] + [f"operand {i}  {format_shape(s)}" for i, s in enumerate(shapes)] + ["result", "verdict"]
    columns = []
    for a in axes:
        cells = [str(a["axis"])] + ["-" if v is None else str(v) for v in a["sizes"]]
        cells += ["?" if a["result"] is None else str(a["result"]), a["verdict"]]
        columns.append(cells)
    lw = max(len(s) for s in labels)
    lines: list[str] = []
    if not axes:
        lines += labels[1:-2]
        lines.append("(no axes: every operand is a scalar)" if shapes else "(no operands)")
        lines.append("result shape: ()")
        return "\n".join(lines)
    for r, label in enumerate(labels):
        row = label.ljust(lw)
        for cells in columns:
            w = max(len(x) for x in cells)
            row += "  " + cells[r].rjust(max(w, 2))
        lines.append(row.rstrip())
    if legend:
        lines.append(LEGEND)
    if table["compatible"]:
        lines.append(f"result shape: {format_shape(table['result'])}")
    else:
        lines.append(f"incompatible: {table['error']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# shapes written as text

_SEPARATORS = re.compile(r"[xX\u00d7*]")


def _short(text: str, n: int = 40) -> str:
    """``text`` cut to ``n`` characters for an error message."""
    return text if len(text) <= n else text[: n - 3] + "..."


def parse_shape(text: str, name: str = "shape") -> tuple[int, ...]:
    """Parse a shape written as text.

    Accepts ``"(3, 1, 3)"``, ``"3,1,3"``, ``"3x1x3"`` (also ``X``, ``×``,
    ``*``), ``"3 1 3"``, ``"[3, 1, 3]"``, ``"(3)"`` and ``"3"`` (the 1-D
    shape ``(3,)``), ``"(3,)"``, and ``"()"`` for a scalar; spaces anywhere.

    Raises
    ------
    SqdistError
        On anything else: the message names ``name``, the text and why.

    Examples
    --------
    >>> parse_shape("(3, 1, 3)"), parse_shape("3x1x3"), parse_shape("(3)"), parse_shape("()")
    ((3, 1, 3), (3, 1, 3), (3,), ())
    """
    if not isinstance(text, str):
        raise SqdistError(f"{name}: expected text such as '(3, 1, 3)', got {text!r} ({type(text).__name__})")
    s = text.strip()
    expected = "expected sizes like '(3, 1, 3)', '3,1,3', '3x1x3', '(3)' or '()' for a scalar"
    if not s:
        raise SqdistError(f"{name}: empty text; {expected}")
    if s[0] in "([":
        close = ")" if s[0] == "(" else "]"
        if s[-1] != close:
            raise SqdistError(f"{name} {text!r}: unbalanced bracket; {expected}")
        s = s[1:-1].strip()
        if not s:
            return ()
    if "," in s:
        parts = s.split(",")
        if parts[-1].strip() == "" and len(parts) > 1:  # trailing comma: "(3,)"
            parts = parts[:-1]
    elif _SEPARATORS.search(s):
        parts = _SEPARATORS.split(s)
    else:
        parts = s.split()
    sizes = []
    for p in parts:
        p = p.strip()
        if not p:
            raise SqdistError(f"{name} {text!r}: empty size between separators; {expected}")
        if re.fullmatch(r"[+-]?\d+", p) is None:
            raise SqdistError(f"{name} {_short(text)!r}: size {_short(p)!r} is not a whole number; {expected}")
        if len(p.lstrip("+-").lstrip("0")) > 19 or abs(int(p)) >= 2**63:  # before int() meets its digit limit
            raise SqdistError(f"{name} {_short(text)!r}: size {_short(p)!r} is too large; sizes are below 2**63")
        v = int(p)
        if v < 0:
            raise SqdistError(f"{name} {text!r}: size {v} is negative; sizes must be >= 0")
        sizes.append(v)
    return tuple(sizes)
