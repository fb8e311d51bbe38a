# Depthwise 2-D convolution with a channel multiplier M: input channel c feeds output channels c*M + m, m < M
# (K = C*M), each through its own R x S filter. Kernels trust their inputs (validated by
# fastconv.functional_depthwise); geometry has groups == C and out_c == K.
#
#   out[n, ho, wo, c*M + m] = bias[c*M + m]
#       + sum_{r, s} x[n, ho*sh - pt + r*dh, wo*sw - pl + s*dw, c] * w[r, s, c*M + m]
#
# NHWC kernels vectorise over 64-byte blocks of channels ("lanes": 16 float32 / 8 float64). Their weights are
# packed lane block by lane block, zero-padded past the last channel (see conv_depthwise.forward_nhwc). Work items
# are (image, band of rows, group of lane blocks); `group_blocks` and `band_rows` only shape the work, never the
# results. With `stream` (used only where the output is 64-byte aligned) the output goes to memory by
# non-temporal stores.
# NCHW kernels vectorise along the rows of one channel plane; weights are (K, R*S) (OIHW without its 1 axis).
from cython cimport floating
from fastconv._kernels.geometry cimport ConvGeometry

# bias: (K rounded up to whole lane blocks,), zeros when the convolution has none.
cdef void depthwise_forward_nhwc(const floating[:, :, :, ::1] x,       # IN  (N, H, W, C)
                                 const floating[:, :, ::1] weight,     # IN  (K blocks, R*S, lanes)
                                 const floating[::1] bias,             # IN  (Kpad,)
                                 floating[:, :, :, ::1] out,           # OUT (N, Ho, Wo, K)
                                 ConvGeometry geom, Py_ssize_t group_blocks, Py_ssize_t band_rows, bint stream,
                                 int n_threads) noexcept nogil

# Gathered per input pixel (every element of grad_in has one owner).
# weight_t[cb, (r*M + m)*S + S-1-s, l] = w[r, s, (cb*lanes + l)*M + m] (kernel rows reversed).
cdef void depthwise_grad_input_nhwc(const floating[:, :, :, ::1] grad_out,  # IN  (N, Ho, Wo, K)
                                    const floating[:, :, ::1] weight_t,     # IN  (C blocks, R*M*S, lanes)
                                    floating[:, :, :, ::1] grad_in,         # OUT (N, H, W, C)
                                    ConvGeometry geom, Py_ssize_t group_blocks, Py_ssize_t band_rows, bint stream,
                                    int n_threads) noexcept nogil

# Each chunk (image, band of output rows) sums into its own slice of `partial`; the chunks are then added in
# chunk order, so the result is the same for any thread count.
cdef void depthwise_grad_weight_nhwc(const floating[:, :, :, ::1] grad_out,  # IN  (N, Ho, Wo, K)
                                     const floating[:, :, :, ::1] x,         # IN  (N, H, W, C)
                                     floating[:, :, ::1] partial,            # SCRATCH (chunks, R*S, Kpad)
                                     floating[:, ::1] grad_weight,           # OUT (R*S, K)
                                     ConvGeometry geom, Py_ssize_t group_blocks, Py_ssize_t band_rows,
                                     int n_threads) noexcept nogil

cdef void depthwise_forward_nchw(const floating[:, :, :, ::1] x,       # IN  (N, C, H, W)
                                 const floating[:, ::1] weight,        # IN  (K, R*S)
                                 const floating* bias,                 # IN  (K,) or NULL
                                 floating[:, :, :, ::1] out,           # OUT (N, K, Ho, Wo)
                                 ConvGeometry geom, int n_threads) noexcept nogil

cdef void depthwise_grad_input_nchw(const floating[:, :, :, ::1] grad_out,  # IN  (N, K, Ho, Wo)
                                    const floating[:, ::1] weight,          # IN  (K, R*S)
                                    floating[:, :, :, ::1] grad_in,         # OUT (N, C, H, W)
                                    ConvGeometry geom, int n_threads) noexcept nogil

# Each image sums into its own slice of `partial`; images are then added in order.
cdef void depthwise_grad_weight_nchw(const floating[:, :, :, ::1] grad_out,  # IN  (N, K, Ho, Wo)
                                     const floating[:, :, :, ::1] x,         # IN  (N, C, H, W)
                                     floating[:, :, ::1] partial,            # SCRATCH (N, K, R*S)
                                     floating[:, ::1] grad_weight,           # OUT (K, R*S)
                                     ConvGeometry geom, int n_threads) noexcept nogil
