# Direct 2-D convolution in NHWC / HWIO, no column buffer. Kernels trust their inputs: shapes, strides,
# padding and groups are validated by fastconv.functional before any call.
from cython cimport floating
from fastconv._kernels.geometry cimport ConvGeometry

# out[n, ho, wo, k] = bias[k] + sum_{r, s, c} x[n, ho*sh - pt + r*dh, wo*sw - pl + s*dw, g*Cg + c] * w[r, s, c, k]
# bias may be NULL.
cdef void conv2d_forward_nhwc(const floating[:, :, :, ::1] x,       # IN  (N, H, W, C)
                              const floating[:, :, :, ::1] weight,  # IN  (R, S, C/groups, K)
                              const floating* bias,                 # IN  (K,) or NULL
                              floating[:, :, :, ::1] out,           # OUT (N, Ho, Wo, K)
                              ConvGeometry geom, int n_threads) noexcept nogil

# The same with register tiles (direct_tile.h) at the CPU's best instruction set. The weight is packed as
# (groups, ceil(K/groups / lanes), R, S, C/groups, lanes), zero-padded, lanes = conv_direct.tile_shape(itemsize,
# K/groups)[1] (the tile shape follows K/groups); `zeros` holds at least C/groups zeros.
# relu: write max(out, 0), NaN kept (the fused activation of a Conv2D layer). out_nchw: write out as
# (N, K, Ho, Wo) instead (the channels_first forward, without a transposing pass). batch_inner (NHWC output only):
# tiles run over the images at each output position (no products of padding on small padded images).
# weight_row (not 0): packed_weight is HWIO itself, rows weight_row = K apart (one group, K a whole number of
# lane blocks, rows of at most _layout.HWIO_IN_PLACE_MAX_ROW_BYTES for speed): no packing pass; with
# copy_per_pass, each pass of the kernel copies the rows it reads into a packed buffer of its own first.
# Returns the number of such copies that met a NaN or an infinity (counted with check_finite), else 0.
cdef int conv2d_forward_nhwc_tiled(const floating[:, :, :, ::1] x,     # IN  (N, H, W, C)
                                   const floating[::1] packed_weight,  # IN  packed, see above
                                   const floating* bias,               # IN  (K,) or NULL
                                   const floating* zeros,              # IN  (C/groups,) zeros
                                   floating[:, :, :, ::1] out,         # OUT (N, Ho, Wo, K) or (N, K, Ho, Wo)
                                   ConvGeometry geom, Py_ssize_t unit_tiles, bint relu, bint out_nchw,
                                   bint batch_inner, int n_threads, Py_ssize_t weight_row=*,
                                   bint copy_per_pass=*, bint check_finite=*,
                                   bint weight_oihw=*) noexcept nogil

# Weight gradient with register tiles; grad_out's channels are zero-padded per group to whole blocks of lanes
# and grad_weight must be zero-filled (accumulated into), see conv_direct.grad_weight_nhwc_tiled. Returns 0, or
# -1 where its workspace (a chunk's packed output gradient) could not be allocated.
cdef int conv2d_grad_weight_nhwc_tiled(const floating[:, :, :, ::1] grad_out,  # IN  (N, Ho, Wo, padded K)
                                       const floating[:, :, :, ::1] x,         # IN  (N, H, W, C)
                                       floating[:, :, :, ::1] grad_weight,     # IN/OUT (R, S, C/groups, K)
                                       ConvGeometry geom, Py_ssize_t chunk_rows, int n_threads) noexcept nogil

# grad_input: each input pixel gathers from the output pixels it fed, so every element has one owner.
cdef void conv2d_grad_input_nhwc(const floating[:, :, :, ::1] grad_out,  # IN  (N, Ho, Wo, K)
                                 const floating[:, :, :, ::1] weight_t,  # IN  (R, S, K, C/groups)
                                 floating[:, :, :, ::1] grad_in,         # OUT (N, H, W, C)
                                 ConvGeometry geom, int n_threads) noexcept nogil

# grad_weight: each (r, s, channel block) of the weight is owned by one thread, summed over pixels in order.
cdef void conv2d_grad_weight_nhwc(const floating[:, :, :, ::1] grad_out,  # IN  (N, Ho, Wo, K)
                                  const floating[:, :, :, ::1] x,         # IN  (N, H, W, C)
                                  floating[:, :, :, ::1] grad_weight,     # OUT (R, S, C/groups, K)
                                  ConvGeometry geom, int n_threads) noexcept nogil
