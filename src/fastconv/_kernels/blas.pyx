from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef void gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               floating alpha, const floating* a, Py_ssize_t lda,
               const floating* b, Py_ssize_t ldb,
               floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """C[m, n] = alpha * op(A) @ op(B) + beta * C, all row-major.

    A row-major product is the column-major product of the transposes, so B and A swap places in the
    Fortran call. Every size must fit a BLAS int; the Python wrappers tile work so that they do.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int m_ = <int>m, n_ = <int>n, k_ = <int>k
    cdef int lda_ = <int>lda, ldb_ = <int>ldb, ldc_ = <int>ldc
    if m == 0 or n == 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &n_, &m_, &k_, &alpha, <float*>b, &ldb_, <float*>a, &lda_, &beta, c, &ldc_)
    else:
        dgemm(&tb, &ta, &n_, &m_, &k_, &alpha, <double*>b, &ldb_, <double*>a, &lda_, &beta, c, &ldc_)
