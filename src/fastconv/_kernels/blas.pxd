# Row-major GEMM on top of SciPy's Fortran BLAS. Callers run it single-threaded inside their own
# parallel regions (fastconv limits BLAS threads with threadpoolctl around every kernel call).
from cython cimport floating

cdef void gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               floating alpha, const floating* a, Py_ssize_t lda,
               const floating* b, Py_ssize_t ldb,
               floating beta, floating* c, Py_ssize_t ldc) noexcept nogil
