"""Build of sqdist's optional C kernels (everything else is in pyproject.toml).

``src/sqdist/_ckernels.c`` becomes ``sqdist/_sqdist_omp*.so``: a shared library
loaded with ctypes after torch (see ``src/sqdist/_ckernels.py``; one small
CPython entry point besides) linked against ``libgomp.so.1``, so that its
OpenMP regions run on torch's own thread pool.  It needs a C compiler with
OpenMP, and NumPy's headers for its one CPython entry point (a NumPy build
requirement in pyproject.toml; without NumPy the library is built without the
entry point, and sqdist calls the same kernel through ctypes).  No torch headers
are needed.  The extension is optional:
where it cannot be compiled (no compiler, no OpenMP, not Linux with GCC-style
flags) the install still succeeds and sqdist uses numba (the ``fast`` extra)
or torch instead.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalOpenMPBuild(build_ext):
    """Compiles the kernels only on Linux (where torch ships libgomp); never fails the install."""

    def build_extensions(self):
        if not sys.platform.startswith("linux"):
            print("sqdist: C kernels are built on Linux only; using numba/torch instead")
            return
        super().build_extensions()


try:  # the CPython entry point (the small-problem iteration) makes its result arrays with NumPy's C API
    import numpy

    ENTRY_POINT = {"include_dirs": [numpy.get_include()], "define_macros": [("SQ_PYTHON", "1")]}
except ImportError:
    ENTRY_POINT = {}

KERNELS = Extension(
    "sqdist._sqdist_omp",
    sources=["src/sqdist/_ckernels.c"],
    depends=["src/sqdist/_ckernels_impl.h", "src/sqdist/_ckernels_gemm.h"],
    extra_compile_args=["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden",
                        "-std=gnu11"],
    extra_link_args=["-fopenmp"],
    libraries=["m"],
    optional=True,
    **ENTRY_POINT,
)

setup(ext_modules=[KERNELS], cmdclass={"build_ext": OptionalOpenMPBuild})
