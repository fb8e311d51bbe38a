"""im2col / col2im + GEMM convolution kernels for both layouts.

Layout of the column buffers (one group at a time):
- NHWC: one row per output pixel, columns ordered (r, s, c), i.e. the rows of the HWIO weight viewed as a
  (R*S*C/groups, K) matrix, so  out_tile = cols @ weight.
- NCHW: one row per (c, r, s), i.e. the columns of the OIHW weight viewed as (K, C/groups*R*S), one column per
  output pixel, so  out_tile = weight @ cols.
A 1x1, stride-1, unpadded convolution needs no columns: the input already is the matrix.
"""
from cython.parallel cimport prange, threadid
from cython cimport floating
from libc.string cimport memcpy, memset

from fastconv._kernels.blas cimport gemm
from fastconv._kernels.geometry cimport ConvGeometry


cdef inline bint is_pointwise(ConvGeometry geom) noexcept nogil:
    return (geom.kernel_h == 1 and geom.kernel_w == 1 and geom.stride_h == 1 and geom.stride_w == 1
            and geom.pad_top == 0 and geom.pad_left == 0
            and geom.out_h == geom.in_h and geom.out_w == geom.in_w)


# ---------------------------------------------------------------- NHWC

cdef void im2col_nhwc(const floating[:, :, :, ::1] x, ConvGeometry geom, Py_ssize_t g,
                      Py_ssize_t p0, Py_ssize_t p1, floating* buf) noexcept nogil:
    """buf[p - p0, (r, s, c)] = x[n, ih, iw, g*Cg + c] for flat output pixels p in [p0, p1), zero in padding."""
    cdef Py_ssize_t Cg = geom.in_c // geom.groups
    cdef Py_ssize_t hw_out = geom.out_h * geom.out_w
    cdef Py_ssize_t p, n, rem, ho, wo, r, s, ih, iw
    cdef floating* dst = buf
    for p in range(p0, p1):
        n = p // hw_out
        rem = p - n * hw_out
        ho = rem // geom.out_w
        wo = rem - ho * geom.out_w
        for r in range(geom.kernel_h):
            ih = ho * geom.stride_h - geom.pad_top + r * geom.dilation_h
            for s in range(geom.kernel_w):
                iw = wo * geom.stride_w - geom.pad_left + s * geom.dilation_w
                if 0 <= ih < geom.in_h and 0 <= iw < geom.in_w:
                    memcpy(dst, &x[n, ih, iw, g * Cg], Cg * sizeof(floating))
                else:
                    memset(dst, 0, Cg * sizeof(floating))
                dst += Cg


cdef void col2im_add_nhwc(floating[:, :, :, ::1] grad_in, ConvGeometry geom, Py_ssize_t g, Py_ssize_t n,
                          Py_ssize_t p0, Py_ssize_t p1, const floating* buf) noexcept nogil:
    """grad_in[n, ih, iw, g*Cg + c] += buf[p - p0, (r, s, c)] for pixels p of image n in [p0, p1)."""
    cdef Py_ssize_t Cg = geom.in_c // geom.groups
    cdef Py_ssize_t p, ho, wo, r, s, ih, iw, c
    cdef const floating* src = buf
    cdef floating* dst
    for p in range(p0, p1):
        ho = p // geom.out_w
        wo = p - ho * geom.out_w
        for r in range(geom.kernel_h):
            ih = ho * geom.stride_h - geom.pad_top + r * geom.dilation_h
            for s in range(geom.kernel_w):
                iw = wo * geom.stride_w - geom.pad_left + s * geom.dilation_w
                if 0 <= ih < geom.in_h and 0 <= iw < geom.in_w:
                    dst = &grad_in[n, ih, iw, g * Cg]
                    for c in range(Cg):
                        dst[c] += src[c]
                src += Cg


cdef void shifted_channels_nhwc(const floating[:, :, :, ::1] x, ConvGeometry geom, Py_ssize_t g,
                                Py_ssize_t r, Py_ssize_t s, Py_ssize_t c0, Py_ssize_t c1,
                                Py_ssize_t p0, Py_ssize_t p1, floating* buf) noexcept nogil:
    """buf[p - p0, c - c0] = the input seen by tap (r, s) at flat output pixel p, channels [c0, c1) of group g."""
    cdef Py_ssize_t Cg = geom.in_c // geom.groups, nc = c1 - c0
    cdef Py_ssize_t hw_out = geom.out_h * geom.out_w
    cdef Py_ssize_t p, n, rem, ho, wo, ih, iw
    cdef floating* dst = buf
    for p in range(p0, p1):
        n = p // hw_out
        rem = p - n * hw_out
        ho = rem // geom.out_w
        wo = rem - ho * geom.out_w
        ih = ho * geom.stride_h - geom.pad_top + r * geom.dilation_h
        iw = wo * geom.stride_w - geom.pad_left + s * geom.dilation_w
        if 0 <= ih < geom.in_h and 0 <= iw < geom.in_w:
            memcpy(dst, &x[n, ih, iw, g * Cg + c0], nc * sizeof(floating))
        else:
            memset(dst, 0, nc * sizeof(floating))
        dst += nc


cdef void conv2d_forward_nhwc(const floating[:, :, :, ::1] x,
                              const floating[:, :, :, ::1] weight,
                              const floating* bias,
                              floating[:, :, :, ::1] out,
                              floating[:, ::1] cols,
                              ConvGeometry geom, Py_ssize_t tile, int n_threads) noexcept nogil:
    cdef Py_ssize_t C = geom.in_c, K = geom.out_c
    cdef Py_ssize_t Cg = C // geom.groups, Kg = K // geom.groups
    cdef Py_ssize_t rsc = geom.kernel_h * geom.kernel_w * Cg
    cdef Py_ssize_t n_pixels = geom.batch * geom.out_h * geom.out_w
    cdef Py_ssize_t n_tiles = (n_pixels + tile - 1) // tile
    cdef bint pointwise = is_pointwise(geom)
    cdef const floating* x_flat = &x[0, 0, 0, 0]
    cdef floating* out_flat = &out[0, 0, 0, 0]
    cdef Py_ssize_t t, p0, p1, p, k, g, lda
    cdef floating* buf
    cdef const floating* a
    cdef floating beta

    for t in prange(n_tiles, num_threads=n_threads, schedule="dynamic"):
        buf = &cols[threadid(), 0]
        p0 = t * tile
        p1 = p0 + tile
        if p1 > n_pixels:
            p1 = n_pixels
        beta = 0
        if bias != NULL:
            for p in range(p0, p1):
                for k in range(K):
                    out_flat[p * K + k] = bias[k]
            beta = 1
        for g in range(geom.groups):
            if pointwise:
                a = x_flat + p0 * C + g * Cg
                lda = C
            else:
                im2col_nhwc(x, geom, g, p0, p1, buf)
                a = buf
                lda = rsc
            gemm(False, False, p1 - p0, Kg, rsc, <floating>1, a, lda, &weight[0, 0, 0, g * Kg], K,
                 beta, out_flat + p0 * K + g * Kg, K)


cdef enum:
    # A batch of fewer images than this has each image's output rows cut into GRAD_INPUT_BANDS bands (at least
    # tall enough that bands two apart touch no common input row), summed in two parallel rounds, even bands
    # then odd ones: one image per work item left a 7x7 stride-2 RGB stem's input gradient (batch 1) on one
    # thread (perf: 43% of the samples in the other thread's barrier). The bands follow the shape only, so the
    # bits do not depend on the thread count.
    BAND_MAX_BATCH = 4
    GRAD_INPUT_BANDS = 8


cdef inline Py_ssize_t grad_input_band_rows(ConvGeometry geom) noexcept nogil:
    """Output rows per band (see BAND_MAX_BATCH): bands two apart then touch no common input row."""
    cdef Py_ssize_t rows = (geom.out_h + GRAD_INPUT_BANDS - 1) // GRAD_INPUT_BANDS
    cdef Py_ssize_t least = (geom.kernel_h - 1) * geom.dilation_h // geom.stride_h + 1
    return rows if rows > least else least


cdef void grad_input_rows_nhwc(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] weight,
                               floating[:, :, :, ::1] grad_in, ConvGeometry geom, Py_ssize_t n,
                               Py_ssize_t q0, Py_ssize_t q1, Py_ssize_t tile, floating* buf) noexcept nogil:
    """Adds the contributions of output pixels [q0, q1) of image n to grad_in, tile by tile, in pixel order
    (1x1 stride-1 unpadded: writes those pixels' input gradient)."""
    cdef const floating* go = &grad_out[n, 0, 0, 0]
    cdef Py_ssize_t C = geom.in_c, K = geom.out_c
    cdef Py_ssize_t Cg = C // geom.groups, Kg = K // geom.groups
    cdef Py_ssize_t rsc = geom.kernel_h * geom.kernel_w * Cg
    cdef bint pointwise = is_pointwise(geom)
    cdef Py_ssize_t p0, p1, g
    p0 = q0
    while p0 < q1:
        p1 = p0 + tile
        if p1 > q1:
            p1 = q1
        for g in range(geom.groups):
            if pointwise:
                gemm(False, True, p1 - p0, Cg, Kg, <floating>1, go + p0 * K + g * Kg, K,
                     &weight[0, 0, 0, g * Kg], K, <floating>0, &grad_in[n, 0, 0, 0] + p0 * C + g * Cg, C)
            else:
                gemm(False, True, p1 - p0, rsc, Kg, <floating>1, go + p0 * K + g * Kg, K,
                     &weight[0, 0, 0, g * Kg], K, <floating>0, buf, rsc)
                col2im_add_nhwc(grad_in, geom, g, n, p0, p1, buf)
        p0 = p1


cdef inline void grad_input_rows(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] weight,
                                 floating[:, :, :, ::1] grad_in, ConvGeometry geom, Py_ssize_t n, Py_ssize_t q0,
                                 Py_ssize_t q1, Py_ssize_t tile, floating* buf, bint channels_last) noexcept nogil:
    if channels_last:
        grad_input_rows_nhwc(grad_out, weight, grad_in, geom, n, q0, q1, tile, buf)
    else:
        grad_input_rows_nchw(grad_out, weight, grad_in, geom, n, q0, q1, tile, buf)


cdef void grad_input_by_images(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] weight,
                               floating[:, :, :, ::1] grad_in, floating[:, ::1] cols, ConvGeometry geom,
                               Py_ssize_t tile, int n_threads, bint channels_last) noexcept nogil:
    # One image per work item: col2im of overlapping windows then never races (small batches: bands, above).
    cdef Py_ssize_t hw_out = geom.out_h * geom.out_w
    cdef Py_ssize_t image_bytes = geom.in_c * geom.in_h * geom.in_w * sizeof(floating)
    cdef Py_ssize_t band_rows = grad_input_band_rows(geom)
    cdef Py_ssize_t n_bands = (geom.out_h + band_rows - 1) // band_rows
    cdef Py_ssize_t n, b, parity, q1

    if geom.batch < BAND_MAX_BATCH and n_bands > 1:
        for n in range(geom.batch):
            memset(&grad_in[n, 0, 0, 0], 0, image_bytes)
            for parity in range(2):
                for b in prange(parity, n_bands, 2, num_threads=n_threads, schedule="dynamic"):
                    q1 = (b + 1) * band_rows * geom.out_w
                    if q1 > hw_out:
                        q1 = hw_out
                    grad_input_rows(grad_out, weight, grad_in, geom, n, b * band_rows * geom.out_w, q1, tile,
                                    &cols[threadid(), 0], channels_last)
        return
    for n in prange(geom.batch, num_threads=n_threads, schedule="dynamic"):
        memset(&grad_in[n, 0, 0, 0], 0, image_bytes)
        grad_input_rows(grad_out, weight, grad_in, geom, n, 0, hw_out, tile, &cols[threadid(), 0], channels_last)


cdef void conv2d_grad_input_nhwc(const floating[:, :, :, ::1] grad_out,
                                 const floating[:, :, :, ::1] weight,
                                 floating[:, :, :, ::1] grad_in,
                                 floating[:, ::1] cols,
                                 ConvGeometry geom, Py_ssize_t tile, int n_threads) noexcept nogil:
    grad_input_by_images(grad_out, weight, grad_in, cols, geom, tile, n_threads, True)


cdef void conv2d_grad_weight_nhwc(const floating[:, :, :, ::1] grad_out,
                                  const floating[:, :, :, ::1] x,
                                  floating[:, :, :, ::1] grad_weight,
                                  floating[:, ::1] cols,
                                  ConvGeometry geom, Py_ssize_t tile, Py_ssize_t cblock,
                                  int n_threads) noexcept nogil:
    # One (group, tap, channel block) per work item: it owns that slice of the gradient and sums over all
    # pixels tile by tile in a fixed order.
    cdef Py_ssize_t C = geom.in_c, K = geom.out_c
    cdef Py_ssize_t Cg = C // geom.groups, Kg = K // geom.groups
    cdef Py_ssize_t R = geom.kernel_h, S = geom.kernel_w
    cdef Py_ssize_t n_cblocks = (Cg + cblock - 1) // cblock
    cdef Py_ssize_t n_items = geom.groups * R * S * n_cblocks
    cdef Py_ssize_t n_pixels = geom.batch * geom.out_h * geom.out_w
    cdef Py_ssize_t n_tiles = (n_pixels + tile - 1) // tile
    cdef bint pointwise = is_pointwise(geom)
    cdef const floating* x_flat = &x[0, 0, 0, 0]
    cdef const floating* go_flat = &grad_out[0, 0, 0, 0]
    cdef Py_ssize_t item, g, r, s, cb, c0, c1, c, t, p0, p1, lda
    cdef floating* buf
    cdef const floating* a

    for item in prange(n_items, num_threads=n_threads, schedule="dynamic"):
        buf = &cols[threadid(), 0]
        g = item // (R * S * n_cblocks)
        r = (item // (S * n_cblocks)) % R
        s = (item // n_cblocks) % S
        cb = item % n_cblocks
        c0 = cb * cblock
        c1 = c0 + cblock
        if c1 > Cg:
            c1 = Cg
        for c in range(c0, c1):
            memset(&grad_weight[r, s, c, g * Kg], 0, Kg * sizeof(floating))
        for t in range(n_tiles):
            p0 = t * tile
            p1 = p0 + tile
            if p1 > n_pixels:
                p1 = n_pixels
            if pointwise:
                a = x_flat + p0 * C + g * Cg + c0
                lda = C
            else:
                shifted_channels_nhwc(x, geom, g, r, s, c0, c1, p0, p1, buf)
                a = buf
                lda = c1 - c0
            gemm(True, False, c1 - c0, Kg, p1 - p0, <floating>1, a, lda, go_flat + p0 * K + g * Kg, K,
                 <floating>1, &grad_weight[r, s, c0, g * Kg], K)


# ---------------------------------------------------------------- NCHW

cdef void im2col_nchw(const floating[:, :, :, ::1] x, ConvGeometry geom, Py_ssize_t g, Py_ssize_t n,
                      Py_ssize_t p0, Py_ssize_t p1, floating* buf) noexcept nogil:
    """buf[(c, r, s), p - p0] = x[n, g*Cg + c, ih, iw] for pixels p of image n in [p0, p1), zero in padding."""
    cdef Py_ssize_t Cg = geom.in_c // geom.groups
    cdef Py_ssize_t width = p1 - p0
    cdef Py_ssize_t c, r, s, p, ho, wo, ih, iw
    cdef const floating* plane
    cdef floating* dst = buf
    for c in range(Cg):
        plane = &x[n, g * Cg + c, 0, 0]
        for r in range(geom.kernel_h):
            for s in range(geom.kernel_w):
                ho = p0 // geom.out_w
                wo = p0 - ho * geom.out_w
                for p in range(width):
                    ih = ho * geom.stride_h - geom.pad_top + r * geom.dilation_h
                    iw = wo * geom.stride_w - geom.pad_left + s * geom.dilation_w
                    if 0 <= ih < geom.in_h and 0 <= iw < geom.in_w:
                        dst[p] = plane[ih * geom.in_w + iw]
                    else:
                        dst[p] = 0
                    wo = wo + 1
                    if wo == geom.out_w:
                        wo = 0
                        ho = ho + 1
                dst += width


cdef void col2im_add_nchw(floating[:, :, :, ::1] grad_in, ConvGeometry geom, Py_ssize_t g, Py_ssize_t n,
                          Py_ssize_t p0, Py_ssize_t p1, const floating* buf) noexcept nogil:
    """grad_in[n, g*Cg + c, ih, iw] += buf[(c, r, s), p - p0] for pixels p of image n in [p0, p1)."""
    cdef Py_ssize_t Cg = geom.in_c // geom.groups
    cdef Py_ssize_t width = p1 - p0
    cdef Py_ssize_t c, r, s, p, ho, wo, ih, iw
    cdef floating* plane
    cdef const floating* src = buf
    for c in range(Cg):
        plane = &grad_in[n, g * Cg + c, 0, 0]
        for r in range(geom.kernel_h):
            for s in range(geom.kernel_w):
                ho = p0 // geom.out_w
                wo = p0 - ho * geom.out_w
                for p in range(width):
                    ih = ho * geom.stride_h - geom.pad_top + r * geom.dilation_h
                    iw = wo * geom.stride_w - geom.pad_left + s * geom.dilation_w
                    if 0 <= ih < geom.in_h and 0 <= iw < geom.in_w:
                        plane[ih * geom.in_w + iw] += src[p]
                    wo = wo + 1
                    if wo == geom.out_w:
                        wo = 0
                        ho = ho + 1
                src += width


cdef void shifted_channels_nchw(const floating[:, :, :, ::1] x, ConvGeometry geom, Py_ssize_t g,
                                Py_ssize_t r, Py_ssize_t s, Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t n,
                                Py_ssize_t p0, Py_ssize_t p1, floating* buf) noexcept nogil:
    """buf[c - c0, p - p0] = the input seen by tap (r, s) at output pixel p of image n, channel g*Cg + c."""
    cdef Py_ssize_t Cg = geom.in_c // geom.groups
    cdef Py_ssize_t width = p1 - p0
    cdef Py_ssize_t c, p, ho, wo, ih, iw
    cdef const floating* plane
    cdef floating* dst = buf
    for c in range(c0, c1):
        plane = &x[n, g * Cg + c, 0, 0]
        ho = p0 // geom.out_w
        wo = p0 - ho * geom.out_w
        for p in range(width):
            ih = ho * geom.stride_h - geom.pad_top + r * geom.dilation_h
            iw = wo * geom.stride_w - geom.pad_left + s * geom.dilation_w
            if 0 <= ih < geom.in_h and 0 <= iw < geom.in_w:
                dst[p] = plane[ih * geom.in_w + iw]
            else:
                dst[p] = 0
            wo = wo + 1
            if wo == geom.out_w:
                wo = 0
                ho = ho + 1
        dst += width


cdef void conv2d_forward_nchw(const floating[:, :, :, ::1] x,
                              const floating[:, :, :, ::1] weight,
                              const floating* bias,
                              floating[:, :, :, ::1] out,
                              floating[:, ::1] cols,
                              ConvGeometry geom, Py_ssize_t tile, int n_threads) noexcept nogil:
    cdef Py_ssize_t C = geom.in_c, K = geom.out_c
    cdef Py_ssize_t Cg = C // geom.groups, Kg = K // geom.groups
    cdef Py_ssize_t rsc = geom.kernel_h * geom.kernel_w * Cg
    cdef Py_ssize_t hw_out = geom.out_h * geom.out_w, hw_in = geom.in_h * geom.in_w
    cdef Py_ssize_t tiles_per_image = (hw_out + tile - 1) // tile
    cdef Py_ssize_t n_tiles = geom.batch * tiles_per_image
    cdef bint pointwise = is_pointwise(geom)
    cdef Py_ssize_t t, n, p0, p1, p, k, g, ldb
    cdef floating* buf
    cdef floating* out_image
    cdef const floating* b
    cdef floating beta

    for t in prange(n_tiles, num_threads=n_threads, schedule="dynamic"):
        buf = &cols[threadid(), 0]
        n = t // tiles_per_image
        p0 = (t - n * tiles_per_image) * tile
        p1 = p0 + tile
        if p1 > hw_out:
            p1 = hw_out
        out_image = &out[n, 0, 0, 0]
        beta = 0
        if bias != NULL:
            for k in range(K):
                for p in range(p0, p1):
                    out_image[k * hw_out + p] = bias[k]
            beta = 1
        for g in range(geom.groups):
            if pointwise:
                b = &x[n, g * Cg, 0, 0] + p0
                ldb = hw_in
            else:
                im2col_nchw(x, geom, g, n, p0, p1, buf)
                b = buf
                ldb = p1 - p0
            gemm(False, False, Kg, p1 - p0, rsc, <floating>1, &weight[g * Kg, 0, 0, 0], rsc, b, ldb,
                 beta, out_image + g * Kg * hw_out + p0, hw_out)


cdef void grad_input_rows_nchw(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] weight,
                               floating[:, :, :, ::1] grad_in, ConvGeometry geom, Py_ssize_t n,
                               Py_ssize_t q0, Py_ssize_t q1, Py_ssize_t tile, floating* buf) noexcept nogil:
    """grad_input_rows_nhwc for NCHW: output pixels [q0, q1) of image n, tile by tile, in pixel order."""
    cdef Py_ssize_t C = geom.in_c, K = geom.out_c
    cdef Py_ssize_t Cg = C // geom.groups, Kg = K // geom.groups
    cdef Py_ssize_t rsc = geom.kernel_h * geom.kernel_w * Cg
    cdef Py_ssize_t hw_out = geom.out_h * geom.out_w, hw_in = geom.in_h * geom.in_w
    cdef bint pointwise = is_pointwise(geom)
    cdef Py_ssize_t p0, p1, g
    p0 = q0
    while p0 < q1:
        p1 = p0 + tile
        if p1 > q1:
            p1 = q1
        for g in range(geom.groups):
            if pointwise:
                gemm(True, False, Cg, p1 - p0, Kg, <floating>1, &weight[g * Kg, 0, 0, 0], rsc,
                     &grad_out[n, g * Kg, 0, 0] + p0, hw_out,
                     <floating>0, &grad_in[n, g * Cg, 0, 0] + p0, hw_in)
            else:
                gemm(True, False, rsc, p1 - p0, Kg, <floating>1, &weight[g * Kg, 0, 0, 0], rsc,
                     &grad_out[n, g * Kg, 0, 0] + p0, hw_out, <floating>0, buf, p1 - p0)
                col2im_add_nchw(grad_in, geom, g, n, p0, p1, buf)
        p0 = p1


cdef void conv2d_grad_input_nchw(const floating[:, :, :, ::1] grad_out,
                                 const floating[:, :, :, ::1] weight,
                                 floating[:, :, :, ::1] grad_in,
                                 floating[:, ::1] cols,
                                 ConvGeometry geom, Py_ssize_t tile, int n_threads) noexcept nogil:
    grad_input_by_images(grad_out, weight, grad_in, cols, geom, tile, n_threads, False)


cdef void conv2d_grad_weight_nchw(const floating[:, :, :, ::1] grad_out,
                                  const floating[:, :, :, ::1] x,
                                  floating[:, :, :, ::1] grad_weight_rskc,
                                  floating[:, ::1] cols,
                                  ConvGeometry geom, Py_ssize_t tile, Py_ssize_t cblock,
                                  int n_threads) noexcept nogil:
    cdef Py_ssize_t C = geom.in_c, K = geom.out_c
    cdef Py_ssize_t Cg = C // geom.groups, Kg = K // geom.groups
    cdef Py_ssize_t R = geom.kernel_h, S = geom.kernel_w
    cdef Py_ssize_t n_cblocks = (Cg + cblock - 1) // cblock
    cdef Py_ssize_t n_items = geom.groups * R * S * n_cblocks
    cdef Py_ssize_t hw_out = geom.out_h * geom.out_w, hw_in = geom.in_h * geom.in_w
    cdef Py_ssize_t tiles_per_image = (hw_out + tile - 1) // tile
    cdef bint pointwise = is_pointwise(geom)
    cdef Py_ssize_t item, g, r, s, cb, c0, c1, k, n, t, p0, p1, ldb
    cdef floating* buf
    cdef const floating* b

    for item in prange(n_items, num_threads=n_threads, schedule="dynamic"):
        buf = &cols[threadid(), 0]
        g = item // (R * S * n_cblocks)
        r = (item // (S * n_cblocks)) % R
        s = (item // n_cblocks) % S
        cb = item % n_cblocks
        c0 = cb * cblock
        c1 = c0 + cblock
        if c1 > Cg:
            c1 = Cg
        for k in range(g * Kg, (g + 1) * Kg):
            memset(&grad_weight_rskc[r, s, k, c0], 0, (c1 - c0) * sizeof(floating))
        for n in range(geom.batch):
            for t in range(tiles_per_image):
                p0 = t * tile
                p1 = p0 + tile
                if p1 > hw_out:
                    p1 = hw_out
                if pointwise:
                    b = &x[n, g * Cg + c0, 0, 0] + p0
                    ldb = hw_in
                else:
                    shifted_channels_nchw(x, geom, g, r, s, c0, c1, n, p0, p1, buf)
                    b = buf
                    ldb = p1 - p0
                gemm(False, True, Kg, c1 - c0, p1 - p0, <floating>1, &grad_out[n, g * Kg, 0, 0] + p0, hw_out,
                     b, ldb, <floating>1, &grad_weight_rskc[r, s, g * Kg, c0], Cg)


# ---------------------------------------------------------------- Python entry points


def forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight, bias,
            floating[:, :, :, ::1] out, floating[:, ::1] cols, ConvGeometry geom, Py_ssize_t tile,
            bint channels_last, int n_threads):
    cdef const floating[::1] bias_view
    cdef const floating* bias_ptr = NULL
    if bias is not None:
        bias_view = bias
        bias_ptr = &bias_view[0]
    with nogil:
        if channels_last:
            conv2d_forward_nhwc(x, weight, bias_ptr, out, cols, geom, tile, n_threads)
        else:
            conv2d_forward_nchw(x, weight, bias_ptr, out, cols, geom, tile, n_threads)


def grad_input(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] weight,
               floating[:, :, :, ::1] grad_in, floating[:, ::1] cols, ConvGeometry geom, Py_ssize_t tile,
               bint channels_last, int n_threads):
    with nogil:
        if channels_last:
            conv2d_grad_input_nhwc(grad_out, weight, grad_in, cols, geom, tile, n_threads)
        else:
            conv2d_grad_input_nchw(grad_out, weight, grad_in, cols, geom, tile, n_threads)


def grad_weight(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] x,
                floating[:, :, :, ::1] grad_weight, floating[:, ::1] cols, ConvGeometry geom, Py_ssize_t tile,
                Py_ssize_t cblock, bint channels_last, int n_threads):
    """channels_last: grad_weight is HWIO. channels_first: grad_weight is (R, S, K, C/groups)."""
    with nogil:
        if channels_last:
            conv2d_grad_weight_nhwc(grad_out, x, grad_weight, cols, geom, tile, cblock, n_threads)
        else:
            conv2d_grad_weight_nchw(grad_out, x, grad_weight, cols, geom, tile, cblock, n_threads)
