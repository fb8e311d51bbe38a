# The non-finite counts of finite_check.h, for the kernels that check their operands.

cdef extern from "finite_check.h" nogil:
    int fc_any_nonfinite_f32(const float *p, Py_ssize_t n)
    int fc_any_nonfinite_f64(const double *p, Py_ssize_t n)
