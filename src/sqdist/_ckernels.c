/* sqdist's compiled CPU kernels, run on torch's own OpenMP thread pool.
 *
 * Built at install time by setup.py as a shared library loaded with ctypes by
 * src/sqdist/_ckernels.py after torch is imported (plus one CPython entry point,
 * compiled only with SQ_PYTHON, at the end of this file).  It
 * needs libgomp.so.1; the dynamic loader then reuses the libgomp that torch
 * already loaded, so "#pragma omp parallel" here runs on the same runtime and
 * the same worker threads as torch's intra-op operations: one pool of threads.
 *
 * Floating point: compiled without fast-math and with -ffp-contract=off, so the
 * instruction-set clones (SQ_CLONES) give the same bits; reductions that must
 * vectorise use fixed lanes instead of reassociation.  The one exception,
 * SQ_FMA_CLONES, computes products that only screen candidates within an error
 * bound (an FMA's error is within a multiply and an add's): every result is
 * computed afterwards by the direct formula, the same bits on every clone.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(SQ_NO_CLONES)
#define SQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
/* Screening products only (their values never reach a result, see fused_min2): fused
 * multiply-adds on x86-64-v3/v4 (AVX2 + FMA, AVX-512), mul + add elsewhere. */
#define SQ_FMA_CLONES                                                                                                  \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), optimize("fp-contract=fast")))
#else
#define SQ_CLONES
#define SQ_FMA_CLONES
#endif
#define SQ_EXPORT __attribute__((visibility("default")))

/* Pins a floating-point value to a register at this point of a loop (an empty asm that
 * reads and writes it): the compiler cannot move the computation of the value out of the
 * loop around it.  Nothing where the register class is not known. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SQ_KEEP(v) __asm__ volatile("" : "+x"(v))
#elif defined(__GNUC__) && defined(__aarch64__)
#define SQ_KEEP(v) __asm__ volatile("" : "+w"(v))
#else
#define SQ_KEEP(v) ((void)0)
#endif

/* Bumped whenever an exported signature changes; the loader refuses a library of another version. */
#define SQ_ABI 10

SQ_EXPORT int sq_abi(void) { return SQ_ABI; }

/* File name of the OpenMP runtime this library's omp_* calls resolve to ("" if unknown). */
SQ_EXPORT const char *sq_omp_library(void)
{
    Dl_info info;
    if (dladdr((void *)&omp_get_max_threads, &info) && info.dli_fname)
        return info.dli_fname;
    return "";
}

/* File name of the shared object that contains address addr ("" if unknown). */
SQ_EXPORT const char *sq_object_of(const void *addr)
{
    Dl_info info;
    if (addr && dladdr(addr, &info) && info.dli_fname)
        return info.dli_fname;
    return "";
}

/* Threads of the last parallel region of this library (for tests: 0 before any). */
SQ_EXPORT int sq_team_size(int nthreads)
{
    int size = 0;
#pragma omp parallel num_threads(nthreads)
    {
#pragma omp single
        size = omp_get_num_threads();
    }
    return size;
}

#define REAL float
#define IDX int32_t
#define FN(name) name##_f32
#include "_ckernels_impl.h"
#undef REAL
#undef IDX
#undef FN

#include "_ckernels_gemm.h"

#define REAL double
#define IDX int64_t
#define FN(name) name##_f64
#include "_ckernels_impl.h"
#undef REAL
#undef IDX
#undef FN

#ifdef SQ_PYTHON
/* One CPython entry point for the small-problem iteration (called ~10 times per fit at the
 * exercise's size, where a ctypes call with ten array addresses cost 3x the arithmetic, and
 * the buffer protocol's nine exports plus three np.empty calls ~4 us, as much as the arithmetic).
 * Built only by setup.py (which defines SQ_PYTHON and finds NumPy's headers); imported by
 * sqdist._ckernels only after library() accepted this file (the OpenMP runtime check).  The
 * inputs are NumPy arrays, checked for type, native byte order, alignment, C-contiguity and
 * shape; the outputs are new arrays made here. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

/* o as an aligned, native, C-contiguous array of `kind` ('f' float, 'i' signed integer) and
 * `item` bytes with `ndim` dimensions of `shape` (-1: any), writable if asked; else NULL and a
 * ValueError naming it. */
static PyArrayObject *sq_arr(PyObject *o, char kind, int item, int ndim, const npy_intp *shape, int writable,
                             const char *name)
{
    if (!PyArray_Check(o)) {
        PyErr_Format(PyExc_ValueError, "update_assign: %s must be a NumPy array, got %s", name, Py_TYPE(o)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)o;
    int ok = PyArray_DESCR(a)->kind == kind && PyArray_ITEMSIZE(a) == item && PyArray_NDIM(a) == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = shape[d] < 0 || PyArray_DIM(a, d) == shape[d];
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "update_assign: %s has the wrong dtype or shape", name);
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a) || !PyArray_ISNOTSWAPPED(a)) {
        PyErr_Format(PyExc_ValueError, "update_assign: %s is not C-contiguous, aligned and in native byte order", name);
        return NULL;
    }
    if (writable && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "update_assign: %s is read-only", name);
        return NULL;
    }
    return a;
}

/* update_assign(chunk, X, C, sums, counts, labels, mind)
 *   -> (centres, largest move, sum of squared moves, sums, counts, inertia, empty clusters)
 * (chunk first: functools.partial binds it once per fit; the result in the order of
 * sqdist._cpu_nb.update_assign_direct's) */
static PyObject *sq_py_update_assign(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "update_assign takes 7 arguments");
        return NULL;
    }
    const long long chunk = PyLong_AsLongLong(args[0]);
    if (chunk <= 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "update_assign: chunk must be positive");
        return NULL;
    }
    if (!PyArray_Check(args[1]) || PyArray_NDIM((PyArrayObject *)args[1]) != 2 ||
        PyArray_DESCR((PyArrayObject *)args[1])->kind != 'f' ||
        (PyArray_ITEMSIZE((PyArrayObject *)args[1]) != 4 && PyArray_ITEMSIZE((PyArrayObject *)args[1]) != 8)) {
        PyErr_SetString(PyExc_ValueError, "update_assign: X must be a 2-D float32 or float64 array");
        return NULL;
    }
    const int item = (int)PyArray_ITEMSIZE((PyArrayObject *)args[1]);
    const npy_intp n = PyArray_DIM((PyArrayObject *)args[1], 0), D = PyArray_DIM((PyArrayObject *)args[1], 1);
    PyArrayObject *X = sq_arr(args[1], 'f', item, 2, (const npy_intp[]){n, D}, 0, "X");
    PyArrayObject *C = X ? sq_arr(args[2], 'f', item, 2, (const npy_intp[]){-1, D}, 0, "C") : NULL;
    if (!C)
        return NULL;
    const npy_intp K = PyArray_DIM(C, 0), kd[2] = {K, D}, k1[1] = {K}, n1[1] = {n};
    PyArrayObject *sums = sq_arr(args[3], 'f', 8, 2, kd, 0, "sums");
    PyArrayObject *counts = sums ? sq_arr(args[4], 'i', 8, 1, k1, 0, "counts") : NULL;
    PyArrayObject *labels = counts ? sq_arr(args[5], 'i', 8, 1, n1, 1, "labels") : NULL;
    PyArrayObject *mind = labels ? sq_arr(args[6], 'f', item, 1, n1, 1, "mind") : NULL;
    if (!mind)
        return NULL;
    PyObject *Cn = PyArray_SimpleNew(2, kd, item == 4 ? NPY_FLOAT32 : NPY_FLOAT64);
    PyObject *psums = PyArray_SimpleNew(2, kd, NPY_FLOAT64);
    PyObject *pcounts = PyArray_SimpleNew(1, k1, NPY_INT64);
    if (!Cn || !psums || !pcounts) {
        Py_XDECREF(Cn);
        Py_XDECREF(psums);
        Py_XDECREF(pcounts);
        return NULL;
    }
    double stats[3];
    int64_t empty;
#define SQ_D(a) PyArray_DATA((PyArrayObject *)(a))
    if (item == 4)
        empty = update_assign_f32(SQ_D(X), n, SQ_D(C), K, D, SQ_D(sums), SQ_D(counts), chunk, SQ_D(labels), SQ_D(mind),
                                  SQ_D(Cn), SQ_D(psums), SQ_D(pcounts), stats);
    else
        empty = update_assign_f64(SQ_D(X), n, SQ_D(C), K, D, SQ_D(sums), SQ_D(counts), chunk, SQ_D(labels), SQ_D(mind),
                                  SQ_D(Cn), SQ_D(psums), SQ_D(pcounts), stats);
#undef SQ_D
    if (empty < 0) {
        Py_DECREF(Cn);
        Py_DECREF(psums);
        Py_DECREF(pcounts);
        return PyErr_NoMemory();
    }
    return Py_BuildValue("(NddNNdL)", Cn, stats[0], stats[1], psums, pcounts, stats[2], (long long)empty);
}

static PyMethodDef sq_methods[] = {
    {"update_assign", (PyCFunction)(void (*)(void))sq_py_update_assign, METH_FASTCALL,
     "One Lloyd iteration of a small problem (see sqdist._ckernels.update_assign_direct)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef sq_module = {PyModuleDef_HEAD_INIT, "_sqdist_omp", NULL, -1, sq_methods, NULL, NULL, NULL, NULL};

SQ_EXPORT PyObject *PyInit__sqdist_omp(void)
{
    import_array();
    return PyModule_Create(&sq_module);
}
#endif
