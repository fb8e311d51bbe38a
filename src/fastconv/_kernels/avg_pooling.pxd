# Average pooling, global average pooling and global max pooling, channels_last (NHWC) and channels_first (NCHW).
# Window geometry reuses ConvGeometry (kernel = pool window, dilation 1, groups 1, out_c = in_c); ConvGeometry
# holds only the top/left padding, so the bottom/right padding travels as its own argument where it matters.
# Global pooling reduces the whole (H, W) plane to one value per (image, channel); its outputs are (N, C).
from cython cimport floating
from libc.stdint cimport int64_t
from fastconv._kernels.geometry cimport ConvGeometry

# ---------------------------------------------------------------- tables shared by forward and backward

# The reciprocal of each window's divisor (PyTorch's rule): with count_include_pad the window's cells inside the
# padded input [-pad_top, H + pad_bottom) x [-pad_left, W + pad_right); without it, its real input cells only.
# Cells of a ceil_mode window that lie beyond the padding never count.
cdef void avg_pool2d_scales(ConvGeometry geom, Py_ssize_t pad_bottom, Py_ssize_t pad_right,
                            bint count_include_pad,
                            floating[:, ::1] scales) noexcept nogil        # OUT (Ho, Wo)

# For each input column iw, the output columns whose windows hold it: [ranges[iw, 0], ranges[iw, 1]).
cdef void avg_pool2d_column_windows(ConvGeometry geom,
                                    Py_ssize_t[:, ::1] ranges) noexcept nogil    # OUT (W, 2)

# ---------------------------------------------------------------- average pooling

cdef void avg_pool2d_forward_nhwc(const floating[:, :, :, ::1] x,     # IN  (N, H, W, C)
                                  const floating[:, ::1] scales,      # IN  (Ho, Wo)
                                  floating[:, :, :, ::1] out,         # OUT (N, Ho, Wo, C)
                                  ConvGeometry geom, int n_threads) noexcept nogil

cdef void avg_pool2d_forward_nchw(const floating[:, :, :, ::1] x,     # IN  (N, C, H, W)
                                  const floating[:, ::1] scales,      # IN  (Ho, Wo)
                                  floating[:, :, :, ::1] out,         # OUT (N, C, Ho, Wo)
                                  ConvGeometry geom, int n_threads) noexcept nogil

# Gather: each input cell sums the scaled gradients of the windows that hold it, so it has exactly one writer.
cdef void avg_pool2d_backward_nhwc(const floating[:, :, :, ::1] grad_out,    # IN  (N, Ho, Wo, C)
                                   const floating[:, ::1] scales,            # IN  (Ho, Wo)
                                   const Py_ssize_t[:, ::1] column_windows,  # IN  (W, 2)
                                   floating[:, :, :, ::1] grad_in,           # OUT (N, H, W, C)
                                   ConvGeometry geom, int n_threads) noexcept nogil

cdef void avg_pool2d_backward_nchw(const floating[:, :, :, ::1] grad_out,    # IN  (N, C, Ho, Wo)
                                   const floating[:, ::1] scales,            # IN  (Ho, Wo)
                                   const Py_ssize_t[:, ::1] column_windows,  # IN  (W, 2)
                                   floating[:, :, :, ::1] grad_in,           # OUT (N, C, H, W)
                                   ConvGeometry geom, int n_threads) noexcept nogil

# ---------------------------------------------------------------- global average pooling

cdef void global_avg_pool2d_forward_nhwc(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C)
                                         floating[:, ::1] out,             # OUT (N, C)
                                         int n_threads) noexcept nogil

cdef void global_avg_pool2d_forward_nchw(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                                         floating[:, ::1] out,             # OUT (N, C)
                                         int n_threads) noexcept nogil

cdef void global_avg_pool2d_backward_nhwc(const floating[:, ::1] grad_out,     # IN  (N, C)
                                          floating[:, :, :, ::1] grad_in,      # OUT (N, H, W, C)
                                          int n_threads) noexcept nogil

cdef void global_avg_pool2d_backward_nchw(const floating[:, ::1] grad_out,     # IN  (N, C)
                                          floating[:, :, :, ::1] grad_in,      # OUT (N, C, H, W)
                                          int n_threads) noexcept nogil

# ---------------------------------------------------------------- global max pooling
# indices: flat h * W + w of the winner in its plane; the first maximum wins, a NaN beats any number and a later
# NaN takes the index (max_pool2d's rule).

cdef void global_max_pool2d_forward_nhwc(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C)
                                         floating[:, ::1] out,             # OUT (N, C)
                                         int64_t* indices,                 # OUT (N, C) or NULL
                                         int n_threads) noexcept nogil

cdef void global_max_pool2d_forward_nchw(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                                         floating[:, ::1] out,             # OUT (N, C)
                                         int64_t* indices,                 # OUT (N, C) or NULL
                                         int n_threads) noexcept nogil

# indices must lie in [0, H * W) (checked by the Python wrapper).
cdef void global_max_pool2d_backward_nhwc(const floating[:, ::1] grad_out,     # IN  (N, C)
                                          const int64_t[:, ::1] indices,       # IN  (N, C)
                                          floating[:, :, :, ::1] grad_in,      # OUT (N, H, W, C)
                                          int n_threads) noexcept nogil

cdef void global_max_pool2d_backward_nchw(const floating[:, ::1] grad_out,     # IN  (N, C)
                                          const int64_t[:, ::1] indices,       # IN  (N, C)
                                          floating[:, :, :, ::1] grad_in,      # OUT (N, C, H, W)
                                          int n_threads) noexcept nogil
