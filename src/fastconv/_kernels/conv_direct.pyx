"""Direct convolution kernels (NHWC activations, HWIO weights).

The innermost loops run over contiguous channels so that the compiler vectorises them: output channels in the
forward pass and the weight gradient, input channels in the input gradient.
"""
from cython.parallel cimport parallel, prange
from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from fastconv._kernels.cpu_dispatch cimport active_isa
from fastconv._kernels.geometry cimport ConvGeometry, first_valid, end_valid

cdef extern from "direct_tile.h" nogil:
    ctypedef void (*fc_tile_f32)(Py_ssize_t, const float * const *, const float * const *, Py_ssize_t,
                                 float *, Py_ssize_t) noexcept nogil
    ctypedef void (*fc_tile_f64)(Py_ssize_t, const double * const *, const double * const *, Py_ssize_t,
                                 double *, Py_ssize_t) noexcept nogil
    fc_tile_f32 fc_tile_for_f32(int isa)
    fc_tile_f64 fc_tile_for_f64(int isa)
    int fc_tile_pixels(int isa)
    int fc_tile_lanes(int isa, int itemsize)

cdef enum:
    # Output pixels along a row processed together, so each weight vector loaded is reused this many times.
    PIXEL_BLOCK = 4
    # Input channels per grad-weight work item: keeps the owned (block, K) slice of the gradient in cache.
    GRAD_WEIGHT_CHANNEL_BLOCK = 16
    # Bytes of packed weights one pass of the tiled forward kernel streams per row: sized to stay in L1.
    L1_WEIGHT_BYTES = 16384


cdef void conv2d_forward_nhwc(const floating[:, :, :, ::1] x,
                              const floating[:, :, :, ::1] weight,
                              const floating* bias,
                              floating[:, :, :, ::1] out,
                              ConvGeometry geom, int n_threads) noexcept nogil:
    cdef Py_ssize_t K = geom.out_c, C = geom.in_c
    cdef Py_ssize_t Cg = C // geom.groups, Kg = K // geom.groups
    cdef Py_ssize_t Wo = geom.out_w, Ho = geom.out_h
    cdef Py_ssize_t row, n, ho, wo, r, s, c, k, g, ih, wo_lo, wo_hi, wo_end, j, offset_w
    cdef floating* orow
    cdef floating* op
    cdef const floating* xp
    cdef const floating* wp
    cdef floating xv
    cdef floating wv

    for row in prange(geom.batch * Ho, num_threads=n_threads, schedule="static"):
        n = row // Ho
        ho = row - n * Ho
        orow = &out[n, ho, 0, 0]
        for wo in range(Wo):
            for k in range(K):
                orow[wo * K + k] = bias[k] if bias != NULL else 0
        for r in range(geom.kernel_h):
            ih = ho * geom.stride_h - geom.pad_top + r * geom.dilation_h
            if ih < 0 or ih >= geom.in_h:
                continue
            for s in range(geom.kernel_w):
                offset_w = s * geom.dilation_w - geom.pad_left
                wo_lo = first_valid(offset_w, geom.stride_w)
                wo_hi = end_valid(offset_w, geom.stride_w, geom.in_w, Wo)
                wo = wo_lo
                while wo < wo_hi:
                    wo_end = wo + PIXEL_BLOCK
                    if wo_end > wo_hi:
                        wo_end = wo_hi
                    for g in range(geom.groups):
                        for c in range(Cg):
                            wp = &weight[r, s, c, g * Kg]
                            for j in range(wo, wo_end):
                                xv = x[n, ih, j * geom.stride_w + offset_w, g * Cg + c]
                                op = orow + j * K + g * Kg
                                for k in range(Kg):
                                    op[k] += xv * wp[k]
                    wo = wo_end


cdef inline void run_tile(Py_ssize_t n_taps, const floating** xptrs, const floating** wptrs, Py_ssize_t cg,
                          floating* out, Py_ssize_t ldo, int isa) noexcept nogil:
    if floating is float:
        fc_tile_for_f32(isa)(n_taps, xptrs, wptrs, cg, out, ldo)
    else:
        fc_tile_for_f64(isa)(n_taps, xptrs, wptrs, cg, out, ldo)


cdef void conv2d_forward_nhwc_tiled(const floating[:, :, :, ::1] x,
                                    const floating[::1] packed_weight,
                                    const floating* bias,
                                    const floating* zeros,
                                    floating[:, :, :, ::1] out,
                                    ConvGeometry geom, int n_threads) noexcept nogil:
    # Per output row and block of output channels, the row is accumulated in a small per-thread buffer: input
    # channels in blocks whose weights stay in L1 (outer), then tiles of pixels along the row (inner).
    cdef int isa = active_isa()
    cdef Py_ssize_t WB = fc_tile_pixels(isa), KB = fc_tile_lanes(isa, sizeof(floating))
    cdef Py_ssize_t K = geom.out_c, Cg = geom.in_c // geom.groups, Kg = K // geom.groups
    cdef Py_ssize_t R = geom.kernel_h, S = geom.kernel_w, Ho = geom.out_h, Wo = geom.out_w
    cdef Py_ssize_t n_kblocks = (Kg + KB - 1) // KB
    cdef Py_ssize_t block_size = R * S * Cg * KB
    cdef Py_ssize_t row_tiles = (Wo + WB - 1) // WB
    cdef Py_ssize_t cblock = L1_WEIGHT_BYTES // (R * S * KB * sizeof(floating))
    cdef const floating* packed = &packed_weight[0]
    cdef Py_ssize_t row, n, ho, g, kb, k0, kw, cb, c0, nc, tile, wo0, nw, r, s, j, k, ih, iw, n_taps
    cdef const floating* wblock
    cdef const floating** xptrs
    cdef const floating** wptrs
    cdef floating* rowbuf

    if cblock < 1:
        cblock = 1
    if cblock > Cg:
        cblock = Cg
    with parallel(num_threads=n_threads):
        xptrs = <const floating**> malloc(R * S * WB * sizeof(floating*))
        wptrs = <const floating**> malloc(R * S * sizeof(floating*))
        rowbuf = <floating*> malloc(row_tiles * WB * KB * sizeof(floating))
        for row in prange(geom.batch * Ho, schedule="static"):
            n = row // Ho
            ho = row - n * Ho
            for g in range(geom.groups):
                for kb in range(n_kblocks):
                    k0 = g * Kg + kb * KB
                    kw = Kg - kb * KB
                    if kw > KB:
                        kw = KB
                    wblock = packed + (g * n_kblocks + kb) * block_size
                    for j in range(row_tiles * WB):
                        for k in range(KB):
                            rowbuf[j * KB + k] = bias[k0 + k] if (bias != NULL and k < kw) else 0
                    for cb in range((Cg + cblock - 1) // cblock):
                        c0 = cb * cblock
                        nc = Cg - c0
                        if nc > cblock:
                            nc = cblock
                        for tile in range(row_tiles):
                            wo0 = tile * WB
                            nw = Wo - wo0
                            if nw > WB:
                                nw = WB
                            # Taps inside the input rows; a pixel whose tap falls in the side padding (or past
                            # the row's end) reads zeros.
                            n_taps = 0
                            for r in range(R):
                                ih = ho * geom.stride_h - geom.pad_top + r * geom.dilation_h
                                if ih < 0 or ih >= geom.in_h:
                                    continue
                                for s in range(S):
                                    wptrs[n_taps] = wblock + ((r * S + s) * Cg + c0) * KB
                                    for j in range(WB):
                                        iw = (wo0 + j) * geom.stride_w - geom.pad_left + s * geom.dilation_w
                                        if j < nw and 0 <= iw < geom.in_w:
                                            xptrs[n_taps * WB + j] = &x[n, ih, iw, g * Cg + c0]
                                        else:
                                            xptrs[n_taps * WB + j] = zeros
                                    n_taps = n_taps + 1
                            run_tile(n_taps, xptrs, wptrs, nc, rowbuf + wo0 * KB, KB, isa)
                    for j in range(Wo):
                        for k in range(kw):
                            out[n, ho, j, k0 + k] = rowbuf[j * KB + k]
        free(xptrs)
        free(wptrs)
        free(rowbuf)


cdef void conv2d_grad_input_nhwc(const floating[:, :, :, ::1] grad_out,
                                 const floating[:, :, :, ::1] weight_t,
                                 floating[:, :, :, ::1] grad_in,
                                 ConvGeometry geom, int n_threads) noexcept nogil:
    cdef Py_ssize_t K = geom.out_c, C = geom.in_c, H = geom.in_h, W = geom.in_w
    cdef Py_ssize_t Cg = C // geom.groups, Kg = K // geom.groups
    cdef Py_ssize_t row, n, h, w, r, s, c, k, g, hnum, wnum, ho, wo
    cdef floating* dxp
    cdef const floating* gop
    cdef const floating* wtp
    cdef floating gv

    for row in prange(geom.batch * H, num_threads=n_threads, schedule="static"):
        n = row // H
        h = row - n * H
        memset(&grad_in[n, h, 0, 0], 0, W * C * sizeof(floating))
        for r in range(geom.kernel_h):
            # output row ho used input row h through tap r iff ho * sh = h + pt - r * dh
            hnum = h + geom.pad_top - r * geom.dilation_h
            if hnum < 0 or hnum % geom.stride_h != 0:
                continue
            ho = hnum // geom.stride_h
            if ho >= geom.out_h:
                continue
            for w in range(W):
                dxp = &grad_in[n, h, w, 0]
                for s in range(geom.kernel_w):
                    wnum = w + geom.pad_left - s * geom.dilation_w
                    if wnum < 0 or wnum % geom.stride_w != 0:
                        continue
                    wo = wnum // geom.stride_w
                    if wo >= geom.out_w:
                        continue
                    gop = &grad_out[n, ho, wo, 0]
                    for g in range(geom.groups):
                        for k in range(g * Kg, (g + 1) * Kg):
                            gv = gop[k]
                            wtp = &weight_t[r, s, k, 0]
                            for c in range(Cg):
                                dxp[g * Cg + c] += gv * wtp[c]


cdef void conv2d_grad_weight_nhwc(const floating[:, :, :, ::1] grad_out,
                                  const floating[:, :, :, ::1] x,
                                  floating[:, :, :, ::1] grad_weight,
                                  ConvGeometry geom, int n_threads) noexcept nogil:
    cdef Py_ssize_t K = geom.out_c, C = geom.in_c
    cdef Py_ssize_t Cg = C // geom.groups, Kg = K // geom.groups
    cdef Py_ssize_t n_cblocks = (Cg + GRAD_WEIGHT_CHANNEL_BLOCK - 1) // GRAD_WEIGHT_CHANNEL_BLOCK
    cdef Py_ssize_t n_items = geom.kernel_h * geom.kernel_w * n_cblocks
    cdef Py_ssize_t item, r, s, cb, c0, c1, c, g, k, n, ho, wo, ih, offset_w, wo_lo, wo_hi
    cdef floating* dwp
    cdef const floating* gop
    cdef const floating* xp
    cdef floating xv

    for item in prange(n_items, num_threads=n_threads, schedule="dynamic"):
        r = item // (geom.kernel_w * n_cblocks)
        s = (item // n_cblocks) % geom.kernel_w
        cb = item % n_cblocks
        c0 = cb * GRAD_WEIGHT_CHANNEL_BLOCK
        c1 = c0 + GRAD_WEIGHT_CHANNEL_BLOCK
        if c1 > Cg:
            c1 = Cg
        memset(&grad_weight[r, s, c0, 0], 0, (c1 - c0) * K * sizeof(floating))
        offset_w = s * geom.dilation_w - geom.pad_left
        wo_lo = first_valid(offset_w, geom.stride_w)
        wo_hi = end_valid(offset_w, geom.stride_w, geom.in_w, geom.out_w)
        for n in range(geom.batch):
            for ho in range(geom.out_h):
                ih = ho * geom.stride_h - geom.pad_top + r * geom.dilation_h
                if ih < 0 or ih >= geom.in_h:
                    continue
                for wo in range(wo_lo, wo_hi):
                    xp = &x[n, ih, wo * geom.stride_w + offset_w, 0]
                    gop = &grad_out[n, ho, wo, 0]
                    for c in range(c0, c1):
                        dwp = &grad_weight[r, s, c, 0]
                        for g in range(geom.groups):
                            xv = xp[g * Cg + c]
                            for k in range(g * Kg, (g + 1) * Kg):
                                dwp[k] += xv * gop[k]


# ---- Python entry points (thin: the caller has validated everything) ----

def forward_nhwc(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight, bias,
                 floating[:, :, :, ::1] out, ConvGeometry geom, int n_threads):
    cdef const floating[::1] bias_view
    cdef const floating* bias_ptr = NULL
    if bias is not None:
        bias_view = bias
        bias_ptr = &bias_view[0]
    with nogil:
        conv2d_forward_nhwc(x, weight, bias_ptr, out, geom, n_threads)


def tile_shape(itemsize):
    """(pixels, channel lanes) of the register tile at the active instruction set."""
    cdef int isa = active_isa()
    return fc_tile_pixels(isa), fc_tile_lanes(isa, itemsize)


def forward_nhwc_tiled(const floating[:, :, :, ::1] x, const floating[::1] packed_weight, bias,
                       const floating[::1] zeros, floating[:, :, :, ::1] out, ConvGeometry geom, int n_threads):
    """packed_weight: (groups, K/groups/lanes rounded up, R, S, C/groups, lanes), zero-padded (_layout);
    zeros: at least C/groups zeros."""
    cdef const floating[::1] bias_view
    cdef const floating* bias_ptr = NULL
    if bias is not None:
        bias_view = bias
        bias_ptr = &bias_view[0]
    with nogil:
        conv2d_forward_nhwc_tiled(x, packed_weight, bias_ptr, &zeros[0], out, geom, n_threads)


def grad_input_nhwc(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] weight_t,
                    floating[:, :, :, ::1] grad_in, ConvGeometry geom, int n_threads):
    with nogil:
        conv2d_grad_input_nhwc(grad_out, weight_t, grad_in, geom, n_threads)


def grad_weight_nhwc(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] x,
                     floating[:, :, :, ::1] grad_weight, ConvGeometry geom, int n_threads):
    with nogil:
        conv2d_grad_weight_nhwc(grad_out, x, grad_weight, geom, n_threads)
