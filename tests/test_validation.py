"""Every bad input of issue 2 item 6 raises SqdistError naming the argument and what was given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sqdist
from sqdist import SqdistError

FUNCS = {
    "sqdist": lambda X, T, **kw: sqdist.sqdist(X, T, **kw),
    "sqdist_chunks": lambda X, T, **kw: sqdist.sqdist_chunks(X, T, **kw),
    "nearest": lambda X, T, **kw: sqdist.nearest(X, T, **kw),
    "rbf": lambda X, T, **kw: sqdist.rbf(X, T, 1.0, **kw),
}


def test_sqdist_error_is_a_value_error():
    assert issubclass(SqdistError, ValueError)


@pytest.mark.parametrize("f", FUNCS)
def test_mismatched_feature_dimension(f):
    with pytest.raises(
        SqdistError, match=r"X and T must have the same number of features.*X of shape \(4, 3\) and T of shape \(2, 5\)"
    ):
        FUNCS[f](np.ones((4, 3)), np.ones((2, 5)))


@pytest.mark.parametrize("f", FUNCS)
@pytest.mark.parametrize("which", ["X", "T"])
@pytest.mark.parametrize("shape", [(), (3,)])
def test_zero_and_one_dimensional_inputs(f, which, shape):
    good, bad = np.ones((2, 3)), np.ones(shape)
    args = (bad, good) if which == "X" else (good, bad)
    pattern = rf"^{which}: expected at least 2 dimensions .*shape {shape}".replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(SqdistError, match=pattern):
        FUNCS[f](*args)


@pytest.mark.parametrize("f", FUNCS)
def test_different_devices(f):
    # the meta device stands in for a GPU on a CPU-only machine
    with pytest.raises(SqdistError, match="X and T must be on the same device, got X on meta and T on cpu"):
        FUNCS[f](torch.ones(2, 3, device="meta"), torch.ones(4, 3))
    with pytest.raises(SqdistError, match="X on cpu and T on meta"):
        FUNCS[f](np.ones((2, 3), dtype=np.float32), torch.ones(4, 3, device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_different_devices_cuda():
    with pytest.raises(SqdistError, match="same device.*cuda.*cpu"):
        sqdist.sqdist(torch.ones(2, 3, device="cuda"), torch.ones(4, 3))


@pytest.mark.parametrize("f", FUNCS)
def test_complex_dtype(f):
    with pytest.raises(SqdistError, match="X: complex input is not supported.*complex128"):
        FUNCS[f](np.ones((2, 3)) * 1j, np.ones((2, 3)))
    with pytest.raises(SqdistError, match="T: complex input is not supported.*torch.complex64"):
        FUNCS[f](torch.ones(2, 3), torch.ones(2, 3, dtype=torch.complex64))


@pytest.mark.parametrize("bad, what", [
    (np.array([["a", "b"]]), "dtype <U1"),
    (np.array([[1.0, 2.0]], dtype=np.longdouble), f"dtype {np.dtype(np.longdouble)}"),
    (np.array([[1, 2]], dtype="datetime64[s]"), "dtype datetime64"),
    ([[1.0, 2.0], [3.0]], "got list"),
    (np.array([[None, 1.0]]), "dtype object"),
])
def test_non_numeric_inputs(bad, what):
    with pytest.raises(SqdistError, match=rf"^X: .*{what}"):
        sqdist.sqdist(bad, np.ones((2, 2)))


@pytest.mark.parametrize("method", ["fast", "GEMM", "", None, 3])
def test_unknown_method(method):
    pattern = r"method: expected one of 'auto', 'gemm', 'broadcast', 'numpy', 'loops', got " + repr(method).replace("(", r"\(")
    with pytest.raises(SqdistError, match=pattern):
        sqdist.sqdist(np.ones((2, 2)), np.ones((2, 2)), method=method)


def test_unknown_backend():
    with pytest.raises(SqdistError, match="backend: expected one of 'auto', 'torch', 'triton', got 'cuda'"):
        sqdist.sqdist(np.ones((2, 2)), np.ones((2, 2)), backend="cuda")


@pytest.mark.parametrize("method", ["numpy", "loops"])
def test_numpy_methods_on_a_non_cpu_device(method):
    X = torch.ones(2, 3, device="meta")
    with pytest.raises(SqdistError, match=rf"method: '{method}' runs on the CPU with NumPy, got tensors on meta"):
        sqdist.sqdist(X, X, method=method)


@pytest.mark.parametrize("f", ["sqdist", "sqdist_chunks", "nearest", "rbf"])
@pytest.mark.parametrize("wm", [0, -5, float("nan"), "64", True])
def test_bad_working_memory(f, wm):
    with pytest.raises(SqdistError, match=r"working_memory: expected"):
        FUNCS[f](np.ones((2, 2)), np.ones((2, 2)), working_memory=wm)


@pytest.mark.parametrize("wm", [0, -1, float("inf")])
def test_bad_global_working_memory(wm):
    before = sqdist.get_working_memory()
    with pytest.raises(SqdistError, match="working_memory: expected"):
        sqdist.set_working_memory(wm)
    assert sqdist.get_working_memory() == before


def test_budget_too_small_warning_names_the_sizes():
    with pytest.warns(RuntimeWarning, match=r"working_memory of .* MiB is too small for one row .* using one row at a time"):
        d = sqdist.sqdist(np.ones((3, 8)), np.zeros((100, 8)), working_memory=1e-6, method="broadcast")
    np.testing.assert_array_equal(d, np.full((3, 100), 8.0))
