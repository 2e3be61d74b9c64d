"""Hostile input, as a user who tries to break sqdist would give it (issue #16), one table per class:

1. outputs that would destroy inputs;  2. resuming on other data;  3. device strings;
4. the command line never shows a traceback;  5. crafted model and checkpoint files;
6. no silent data loss on read;  7. no leftovers after killed or failed runs;
8. sparse input;  9. declared versions -- and the promises of README and docs/
(docs/guarantees.md maps each promise to its test).  The file loaders are also
fuzzed: tests/test_fuzz_loaders.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import sqdist
from hostile_files import (  # tests/ is on sys.path
    corrupt_compression_method,
    flip_member_byte,
    lying_npy,
    npy_bytes,
    npz_arrays,
    npz_bytes,
    npz_with_member,
    pickled_npy,
    set_encrypted_flag,
    state_of,
    with_state,
    write,
)
from sqdist import SqdistError, _atomic, _checkpoint, _files, _model_io, cli
from sqdist._comm import Comm
from sqdist._shard import scan
from sqdist._sources import as_source
from sqdist._validation import check_no_alias, resolve_device

SRC = Path(__file__).resolve().parents[1] / "src"




@pytest.fixture
def run(capsys):
    """``sqdist ARGS`` in this process: (exit status, stdout, stderr lines); bad input must be one line."""

    def _run(*args: str) -> tuple[int, str, list[str]]:
        try:
            rc = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert "Traceback" not in err, err
        if rc == 2:
            assert len(lines) == 1, err
            assert lines[0].startswith(f"sqdist {args[0]}: error: ") or lines[0].startswith("sqdist"), lines[0]
        return rc, out, lines

    return _run


@pytest.fixture
def data(tmp_path):
    X = np.random.default_rng(0).normal(size=(120, 3))
    np.save(tmp_path / "X.npy", X)
    np.savetxt(tmp_path / "X.csv", X, delimiter=",")
    return X


# ------------------------------------------------------------------------------------------
# 1. outputs that would destroy inputs
# ------------------------------------------------------------------------------------------


def _hardlink(tmp_path: Path, name: str) -> str:
    os.link(tmp_path / "X.npy", tmp_path / name)
    return name


def _symlink(tmp_path: Path, name: str) -> str:
    os.symlink(tmp_path / "X.npy", tmp_path / name)
    return name


@pytest.mark.parametrize("args,match", [
    (["--data", "X.npy", "--labels", "X.npy"], "is the input --data"),
    (["--data", "X.npy", "--save", "X.npy"], "is the input --data"),
    (["--data", "X.npy", "--checkpoint", "X.npy"], "is the input --data"),
    (["--data", "X.npy", "--plot", "X.npy"], "is the input --data"),
    (["--data", "X.csv", "--labels", "X.csv"], "is the input --data"),
    (["--data", "X.csv", "--save", "./X.csv"], "is the input --data"),
    (["--data", "X.npy", "--labels", "HARD"], "is the input --data"),  # a hard link to the data
    (["--data", "X.npy", "--save", "SOFT"], "is the input --data"),  # a symbolic link to the data
    (["--data", "X.npy", "--labels", "a.npy", "--save", "a.npy"], "both name"),
    (["--data", "X.npy", "--checkpoint", "c.npz", "--save", "c.npz"], "both name"),
    (["--data", "X.npy", "--resume", "c.npz", "--labels", "c.npz"], "is the input --resume"),
])
def test_cli_outputs_never_overwrite_inputs(tmp_path, monkeypatch, run, data, args, match):
    monkeypatch.chdir(tmp_path)
    args = [_hardlink(tmp_path, "HARD") if a == "HARD" else _symlink(tmp_path, "SOFT") if a == "SOFT" else a
            for a in args]
    (tmp_path / "c.npz").write_bytes(b"previous checkpoint")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    rc, _, err = run("kmeans", *args, "-k", "2")
    assert rc == 2 and match in err[0]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written, nothing lost


def test_cli_checkpoint_may_continue_its_own_resume_file(tmp_path, monkeypatch, run, data):
    """--checkpoint c.npz --resume c.npz continues the same file: allowed (it is read before it is rewritten)."""
    monkeypatch.chdir(tmp_path)
    assert run("kmeans", "--data", "X.npy", "-k", "3", "--max-iter", "2", "--checkpoint", "c.npz")[0] == 0
    rc, out, _ = run("kmeans", "--data", "X.npy", "-k", "3", "--checkpoint", "c.npz", "--resume", "c.npz")
    assert rc == 0 and "iterations" in out
    np.testing.assert_array_equal(np.load("X.npy"), data)


def _buffers():
    """(X, T, out, overlapping?) cases of sqdist(X, T, out=out)."""
    rng = np.random.default_rng(1)
    cases = []
    X = rng.normal(size=(4, 4))
    cases.append(("out is X", X, X.copy(), X, True))
    X = rng.normal(size=(4, 4))
    cases.append(("out is T", X.copy(), X, X, True))
    buf = rng.normal(size=(4, 7))
    cases.append(("out overlaps X's columns", buf[:, :4], rng.normal(size=(3, 4)), buf[:, 2:5], True))
    buf = rng.normal(size=(4, 7))
    cases.append(("out interleaved with X, disjoint", buf[:, :4], rng.normal(size=(3, 4)), buf[:, 4:7], False))
    X = rng.normal(size=(5, 5))
    cases.append(("out is X transposed", X, X.copy(), X.T, True))
    t = torch.from_numpy(rng.normal(size=(4, 4)))
    cases.append(("tensor out is a view of X", t, t.clone(), t[:, :], True))
    t = torch.from_numpy(rng.normal(size=(2, 4, 4)))
    cases.append(("batched out is X", t, t.clone(), t, True))
    t32 = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    cases.append(("float32 tensors, disjoint", t32[:3], t32[3:], torch.empty(3, 3), False))
    return cases


@pytest.mark.parametrize("what,X,T,out,overlapping", _buffers(), ids=[c[0] for c in _buffers()])
def test_out_never_aliases_an_input(what, X, T, out, overlapping):
    ref = sqdist.sqdist(np.array(X) if isinstance(X, np.ndarray) else X.clone(),
                        np.array(T) if isinstance(T, np.ndarray) else T.clone())
    keep = (np.array(X), np.array(T)) if isinstance(X, np.ndarray) else (X.clone(), T.clone())
    if overlapping:
        with pytest.raises(SqdistError, match="out: shares memory with"):
            sqdist.sqdist(X, T, out=out)
        if isinstance(X, np.ndarray):
            np.testing.assert_array_equal(X, keep[0])  # untouched
        else:
            assert torch.equal(X, keep[0])
    else:
        res = sqdist.sqdist(X, T, out=out)
        np.testing.assert_allclose(np.asarray(res), np.asarray(ref), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(X), np.asarray(keep[0]))


def test_check_no_alias_paths(tmp_path):
    a = tmp_path / "a.npy"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "b.npy")
    mm = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", dtype=np.float64, shape=(3,))
    for outs, ins in [({"o": str(tmp_path / "b.npy")}, {"i": a}), ({"o": tmp_path / "m.npy"}, {"i": mm}),
                      ({"o": tmp_path / "sub" / ".." / "a.npy"}, {"i": str(a)}), ({"o": "x.npy", "p": "./x.npy"}, {})]:
        with pytest.raises(SqdistError):
            check_no_alias(outs, ins)
    check_no_alias({"o": tmp_path / "new.npy", "p": None}, {"i": a, "j": None})  # fine


@pytest.mark.parametrize("kw", ["labels_out", "checkpoint"])
@pytest.mark.parametrize("target", ["the data", "a folder"])
def test_python_streamed_outputs_never_overwrite_the_data(tmp_path, data, kw, target):
    path = str(tmp_path / "X.npy")
    (tmp_path / "DIR").mkdir()
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(SqdistError, match=kw):
        sqdist.kmeans_stream(path, 2, max_iter=2, **{kw: path if target == "the data" else tmp_path / "DIR"})
    np.testing.assert_array_equal(np.load(path), data)
    assert sorted(os.listdir(tmp_path)) == before  # no .DIR.partial left behind


# ------------------------------------------------------------------------------------------
# 2. resume on other data
# ------------------------------------------------------------------------------------------


def _content(X, R=64):
    shard, _ = scan(as_source(X), R, Comm())
    return shard.content


def test_scan_fingerprints_the_content(tmp_path):
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "b.npy", B)
    B1 = A.copy()
    B1[123, 2] = np.nextafter(B1[123, 2], np.inf)  # one ulp in one value
    a = _content(str(tmp_path / "a.npy"))
    assert a == _content(str(tmp_path / "a.npy")) == _content(A)  # the same bytes: file, array, again
    assert a == _content(np.load(tmp_path / "a.npy", mmap_mode="r"))
    assert a != _content(str(tmp_path / "b.npy")) and a != _content(B1)
    assert a != _content(A[::-1].copy()) and a != _content(A, R=100)  # row order and the chunk grid count
    # an iterable: the same rows in other pieces give the same digest
    assert _content([A[:10], A[10:]]) == _content([A[:250], A[250:]]) != _content([B[:10], B[10:]])


def _ckpt(tmp_path, X, name="c.npz", **kw):
    path = tmp_path / name
    sqdist.kmeans_stream(X, 3, init=[0, 1, 2], max_iter=2, tol=0.0, checkpoint=path, **kw)
    return path


def _fp(path):
    return json.loads(npz_arrays(path)["fp_json"].tobytes())


def test_checkpoint_refuses_another_content_digest(tmp_path):
    X = np.random.default_rng(3).normal(size=(50, 2))
    ck = _ckpt(tmp_path, X)
    fp = dict(_fp(ck), content="a" * 64)
    arrays = npz_arrays(ck)
    arrays["fp_json"] = np.frombuffer(json.dumps(dict(fp, content="b" * 64)).encode(), dtype=np.uint8)
    write(ck, arrays)
    with pytest.raises(SqdistError, match="other data"):
        _checkpoint.load(ck, fp)
    del fp["content"]
    arrays["fp_json"] = np.frombuffer(json.dumps(fp).encode(), dtype=np.uint8)
    write(ck, arrays)
    with pytest.raises(SqdistError, match="no 'content' fingerprint"):
        _checkpoint.load(ck, dict(fp, content="a" * 64))  # an old checkpoint cannot be checked: refused
    assert _checkpoint.load(ck, fp)["iteration"] == 2


def test_checkpoint_of_format_1_still_loads(tmp_path):
    X = np.random.default_rng(3).normal(size=(50, 2))
    ck = _ckpt(tmp_path, X)
    fp = {k: v for k, v in _fp(ck).items() if k in _checkpoint._FINGERPRINT}  # format 1 had these six
    arrays = npz_arrays(ck)
    del arrays["fp_json"]
    arrays["format"] = np.array(1)
    for k, v in fp.items():
        arrays["fp_" + k] = np.frombuffer(v.encode(), dtype=np.uint8) if isinstance(v, str) else np.array(v)
    write(ck, arrays)
    assert _checkpoint.load(ck, fp)["iteration"] == 2
    with pytest.raises(SqdistError, match="no 'content' fingerprint"):  # but it cannot vouch for the content
        _checkpoint.load(ck, dict(fp, content="a" * 64))


def test_resume_refuses_a_checkpoint_of_other_data_of_the_same_shape(tmp_path):
    rng = np.random.default_rng(4)
    np.save(tmp_path / "a.npy", rng.normal(size=(200, 3)))
    np.save(tmp_path / "b.npy", rng.normal(size=(200, 3)))
    ck = _ckpt(tmp_path, str(tmp_path / "a.npy"))
    with pytest.raises(SqdistError, match="other data"):
        sqdist.kmeans_stream(str(tmp_path / "b.npy"), 3, init=[0, 1, 2], max_iter=4, tol=0.0, resume=ck)


def test_cli_resume_refuses_other_data(tmp_path, monkeypatch, run):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(5)
    np.save("a.npy", rng.normal(size=(200, 3)))
    np.save("b.npy", rng.normal(size=(200, 3)))
    assert run("kmeans", "--data", "a.npy", "-k", "3", "--max-iter", "1", "--checkpoint", "c.npz")[0] == 0
    rc, _, err = run("kmeans", "--data", "b.npy", "-k", "3", "--resume", "c.npz")
    assert rc == 2 and "other data" in err[0]


# ------------------------------------------------------------------------------------------
# 3. device strings
# ------------------------------------------------------------------------------------------

CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("device,match", [
    ("tpu", "is not a device"), ("", "is not a device"), ("cuda:abc", "is not a device"), ("cuda:-1", "device"),
    ("meta", "not supported"), (3.5, "is not a device"), (object(), "is not a device"), (True, "is not a device"),
    ("cuda:99", "CUDA"), ("9" * 5001, "is not a device"),
    pytest.param("cuda", "CUDA is not available", marks=pytest.mark.skipif(CUDA, reason="CUDA present")),
    pytest.param(0, "CUDA is not available", marks=pytest.mark.skipif(CUDA, reason="CUDA present")),
])
def test_resolve_device_names_the_problem(device, match):
    with pytest.raises(SqdistError, match=match):
        resolve_device(device, "device")


def test_resolve_device_accepts_real_devices():
    assert resolve_device(None) is None
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(" cpu ") == torch.device("cpu")
    if CUDA:
        assert resolve_device("cuda:0") == torch.device("cuda", 0)


@pytest.mark.parametrize("device", ["tpu", "meta", "cuda:abc"] + ([] if CUDA else ["cuda", "cuda:1"]))
@pytest.mark.parametrize("data_arg", [[], ["--data", "X.npy"]])
def test_cli_device_is_one_line(tmp_path, monkeypatch, run, data, device, data_arg):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run("kmeans", *data_arg, "--device", device)
    assert rc == 2 and "--device" in err[0]


@pytest.mark.parametrize("fit", ["KMeans", "kmeans_stream"])
def test_python_device_strings_are_named_errors(fit):
    X = np.zeros((10, 2))
    with pytest.raises(SqdistError, match="device"):
        if fit == "KMeans":
            sqdist.KMeans(2, device="tpu").fit(X)
        else:
            sqdist.kmeans_stream(X, 2, device="tpu")


# ------------------------------------------------------------------------------------------
# 4. the command line: one line, exit 2, never a traceback
# ------------------------------------------------------------------------------------------


def _ckpt_cli(tmp_path: Path) -> Path:
    np.save(tmp_path / "d.npy", np.random.default_rng(6).normal(size=(60, 2)))
    assert cli.main(["kmeans", "--data", str(tmp_path / "d.npy"), "-k", "2", "--max-iter", "1",
                     "--checkpoint", str(tmp_path / "ck.npz")]) == 0
    return tmp_path / "ck.npz"


BAD_FILES = {
    "empty.npy": lambda t: b"",
    "one_byte.npy": lambda t: b"\x93",
    "magic_only.npy": lambda t: b"\x93NUMPY\x01\x00",
    "truncated_header.npy": lambda t: npy_bytes(np.zeros((4, 2)))[:40],
    "truncated_data.npy": lambda t: npy_bytes(np.zeros((4, 2)))[:-8],
    "trailing_bytes.npy": lambda t: npy_bytes(np.zeros((4, 2))) + b"\0" * 8,
    "lying_shape.npy": lambda t: lying_npy((10**12, 3)),
    "huge_shape.npy": lambda t: lying_npy((2**62, 2**62)),
    "negative_shape.npy": lambda t: lying_npy((-1, 2)),
    "object.npy": lambda t: pickled_npy(str(t / "PWNED")),
    "strings.npy": lambda t: npy_bytes(np.array([["a", "b"]])),
    "complex.npy": lambda t: npy_bytes(np.zeros((3, 2), complex)),
    "structured.npy": lambda t: npy_bytes(np.zeros(3, dtype=[("a", "f8"), ("b", "f8")])),
    "scalar.npy": lambda t: npy_bytes(np.float64(3.0)),
    "zero_rows.npy": lambda t: npy_bytes(np.zeros((0, 2))),
    "three_d.npy": lambda t: npy_bytes(np.zeros((2, 2, 2))),
    "npz_as_npy.npy": lambda t: npz_bytes({"a": np.zeros(3)}),
    "text.npy": lambda t: b"1,2\n3,4\n",
    "header_not_dict.npy": lambda t: npy_bytes(np.zeros(2)).replace(b"{'descr'", b"['descr'", 1),
    "header_5001_digits.npy": lambda t: lying_npy((int("1" * 100),)),
    "bad_utf8.csv": lambda t: b"1,2\n\xff\xfe,3\n",
    "nan.csv": lambda t: b"1,2\nnan,3\n",
    "mixed_first_line.csv": lambda t: b"1,x\n3,4\n",
    "ragged.csv": lambda t: b"1,2\n3\n",
    "header_only.csv": lambda t: b"a,b\n",
    "empty.csv": lambda t: b"",
    "blank.csv": lambda t: b"\n \n\t\n",
    "header_width.csv": lambda t: b"a,b,c\n1,2\n",
    "inf.csv": lambda t: b"1,2\ninf,3\n",
    "bom_only.csv": lambda t: b"\xef\xbb\xbf",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_cli_bad_data_files_are_one_line(tmp_path, monkeypatch, run, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(BAD_FILES[name](tmp_path))
    rc, _, err = run("kmeans", "--data", name, "-k", "1", "--labels", "l.npy")
    assert rc == 2 and err[0].startswith("sqdist kmeans: error:")
    assert not (tmp_path / "l.npy").exists() and not (tmp_path / "PWNED").exists()


CKPT_BREAKERS = {
    "compression_method": lambda b: corrupt_compression_method(b),
    "encrypted": lambda b: set_encrypted_flag(b),
    "truncated": lambda b: b[: len(b) // 2],
    "tail_cut": lambda b: b[:-10],
    "one_byte_flipped_in_centers": lambda b: flip_member_byte(b, "centers.npy"),
    "one_byte_flipped_in_fingerprint": lambda b: flip_member_byte(b, "fp_json.npy", back=3),
    "directory_byte": lambda b: b[:-30] + bytes([b[-30] ^ 0x55]) + b[-29:],
    "empty": lambda b: b"",
    "not_zip": lambda b: b"PK\x03\x04 not really",
}


@pytest.mark.parametrize("how", sorted(CKPT_BREAKERS))
def test_cli_corrupted_checkpoints_are_one_line(tmp_path, monkeypatch, run, how):
    ck = _ckpt_cli(tmp_path)
    ck.write_bytes(CKPT_BREAKERS[how](ck.read_bytes()))
    rc, _, err = run("kmeans", "--data", str(tmp_path / "d.npy"), "-k", "2", "--resume", str(ck))
    assert rc == 2 and "resume" in err[0]


@pytest.mark.parametrize("args,match", [
    (["bench", "--sizes", "100000000000x4x2"], "GiB"),
    (["bench", "--sizes", "1" * 5001 + "x2x2"], "sizes"),
    (["bench", "--seed", str(2**70)], "seed"),
    (["broadcast", "(" + "1" * 5001 + ",1)"], "too large"),
    (["broadcast", "9" * 20, "3"], "too large"),
    (["kmeans", "--working-memory", "1e308"], "working_memory"),
    (["kmeans", "--seed", str(2**70)], "seed"),
    (["kmeans", "--init", "1" * 5001], "--init"),
    (["kmeans", "--data", "X.npy", "--timeout", "nan"], "--timeout"),
    (["kmeans", "--data", "X.npy", "--timeout", "1e300"], "--timeout"),
    (["kmeans", "--data", "."], "expected a .npy or .csv"),
    (["kmeans", "--data", "missing.npy"], "No such file"),
    (["kmeans", "--data", "X.npy", "--resume", "."], "directory"),
    (["kmeans", "--data", "X.npy", "--labels", "."], "is a folder"),
    (["kmeans", "--data", "X.npy", "--save", "no/such/folder/m.npz"], "does not exist"),
    (["kmeans", "--data", "X.npy", "--checkpoint-every", "0", "--checkpoint", "c.npz"], "checkpoint_every"),
    (["kmeans", "--data", "X.csv", "--resume", "c.npz"], ".npy"),
])
def test_cli_hostile_arguments_are_one_line(tmp_path, monkeypatch, run, data, args, match):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(*args)
    assert rc == 2 and match in err[0]


@pytest.mark.parametrize("content", [b"", npz_bytes({"a": np.zeros(3)})])
def test_cli_process_prints_no_traceback(run_cli, tmp_path, content):
    """The real process (python -m sqdist): one line on stderr, status 2."""
    (tmp_path / "bad.npy").write_bytes(content)
    r = run_cli("kmeans", "--data", "bad.npy", cwd=str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("sqdist kmeans: error: ")


# ------------------------------------------------------------------------------------------
# 5. crafted model and checkpoint files
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_arrays(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    X = np.random.default_rng(7).normal(size=(80, 3))
    sqdist.KMeans(4, init=[0, 10, 20, 30], max_iter=5).fit(X).save(d / "m.npz")
    return npz_arrays(d / "m.npz")


def _state_edit(fn):
    def make(a):
        st = state_of(a)
        fn(st)
        return with_state(a, st)
    return make


def _set(path, value):
    def edit(st):
        obj = st
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return _state_edit(edit)


def _drop(key):
    return lambda a: {k: v for k, v in a.items() if k != key}


def _replace(key, value):
    return lambda a: dict(a, **{key: value})


MODEL_BREAKERS = {
    "state_json_list": lambda a: with_state(a, [1, 2, 3]),
    "state_json_deep": lambda a: with_state(a, None, raw=b"[" * 100_000 + b"]" * 100_000),
    "state_json_deep_dict": lambda a: with_state(a, None, raw=b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    "state_json_not_utf8": lambda a: with_state(a, None, raw=b"\xff\xfe{}"),
    "state_json_not_json": lambda a: with_state(a, None, raw=b"{'format': 1}"),
    "state_json_int64": _replace("state_json", np.arange(5)),
    "state_json_2d": _replace("state_json", np.zeros((2, 2), np.uint8)),
    "state_json_missing": _drop("state_json"),
    "huge_integer": lambda a: with_state(a, None, raw=a["state_json"].tobytes().replace(
        b'"n_iter": ', b'"n_iter": ' + b"9" * 5000, 1)),
    "centers_1d": lambda a: dict(a, cluster_centers=a["cluster_centers"][0]),
    "centers_3d": lambda a: dict(a, cluster_centers=a["cluster_centers"][None]),
    "centers_int": lambda a: dict(a, cluster_centers=a["cluster_centers"].astype(np.int64)),
    "centers_nan": lambda a: dict(a, cluster_centers=np.full_like(a["cluster_centers"], np.nan)),
    "centers_zero_k": lambda a: dict(a, cluster_centers=a["cluster_centers"][:0]),
    "centers_missing": _drop("cluster_centers"),
    "centers_k_mismatch": lambda a: dict(a, cluster_centers=a["cluster_centers"][:3]),
    "centers_d_mismatch": lambda a: dict(a, cluster_centers=a["cluster_centers"][:, :2]),
    "labels_out_of_range": lambda a: dict(a, labels=a["labels"] + 4),
    "labels_negative": lambda a: dict(a, labels=a["labels"] - 1),
    "labels_2d": lambda a: dict(a, labels=a["labels"][:, None]),
    "labels_float": lambda a: dict(a, labels=a["labels"].astype(float)),
    "labels_bool": lambda a: dict(a, labels=a["labels"] > 0),
    "labels_uint64_huge": lambda a: dict(a, labels=np.full(3, 2**64 - 1, np.uint64)),
    "history_centers_2d": lambda a: dict(a, history_centers=a["history_centers"][0]),
    "history_centers_h": lambda a: dict(a, history_centers=a["history_centers"][:1]),
    "init_centers_shape": lambda a: dict(a, init_centers=a["init_centers"].T),
    "format": _set(["format"], "sqdist.KMeans/99"),
    "params_list": _set(["params"], [1, 2]),
    "params_unknown": _set(["params", "evil"], 1),
    "params_init_dict": _set(["params", "init"], {"x": 1}),
    "params_init_points_nowhere": _set(["params", "init"], {"__sqdist__": "array", "key": "nothing"}),
    "params_init_3d": lambda a: dict(_set(["params", "init"], {"__sqdist__": "array", "key": "param_init"})(a),
                                     param_init=np.zeros((2, 2, 2))),
    "params_init_wrong_d": lambda a: dict(_set(["params", "init"], {"__sqdist__": "array", "key": "param_init"})(a),
                                          param_init=np.zeros((4, 7))),
    "params_dtype_bogus": _set(["params", "dtype"], {"__sqdist__": "dtype", "lib": "torch", "name": "nn"}),
    "params_tag_unknown": _set(["params", "tol"], {"__sqdist__": "exec", "code": "1"}),
    "params_device_bogus": _set(["params", "device"], "tpu"),
    "inertia_nan": _set(["inertia"], float("nan")),
    "inertia_negative": _set(["inertia"], -1.0),
    "inertia_text": _set(["inertia"], "1.0"),
    "n_iter_negative": _set(["n_iter"], -3),
    "n_iter_float": _set(["n_iter"], 2.5),
    "converged_text": _set(["converged"], "yes"),
    "torch_flag_int": _set(["torch"], 1),
    "history_empty": _set(["history"], []),
    "history_not_list": _set(["history"], {"a": 1}),
    "history_entry_list": _set(["history", 0], [1]),
    "history_missing_key": _state_edit(lambda st: st["history"][0].pop("sizes")),
    "history_unknown_key": _set(["history", 0, "centers"], [[0.0]]),
    "history_sizes_short": _set(["history", 0, "sizes"], [1, 2]),
    "history_sizes_negative": _set(["history", 0, "sizes"], [-1, 0, 0, 0]),
    "history_relocated_bad": _set(["history", 0, "relocated"], [7]),
    "history_iteration_order": _set(["history", 1, "iteration"], 0),
    "history_time_inf": _set(["history", 0, "time"], float("inf")),
    "result_unknown_field": _set(["result"], {"evil": 1}),
    "result_shadows_a_field": _set(["result"], {"centers": 1}),
    "format_deep_list": _set(["format"], json.loads("[" * 900 + "]" * 900)),
    "inertia_deep_list": _set(["inertia"], json.loads("[" * 900 + "]" * 900)),
    "device_deep_list": _set(["params", "device"], json.loads("[" * 900 + "]" * 900)),
    "member_not_npy": lambda a: npz_with_member(a, "x.txt", b"hello"),
    "member_bzip2": lambda a: npz_with_member(a, "extra.npy", npy_bytes(np.zeros(3)), compression=zipfile.ZIP_BZIP2),
    "member_pickled": lambda a: npz_with_member(a, "evil.npy", pickled_npy("PWNED")),
    "member_duplicate": lambda a: npz_with_member(a, "labels.npy", npy_bytes(np.zeros(3, np.int64))),
    "member_lying_header": lambda a: npz_with_member(a, "big.npy", lying_npy((10**9,))),
    "compression_method": lambda a: corrupt_compression_method(npz_bytes(a)),
    "encrypted": lambda a: set_encrypted_flag(npz_bytes(a)),
    "a_plain_npy": lambda a: npy_bytes(np.zeros((3, 2))),
    "empty_file": lambda a: b"",
}


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("how", sorted(MODEL_BREAKERS))
def test_crafted_model_files_are_named_errors(tmp_path, monkeypatch, model_arrays, how):
    monkeypatch.chdir(tmp_path)  # a pickle payload would create PWNED here
    path = write(tmp_path / "m.npz", MODEL_BREAKERS[how](dict(model_arrays)))
    with pytest.raises(SqdistError, match="path: "):
        sqdist.KMeans.load(path)
    with pytest.raises(SqdistError, match="path: "):
        _model_io.load(path, {"n_clusters", "init", "max_iter", "tol", "random_state", "device", "dtype"})
    assert not (tmp_path / "PWNED").exists()


def test_model_params_round_trip_generically(tmp_path):
    X = np.random.default_rng(8).normal(size=(40, 2))
    km = sqdist.KMeans(3, init=np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]]), random_state=np.random.default_rng(0),
                       dtype=torch.float32, max_iter=4).fit(X)
    km.save(tmp_path / "m.npz")
    st = state_of(npz_arrays(tmp_path / "m.npz"))
    assert st["params"]["random_state"] == {"__sqdist__": "unsaved", "type": "numpy.random._generator.Generator"}
    assert st["unsaved"] == {"random_state": "numpy.random._generator.Generator"}
    back = sqdist.KMeans.load(tmp_path / "m.npz")
    assert back.random_state is None and back.dtype == torch.float32
    np.testing.assert_array_equal(back.init, km.init)
    np.testing.assert_array_equal(back.predict(X), km.predict(X))
    # a file written before random_state was named so
    a = npz_arrays(tmp_path / "m.npz")
    st["params"]["seed"] = 5
    del st["params"]["random_state"]
    write(tmp_path / "old.npz", with_state(a, st))
    assert sqdist.KMeans.load(tmp_path / "old.npz").random_state == 5
    params, _ = _model_io.load(tmp_path / "old.npz", {"n_clusters", "init", "seed", "max_iter", "tol", "dtype",
                                                      "verbose", "n_init", "copy_x", "algorithm", "tol_mode",
                                                      "working_memory", "backend", "device"})
    assert params["seed"] == 5
    with pytest.raises(SqdistError, match="does not take"):
        _model_io.load(tmp_path / "old.npz", {"n_clusters"})


def test_model_file_of_format_1_still_loads(tmp_path, model_arrays):
    """As sqdist 0.x wrote them: format 1, the parameter ``seed``, ``init`` indices under the key "init"."""
    a = {k: v for k, v in model_arrays.items() if not k.startswith("param_")}
    st = state_of(a)
    st["format"] = "sqdist.KMeans/1"
    st["params"] = {"n_clusters": 4, "init": {"array": True}, "n_init": 1, "max_iter": 5, "tol": 1e-4, "seed": 3,
                    "working_memory": None, "backend": "auto", "device": None}
    for k in ("unsaved", "result"):
        st.pop(k, None)
    a["init"] = np.array([0, 10, 20, 30])
    write(tmp_path / "v1.npz", with_state(a, st))
    km = sqdist.KMeans.load(tmp_path / "v1.npz")
    assert km.random_state == 3 and km.init.tolist() == [0, 10, 20, 30]
    np.testing.assert_array_equal(km.cluster_centers_, model_arrays["cluster_centers"])


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    X = np.random.default_rng(9).normal(size=(90, 3))
    np.save(d / "X.npy", X)
    sqdist.kmeans_stream(str(d / "X.npy"), 4, init=[0, 1, 2, 3], max_iter=3, tol=0.0, checkpoint=d / "c.npz")
    return d


CKPT_FIELD_BREAKERS = {
    "centers_wrong_k": lambda a: dict(a, centers=a["centers"][:3]),
    "centers_wrong_d": lambda a: dict(a, centers=a["centers"][:, :2]),
    "centers_1d": lambda a: dict(a, centers=a["centers"].ravel()),
    "centers_int": lambda a: dict(a, centers=a["centers"].astype(int)),
    "centers_nan": lambda a: dict(a, centers=a["centers"] * np.nan),
    "init_centers_shape": lambda a: dict(a, init_centers=a["init_centers"][:, :1]),
    "iteration_negative": lambda a: dict(a, iteration=np.array(-1)),
    "iteration_mismatch": lambda a: dict(a, iteration=np.array(17)),
    "iteration_array": lambda a: dict(a, iteration=np.array([1, 2])),
    "converged_int": lambda a: dict(a, converged=np.array(1)),
    "hist_centers_short": lambda a: dict(a, hist_centers=a["hist_centers"][:-1]),
    "hist_sizes_negative": lambda a: dict(a, hist_sizes=-a["hist_sizes"] - 1),
    "hist_inertia_nan": lambda a: dict(a, hist_inertia=a["hist_inertia"] * np.nan),
    "hist_relocated_out_of_range": lambda a: dict(a, hist_relocated=np.array([9]), hist_relocated_n=np.r_[1, np.zeros(
        len(a["hist_relocated_n"]) - 1, np.int64)]),
    "hist_relocated_n_mismatch": lambda a: dict(a, hist_relocated_n=a["hist_relocated_n"] + 1),
    "rng_state_short": lambda a: dict(a, rng_state=a["rng_state"][:10]),
    "rng_state_float": lambda a: dict(a, rng_state=np.zeros(5056)),
    "fp_json_list": lambda a: dict(a, fp_json=np.frombuffer(b"[1]", np.uint8)),
    "fp_json_garbage": lambda a: dict(a, fp_json=np.frombuffer(b"\xff{", np.uint8)),
    "fp_json_deep": lambda a: dict(a, fp_json=np.frombuffer(b"[" * 50_000 + b"]" * 50_000, np.uint8)),
    "fp_json_tol_deep": lambda a: dict(a, fp_json=np.frombuffer(json.dumps(dict(json.loads(a["fp_json"].tobytes()),
                                       tol=json.loads("[" * 900 + "]" * 900))).encode(), np.uint8)),
    "format_3": lambda a: dict(a, format=np.array(3)),
    "format_text": lambda a: dict(a, format=np.frombuffer(b"2", np.uint8)),
    "format_missing": _drop("format"),
    "centers_missing": _drop("centers"),
    "hist_time_missing": _drop("hist_time"),
    "member_pickled": lambda a: npz_with_member(a, "evil.npy", pickled_npy("PWNED")),
    "a_model_file": lambda a: None,  # replaced by a KMeans model below
}


@pytest.mark.parametrize("how", sorted(CKPT_FIELD_BREAKERS))
def test_crafted_checkpoints_are_named_errors(tmp_path, monkeypatch, checkpoint_file, how):
    monkeypatch.chdir(tmp_path)
    good = checkpoint_file / "c.npz"
    arrays = npz_arrays(good)
    bad = CKPT_FIELD_BREAKERS[how](dict(arrays))
    if bad is None:
        sqdist.KMeans(2, max_iter=1).fit(np.zeros((5, 3)) + np.arange(5)[:, None]).save(tmp_path / "m.npz")
        bad = (tmp_path / "m.npz").read_bytes()
    path = write(tmp_path / "c.npz", bad)
    with pytest.raises(SqdistError, match="resume: "):
        _checkpoint.load(path, _fp(good))
    with pytest.raises(SqdistError, match="resume: "):
        sqdist.kmeans_stream(str(checkpoint_file / "X.npy"), 4, init=[0, 1, 2, 3], max_iter=5, tol=0.0, resume=path)
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------------------------------
# 6. no silent data loss on read
# ------------------------------------------------------------------------------------------

ROWS = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.5]])


@pytest.mark.parametrize("name,content,expected", [
    ("bom.csv", "\ufeff1,2\n3,4\n5,6.5\n", ROWS),
    ("bom_header.csv", "\ufeffx,y\n1,2\n3,4\n5,6.5\n", ROWS),
    ("crlf.csv", "1,2\r\n3,4\r\n5,6.5\r\n", ROWS),
    ("cr.csv", "1,2\r3,4\r5,6.5", ROWS),
    ("spaces.csv", " 1 , 2 \n3,4\n\n5,6.5\n\n", ROWS),
    ("quoted_header.csv", '"x","y"\n1,2\n3,4\n5,6.5\n', ROWS),
    ("one_column.csv", "1\n2\n3\n", np.array([[1.0], [2.0], [3.0]])),
    ("one_column_header.csv", "v\n1\n2\n3\n", np.array([[1.0], [2.0], [3.0]])),
])
def test_csv_keeps_every_row(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content.encode("utf-8"))
    np.testing.assert_array_equal(sqdist.datasets.load_points(tmp_path / name), expected)


@pytest.mark.parametrize("content,match", [
    ("1,x\n3,4\n", "mixes numbers and text"),  # never taken for a header
    ("x,1\n3,4\n", "mixes numbers and text"),
    ("a,b,c\n1,2\n", "column names"),
    ("1,2\x0c3,4\n", "line 1"),  # a form feed is not a line break
    ("1,2\n3,4,\n", "line 2"),
])
def test_csv_refuses_what_it_would_misread(tmp_path, content, match):
    (tmp_path / "x.csv").write_text(content)
    with pytest.raises(SqdistError, match=match):
        sqdist.datasets.load_points(tmp_path / "x.csv")


def test_one_dimensional_npy_is_n_points_everywhere(tmp_path, monkeypatch, run):
    monkeypatch.chdir(tmp_path)
    v = np.r_[np.zeros(20), np.full(20, 10.0)]
    np.save("v.npy", v)
    np.save("v2.npy", v[:, None])
    assert sqdist.datasets.load_points("v.npy").shape == (40, 1)
    r1 = sqdist.kmeans("v.npy", 2, init=[0, 39], tol=0.0)  # streamed
    r2 = sqdist.kmeans(v[:, None], 2, init=[0, 39], tol=0.0)
    np.testing.assert_array_equal(r1.centers, r2.centers)
    rc, out, _ = run("kmeans", "--data", "v.npy", "-k", "2", "--labels", "l.npy")  # the streamed CLI path
    assert rc == 0 and "40 points x 1 features" in out
    rc2, out2, _ = run("kmeans", "--data", "v2.npy", "-k", "2", "--labels", "l2.npy")
    assert out.splitlines()[1:-1] == out2.splitlines()[1:-1]
    np.testing.assert_array_equal(np.load("l.npy"), np.load("l2.npy"))


@pytest.mark.parametrize("make", [
    lambda a: np.asfortranarray(a), lambda a: a.astype(">f8"), lambda a: a.astype(np.int16), lambda a: a > 0.5,
    lambda a: a.astype(np.float16), lambda a: a.astype(np.uint8),
])
def test_npy_layouts_and_dtypes_read_exactly(tmp_path, make):
    a = make(np.random.default_rng(10).random((7, 3)))
    np.save(tmp_path / "a.npy", a)
    want = np.asarray(a).astype(np.float64 if a.dtype.kind != "f" else a.dtype.newbyteorder("="))
    got = _files.read_points(tmp_path / "a.npy")
    np.testing.assert_array_equal(got, want)
    mm = _files.open_npy(tmp_path / "a.npy", "X")
    np.testing.assert_array_equal(np.asarray(mm), a)


# ------------------------------------------------------------------------------------------
# 7. leftovers
# ------------------------------------------------------------------------------------------

DEAD_PID = 2**22 + 12345  # above the default pid_max: never alive


def _age(path: Path, seconds: float = 2 * _atomic.STALE_AFTER_S) -> Path:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)
    return path


def _stale(folder: Path, name: str, *, tag: str = "tmp", pid: int = DEAD_PID, is_dir: bool = False) -> Path:
    p = folder / f".{name}.{tag}-{pid}-abc123"
    if is_dir:
        p.mkdir()
        (p / "index.html").write_text("half a report")
    else:
        p.write_bytes(b"half a file")
    return _age(p)


def test_labels_into_a_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch, run, data):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    before = sorted(os.listdir(tmp_path))
    rc, _, err = run("kmeans", "--data", "X.npy", "-k", "2", "--labels", "DIR")
    assert rc == 2 and "is a folder" in err[0]
    assert sorted(os.listdir(tmp_path)) == before and not os.listdir(tmp_path / "DIR")


@pytest.mark.parametrize("option,name,data_file", [
    ("--save", "m.npz", "X.csv"), ("--labels", "l.npy", "X.csv"), ("--plot", "p.png", "X.csv"),
    ("--save", "m.npz", "X.npy"), ("--labels", "l.npy", "X.npy"), ("--checkpoint", "c.npz", "X.npy"),
])
def test_cli_outputs_sweep_stale_temporaries(tmp_path, monkeypatch, run, data, option, name, data_file):
    monkeypatch.chdir(tmp_path)
    stale = [_stale(tmp_path, name), _stale(tmp_path, name, tag="old", is_dir=True),
             tmp_path / f".{name}.partial", tmp_path / f"..{name}.tmp-{DEAD_PID}-labels.partial"]
    keep = [tmp_path / f".{name}.tmp-{DEAD_PID}-young", tmp_path / f".{name}.tmp-{os.getpid()}-alive",
            tmp_path / f".other.npz.tmp-{DEAD_PID}-x", tmp_path / f".{name}.tmpx-{DEAD_PID}-x",
            tmp_path / ".tmp-notours"]
    for p in stale[2:] + keep:
        p.write_bytes(b"x")
        if p != keep[0]:
            _age(p)
    rc, _, _ = run("kmeans", "--data", data_file, "-k", "2", option, name)
    assert rc == 0
    assert not [p for p in stale if os.path.lexists(p)]
    assert all(p.exists() for p in keep)


def test_report_folder_of_a_killed_run_is_swept(tmp_path, monkeypatch, run):
    monkeypatch.chdir(tmp_path)
    from sqdist import report

    calls = []
    monkeypatch.setattr(report, "run", lambda args: calls.append(args.out) or 0)
    left = _stale(tmp_path, "sqdist-report", is_dir=True)
    young = tmp_path / f".sqdist-report.tmp-{DEAD_PID}-young"
    young.mkdir()
    assert run("report", "--out", "sqdist-report", "--quick")[0] == 0 and calls == ["sqdist-report"]
    assert not left.exists() and young.exists()


def test_sweep_never_follows_links_nor_touches_others(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "f").write_text("keep me")
    link = tmp_path / f".out.npz.tmp-{DEAD_PID}-lnk"
    os.symlink(target, link)
    _age(link)
    removed = _atomic.sweep_stale(tmp_path / "out.npz")
    assert removed == [str(link)] and (target / "f").read_text() == "keep me"


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {src!r})
    from sqdist._atomic import atomic_write

    def slow(f):
        f.write(b"partial")
        f.flush()
        print("writing", flush=True)
        time.sleep(60)

    atomic_write({path!r}, slow)
""")


def test_atomic_write_killed_mid_write_leaves_the_old_file_and_a_temporary_that_is_swept(tmp_path):
    out = tmp_path / "model.npz"
    out.write_bytes(b"old model")
    code = _KILLED_WRITER.format(src=str(SRC), path=str(out))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert out.read_bytes() == b"old model"  # atomic: the old file, never a partial one
    temps = [n for n in os.listdir(tmp_path) if n.startswith(".model.npz.tmp-")]
    assert len(temps) == 1 and f"-{p.pid}-" in temps[0]
    _atomic.atomic_write(out, lambda f: f.write(b"new"))
    assert temps[0] in os.listdir(tmp_path)  # young: kept (its writer might still be running elsewhere)
    _age(tmp_path / temps[0])
    _atomic.atomic_write(out, lambda f: f.write(b"newer"))
    assert os.listdir(tmp_path) == ["model.npz"] and out.read_bytes() == b"newer"


def test_atomic_write_failing_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "r.json"
    out.write_text("old")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _atomic.atomic_write(out, fail)
    assert os.listdir(tmp_path) == ["r.json"] and out.read_text() == "old"


# ------------------------------------------------------------------------------------------
# 8. sparse input
# ------------------------------------------------------------------------------------------


def _sparse_kinds():
    sp = pytest.importorskip("scipy.sparse")
    A = np.eye(4)[:, :3] + 1.0
    return {
        "torch_coo": torch.from_numpy(A).to_sparse(), "torch_csr": torch.from_numpy(A).to_sparse_csr(),
        "scipy_csr_matrix": sp.csr_matrix(A), "scipy_csr_array": sp.csr_array(A), "scipy_coo": sp.coo_matrix(A),
        "scipy_csc": sp.csc_matrix(A),
    }


CALLS = {
    "sqdist_X": lambda S, D: sqdist.sqdist(S, D), "sqdist_T": lambda S, D: sqdist.sqdist(D, S),
    "nearest_X": lambda S, D: sqdist.nearest(S, D), "nearest_T": lambda S, D: sqdist.nearest(D, S),
    "rbf_X": lambda S, D: sqdist.rbf(S, D, 1.0), "rbf_T": lambda S, D: sqdist.rbf(D, S, 1.0),
    "sqdist_chunks": lambda S, D: sqdist.sqdist_chunks(S, D), "kmeans": lambda S, D: sqdist.kmeans(S, 2, random_state=0),
    "KMeans": lambda S, D: sqdist.KMeans(2, random_state=0).fit(S),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", ["torch_coo", "torch_csr", "scipy_csr_matrix", "scipy_csr_array", "scipy_coo",
                                  "scipy_csc"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_sparse_input_gives_the_dense_result(kind, call):
    """Sparse input is computed sparse (issue 13) and gives the densified input's result; only
    sqdist_chunks (dense row blocks of the matrix) still refuses it, with a clear error."""
    S = _sparse_kinds()[kind]
    D = np.ones((2, 3)) if kind.startswith("scipy") else torch.ones(2, 3, dtype=torch.float64)
    if call == "sqdist_chunks":
        with pytest.raises(SqdistError, match="sparse input is not supported yet"):
            CALLS[call](S, D)
        return
    dense = torch.from_numpy(np.eye(4)[:, :3] + 1.0)
    dense = dense.numpy() if kind.startswith("scipy") else dense
    got, want = CALLS[call](S, D), CALLS[call](dense, D)
    if call.startswith("kmeans") or call == "KMeans":
        got, want = (got.labels, want.labels) if call == "kmeans" else (got.labels_, want.labels_)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert type(g) is type(w)
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------
# 9. declared versions
# ------------------------------------------------------------------------------------------


def test_declared_triton_range_is_the_tested_one():
    """pyproject declares the Triton versions tests/test_triton.py passed under (docs/gpu.md): the same range in
    the gpu and test extras, and an installed Triton (if any) inside it."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.version import Version

    extras = tomllib.loads((SRC.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    specs = {str(Requirement(r).specifier) for group in ("gpu", "test") for r in extras[group]
             if Requirement(r).name == "triton"}
    assert len(specs) == 1, specs
    spec = Requirement(f"triton{specs.pop()}").specifier
    assert not spec.contains(Version("3.6.0"))  # fails in the interpreter (docs/gpu.md)
    assert spec.contains(Version("3.7.0")) and spec.contains(Version("3.9.0"))
    try:
        import triton
    except ImportError:
        return
    assert spec.contains(Version(triton.__version__)), (triton.__version__, spec)


# ------------------------------------------------------------------------------------------
# promises of README and docs/
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", ["read_points", "open_npy", "KMeans.load", "checkpoint", "kmeans"])
def test_never_unpickles(tmp_path, monkeypatch, reader):
    """A pickled payload that would run code when unpickled: refused by every reader, and never run."""
    monkeypatch.chdir(tmp_path)
    marker = str(tmp_path / "PWNED")
    (tmp_path / "evil.npy").write_bytes(pickled_npy(marker))
    (tmp_path / "evil.npz").write_bytes(npz_with_member({}, "state_json.npy", pickled_npy(marker)))
    fp = {"n_rows": 1, "n_features": 1, "n_clusters": 1, "dtype": "torch.float64", "tol": 0.0, "chunk_rows": 1}
    calls = {
        "read_points": lambda: _files.read_points(tmp_path / "evil.npy"),
        "open_npy": lambda: _files.open_npy(tmp_path / "evil.npy", "X"),
        "KMeans.load": lambda: sqdist.KMeans.load(tmp_path / "evil.npz"),
        "checkpoint": lambda: _checkpoint.load(tmp_path / "evil.npz", fp),
        "kmeans": lambda: sqdist.kmeans(str(tmp_path / "evil.npy"), 1),
    }
    with pytest.raises(SqdistError):
        calls[reader]()
    assert not os.path.exists(marker)


def test_guarantees_page_names_existing_tests():
    """docs/guarantees.md lists each promise with the test that holds it: every test it names exists."""
    page = (SRC.parent / "docs" / "guarantees.md").read_text()
    import re

    names = set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", page))
    assert len(names) >= 15
    for file, test in names:
        assert f"def {test}(" in (SRC.parent / file).read_text(), (file, test)
