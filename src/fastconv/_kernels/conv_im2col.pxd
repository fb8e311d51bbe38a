# im2col / col2im + GEMM convolution, for NHWC/HWIO and NCHW/OIHW. Work is cut into tiles of output pixels
# whose size depends only on the shape (never on the thread count), so results are identical for any number of
# threads. Each thread owns one column buffer row of `cols`; BLAS must run single-threaded meanwhile.
from cython cimport floating
from fastconv._kernels.geometry cimport ConvGeometry

cdef void conv2d_forward_nhwc(const floating[:, :, :, ::1] x,       # IN  (N, H, W, C)
                              const floating[:, :, :, ::1] weight,  # IN  (R, S, C/groups, K)
                              const floating* bias,                 # IN  (K,) or NULL
                              floating[:, :, :, ::1] out,           # OUT (N, Ho, Wo, K)
                              floating[:, ::1] cols,                # SCRATCH (n_threads, >= tile * R*S*C/groups)
                              ConvGeometry geom, Py_ssize_t tile, int n_threads) noexcept nogil

cdef void conv2d_grad_input_nhwc(const floating[:, :, :, ::1] grad_out,  # IN  (N, Ho, Wo, K)
                                 const floating[:, :, :, ::1] weight,    # IN  (R, S, C/groups, K)
                                 floating[:, :, :, ::1] grad_in,         # OUT (N, H, W, C)
                                 floating[:, ::1] cols,                  # SCRATCH (n_threads, >= tile * R*S*C/groups)
                                 ConvGeometry geom, Py_ssize_t tile, int n_threads) noexcept nogil

cdef void conv2d_grad_weight_nhwc(const floating[:, :, :, ::1] grad_out,  # IN  (N, Ho, Wo, K)
                                  const floating[:, :, :, ::1] x,         # IN  (N, H, W, C)
                                  floating[:, :, :, ::1] grad_weight,     # OUT (R, S, C/groups, K)
                                  floating[:, ::1] cols,                  # SCRATCH (n_threads, >= tile * cblock)
                                  ConvGeometry geom, Py_ssize_t tile, Py_ssize_t cblock,
                                  int n_threads) noexcept nogil

cdef void conv2d_forward_nchw(const floating[:, :, :, ::1] x,       # IN  (N, C, H, W)
                              const floating[:, :, :, ::1] weight,  # IN  (K, C/groups, R, S)
                              const floating* bias,                 # IN  (K,) or NULL
                              floating[:, :, :, ::1] out,           # OUT (N, K, Ho, Wo)
                              floating[:, ::1] cols,                # SCRATCH (n_threads, >= tile * R*S*C/groups)
                              ConvGeometry geom, Py_ssize_t tile, int n_threads) noexcept nogil

cdef void conv2d_grad_input_nchw(const floating[:, :, :, ::1] grad_out,  # IN  (N, K, Ho, Wo)
                                 const floating[:, :, :, ::1] weight,    # IN  (K, C/groups, R, S)
                                 floating[:, :, :, ::1] grad_in,         # OUT (N, C, H, W)
                                 floating[:, ::1] cols,                  # SCRATCH (n_threads, >= tile * R*S*C/groups)
                                 ConvGeometry geom, Py_ssize_t tile, int n_threads) noexcept nogil

# The weight gradient is produced as (R, S, K, C/groups); the caller permutes it to OIHW.
cdef void conv2d_grad_weight_nchw(const floating[:, :, :, ::1] grad_out,    # IN  (N, K, Ho, Wo)
                                  const floating[:, :, :, ::1] x,           # IN  (N, C, H, W)
                                  floating[:, :, :, ::1] grad_weight_rskc,  # OUT (R, S, K, C/groups)
                                  floating[:, ::1] cols,                    # SCRATCH (n_threads, >= tile * cblock)
                                  ConvGeometry geom, Py_ssize_t tile, Py_ssize_t cblock,
                                  int n_threads) noexcept nogil
