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

/* Bumped whenever an exported signature changes; the loader refuses a library of another version. */
#define SQ_ABI 7

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

#define REAL double
#define IDX int64_t
#define FN(name) name##_f64
#include "_ckernels_impl.h"
#undef REAL
#undef IDX
#undef FN

#ifdef SQ_PYTHON
/* One CPython entry point for the small-problem iteration (called ~13 times per fit at the
 * exercise's size, where a ctypes call with ten array addresses cost 3x the arithmetic).
 * Built only by setup.py (which defines SQ_PYTHON); imported by sqdist._ckernels only after
 * library() accepted this file (the OpenMP runtime check).  The arrays come through the
 * buffer protocol, checked for C-contiguity, item size and shape. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int sq_get(PyObject *o, Py_buffer *b, Py_ssize_t item, int ndim, const Py_ssize_t *shape, int writable,
                  const char *name)
{
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    /* floats: the arrays named X, C, sums, mind, Cn, psums; integers (int64): counts, labels, pcounts */
    const int integer = !strcmp(name, "counts") || !strcmp(name, "labels") || !strcmp(name, "pcounts");
    const char f = b->format && b->format[0] ? b->format[strlen(b->format) - 1] : '?';
    int ok = b->itemsize == item && b->ndim == ndim && (integer ? (f == 'l' || f == 'q') : (f == 'f' || f == 'd'));
    for (int d = 0; ok && d < ndim; d++)
        ok = shape[d] < 0 || b->shape[d] == shape[d];
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "update_assign: %s has the wrong dtype or shape", name);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* update_assign(X, C, sums, counts, chunk, labels, mind, Cn, psums, pcounts)
 *   -> (empty clusters, largest move, sum of squared moves, inertia) */
static PyObject *sq_py_update_assign(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "update_assign takes 10 arguments");
        return NULL;
    }
    Py_buffer b[9];
    int got = 0;
    PyObject *res = NULL;
    Py_buffer peek;
    if (PyObject_GetBuffer(args[0], &peek, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    const Py_ssize_t item = peek.itemsize, n = peek.ndim == 2 ? peek.shape[0] : -1, D = peek.ndim == 2 ? peek.shape[1] : -1;
    PyBuffer_Release(&peek);
    if ((item != 4 && item != 8) || n < 0) {
        PyErr_SetString(PyExc_ValueError, "update_assign: X must be a 2-D float32 or float64 array");
        return NULL;
    }
    const long long chunk = PyLong_AsLongLong(args[4]);
    if (chunk <= 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "update_assign: chunk must be positive");
        return NULL;
    }
    if (sq_get(args[0], &b[got], item, 2, (const Py_ssize_t[]){n, D}, 0, "X") < 0)
        goto done;
    got++;
    if (sq_get(args[1], &b[got], item, 2, (const Py_ssize_t[]){-1, D}, 0, "C") < 0)
        goto done;
    const Py_ssize_t K = b[got].shape[0];
    got++;
    const Py_ssize_t kd[2] = {K, D}, k1[1] = {K}, n1[1] = {n};
    struct { int arg; Py_ssize_t item; int ndim; const Py_ssize_t *shape; int w; const char *name; } spec[] = {
        {2, 8, 2, kd, 0, "sums"}, {3, 8, 1, k1, 0, "counts"}, {5, 8, 1, n1, 1, "labels"},
        {6, item, 1, n1, 1, "mind"}, {7, item, 2, kd, 1, "Cn"}, {8, 8, 2, kd, 1, "psums"}, {9, 8, 1, k1, 1, "pcounts"}};
    for (int s = 0; s < 7; s++) {
        if (sq_get(args[spec[s].arg], &b[got], spec[s].item, spec[s].ndim, spec[s].shape, spec[s].w, spec[s].name) < 0)
            goto done;
        got++;
    }
    double stats[3];
    int64_t empty;
    if (item == 4)
        empty = update_assign_f32(b[0].buf, n, b[1].buf, K, D, b[2].buf, b[3].buf, chunk, b[4].buf, b[5].buf, b[6].buf,
                                  b[7].buf, b[8].buf, stats);
    else
        empty = update_assign_f64(b[0].buf, n, b[1].buf, K, D, b[2].buf, b[3].buf, chunk, b[4].buf, b[5].buf, b[6].buf,
                                  b[7].buf, b[8].buf, stats);
    if (empty < 0)
        PyErr_NoMemory();
    else
        res = Py_BuildValue("(Lddd)", (long long)empty, stats[0], stats[1], stats[2]);
done:
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&b[i]);
    return res;
}

static PyMethodDef sq_methods[] = {
    {"update_assign", (PyCFunction)(void (*)(void))sq_py_update_assign, METH_FASTCALL,
     "One Lloyd iteration of a small problem (see sqdist._ckernels.update_assign_direct)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef sq_module = {PyModuleDef_HEAD_INIT, "_sqdist_omp", NULL, -1, sq_methods, NULL, NULL, NULL, NULL};

SQ_EXPORT PyObject *PyInit__sqdist_omp(void) { return PyModule_Create(&sq_module); }
#endif
