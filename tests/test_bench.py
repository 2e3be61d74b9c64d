"""sqdist bench: rows, validation verdict, memory measurement, output files, CLI errors."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os

import numpy as np
import pytest
import torch

from sqdist import _bench_measure as measure
from sqdist import bench
from sqdist._machine import format_machine, machine_info
from sqdist._validation import SqdistError

TINY = dict(device="cpu", threads=1, min_run_time=0.005)


@pytest.fixture(scope="module")
def tiny_result():
    # 12 x 10 = 120 pairs > loops_max_pairs = 30: the loops row must be extrapolated
    return bench.run_bench("12x10x3,20x7x2", loops_max_pairs=30, **TINY)


def test_rows_present_in_order_with_consistent_fields(tiny_result):
    res = tiny_result
    keys = [(r.N, r.P, r.D, r.method, r.device) for r in res.rows]
    assert keys == [
        (12, 10, 3, m, "cpu") for m in bench.BENCH_METHODS
    ] + [(20, 7, 2, m, "cpu") for m in bench.BENCH_METHODS]
    for r in res.rows:
        assert r.time_s > 0
        assert r.gflops == pytest.approx(3 * r.N * r.P * r.D / r.time_s / 1e9)
        assert r.speedup_vs_loops is not None
        loops = next(x for x in res.rows if (x.N, x.P, x.D, x.method) == (r.N, r.P, r.D, "loops"))
        assert r.speedup_vs_loops == pytest.approx(loops.time_s / r.time_s)
        assert r.peak_mem_bytes is not None and r.peak_mem_bytes >= 4 * r.timed_rows * r.timed_cols  # holds the output
        assert 0 <= r.max_rel_err_vs_f64 <= bench.TOLERANCE and r.validated
    assert res.threads == 1
    assert res.machine["torch"] == torch.__version__


def test_loops_timed_on_subset_and_flagged(tiny_result):
    loops = [r for r in tiny_result.rows if r.method == "loops"]
    for r in loops:
        assert r.extrapolated
        assert r.timed_rows * r.timed_cols <= 30 and (r.timed_rows, r.timed_cols) != (r.N, r.P)
    assert not any(r.extrapolated for r in tiny_result.rows if r.method != "loops")
    table = bench.format_table(tiny_result)
    assert "Python loops*" in table
    assert "NumPy broadcasting*" not in table
    assert "* timed on a leading block" in table


def test_validation_verdict_and_checks(tiny_result):
    assert tiny_result.validation_passed
    verdict = tiny_result.verdict()
    sq = next(r.label for r in tiny_result.rows if r.method == "sqdist")
    # the sentence names what was compared, by the labels of the table
    assert verdict.startswith(
        f"validation passed: PyTorch CPU (broadcasting), {sq} equal Python loops / NumPy broadcasting within tolerance"
    ), verdict
    assert "PyTorch CPU (expansion, matmul): max relative error" in verdict
    assert "torch CPU (" not in verdict and "auto" not in verdict
    assert verdict in bench.format_table(tiny_result)
    pairs = {(c.N, c.method, c.reference) for c in tiny_result.checks}
    assert pairs == {(n, m, ref) for n in (12, 20) for m in ("torch", "expansion", "sqdist") for ref in ("loops", "numpy")}
    assert all(c.passed and c.max_rel_diff < 1e-4 for c in tiny_result.checks)


def test_wrong_results_fail_validation(monkeypatch):
    real = bench.EXERCISE_FUNCTIONS["torch"]
    monkeypatch.setitem(bench.EXERCISE_FUNCTIONS, "torch", lambda X, T: real(X, T) * 1.01)
    res = bench.run_bench("9x8x2", **TINY)
    assert not res.validation_passed
    bad = [r.method for r in res.rows if not r.validated]
    assert bad == ["torch"]
    assert res.verdict().startswith("validation FAILED")
    assert "torch on cpu vs loops" in res.verdict()
    args = argparse.Namespace(sizes="9x8x2", device="cpu", methods=None, threads=1, out=None, quick=True, seed=0, quiet=True)
    assert bench.run(args) == 1


def test_expansion_error_is_shown_not_required():
    # D = 2: close pairs lose digits in ||x||^2 + ||t||^2 - 2 x.t (float32): outside the tolerance, honestly
    res = bench.run_bench("256x256x2", methods="numpy,expansion", **TINY)
    exp = next(r for r in res.rows if r.method == "expansion")
    assert exp.label == "PyTorch CPU (expansion, matmul)"
    assert exp.max_rel_err_vs_f64 > bench.TOLERANCE and not exp.validated
    assert res.validation_passed
    assert "(outside the tolerance: the expansion loses digits to cancellation" in res.verdict()
    assert "no (approximate)" in bench.format_table(res)


def test_rows_run_the_exercise_functions(monkeypatch):
    # each labelled column runs the function the report shows: count the calls
    calls = {m: 0 for m in bench.EXERCISE_FUNCTIONS}
    for m, fn in list(bench.EXERCISE_FUNCTIONS.items()):
        def counted(X, T, _fn=fn, _m=m):
            calls[_m] += 1
            return _fn(X, T)

        monkeypatch.setitem(bench.EXERCISE_FUNCTIONS, m, counted)
    res = bench.run_bench("6x5x2", **TINY)
    assert [r.label for r in res.rows][:4] == [
        "Python loops", "NumPy broadcasting", "PyTorch CPU (broadcasting)", "PyTorch CPU (expansion, matmul)"
    ]
    assert all(n >= 3 for n in calls.values()), calls  # warm-up, memory, timing


def _spy(monkeypatch, module, counter, key):
    for name in ("sqdist_direct", "sqdist_direct_serial"):
        real = getattr(module, name)

        def spy(*a, _real=real):
            counter[key] += 1
            return _real(*a)

        monkeypatch.setattr(module, name, spy)


@pytest.mark.parametrize("choice", ["auto", "numba", "torch"])
def test_sqdist_label_names_the_engine_that_ran(monkeypatch, choice):
    # the label of the sqdist column is checked against the kernel that really ran
    from sqdist import _ckernels, _cpu_kernels

    if choice == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("SQDIST_CPU_KERNELS", choice)
    ran = {"c": 0, "numba": 0}
    _spy(monkeypatch, _ckernels, ran, "c")
    if _cpu_kernels._numba_installed():
        from sqdist import _cpu_nb

        _spy(monkeypatch, _cpu_nb, ran, "numba")
    res = bench.run_bench("16x12x3,8x6x1100", methods="sqdist", **TINY)
    small, wide = res.rows
    assert wide.label == "sqdist (PyTorch)"  # 1100 features: the exact product path, never a compiled direct kernel
    if ran["c"]:
        assert small.label == "sqdist (compiled C kernel)" and not ran["numba"]
    elif ran["numba"]:
        assert small.label == "sqdist (compiled numba kernel)"
    else:
        assert small.label == "sqdist (PyTorch)"
    if choice == "torch":
        assert ran == {"c": 0, "numba": 0} and small.label == "sqdist (PyTorch)"
    if choice == "numba":
        assert ran["numba"] and not ran["c"]
    assert "torch" not in small.label.lower() or not (ran["c"] or ran["numba"])


def test_warm_up_first_size_has_no_memory_spike(tmp_path):
    # a fresh process (nothing compiled or loaded yet): the first size of every method records
    # no more memory than the same size measured again.  With numba kernels the first sqdist
    # call loads its compiled kernels (~20 MB of allocations) -- counted without the warm-up.
    from sqdist import _cpu_kernels

    code = (
        "import json, sys\n"
        "from sqdist.bench import run_bench\n"
        "res = run_bench('64x64x8,64x64x8', device='cpu', threads=1, min_run_time=0.005)\n"
        "json.dump([(r.method, r.peak_mem_bytes) for r in res.rows], sys.stdout)\n"
    )
    import subprocess
    import sys as _sys

    env = dict(os.environ, SQDIST_CPU_KERNELS="numba" if _cpu_kernels._numba_installed() else "auto")
    out = subprocess.run([_sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                         env=env).stdout
    rows = json.loads(out)
    half = len(rows) // 2
    for (m1, first), (m2, again) in zip(rows[:half], rows[half:]):
        assert m1 == m2
        assert first <= 1.05 * again + 4096, (m1, first, again)


def test_max_rel_and_reference_by_hand():
    assert measure.max_rel(torch.tensor([1.0, 3.0, 0.0]), torch.tensor([1.0, 2.0, 0.0])) == pytest.approx(0.5)
    assert measure.max_rel(torch.tensor([0.25]), torch.tensor([0.0])) == pytest.approx(0.25)  # absolute at 0
    assert measure.max_rel(torch.tensor([float("nan")]), torch.tensor([1.0])) == float("inf")
    rng = np.random.default_rng(1)
    X, T = rng.normal(size=(7, 3)) + 100.0, rng.normal(size=(5, 3)) + 100.0
    brute = ((X[:, None, :] - T[None, :, :]) ** 2).sum(-1)
    blocks = list(measure.reference_blocks(torch.from_numpy(X), torch.from_numpy(T), 3))
    assert [sl.start for sl, _ in blocks] == [0, 3, 6]
    got = torch.cat([d for _, d in blocks]).numpy()
    np.testing.assert_allclose(got, brute, rtol=1e-12)


def test_memory_measurement_sees_torch_and_numpy_allocations():
    n = 1_000_000
    _, peak_t = measure.measure_cpu(lambda: torch.ones(n, dtype=torch.float32) * 2)  # two 4 MB buffers live at once
    assert 8 * 10**6 <= peak_t < 8 * 10**6 + 2**20
    def two_arrays():
        a = np.ones(n)
        b = a + 1.0  # a is still referenced: no in-place elision, two 8 MB buffers
        return a, b

    _, peak_n = measure.measure_cpu(two_arrays)
    assert 16 * 10**6 <= peak_n < 16 * 10**6 + 2**20
    _, peak_0 = measure.measure_cpu(lambda: None)
    assert peak_0 < 2**16


def test_subset_rule():
    assert bench._subset(10, 10, 1000) == (10, 10)
    assert bench._subset(100, 50, 1000) == (20, 50)
    assert bench._subset(100, 5000, 1000) == (1, 1000)


def test_results_written_atomically_and_parse(tmp_path, tiny_result):
    js, cs = tmp_path / "r.json", tmp_path / "r.csv"
    js.write_text("old")
    bench.write_results(tiny_result, js)
    bench.write_results(tiny_result, cs)
    assert sorted(os.listdir(tmp_path)) == ["r.csv", "r.json"]  # no temporary left behind
    data = json.loads(js.read_text())
    assert data["schema"] == "sqdist.bench/2" and data["validation_passed"] is True
    assert len(data["rows"]) == len(tiny_result.rows)
    assert data["rows"][0]["method"] == "loops" and data["rows"][0]["extrapolated"] is True
    back = bench.BenchResult.from_dict(data)
    assert back.rows == tiny_result.rows and back.checks == tiny_result.checks
    # a failed check with an infinite difference survives the round trip (JSON null -> inf)
    bad = dataclasses.replace(
        tiny_result, checks=[dataclasses.replace(tiny_result.checks[0], max_rel_diff=math.inf, passed=False)]
    )
    bench.write_results(bad, js)
    again = bench.BenchResult.from_dict(json.loads(js.read_text()))
    assert again.checks[0].max_rel_diff == math.inf and "FAIL" in again.verdict().upper()
    with cs.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(tiny_result.rows)
    assert rows[1]["label"] == "NumPy broadcasting" and int(rows[1]["N"]) == 12
    assert float(rows[1]["time_s"]) == pytest.approx(tiny_result.rows[1].time_s)


def test_failed_write_keeps_old_file(tmp_path, tiny_result, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text("old")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        bench.write_results(tiny_result, target)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]


@pytest.mark.parametrize("bad", ["256x256", "axbxc", "0x4x2", "4x4x2,", "", "4x4x2x1", "-1x2x3"])
def test_parse_sizes_rejects_malformed(bad):
    with pytest.raises(SqdistError, match="sizes"):
        bench.parse_sizes(bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(methods="loops,fast"), "methods"),
        (dict(methods="gemm"), "methods"),
        (dict(device="tpu"), "device"),
        (dict(threads=0), "threads"),
        (dict(sizes=[(4, 4)]), "sizes"),
        (dict(sizes=[(4, 4, 2.5)]), "sizes"),
    ],
)
def test_bad_options(kwargs, match):
    kw = dict(sizes="4x4x2", device="cpu")
    kw.update(kwargs)
    with pytest.raises(SqdistError, match=match):
        bench.run_bench(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_required_but_missing():
    with pytest.raises(SqdistError, match="cuda"):
        bench.run_bench("4x4x2", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rows():
    res = bench.run_bench("64x32x4", device="cuda", methods="numpy,torch,sqdist", threads=1, min_run_time=0.01)
    assert [(r.method, r.device) for r in res.rows] == [
        ("numpy", "cpu"), ("torch", "cpu"), ("sqdist", "cpu"), ("torch", "cuda"), ("sqdist", "cuda"), ("torch+copies", "cuda")
    ]
    assert [r.label for r in res.rows if r.device == "cuda"][0] == "PyTorch GPU (broadcasting)"
    gpu_sq = next(r.label for r in res.rows if r.device == "cuda" and r.method == "sqdist")
    assert gpu_sq in ("sqdist (Triton)", "sqdist (PyTorch, GPU)")
    assert res.validation_passed


def test_write_results_rejects_other_suffix(tmp_path, tiny_result):
    with pytest.raises(SqdistError, match=r"\.json or \.csv"):
        bench.write_results(tiny_result, tmp_path / "r.txt")


def test_machine_info():
    info = machine_info()
    assert info["logical_cores"] >= info["usable_cores"] >= 1
    assert info["numpy"] == np.__version__ and info["cuda_available"] == torch.cuda.is_available()
    json.dumps(info)
    assert info["cpu_model"] in format_machine(info)


def test_cli_bench_tiny(tmp_path, capsys):
    from sqdist import cli

    out = tmp_path / "res.json"
    rc = cli.main(["bench", "--sizes", "8x6x2,5x5x3", "--threads", "1", "--quick", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "validation passed: PyTorch CPU (broadcasting)" in captured.out
    for label in ("Python loops", "NumPy broadcasting", "PyTorch CPU (broadcasting)", "PyTorch CPU (expansion, matmul)",
                  "sqdist ("):
        assert label in captured.out
    assert "torch gemm" not in captured.out and "(auto)" not in captured.out
    assert "8x6x2: Python loops" in captured.err  # progress goes to stderr
    data = json.loads(out.read_text())
    assert [(x["N"], x["method"]) for x in data["rows"]][:2] == [(8, "loops"), (8, "numpy")]


@pytest.mark.parametrize(
    "args",
    [
        ("--sizes", "12x10"),
        ("--sizes", "12x10xq"),
        ("--threads", "0"),
        ("--methods", "loops,magic"),
        ("--out", "result.txt"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args, tmp_path, monkeypatch, capsys):
    from sqdist import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--device", "cpu", "-q", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("sqdist bench: error:")
    assert os.listdir(tmp_path) == []


def test_cli_help(capsys):
    from sqdist import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--sizes", "--device", "--out", "--threads", "--quick"):
        assert opt in out


def test_stderr_of_the_measured_call_stays_visible(capfd):
    import sys

    def noisy():
        print("budget too small", file=sys.stderr, flush=True)  # e.g. a RuntimeWarning being shown
        return torch.zeros(3)

    measure.measure_cpu(noisy)
    err = capfd.readouterr().err
    assert "budget too small" in err
    assert "profiler_start" not in err and "USDT" not in err
