"""Broadcasting (Task 2): broadcast_shapes, explain_broadcast, broadcast_table,
parse_shape and the ``sqdist broadcast`` command."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import sqdist
from sqdist import BroadcastError, SqdistError, broadcast_shapes, broadcast_table, explain_broadcast
from sqdist.broadcast import EXERCISE_PAIRS, LEGEND, parse_shape
from sqdist.cli import main as cli_main

# ---------------------------------------------------------------------------
# The exercise's eight pairs, solved by hand (align on the right; per axis the
# sizes must be equal or 1).  None = incompatible, with (axis, size a, size b,
# index in a, index in b) of the first conflict counted from the right.

HAND_SOLVED = [
    # (3,1,3) / (2,3,3): -1: 3=3, -2: 1->3, -3: 3 vs 2 -> conflict
    (((3, 1, 3), (2, 3, 3)), None, (-3, 3, 2, 0, 0)),
    # (-,-,4,1) / (3,1,1,5): 3, 1, 4, 5
    (((4, 1), (3, 1, 1, 5)), (3, 1, 4, 5), None),
    # (3) is the 1-D shape (3,): -1: 3 vs 5 -> conflict
    (((3,), (3, 1, 1, 5)), None, (-1, 3, 5, 0, 3)),
    (((1, 4), (7, 1)), (7, 4), None),
    # (6,3,1,7) / (-,-,2,7): 6, 3, 2, 7
    (((6, 3, 1, 7), (2, 7)), (6, 3, 2, 7), None),
    # (6,3,1,7) / (-,2,1,7): -1 7=7, -2 1=1, -3: 3 vs 2 -> conflict
    (((6, 3, 1, 7), (2, 1, 7)), None, (-3, 3, 2, 1, 0)),
    (((1, 2, 3, 1, 6), (8, 1, 3, 2, 6)), (8, 2, 3, 2, 6), None),
    # (-,2,5,1,7) / (9,2,3,2,1): -1 7, -2 2, -3: 5 vs 3 -> conflict
    (((2, 5, 1, 7), (9, 2, 3, 2, 1)), None, (-3, 5, 3, 1, 2)),
]


def test_exercise_pairs_constant_matches_the_exercise():
    assert EXERCISE_PAIRS == tuple(p for p, _, _ in HAND_SOLVED)
    assert all(isinstance(s, tuple) for p in EXERCISE_PAIRS for s in p)


@pytest.mark.parametrize("pair,expected,conflict", HAND_SOLVED)
def test_exercise_pairs_hand_solved(pair, expected, conflict):
    if expected is not None:
        assert broadcast_shapes(*pair) == expected
        assert np.broadcast_shapes(*pair) == expected
        text = explain_broadcast(*pair)
        assert text.splitlines()[-1] == f"result shape: {expected}"
        return
    axis, a, b, ia, ib = conflict
    with pytest.raises(BroadcastError) as ei:
        broadcast_shapes(*pair)
    e = ei.value
    assert (e.axis, e.sizes, e.indices, e.operands) == (axis, (a, b), (ia, ib), (0, 1))
    msg = str(e)
    assert f"axis {axis}" in msg
    assert f"size {a} in operand 0 {pair[0]} (its index {ia})" in msg
    assert f"size {b} in operand 1 {pair[1]} (its index {ib})" in msg
    with pytest.raises(ValueError):
        np.broadcast_shapes(*pair)
    text = explain_broadcast(*pair)
    assert f"CONFLICT {a} vs {b}" in text
    assert text.splitlines()[-1] == f"incompatible: {msg}"


# ---------------------------------------------------------------------------
# Hand-solved edge cases


@pytest.mark.parametrize(
    "shapes,expected",
    [
        ((), ()),
        (((),), ()),
        (((), ()), ()),
        (((), (2, 3)), (2, 3)),
        ((3,), (3,)),
        ((3, (2, 1)), (2, 3)),
        (([2, 1], [1, 4], (3, 1, 1)), (3, 2, 4)),
        (((0,), (1,)), (0,)),
        (((0,), (0,)), (0,)),
        (((0, 1), (1, 5)), (0, 5)),
        (((1,), (2, 0)), (2, 0)),
        (((1,) * 7, (2,)), (1,) * 6 + (2,)),
        (tuple((1,) for _ in range(40)), (1,)),
        ((torch.Size([2, 1]), np.array([1, 3]).tolist(), (np.int64(4), 1, 1)), (4, 2, 3)),
    ],
)
def test_hand_solved_edge_cases(shapes, expected):
    got = broadcast_shapes(*shapes)
    assert got == expected
    assert type(got) is tuple and all(type(v) is int for v in got)


def test_size_zero_with_more_than_one_is_a_conflict():
    with pytest.raises(BroadcastError) as ei:
        broadcast_shapes((0,), (2,))
    assert ei.value.sizes == (0, 2) and ei.value.axis == -1


def test_first_conflict_is_counted_from_the_right():
    # conflicts at -3 (4 vs 5) and -1 (2 vs 3): the reported one is -1
    with pytest.raises(BroadcastError) as ei:
        broadcast_shapes((4, 1, 2), (5, 1, 3))
    assert ei.value.axis == -1 and ei.value.sizes == (2, 3)
    verdicts = [a["verdict"] for a in broadcast_table((4, 1, 2), (5, 1, 3))["axes"]]
    assert verdicts == ["CONFLICT 4 vs 5", "equal", "CONFLICT 2 vs 3"]


def test_conflict_among_many_operands_names_the_right_pair():
    # axis -2: operand 0 has 1, operand 1 has 3 (sets the size), operand 3 has 2
    with pytest.raises(BroadcastError) as ei:
        broadcast_shapes((1, 1), (3, 1), (1,), (7, 2, 1))
    e = ei.value
    assert (e.axis, e.operands, e.sizes, e.indices) == (-2, (1, 3), (3, 2), (0, 1))
    assert "operand 1 (3, 1)" in str(e) and "operand 3 (7, 2, 1)" in str(e)
    assert "(1, 1), (3, 1), (1,) and (7, 2, 1)" in str(e)


def test_broadcast_error_is_a_sqdist_error_and_value_error():
    assert issubclass(BroadcastError, SqdistError) and issubclass(BroadcastError, ValueError)
    from sqdist.broadcast import BroadcastError as defined_in_module

    assert sqdist.BroadcastError is defined_in_module  # the public name is the module's class


@pytest.mark.parametrize(
    "shapes,words",
    [
        (((2, -1),), ["operand 0", "-1", "index 1", ">= 0"]),
        (((2,), -3), ["operand 1", "-3", ">= 0"]),
        (((2, True),), ["operand 0", "True", "bool"]),
        ((True,), ["operand 0", "True", "bool"]),
        (((2, 1.0),), ["operand 0", "1.0", "float"]),
        (((2,), "3,1"), ["operand 1", "'3,1'", "str", "parse_shape"]),
        (((2,), None), ["operand 1", "None"]),
        (((2,), ((1, 2),)), ["operand 1", "index 0", "tuple"]),
        (((2,), np.zeros(3)), ["operand 1", "ndarray"]),
    ],
)
def test_invalid_shapes_name_the_operand(shapes, words):
    with pytest.raises(SqdistError) as ei:
        broadcast_shapes(*shapes)
    assert not isinstance(ei.value, BroadcastError)
    for w in words:
        assert w in str(ei.value)
    with pytest.raises(SqdistError):
        explain_broadcast(*shapes)


# ---------------------------------------------------------------------------
# Agreement with NumPy and PyTorch on random shapes

sizes = st.sampled_from([0, 1, 1, 1, 2, 3, 5])
shape = st.lists(sizes, min_size=0, max_size=6).map(tuple)
operand = st.one_of(shape, shape.map(list), sizes)  # tuple, list or bare int
operands = st.lists(operand, min_size=0, max_size=8)


def _reference(fn, shapes):
    try:
        return tuple(fn(*shapes)), None
    except (ValueError, RuntimeError) as exc:
        return None, exc


def _check_error_is_first_conflict(shapes, e: BroadcastError):
    norm = [(s,) if isinstance(s, int) else tuple(s) for s in shapes]
    i, j = e.operands
    a, b = norm[i], norm[j]
    assert i < j
    assert e.indices == (len(a) + e.axis, len(b) + e.axis)
    assert e.sizes == (a[e.axis], b[e.axis])
    assert 1 not in e.sizes and e.sizes[0] != e.sizes[1]
    # every axis to the right of the reported one broadcasts fine
    k = -e.axis - 1
    tails = [s[len(s) - k:] if k else () for s in norm]
    np.broadcast_shapes(*tails)
    # the operands before j agree with operand i on this axis (i is the first non-1)
    for s in norm[:j]:
        if len(s) >= -e.axis:
            assert s[e.axis] in (1, e.sizes[0])
    for s in norm[:i]:
        if len(s) >= -e.axis:
            assert s[e.axis] == 1
    msg = str(e)
    assert f"axis {e.axis}" in msg
    assert f"size {e.sizes[0]} in operand {i} {a} (its index {e.indices[0]})" in msg
    assert f"size {e.sizes[1]} in operand {j} {b} (its index {e.indices[1]})" in msg


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operands)
def test_agrees_with_numpy_and_torch_on_random_shapes(shapes):
    want_np, err_np = _reference(np.broadcast_shapes, shapes)
    want_t, err_t = _reference(torch.broadcast_shapes, shapes)
    assert (want_np is None) == (want_t is None)  # the two references agree
    assert want_np == want_t
    table = broadcast_table(*shapes)
    if want_np is None:
        with pytest.raises(BroadcastError) as ei:
            broadcast_shapes(*shapes)
        _check_error_is_first_conflict(shapes, ei.value)
        assert not table["compatible"] and table["result"] is None
        assert table["error"] == str(ei.value)
        assert any(a["kind"] == "conflict" for a in table["axes"])
    else:
        assert broadcast_shapes(*shapes) == want_np
        assert table["compatible"] and table["result"] == want_np
        assert explain_broadcast(*shapes).splitlines()[-1] == f"result shape: {want_np}"


@settings(max_examples=700, deadline=None)
@given(st.integers(1, 6).flatmap(
    lambda k: mutually_broadcastable_shapes(num_shapes=k, min_dims=0, max_dims=6, min_side=0, max_side=4)))
def test_compatible_shapes_give_numpys_result(bs):
    # always-compatible inputs (the random ones above are mostly conflicts)
    want = np.broadcast_shapes(*bs.input_shapes)
    assert want == bs.result_shape
    assert broadcast_shapes(*bs.input_shapes) == want
    assert tuple(torch.broadcast_shapes(*bs.input_shapes)) == want
    table = broadcast_table(*bs.input_shapes)
    for a in table["axes"]:
        eff = [1 if v is None else v for v in a["sizes"]]
        if a["kind"] == "equal":
            assert len(set(eff)) == 1
        else:
            assert a["kind"] == "stretch"
            assert a["verdict"] == f"stretch 1 -> {a['result']}"
            assert a["stretched"] == [i for i, v in enumerate(eff) if v == 1] != []


# ---------------------------------------------------------------------------
# The table


def _label_width(shapes):
    return max([len("verdict")] + [len(f"operand {i}  {tuple(s)}") for i, s in enumerate(shapes)])


def _cell_ends(row: str, lw: int) -> list[int]:
    return [m.end() for m in re.finditer(r"\S+(?: \S+)*", row[lw:])]


def test_explain_exact_text_for_exercise_pair_2():
    assert explain_broadcast((4, 1), (3, 1, 1, 5)) == (
        "axis                                 -4     -3              -2              -1\n"
        "operand 0  (4, 1)                     -      -               4               1\n"
        "operand 1  (3, 1, 1, 5)               3      1               1               5\n"
        "result                                3      1               4               5\n"
        "verdict                  stretch 1 -> 3  equal  stretch 1 -> 4  stretch 1 -> 5\n"
        "('-' = missing axis, counts as 1; shapes are aligned on the right)\n"
        "result shape: (3, 1, 4, 5)"
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(shape, min_size=1, max_size=5))
def test_explain_table_is_right_aligned_and_complete(shapes):
    table = broadcast_table(*shapes)
    lines = explain_broadcast(*shapes).splitlines()
    n = table["ndim"]
    if n == 0:
        assert lines[-1] == "result shape: ()"
        return
    rows = lines[: len(shapes) + 3]
    lw = _label_width(shapes)
    header = _cell_ends(rows[0], lw)
    assert rows[0][lw:].split() == [str(k) for k in range(-n, 0)]
    for r in rows[1:]:
        assert _cell_ends(r, lw) == header  # every column right-aligned
    for i, s in enumerate(shapes):
        cells = rows[1 + i][lw:].split()
        assert cells == ["-"] * (n - len(s)) + [str(v) for v in s]
        assert rows[1 + i].startswith(f"operand {i}  {tuple(s)}")
    result_cells = rows[-2][lw:].split()
    verdicts = re.findall(r"\S+(?: \S+)*", rows[-1][lw:])
    assert verdicts == [a["verdict"] for a in table["axes"]]
    for a, cell in zip(table["axes"], result_cells):
        assert cell == ("?" if a["kind"] == "conflict" else str(a["result"]))


def test_table_as_data():
    t = broadcast_table((3,), (3, 1, 1, 5))
    assert t["shapes"] == [(3,), (3, 1, 1, 5)]
    assert t["ndim"] == 4 and t["compatible"] is False and t["result"] is None
    assert [a["axis"] for a in t["axes"]] == [-4, -3, -2, -1]
    assert [a["sizes"] for a in t["axes"]] == [[None, 3], [None, 1], [None, 1], [3, 5]]
    assert [a["kind"] for a in t["axes"]] == ["stretch", "equal", "equal", "conflict"]
    assert t["axes"][0]["stretched"] == [0]
    assert t["axes"][-1]["conflict"] == (0, 1) and t["axes"][-1]["result"] is None
    assert "axis -1" in t["error"]
    assert "_error" not in t


def test_explain_scalars_and_no_operands():
    assert explain_broadcast().splitlines() == ["(no operands)", "result shape: ()"]
    assert explain_broadcast((), ()).splitlines()[-1] == "result shape: ()"


# ---------------------------------------------------------------------------
# Parsing shapes written as text


@pytest.mark.parametrize(
    "text,expected",
    [
        ("(3,1,3)", (3, 1, 3)),
        ("3,1,3", (3, 1, 3)),
        ("3x1x3", (3, 1, 3)),
        ("3X1X3", (3, 1, 3)),
        ("3\u00d71\u00d73", (3, 1, 3)),
        ("3 x 1 x 3", (3, 1, 3)),
        ("3 1 3", (3, 1, 3)),
        ("( 3 , 1 , 3 )", (3, 1, 3)),
        ("[3, 1, 3]", (3, 1, 3)),
        (" (3, 1, 3,) ", (3, 1, 3)),
        ("(3)", (3,)),
        ("3", (3,)),
        ("(3,)", (3,)),
        ("3,", (3,)),
        ("()", ()),
        ("( )", ()),
        ("[]", ()),
        ("(0, 1)", (0, 1)),
        ("(007)", (7,)),
    ],
)
def test_parse_shape_forms(text, expected):
    assert parse_shape(text) == expected


@pytest.mark.parametrize(
    "text,why",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("(3,1", "unbalanced"),
        ("[3,1)", "unbalanced"),
        ("3,,1", "empty size"),
        ("(,)", "empty size"),
        ("3x", "empty size"),
        ("(3,a)", "'a' is not a whole number"),
        ("3.5", "'3.5' is not a whole number"),
        ("(3,-1)", "-1 is negative"),
        ("-2", "-2 is negative"),
        ("((3))", "not a whole number"),
        ("3,1x2", "not a whole number"),
    ],
)
def test_parse_shape_rejects_malformed_text(text, why):
    with pytest.raises(SqdistError) as ei:
        parse_shape(text, name="SHAPE 2")
    msg = str(ei.value)
    assert msg.startswith("SHAPE 2")
    assert why in msg


# ---------------------------------------------------------------------------
# The command line (in-process through cli.main; a few real subprocess runs)


def test_cli_compatible_prints_table_and_exits_0(capsys):
    assert cli_main(["broadcast", "(4,1)", "(3,1,1,5)"]) == 0
    out = capsys.readouterr().out
    assert out == explain_broadcast((4, 1), (3, 1, 1, 5)) + "\n"
    assert out.rstrip().endswith("result shape: (3, 1, 4, 5)")


def test_cli_incompatible_explains_and_exits_1(capsys):
    assert cli_main(["broadcast", "(6,3,1,7)", "2x1x7"]) == 1
    cap = capsys.readouterr()
    assert "CONFLICT 3 vs 2" in cap.out
    last = cap.out.rstrip().splitlines()[-1]
    assert last.startswith("incompatible:") and "axis -3" in last
    assert "operand 0 (6, 3, 1, 7) (its index 1)" in last and "operand 1 (2, 1, 7) (its index 0)" in last


def test_cli_accepts_every_form_together(capsys):
    assert cli_main(["broadcast", "(3,1,3)", "3,1,3", "3x1x3", "( 3, 1 ,3 )", "(3)", "(3,)", "()", "3 1 1"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("result shape: (3, 1, 3)")


def test_cli_single_shape(capsys):
    assert cli_main(["broadcast", "()"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("result shape: ()")


@pytest.mark.parametrize(
    "args,words",
    [
        (["broadcast", "(3,a)", "(3,)"], ["SHAPE 1", "'a'"]),
        (["broadcast", "(3,)", ""], ["SHAPE 2", "empty"]),
        (["broadcast", "(3,1"], ["SHAPE 1", "unbalanced"]),
        (["broadcast", "(3,)", "-1"], ["SHAPE 2", "negative"]),
        (["broadcast"], ["no SHAPE"]),
        (["broadcast", "--exercise", "(3,)"], ["not both"]),
    ],
)
def test_cli_malformed_input_exits_2_with_one_line(capsys, args, words):
    assert cli_main(args) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sqdist broadcast: error:")
    for w in words:
        assert w in lines[0]


def test_cli_exercise_prints_one_compact_table(capsys):
    assert cli_main(["broadcast", "--exercise"]) == 0
    lines = capsys.readouterr().out.rstrip("\n").splitlines()
    header, rows, summary, legend = lines[0], lines[1:9], lines[9], lines[10:]
    assert header.split()[:4] == ["#", "shape", "A", "shape"]
    assert len(lines) == 11 and len(legend) == 1 and legend[0].startswith("(") and "right" in legend[0]
    n_ok = 0
    for k, ((pair, expected, conflict), row) in enumerate(zip(HAND_SOLVED, rows), 1):
        # columns are separated by two spaces (a shape has single spaces only)
        cells = re.split(r"\s{2,}", row.strip())
        assert cells[:3] == [str(k), str(pair[0]), str(pair[1])]
        if expected is not None:
            n_ok += 1
            assert cells[3:] == ["broadcasts", str(expected)]
        else:
            axis, a, b = conflict[:3]
            assert cells[3:] == ["incompatible", f"axis {axis}: {a} vs {b}"]
    assert n_ok == 4 and summary == "4 of 8 pairs broadcast"


def test_cli_exercise_explain_prints_the_per_axis_tables_legend_once(capsys):
    assert cli_main(["broadcast", "--exercise", "--explain"]) == 0
    out = capsys.readouterr().out
    assert out.count(LEGEND) == 1
    blocks = out.rstrip("\n").split("\n\n")
    assert blocks[-1] == f"{LEGEND}\n4 of 8 pairs broadcast"
    assert len(blocks) == 9
    for k, ((pair, expected, conflict), block) in enumerate(zip(HAND_SOLVED, blocks), 1):
        heading, body = block.split("\n", 1)
        assert heading == f"# {k}. {pair[0]} and {pair[1]}"
        # the table of explain_broadcast, without its legend line
        assert body.splitlines() == [ln for ln in explain_broadcast(*pair).splitlines() if ln != LEGEND]
        if expected is not None:
            assert body.splitlines()[-1] == f"result shape: {expected}"
        else:
            assert body.splitlines()[-1].startswith("incompatible:") and f"axis {conflict[0]}" in body


def test_cli_explain_without_exercise_keeps_the_table(capsys):
    assert cli_main(["broadcast", "--explain", "(4,1)", "(3,1,1,5)"]) == 0
    assert capsys.readouterr().out == explain_broadcast((4, 1), (3, 1, 1, 5)) + "\n"


def test_cli_option_like_shape_is_a_usage_error(capsys):
    # "-1,2" looks like an option to argparse: still one line on stderr, exit 2
    with pytest.raises(SystemExit) as ei:
        cli_main(["broadcast", "-1,2", "(3,)"])
    assert ei.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as ei:
        cli_main(["broadcast", "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "SHAPE" in out and "--exercise" in out and "Exit status" in out
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert "broadcast" in capsys.readouterr().out


def test_cli_subprocess_exit_codes(run_cli):
    # real processes: python -m sqdist broadcast ...
    ok = run_cli("broadcast", "(4,1)", "(3,1,1,5)")
    assert ok.returncode == 0 and ok.stdout == explain_broadcast((4, 1), (3, 1, 1, 5)) + "\n"
    bad = run_cli("broadcast", "(3)", "(3,1,1,5)")
    assert bad.returncode == 1 and "CONFLICT 3 vs 5" in bad.stdout and bad.stderr == ""
    malformed = run_cli("broadcast", "(3,1", "(3,)")
    assert malformed.returncode == 2 and malformed.stdout == ""
    assert len(malformed.stderr.strip().splitlines()) == 1 and "Traceback" not in malformed.stderr


@pytest.mark.parametrize("args,code", [
    (["broadcast", "(4,1)", "(3,1,1,5)"], 0),
    (["broadcast", "(3)", "(3,1,1,5)"], 1),
    (["broadcast", "(3,1", "(3,)"], 2),
    (["broadcast", "--exercise"], 0),
    (["broadcast", "--exercise", "--explain"], 0),
])
def test_cli_broadcast_does_not_import_torch(run_cli_modules, args, code):
    """``python -m sqdist broadcast`` answers without torch or NumPy (importing torch takes seconds)."""
    r, imported = run_cli_modules(*args)
    assert r.returncode == code, r.stderr
    assert {"sqdist.cli", "sqdist._cli_broadcast", "sqdist.broadcast"} <= imported
    assert not {"torch", "numpy", "sqdist.distances", "sqdist._validation"} & imported
    if args == ["broadcast", "--exercise"]:
        assert r.stdout.splitlines()[-2] == "4 of 8 pairs broadcast"
