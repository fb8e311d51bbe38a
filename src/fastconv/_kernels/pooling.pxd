# Max-pooling kernels. Geometry reuses ConvGeometry (kernel = pool window, dilation 1, groups 1, out_c = in_c).
# Indices are flat positions h * W + w within each input plane, as in PyTorch; padded cells never win.
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t
from fastconv._kernels.geometry cimport ConvGeometry

cdef void max_pool2d_forward_nhwc(const floating[:, :, :, ::1] x,  # IN  (N, H, W, C)
                                  floating[:, :, :, ::1] out,      # OUT (N, Ho, Wo, C)
                                  int64_t* indices,                # OUT (N, Ho, Wo, C) or NULL
                                  ConvGeometry geom, int n_threads) noexcept nogil

cdef void max_pool2d_forward_nchw(const floating[:, :, :, ::1] x,  # IN  (N, C, H, W)
                                  floating[:, :, :, ::1] out,      # OUT (N, C, Ho, Wo)
                                  int64_t* indices,                # OUT (N, C, Ho, Wo) or NULL
                                  ConvGeometry geom, int n_threads) noexcept nogil

# Scatter-add of grad_out onto the winning cells; each (image, channel block) has one owner.
cdef void max_pool2d_backward_nhwc(const floating[:, :, :, ::1] grad_out,  # IN  (N, Ho, Wo, C)
                                   const int64_t[:, :, :, ::1] indices,     # IN  (N, Ho, Wo, C)
                                   floating[:, :, :, ::1] grad_in,          # OUT (N, H, W, C)
                                   int n_threads) noexcept nogil

cdef void max_pool2d_backward_nchw(const floating[:, :, :, ::1] grad_out,  # IN  (N, C, Ho, Wo)
                                   const int64_t[:, :, :, ::1] indices,     # IN  (N, C, Ho, Wo)
                                   floating[:, :, :, ::1] grad_in,          # OUT (N, C, H, W)
                                   int n_threads) noexcept nogil

# channels_last, the same as a gather: each input cell sums the gradients of the windows that contain it and chose
# it, in the order the scatter adds them, and is written once. Returns how many grad_out cells found their index
# inside their own window: grad_out's size when the indices come from the forward pass with the same geometry. A
# smaller count means the gradients of the other cells are missing from grad_in (use the scatter for such
# indices). Indices are only compared, never followed, so any value is safe.
cdef int64_t max_pool2d_backward_windowed_nhwc(const floating[:, :, :, ::1] grad_out,  # IN  (N, Ho, Wo, C)
                                               const int64_t[:, :, :, ::1] indices,     # IN  (N, Ho, Wo, C)
                                               floating[:, :, :, ::1] grad_in,          # OUT (N, H, W, C)
                                               ConvGeometry geom, int n_threads) noexcept nogil

# Window positions instead of flat indices (channels_last only): each winner's index dy * kernel_w + dx in its
# window, padded cells counted, as uint8 (windows of at most 256 cells). The backward returns how many
# (window, channel) pairs named a cell of their window inside the input: all of them for the forward's indices.
cdef void max_pool2d_forward_window_nhwc(const floating[:, :, :, ::1] x,  # IN  (N, H, W, C)
                                         floating[:, :, :, ::1] out,      # OUT (N, Ho, Wo, C)
                                         uint8_t* window_indices,         # OUT (N, Ho, Wo, C)
                                         ConvGeometry geom, int n_threads) noexcept nogil

cdef int64_t max_pool2d_backward_window_nhwc(const floating[:, :, :, ::1] grad_out,       # IN  (N, Ho, Wo, C)
                                             const uint8_t[:, :, :, ::1] window_indices,  # IN  (N, Ho, Wo, C)
                                             floating[:, :, :, ::1] grad_in,              # OUT (N, H, W, C)
                                             ConvGeometry geom, int n_threads) noexcept nogil
