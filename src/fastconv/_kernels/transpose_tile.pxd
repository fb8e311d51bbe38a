# The strided 2-D transposes of transpose_tile.h (register blocks at AVX2 and AVX-512), for the kernels that use
# them: the weight packing, the layout transposes and the tiled forward's OIHW passes.

cdef extern from "transpose_tile.h" nogil:
    ctypedef void (*fc_transpose_f32)(const float *, Py_ssize_t, float *, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t) noexcept nogil
    ctypedef void (*fc_transpose_f64)(const double *, Py_ssize_t, double *, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t) noexcept nogil
    fc_transpose_f32 fc_transpose_for_f32(int isa)
    fc_transpose_f64 fc_transpose_for_f64(int isa)
