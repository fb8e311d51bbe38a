"""Sums over many rows of a (rows, channels) array: the bias gradient of a channels_last convolution, whose
grad_output may be 90 MB. NumPy reduces such an array on one thread; here fixed blocks of rows are summed in
parallel and their sums added in block order, so the result never depends on the thread count."""
from cython.parallel cimport prange
from cython cimport floating
from libc.string cimport memset

from fastconv._kernels.finite_check cimport fc_any_nonfinite_f32, fc_any_nonfinite_f64

cdef enum:
    # Rows per block: small enough that blocks share out among threads, large enough that the partial sums
    # (one row per block) stay a small fraction of the input.
    BLOCK_ROWS = 256


def block_count(Py_ssize_t rows):
    """Rows of the ``partial`` buffer that column_sums needs."""
    return (rows + BLOCK_ROWS - 1) // BLOCK_ROWS


def column_sums(const floating[:, ::1] a, floating[::1] out, floating[:, ::1] partial, int n_threads):
    """out[k] = sum over rows of a[row, k]. partial: (block_count(rows), channels) scratch."""
    cdef Py_ssize_t rows = a.shape[0], channels = a.shape[1]
    cdef Py_ssize_t n_blocks = partial.shape[0]
    cdef Py_ssize_t b, row, row1, k
    cdef floating* acc
    cdef const floating* src

    with nogil:
        for b in prange(n_blocks, num_threads=n_threads, schedule="static"):
            acc = &partial[b, 0]
            memset(acc, 0, channels * sizeof(floating))
            row1 = (b + 1) * BLOCK_ROWS
            if row1 > rows:
                row1 = rows
            for row in range(b * BLOCK_ROWS, row1):
                src = &a[row, 0]
                for k in range(channels):
                    acc[k] += src[k]
        memset(&out[0], 0, channels * sizeof(floating))
        for b in range(n_blocks):
            for k in range(channels):
                out[k] += partial[b, k]


cdef enum:
    # Elements per block of all_finite: a few pages, so blocks share out among threads.
    FINITE_BLOCK = 16384


def all_finite(const floating[::1] a, int n_threads):
    """Whether `a` holds no NaN and no infinity, checked in parallel (NumPy's reductions run on one thread)."""
    cdef Py_ssize_t n = a.shape[0], n_blocks = (n + FINITE_BLOCK - 1) // FINITE_BLOCK
    cdef Py_ssize_t b, length
    cdef Py_ssize_t n_bad = 0

    with nogil:
        for b in prange(n_blocks, num_threads=n_threads, schedule="static"):
            length = n - b * FINITE_BLOCK
            if length > FINITE_BLOCK:
                length = FINITE_BLOCK
            if floating is float:
                n_bad += fc_any_nonfinite_f32(&a[b * FINITE_BLOCK], length)
            else:
                n_bad += fc_any_nonfinite_f64(&a[b * FINITE_BLOCK], length)
    return n_bad == 0
