"""Depthwise convolution kernels: forward, input gradient and weight gradient, NHWC and NCHW.

NHWC: vector lanes over 64-byte blocks of consecutive channels; a work item is (image, band of output rows,
group of lane blocks). Its input rows are packed, zero-padded at the left and right and (for a channel
multiplier M > 1) with each input channel repeated M times, into a small ring of rows that stays in L1/L2, so
the inner loop (depthwise_tile.h) runs with no bounds checks over register blocks of several output pixels; with
dilation 1 along the columns it loads each packed column once for all the taps of a kernel row that read it.
Rows that fall in the top/bottom padding are skipped. Short rows are prefetched one output row ahead; large
outputs are written with non-temporal stores.

NCHW: each work item is one (image, channel) plane. The plane is packed into zero-padded "phase planes" (one per
(row, column) residue modulo the stride) with a common pitch, so every tap reads one contiguous run and a
whole plane of output is one flat vector loop along the rows.

Sums run over the taps in a fixed order; the weight gradients sum per chunk (NHWC: image x band, NCHW: image)
into scratch slices that are added in chunk order after the parallel region, so results never depend on the
thread count.
"""
from cython.parallel cimport parallel, prange
from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from fastconv._kernels.cpu_dispatch cimport active_isa
from fastconv._kernels.geometry cimport ConvGeometry

cdef extern from *:
    """
    #define fc_dw_prefetch(p) __builtin_prefetch((const void *)(p), 0, 3)
    """
    void prefetch "fc_dw_prefetch"(const void* p) noexcept nogil

cdef extern from "aligned_buffer.h" nogil:
    # (the rings and tails the tiles load vectors from)
    void* fc_aligned_malloc(size_t bytes)
    void fc_aligned_free(void* p)

cdef extern from "depthwise_tile.h" nogil:
    int DW_BLOCK_BYTES
    int DW_ISA_BASELINE
    int DW_ISA_AVX2
    int DW_ISA_AVX512
    int dw_gw_taps(int isa)
    int dw_row_lanes(int isa, int itemsize)
    void dw_channels_f32(int isa, Py_ssize_t n_taps, const float * const * a, Py_ssize_t a_off, Py_ssize_t a_step,
                         const float * const * b, Py_ssize_t b_off, const float * init, Py_ssize_t count,
                         float * out, Py_ssize_t ldo, int stream)
    void dw_channels_f64(int isa, Py_ssize_t n_taps, const double * const * a, Py_ssize_t a_off, Py_ssize_t a_step,
                         const double * const * b, Py_ssize_t b_off, const double * init, Py_ssize_t count,
                         double * out, Py_ssize_t ldo, int stream)
    void dw_store_fence()
    void dw_channels_gw_f32(int isa, Py_ssize_t n_taps, const float * const * a, Py_ssize_t a_off,
                            Py_ssize_t a_step, const float * g, Py_ssize_t g_step, Py_ssize_t count,
                            float * const * acc, Py_ssize_t acc_off)
    void dw_channels_gw_f64(int isa, Py_ssize_t n_taps, const double * const * a, Py_ssize_t a_off,
                            Py_ssize_t a_step, const double * g, Py_ssize_t g_step, Py_ssize_t count,
                            double * const * acc, Py_ssize_t acc_off)
    int dw_rowtaps_f32(int isa, int S, int SW, Py_ssize_t n_rows, const float * const * a, Py_ssize_t a_off,
                       Py_ssize_t cs, const float * const * b, Py_ssize_t b_off, const float * init, Py_ssize_t count,
                       float * out, Py_ssize_t ldo, int stream, Py_ssize_t n_blocks, Py_ssize_t a_bstep,
                       Py_ssize_t b_bstep, Py_ssize_t i_bstep, Py_ssize_t o_bstep)
    int dw_rowtaps_f64(int isa, int S, int SW, Py_ssize_t n_rows, const double * const * a, Py_ssize_t a_off,
                       Py_ssize_t cs, const double * const * b, Py_ssize_t b_off, const double * init,
                       Py_ssize_t count, double * out, Py_ssize_t ldo, int stream, Py_ssize_t n_blocks,
                       Py_ssize_t a_bstep, Py_ssize_t b_bstep, Py_ssize_t i_bstep, Py_ssize_t o_bstep)
    int dw_rowtaps_gw_rows_f32(int isa, int S)
    int dw_rowtaps_gw_rows_f64(int isa, int S)
    int dw_rowtaps_gw_f32(int isa, int S, int SW, Py_ssize_t n_rows, const float * const * a, Py_ssize_t a_off,
                          const float * g, Py_ssize_t g_step, Py_ssize_t count, float * const * acc,
                          Py_ssize_t acc_off, Py_ssize_t acc_step)
    int dw_rowtaps_gw_f64(int isa, int S, int SW, Py_ssize_t n_rows, const double * const * a, Py_ssize_t a_off,
                          const double * g, Py_ssize_t g_step, Py_ssize_t count, double * const * acc,
                          Py_ssize_t acc_off, Py_ssize_t acc_step)
    void dw_pack_f32(int isa, const float * src, Py_ssize_t C, Py_ssize_t W, Py_ssize_t M, Py_ssize_t pad_left,
                     Py_ssize_t n_cols, Py_ssize_t k_lo, Py_ssize_t width, Py_ssize_t n_blocks, Py_ssize_t c0,
                     Py_ssize_t c1, float * dst)
    void dw_pack_f64(int isa, const double * src, Py_ssize_t C, Py_ssize_t W, Py_ssize_t M, Py_ssize_t pad_left,
                     Py_ssize_t n_cols, Py_ssize_t k_lo, Py_ssize_t width, Py_ssize_t n_blocks, Py_ssize_t c0,
                     Py_ssize_t c1, double * dst)
    void dw_rows_f32(int isa, Py_ssize_t n_taps, const float * const * a, const float * w, float init,
                     Py_ssize_t count, float * out)
    void dw_rows_f64(int isa, Py_ssize_t n_taps, const double * const * a, const double * w, double init,
                     Py_ssize_t count, double * out)
    void dw_rows_gw_f32(int isa, Py_ssize_t n_taps, const float * const * a, const float * g, Py_ssize_t count,
                        float * acc)
    void dw_rows_gw_f64(int isa, Py_ssize_t n_taps, const double * const * a, const double * g, Py_ssize_t count,
                        double * acc)


# ---------------------------------------------------------------- typed wrappers of the inner loops

cdef inline void run_channels(int isa, Py_ssize_t n_taps, const floating** a, Py_ssize_t a_off, Py_ssize_t a_step,
                              const floating** b, Py_ssize_t b_off, const floating* init, Py_ssize_t count,
                              floating* out, Py_ssize_t ldo, bint stream) noexcept nogil:
    if floating is float:
        dw_channels_f32(isa, n_taps, a, a_off, a_step, b, b_off, init, count, out, ldo, stream)
    else:
        dw_channels_f64(isa, n_taps, a, a_off, a_step, b, b_off, init, count, out, ldo, stream)


cdef inline void run_channels_gw(int isa, Py_ssize_t n_taps, const floating** a, Py_ssize_t a_off,
                                 Py_ssize_t a_step, const floating* g, Py_ssize_t g_step, Py_ssize_t count,
                                 floating** acc, Py_ssize_t acc_off) noexcept nogil:
    if floating is float:
        dw_channels_gw_f32(isa, n_taps, a, a_off, a_step, g, g_step, count, acc, acc_off)
    else:
        dw_channels_gw_f64(isa, n_taps, a, a_off, a_step, g, g_step, count, acc, acc_off)


cdef inline bint try_rowtaps(int isa, Py_ssize_t itemsize, Py_ssize_t S, Py_ssize_t SW) noexcept nogil:
    """Whether the kernel-row inner loop exists for S taps per row and column step SW (a call with no pixels)."""
    if itemsize == 4:
        return dw_rowtaps_f32(isa, S, SW, 0, NULL, 0, 0, NULL, 0, NULL, 0, NULL, 0, 0, 0, 0, 0, 0, 0) != 0
    else:
        return dw_rowtaps_f64(isa, S, SW, 0, NULL, 0, 0, NULL, 0, NULL, 0, NULL, 0, 0, 0, 0, 0, 0, 0) != 0


cdef inline void run_rowtaps(int isa, Py_ssize_t S, Py_ssize_t SW, Py_ssize_t n_rows, const floating** a,
                             Py_ssize_t a_off, Py_ssize_t cs, const floating** b, Py_ssize_t b_off,
                             const floating* init, Py_ssize_t count, floating* out, Py_ssize_t ldo, bint stream,
                             Py_ssize_t n_blocks=1, Py_ssize_t a_bstep=0, Py_ssize_t b_bstep=0, Py_ssize_t i_bstep=0,
                             Py_ssize_t o_bstep=0) noexcept nogil:
    """The kernel-row inner loop over count pixels (columns cs elements apart), for n_blocks lane blocks."""
    if floating is float:
        dw_rowtaps_f32(isa, S, SW, n_rows, a, a_off, cs, b, b_off, init, count, out, ldo, stream, n_blocks,
                       a_bstep, b_bstep, i_bstep, o_bstep)
    else:
        dw_rowtaps_f64(isa, S, SW, n_rows, a, a_off, cs, b, b_off, init, count, out, ldo, stream, n_blocks,
                       a_bstep, b_bstep, i_bstep, o_bstep)


cdef inline Py_ssize_t rowtaps_gw_rows(int isa, Py_ssize_t itemsize, Py_ssize_t S, Py_ssize_t SW) noexcept nogil:
    """Kernel rows per call of the kernel-row weight-gradient loop for (S, SW), 0 where it has none."""
    if SW != 1 and SW != 2:
        return 0
    if itemsize == 4:
        return dw_rowtaps_gw_rows_f32(isa, S)
    else:
        return dw_rowtaps_gw_rows_f64(isa, S)


cdef inline void run_rowtaps_gw(int isa, Py_ssize_t S, Py_ssize_t SW, Py_ssize_t n_rows, const floating** a,
                                Py_ssize_t a_off, const floating* g, Py_ssize_t g_step, Py_ssize_t count,
                                floating** acc, Py_ssize_t acc_off, Py_ssize_t acc_step) noexcept nogil:
    if floating is float:
        dw_rowtaps_gw_f32(isa, S, SW, n_rows, a, a_off, g, g_step, count, acc, acc_off, acc_step)
    else:
        dw_rowtaps_gw_f64(isa, S, SW, n_rows, a, a_off, g, g_step, count, acc, acc_off, acc_step)


cdef inline void run_rows(int isa, Py_ssize_t n_taps, const floating** a, const floating* w, floating init,
                          Py_ssize_t count, floating* out) noexcept nogil:
    if floating is float:
        dw_rows_f32(isa, n_taps, a, w, init, count, out)
    else:
        dw_rows_f64(isa, n_taps, a, w, init, count, out)


cdef inline void run_rows_gw(int isa, Py_ssize_t n_taps, const floating** a, const floating* g, Py_ssize_t count,
                             floating* acc) noexcept nogil:
    if floating is float:
        dw_rows_gw_f32(isa, n_taps, a, g, count, acc)
    else:
        dw_rows_gw_f64(isa, n_taps, a, g, count, acc)


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef struct WorkUnit:
    Py_ssize_t chunk        # image * n_bands + band: which (image, row band) the unit covers
    Py_ssize_t n            # the image
    Py_ssize_t row0, row1   # its rows [row0, row1)
    Py_ssize_t block0, block1  # its channel lane blocks [block0, block1)
    Py_ssize_t lo, width    # its first channel and channel count (the last group may be partial)


cdef inline WorkUnit decode_unit(Py_ssize_t unit, Py_ssize_t n_groups, Py_ssize_t group_blocks,
                                 Py_ssize_t n_blocks, Py_ssize_t block, Py_ssize_t channels, Py_ssize_t n_bands,
                                 Py_ssize_t band_rows, Py_ssize_t rows) noexcept nogil:
    """Work units run over (image, row band, channel group), the group fastest; a lane block holds `block`
    channels."""
    cdef WorkUnit u
    cdef Py_ssize_t band
    u.chunk = unit // n_groups
    band = u.chunk % n_bands
    u.n = u.chunk // n_bands
    u.block0 = (unit % n_groups) * group_blocks
    u.block1 = min(u.block0 + group_blocks, n_blocks)
    u.lo = u.block0 * block
    u.width = min(channels - u.lo, (u.block1 - u.block0) * block)
    u.row0 = band * band_rows
    u.row1 = min(u.row0 + band_rows, rows)
    return u


cdef enum:
    # Rows whose part a work item packs spans at most this many cache lines are prefetched one output row ahead
    # (measured 1.3x on 28x28 to 7x7 layers; longer rows gained nothing or lost, the hardware prefetcher
    # follows them on its own).
    PREFETCH_LINES = 256


cdef inline void prefetch_pixels(const char* first, Py_ssize_t n_pixels, Py_ssize_t pixel_bytes,
                                 Py_ssize_t lo_byte, Py_ssize_t hi_byte) noexcept nogil:
    """Prefetch bytes [lo_byte, hi_byte) of n_pixels consecutive pixels (pixel_bytes apart) into L1."""
    cdef Py_ssize_t p, b
    for p in range(n_pixels):
        b = lo_byte - lo_byte % 64
        while b < hi_byte:
            prefetch(first + p * pixel_bytes + b)
            b = b + 64


# ---------------------------------------------------------------- NHWC packing

cdef inline void pack_expanded_row(const floating* xrow, Py_ssize_t W, Py_ssize_t C, Py_ssize_t M,
                                   Py_ssize_t pad_left, Py_ssize_t n_cols, Py_ssize_t k_lo, Py_ssize_t width,
                                   Py_ssize_t n_blocks, Py_ssize_t c0, Py_ssize_t c1, floating* dst) noexcept nogil:
    """Columns c0 <= cc < c1 of one packed input row, lane block by lane block: dst[(b*n_cols + cc)*KB + l] =
    x[iw = cc - pad_left, channel (k_lo + b*KB + l) // M] for b*KB + l < width (the input of output channel
    k_lo + b*KB + l), zero past width and for columns in the padding."""
    if floating is float:
        dw_pack_f32(active_isa(), xrow, C, W, M, pad_left, n_cols, k_lo, width, n_blocks, c0, c1, dst)
    else:
        dw_pack_f64(active_isa(), xrow, C, W, M, pad_left, n_cols, k_lo, width, n_blocks, c0, c1, dst)


cdef inline void pack_planar_row(const floating* grow, Py_ssize_t Wo, Py_ssize_t K, Py_ssize_t M,
                                 Py_ssize_t pad_left, Py_ssize_t n_cols, Py_ssize_t c_lo, Py_ssize_t width,
                                 Py_ssize_t n_blocks, floating* dst) noexcept nogil:
    """One packed grad_out row, lane block by lane block and multiplier by multiplier:
    dst[((b*M + m)*n_cols + u)*KB + l] = grad_out[wo = u - pad_left, (c_lo + b*KB + l)*M + m] for b*KB + l < width
    (the lanes of input channel c_lo + b*KB + l), zero past width and for columns outside the row."""
    cdef Py_ssize_t KB = DW_BLOCK_BYTES // sizeof(floating)
    cdef Py_ssize_t u, wo, l, m, bb, w
    cdef const floating* src
    cdef floating* d
    for u in range(n_cols):
        wo = u - pad_left
        for bb in range(n_blocks):
            w = width - bb * KB
            if w > KB:
                w = KB
            for m in range(M):
                d = dst + ((bb * M + m) * n_cols + u) * KB
                if wo < 0 or wo >= Wo:
                    memset(d, 0, KB * sizeof(floating))
                    continue
                src = grow + wo * K + (c_lo + bb * KB) * M + m
                if M == 1 and w == KB:
                    memcpy(d, src, KB * sizeof(floating))
                    continue
                if M == 1:
                    for l in range(w):
                        d[l] = src[l]
                else:
                    for l in range(w):
                        d[l] = src[l * M]
                for l in range(w, KB):
                    d[l] = 0


# ---------------------------------------------------------------- NHWC forward

cdef void depthwise_forward_nhwc(const floating[:, :, :, ::1] x,
                                 const floating[:, :, ::1] weight,
                                 const floating[::1] bias,
                                 floating[:, :, :, ::1] out,
                                 ConvGeometry geom, Py_ssize_t group_blocks, Py_ssize_t band_rows, bint stream,
                                 int n_threads) noexcept nogil:
    cdef int isa = active_isa()
    cdef Py_ssize_t KB = DW_BLOCK_BYTES // sizeof(floating)
    cdef Py_ssize_t H = geom.in_h, W = geom.in_w, C = geom.in_c, K = geom.out_c, M = geom.out_c // geom.in_c
    cdef Py_ssize_t Ho = geom.out_h, Wo = geom.out_w, R = geom.kernel_h, S = geom.kernel_w
    cdef Py_ssize_t sh = geom.stride_h, sw = geom.stride_w, dh = geom.dilation_h, dw = geom.dilation_w
    cdef Py_ssize_t n_kblocks = ceil_div(K, KB)
    cdef Py_ssize_t GK = group_blocks * KB
    cdef Py_ssize_t n_groups = ceil_div(n_kblocks, group_blocks)
    cdef Py_ssize_t n_bands = ceil_div(Ho, band_rows)
    cdef Py_ssize_t n_units = geom.batch * n_bands * n_groups
    # The ring holds the rows one output row reads; padded columns cover every column any tap reads.
    cdef Py_ssize_t span = (R - 1) * dh + 1
    cdef Py_ssize_t Wp = (Wo - 1) * sw + (S - 1) * dw + 1
    cdef Py_ssize_t row_elems = Wp * GK
    cdef Py_ssize_t taps_per_block = R * S * KB
    # Kernel rows of consecutive taps take the kernel-row inner loop (if it exists for S and the stride).
    cdef bint by_rows = dw == 1 and try_rowtaps(isa, sizeof(floating), S, sw)
    cdef Py_ssize_t n_full = K // KB      # whole lane blocks (the last one may be partial)
    cdef bint prefetching = W * ceil_div(group_blocks * KB // M * sizeof(floating), 64) <= PREFETCH_LINES
    cdef Py_ssize_t unit, n, kb0, kb1, k_lo, width, ho, ho0, ho1, r, s, ih, pr, slot
    cdef WorkUnit wu
    cdef Py_ssize_t nt, nr, kb, lo, wo, l, kw
    cdef floating* ring = NULL
    cdef Py_ssize_t* tags = NULL
    cdef const floating** aptr = NULL
    cdef const floating** bptr = NULL
    cdef const floating** rows = NULL
    cdef const floating** wrows = NULL
    cdef floating* tail = NULL
    cdef floating* dst
    cdef floating* target
    cdef Py_ssize_t ldo

    # Non-temporal stores need every full lane block of the output aligned to 64 bytes.
    stream = stream and (<size_t> &out[0, 0, 0, 0]) % 64 == 0 and (K * sizeof(floating)) % 64 == 0
    with parallel(num_threads=n_threads):
        ring = <floating*> fc_aligned_malloc(span * row_elems * sizeof(floating))
        tags = <Py_ssize_t*> malloc(span * sizeof(Py_ssize_t))
        aptr = <const floating**> malloc(R * S * sizeof(floating*))
        bptr = <const floating**> malloc(R * S * sizeof(floating*))
        rows = <const floating**> malloc(R * sizeof(floating*))
        wrows = <const floating**> malloc(R * sizeof(floating*))
        tail = <floating*> fc_aligned_malloc(Wo * KB * sizeof(floating))
        for unit in prange(n_units, schedule="static"):
            wu = decode_unit(unit, n_groups, group_blocks, n_kblocks, KB, K, n_bands, band_rows, Ho)
            n, kb0, kb1, k_lo, width, ho0, ho1 = wu.n, wu.block0, wu.block1, wu.lo, wu.width, wu.row0, wu.row1
            for slot in range(span):
                tags[slot] = -1
            for ho in range(ho0, ho1):
                nt = 0
                nr = 0
                for r in range(R):
                    ih = ho * sh - geom.pad_top + r * dh
                    if ih < 0 or ih >= H:
                        continue
                    pr = ho * sh + r * dh
                    slot = pr % span
                    if tags[slot] != pr:
                        pack_expanded_row(&x[n, ih, 0, 0], W, C, M, geom.pad_left, Wp, k_lo, width, kb1 - kb0, 0,
                                          Wp, ring + slot * row_elems)
                        tags[slot] = pr
                    rows[nr] = ring + slot * row_elems
                    wrows[nr] = &weight[0, r * S, 0]
                    nr = nr + 1
                    for s in range(S):
                        aptr[nt] = ring + slot * row_elems + s * dw * KB
                        bptr[nt] = &weight[0, r * S + s, 0]
                        nt = nt + 1
                if prefetching and ho + 1 < ho1:
                    for r in range(R):
                        ih = (ho + 1) * sh - geom.pad_top + r * dh
                        pr = (ho + 1) * sh + r * dh
                        if 0 <= ih < H and tags[pr % span] != pr:
                            prefetch_pixels(<const char*> &x[n, ih, 0, 0], W, C * sizeof(floating),
                                            (k_lo // M) * sizeof(floating),
                                            ((k_lo + width - 1) // M + 1) * sizeof(floating))
                kb = kb0
                if by_rows and n_full > kb0:
                    # the group's whole lane blocks in one call
                    run_rowtaps(isa, S, sw, nr, rows, 0, KB, wrows, kb0 * taps_per_block, &bias[kb0 * KB], Wo,
                                &out[n, ho, 0, kb0 * KB], K, stream, (kb1 if kb1 < n_full else n_full) - kb0,
                                Wp * KB, taps_per_block, KB, KB)
                    kb = kb1 if kb1 < n_full else n_full
                for kb in range(kb, kb1):
                    lo = (kb - kb0) * Wp * KB
                    if (kb + 1) * KB <= K:
                        target = &out[n, ho, 0, kb * KB]
                        ldo = K
                    else:
                        target = tail
                        ldo = KB
                    if by_rows:
                        run_rowtaps(isa, S, sw, nr, rows, lo, KB, wrows, kb * taps_per_block, &bias[kb * KB], Wo,
                                    target, ldo, stream and target != tail)
                    else:
                        run_channels(isa, nt, aptr, lo, sw * KB, bptr, kb * taps_per_block, &bias[kb * KB], Wo,
                                     target, ldo, stream and target != tail)
                    if target == tail:
                        kw = K - kb * KB
                        for wo in range(Wo):
                            dst = &out[n, ho, wo, kb * KB]
                            for l in range(kw):
                                dst[l] = tail[wo * KB + l]
        dw_store_fence()
        fc_aligned_free(ring)
        free(tags)
        free(aptr)
        free(bptr)
        free(rows)
        free(wrows)
        fc_aligned_free(tail)


# ---------------------------------------------------------------- NHWC input gradient

cdef void depthwise_grad_input_nhwc(const floating[:, :, :, ::1] grad_out,
                                    const floating[:, :, ::1] weight_t,
                                    floating[:, :, :, ::1] grad_in,
                                    ConvGeometry geom, Py_ssize_t group_blocks, Py_ssize_t band_rows, bint stream,
                                    int n_threads) noexcept nogil:
    # Input pixel (ih, iw) gathers grad_out[ho, wo] through tap (r, s) when ho*sh = ih + pt - r*dh and
    # wo*sw = iw + pl - s*dw. Input columns are visited by residue q = iw mod sw: within one class the valid
    # taps are the same and consecutive pixels read consecutive output columns, so a class is one call of the
    # channel kernel over the packed grad_out rows (per multiplier m, lanes over input channels). With stride
    # and dilation 1 along the columns, the S taps of a kernel row read S consecutive packed columns in reverse
    # order: weight_t holds each kernel row reversed, and the kernel-row inner loop takes it.
    cdef int isa = active_isa()
    cdef Py_ssize_t KB = DW_BLOCK_BYTES // sizeof(floating)
    cdef Py_ssize_t H = geom.in_h, W = geom.in_w, C = geom.in_c, K = geom.out_c, M = geom.out_c // geom.in_c
    cdef Py_ssize_t Ho = geom.out_h, Wo = geom.out_w, R = geom.kernel_h, S = geom.kernel_w
    cdef Py_ssize_t sh = geom.stride_h, sw = geom.stride_w, dh = geom.dilation_h, dw = geom.dilation_w
    cdef Py_ssize_t pt = geom.pad_top, pl = geom.pad_left
    cdef Py_ssize_t n_cblocks = ceil_div(C, KB)
    cdef Py_ssize_t GC = group_blocks * KB
    cdef Py_ssize_t n_groups = ceil_div(n_cblocks, group_blocks)
    cdef Py_ssize_t n_bands = ceil_div(H, band_rows)
    cdef Py_ssize_t n_units = geom.batch * n_bands * n_groups
    # Packed grad_out columns u = wo + left: left keeps every read column >= 0.
    cdef Py_ssize_t left = ceil_div((S - 1) * dw - pl, sw) if (S - 1) * dw > pl else 0
    cdef Py_ssize_t last_wo = (W - 1 + pl) // sw
    cdef Py_ssize_t Wu = (Wo if Wo > last_wo + 1 else last_wo + 1) + left
    cdef Py_ssize_t row_elems = M * Wu * GC
    cdef Py_ssize_t span = (R - 1) * dh // sh + 1
    cdef Py_ssize_t taps_per_block = R * M * S * KB
    cdef bint by_rows = sw == 1 and dw == 1 and try_rowtaps(isa, sizeof(floating), S, 1)
    cdef Py_ssize_t n_full = C // KB      # whole lane blocks (the last one may be partial)
    cdef bint prefetching = Wo * ceil_div(group_blocks * KB * M * sizeof(floating), 64) <= PREFETCH_LINES
    cdef Py_ssize_t unit, n, cb0, cb1, c_lo, width, ih, ih0, ih1, r, s, m, num, ho, slot
    cdef WorkUnit wu
    cdef Py_ssize_t nr, q, nq, nt, i, cb, lo, j, l, kw, u0
    cdef floating* ring = NULL
    cdef Py_ssize_t* tags = NULL
    cdef Py_ssize_t* row_slot = NULL
    cdef Py_ssize_t* row_tap = NULL
    cdef const floating** aptr = NULL
    cdef const floating** bptr = NULL
    cdef floating* tail = NULL
    cdef floating* zeros = NULL
    cdef floating* dst
    cdef floating* target
    cdef Py_ssize_t ldo

    # Non-temporal stores need every full lane block of the output aligned to 64 bytes.
    stream = stream and (<size_t> &grad_in[0, 0, 0, 0]) % 64 == 0 and (C * sizeof(floating)) % 64 == 0
    with parallel(num_threads=n_threads):
        ring = <floating*> fc_aligned_malloc(span * row_elems * sizeof(floating))
        tags = <Py_ssize_t*> malloc(span * sizeof(Py_ssize_t))
        row_slot = <Py_ssize_t*> malloc(R * sizeof(Py_ssize_t))
        row_tap = <Py_ssize_t*> malloc(R * sizeof(Py_ssize_t))
        aptr = <const floating**> malloc(R * S * M * sizeof(floating*))
        bptr = <const floating**> malloc(R * S * M * sizeof(floating*))
        tail = <floating*> fc_aligned_malloc((W + 1) * KB * sizeof(floating))
        zeros = <floating*> fc_aligned_malloc(KB * sizeof(floating))
        memset(zeros, 0, KB * sizeof(floating))
        for unit in prange(n_units, schedule="static"):
            wu = decode_unit(unit, n_groups, group_blocks, n_cblocks, KB, C, n_bands, band_rows, H)
            n, cb0, cb1, c_lo, width, ih0, ih1 = wu.n, wu.block0, wu.block1, wu.lo, wu.width, wu.row0, wu.row1
            for slot in range(span):
                tags[slot] = -1
            for ih in range(ih0, ih1):
                nr = 0
                for r in range(R):
                    num = ih + pt - r * dh
                    if num < 0 or num % sh != 0:
                        continue
                    ho = num // sh
                    if ho >= Ho:
                        continue
                    slot = ho % span
                    if tags[slot] != ho:
                        if M == 1:      # the planar layout of one multiplier is the expanded one
                            pack_expanded_row(&grad_out[n, ho, 0, 0], Wo, K, 1, left, Wu, c_lo, width, cb1 - cb0, 0,
                                              Wu, ring + slot * row_elems)
                        else:
                            pack_planar_row(&grad_out[n, ho, 0, 0], Wo, K, M, left, Wu, c_lo, width, cb1 - cb0,
                                            ring + slot * row_elems)
                        tags[slot] = ho
                    row_slot[nr] = slot
                    row_tap[nr] = r
                    nr = nr + 1
                if prefetching and ih + 1 < ih1:
                    num = ih + 1 + pt
                    if num % sh == 0 and num // sh < Ho and tags[(num // sh) % span] != num // sh:
                        prefetch_pixels(<const char*> &grad_out[n, num // sh, 0, 0], Wo, K * sizeof(floating),
                                        c_lo * M * sizeof(floating), (c_lo + width) * M * sizeof(floating))
                for q in range(sw):
                    if q >= W:
                        break
                    nq = ceil_div(W - q, sw)
                    nt = 0
                    if by_rows:
                        # one "row" per (kernel row, multiplier): the S taps from column u0(S - 1) up
                        for i in range(nr):
                            for m in range(M):
                                aptr[nt] = ring + row_slot[i] * row_elems + (m * Wu + pl - (S - 1) + left) * KB
                                bptr[nt] = &weight_t[0, (row_tap[i] * M + m) * S, 0]
                                nt = nt + 1
                    else:
                        for i in range(nr):
                            for s in range(S):
                                num = q + pl - s * dw + left * sw
                                if num % sw != 0:
                                    continue
                                u0 = num // sw
                                for m in range(M):
                                    aptr[nt] = ring + row_slot[i] * row_elems + (m * Wu + u0) * KB
                                    bptr[nt] = &weight_t[0, (row_tap[i] * M + m) * S + S - 1 - s, 0]
                                    nt = nt + 1
                    cb = cb0
                    if by_rows and n_full > cb0:
                        # the group's whole lane blocks in one call
                        run_rowtaps(isa, S, 1, nt, aptr, 0, KB, bptr, cb0 * taps_per_block, zeros, nq,
                                    &grad_in[n, ih, q, cb0 * KB], sw * C, stream,
                                    (cb1 if cb1 < n_full else n_full) - cb0, M * Wu * KB, taps_per_block, 0, KB)
                        cb = cb1 if cb1 < n_full else n_full
                    for cb in range(cb, cb1):
                        lo = (cb - cb0) * M * Wu * KB
                        if (cb + 1) * KB <= C:
                            target = &grad_in[n, ih, q, cb * KB]
                            ldo = sw * C
                        else:
                            target = tail
                            ldo = KB
                        if by_rows:
                            run_rowtaps(isa, S, 1, nt, aptr, lo, KB, bptr, cb * taps_per_block, zeros, nq, target,
                                        ldo, stream and target != tail)
                        else:
                            run_channels(isa, nt, aptr, lo, KB, bptr, cb * taps_per_block, zeros, nq, target, ldo,
                                         stream and target != tail)
                        if target == tail:
                            kw = C - cb * KB
                            for j in range(nq):
                                dst = &grad_in[n, ih, q + j * sw, cb * KB]
                                for l in range(kw):
                                    dst[l] = tail[j * KB + l]
        dw_store_fence()
        fc_aligned_free(ring)
        free(tags)
        free(row_slot)
        free(row_tap)
        free(aptr)
        free(bptr)
        fc_aligned_free(tail)
        fc_aligned_free(zeros)


# ---------------------------------------------------------------- NHWC weight gradient

cdef void depthwise_grad_weight_nhwc(const floating[:, :, :, ::1] grad_out,
                                     const floating[:, :, :, ::1] x,
                                     floating[:, :, ::1] partial,
                                     floating[:, ::1] grad_weight,
                                     ConvGeometry geom, Py_ssize_t group_blocks, Py_ssize_t band_rows,
                                     int n_threads) noexcept nogil:
    cdef int isa = active_isa()
    cdef Py_ssize_t KB = DW_BLOCK_BYTES // sizeof(floating)
    cdef Py_ssize_t H = geom.in_h, W = geom.in_w, C = geom.in_c, K = geom.out_c, M = geom.out_c // geom.in_c
    cdef Py_ssize_t Ho = geom.out_h, Wo = geom.out_w, R = geom.kernel_h, S = geom.kernel_w
    cdef Py_ssize_t sh = geom.stride_h, sw = geom.stride_w, dh = geom.dilation_h, dw = geom.dilation_w
    cdef Py_ssize_t n_kblocks = ceil_div(K, KB), Kpad = partial.shape[2]
    cdef Py_ssize_t GK = group_blocks * KB
    cdef Py_ssize_t n_groups = ceil_div(n_kblocks, group_blocks)
    cdef Py_ssize_t n_bands = ceil_div(Ho, band_rows)
    cdef Py_ssize_t n_chunks = geom.batch * n_bands
    cdef Py_ssize_t n_units = n_chunks * n_groups
    cdef Py_ssize_t span = (R - 1) * dh + 1
    cdef Py_ssize_t Wp = (Wo - 1) * sw + (S - 1) * dw + 1
    cdef Py_ssize_t row_elems = Wp * GK
    cdef Py_ssize_t n_taps = R * S
    cdef Py_ssize_t gwt = dw_gw_taps(isa)
    # Kernel rows of consecutive taps take the kernel-row inner loop, this many rows per call (0: none).
    cdef Py_ssize_t gw_rows = rowtaps_gw_rows(isa, sizeof(floating), S, sw) if dw == 1 else 0
    cdef bint prefetching = W * ceil_div(group_blocks * KB // M * sizeof(floating), 64) <= PREFETCH_LINES
    cdef Py_ssize_t unit, chunk, n, kb0, kb1, k_lo, width, ho, ho0, ho1, r, s, ih, pr, slot
    cdef WorkUnit wu
    cdef Py_ssize_t nt, nr, kb, lo, wo, l, kw, t, t0, item, k0, k1, k, g_step
    cdef floating* ring = NULL
    cdef Py_ssize_t* tags = NULL
    cdef const floating** aptr = NULL
    cdef floating** accp = NULL
    cdef const floating** rows = NULL
    cdef floating** accrows = NULL
    cdef floating* gtail = NULL
    cdef floating* dst
    cdef const floating* grow
    cdef const floating* src

    with parallel(num_threads=n_threads):
        ring = <floating*> fc_aligned_malloc(span * row_elems * sizeof(floating))
        tags = <Py_ssize_t*> malloc(span * sizeof(Py_ssize_t))
        aptr = <const floating**> malloc(n_taps * sizeof(floating*))
        accp = <floating**> malloc(n_taps * sizeof(floating*))
        rows = <const floating**> malloc(R * sizeof(floating*))
        accrows = <floating**> malloc(R * sizeof(floating*))
        gtail = <floating*> fc_aligned_malloc(Wo * KB * sizeof(floating))
        for unit in prange(n_units, schedule="static"):
            wu = decode_unit(unit, n_groups, group_blocks, n_kblocks, KB, K, n_bands, band_rows, Ho)
            chunk, n, kb0, kb1, k_lo, width = wu.chunk, wu.n, wu.block0, wu.block1, wu.lo, wu.width
            ho0, ho1 = wu.row0, wu.row1
            for t in range(n_taps):
                memset(&partial[chunk, t, k_lo], 0, (kb1 - kb0) * KB * sizeof(floating))
            for slot in range(span):
                tags[slot] = -1
            for ho in range(ho0, ho1):
                nt = 0
                nr = 0
                for r in range(R):
                    ih = ho * sh - geom.pad_top + r * dh
                    if ih < 0 or ih >= H:
                        continue
                    pr = ho * sh + r * dh
                    slot = pr % span
                    if tags[slot] != pr:
                        pack_expanded_row(&x[n, ih, 0, 0], W, C, M, geom.pad_left, Wp, k_lo, width, kb1 - kb0, 0,
                                          Wp, ring + slot * row_elems)
                        tags[slot] = pr
                    rows[nr] = ring + slot * row_elems
                    accrows[nr] = &partial[chunk, r * S, 0]
                    nr = nr + 1
                    for s in range(S):
                        aptr[nt] = ring + slot * row_elems + s * dw * KB
                        accp[nt] = &partial[chunk, r * S + s, 0]
                        nt = nt + 1
                if prefetching and ho + 1 < ho1:
                    for r in range(R):
                        ih = (ho + 1) * sh - geom.pad_top + r * dh
                        pr = (ho + 1) * sh + r * dh
                        if 0 <= ih < H and tags[pr % span] != pr:
                            prefetch_pixels(<const char*> &x[n, ih, 0, 0], W, C * sizeof(floating),
                                            (k_lo // M) * sizeof(floating),
                                            ((k_lo + width - 1) // M + 1) * sizeof(floating))
                if nt == 0:
                    continue
                for kb in range(kb0, kb1):
                    lo = (kb - kb0) * Wp * KB
                    if (kb + 1) * KB <= K:
                        grow = &grad_out[n, ho, 0, kb * KB]
                        g_step = K
                    else:
                        kw = K - kb * KB
                        for wo in range(Wo):
                            src = &grad_out[n, ho, wo, kb * KB]
                            for l in range(KB):
                                gtail[wo * KB + l] = src[l] if l < kw else 0
                        grow = gtail
                        g_step = KB
                    t0 = 0
                    if gw_rows > 0:
                        while t0 < nr:
                            run_rowtaps_gw(isa, S, sw, nr - t0 if nr - t0 < gw_rows else gw_rows, rows + t0, lo,
                                           grow, g_step, Wo, accrows + t0, kb * KB, Kpad)
                            t0 = t0 + gw_rows
                    else:
                        while t0 < nt:
                            run_channels_gw(isa, nt - t0 if nt - t0 < gwt else gwt, aptr + t0, lo, sw * KB, grow,
                                            g_step, Wo, accp + t0, kb * KB)
                            t0 = t0 + gwt
        fc_aligned_free(ring)
        free(tags)
        free(aptr)
        free(accp)
        free(rows)
        free(accrows)
        fc_aligned_free(gtail)

    # The chunks' sums, added in chunk order: each (tap, lane block) of the result has one owner.
    for item in prange(n_taps * n_kblocks, num_threads=n_threads, schedule="static"):
        t = item // n_kblocks
        kb = item - t * n_kblocks
        k0 = kb * KB
        k1 = k0 + KB
        if k1 > K:
            k1 = K
        dst = &grad_weight[t, 0]
        for k in range(k0, k1):
            dst[k] = partial[0, t, k]
        for chunk in range(1, n_chunks):
            src = &partial[chunk, t, 0]
            for k in range(k0, k1):
                dst[k] = dst[k] + src[k]


# ---------------------------------------------------------------- NCHW

cdef inline void pack_phase_planes(const floating* xplane, Py_ssize_t H, Py_ssize_t W, Py_ssize_t sh,
                                   Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left, Py_ssize_t A, Py_ssize_t B,
                                   Py_ssize_t plane_stride, floating* dst) noexcept nogil:
    """Phase plane (qh, qw) at dst + (qh*sw + qw)*plane_stride holds, with pitch B, [a][b] = x[a*sh + qh - top,
    b*sw + qw - left] (zero outside the plane), for a < A and b < B."""
    cdef Py_ssize_t qh, qw, a, b, ih, iw, b0, b1
    cdef floating* d
    cdef const floating* src
    for qh in range(sh):
        for qw in range(sw):
            for a in range(A):
                d = dst + (qh * sw + qw) * plane_stride + a * B
                ih = a * sh + qh - top
                if ih < 0 or ih >= H:
                    memset(d, 0, B * sizeof(floating))
                    continue
                src = xplane + ih * W
                # columns b with 0 <= b*sw + qw - left < W
                b0 = ceil_div(left - qw, sw) if left > qw else 0
                b1 = ceil_div(W + left - qw, sw) if W + left > qw else 0
                if b1 > B:
                    b1 = B
                if b0 > b1:
                    b0 = b1
                for b in range(b0):
                    d[b] = 0
                if sw == 1:
                    if b1 > b0:
                        memcpy(d + b0, src + b0 + qw - left, (b1 - b0) * sizeof(floating))
                else:
                    for b in range(b0, b1):
                        d[b] = src[b * sw + qw - left]
                for b in range(b1, B):
                    d[b] = 0


cdef void depthwise_forward_nchw(const floating[:, :, :, ::1] x,
                                 const floating[:, ::1] weight,
                                 const floating* bias,
                                 floating[:, :, :, ::1] out,
                                 ConvGeometry geom, int n_threads) noexcept nogil:
    # out[ho*P + wo] (flat, pitch P) = sum over taps of the phase plane of the tap, shifted by the tap's offset.
    cdef int isa = active_isa()
    cdef Py_ssize_t VL = dw_row_lanes(isa, sizeof(floating))
    cdef Py_ssize_t H = geom.in_h, W = geom.in_w, C = geom.in_c, K = geom.out_c, M = geom.out_c // geom.in_c
    cdef Py_ssize_t Ho = geom.out_h, Wo = geom.out_w, R = geom.kernel_h, S = geom.kernel_w
    cdef Py_ssize_t sh = geom.stride_h, sw = geom.stride_w, dh = geom.dilation_h, dw = geom.dilation_w
    cdef Py_ssize_t A = Ho + (R - 1) * dh // sh, P = Wo + (S - 1) * dw // sw
    cdef Py_ssize_t plane_stride = A * P + 2 * VL
    cdef Py_ssize_t count = ceil_div((Ho - 1) * P + Wo, VL) * VL
    cdef Py_ssize_t n_taps = R * S
    cdef Py_ssize_t plane, n, c, m, k, r, s, t, ho
    cdef floating* planes
    cdef floating* flat
    cdef const floating** aptr

    with parallel(num_threads=n_threads):
        planes = <floating*> fc_aligned_malloc(sh * sw * plane_stride * sizeof(floating))
        flat = <floating*> fc_aligned_malloc(count * sizeof(floating))
        aptr = <const floating**> malloc(n_taps * sizeof(floating*))
        memset(planes, 0, sh * sw * plane_stride * sizeof(floating))
        for plane in prange(geom.batch * C, schedule="static"):
            n = plane // C
            c = plane - n * C
            pack_phase_planes(&x[n, c, 0, 0], H, W, sh, sw, geom.pad_top, geom.pad_left, A, P, plane_stride, planes)
            for r in range(R):
                for s in range(S):
                    aptr[r * S + s] = (planes + ((r * dh) % sh * sw + (s * dw) % sw) * plane_stride
                                       + (r * dh) // sh * P + (s * dw) // sw)
            for m in range(M):
                k = c * M + m
                run_rows(isa, n_taps, aptr, &weight[k, 0], bias[k] if bias != NULL else 0, count, flat)
                for ho in range(Ho):
                    memcpy(&out[n, k, ho, 0], flat + ho * P, Wo * sizeof(floating))
        fc_aligned_free(planes)
        fc_aligned_free(flat)
        free(aptr)


cdef void depthwise_grad_input_nchw(const floating[:, :, :, ::1] grad_out,
                                    const floating[:, ::1] weight,
                                    floating[:, :, :, ::1] grad_in,
                                    ConvGeometry geom, int n_threads) noexcept nogil:
    # Input pixels by phase (ih mod sh, iw mod sw): within a phase every pixel has the same valid taps and reads
    # grad_out (padded, pitch P) at a fixed offset from its own flat position i*P + j.
    cdef int isa = active_isa()
    cdef Py_ssize_t VL = dw_row_lanes(isa, sizeof(floating))
    cdef Py_ssize_t H = geom.in_h, W = geom.in_w, C = geom.in_c, K = geom.out_c, M = geom.out_c // geom.in_c
    cdef Py_ssize_t Ho = geom.out_h, Wo = geom.out_w, R = geom.kernel_h, S = geom.kernel_w
    cdef Py_ssize_t sh = geom.stride_h, sw = geom.stride_w, dh = geom.dilation_h, dw = geom.dilation_w
    cdef Py_ssize_t pt = geom.pad_top, pl = geom.pad_left
    cdef Py_ssize_t top = ceil_div((R - 1) * dh - pt, sh) if (R - 1) * dh > pt else 0
    cdef Py_ssize_t left = ceil_div((S - 1) * dw - pl, sw) if (S - 1) * dw > pl else 0
    cdef Py_ssize_t last_ho = (H - 1 + pt) // sh, last_wo = (W - 1 + pl) // sw
    cdef Py_ssize_t A = (Ho if Ho > last_ho + 1 else last_ho + 1) + top
    cdef Py_ssize_t P = (Wo if Wo > last_wo + 1 else last_wo + 1) + left
    cdef Py_ssize_t plane_stride = A * P + 2 * VL
    cdef Py_ssize_t max_count = ceil_div(A * P, VL) * VL
    cdef Py_ssize_t n_taps = R * S * M
    cdef Py_ssize_t plane, n, c, m, k, r, s, t, a, ph, pw, nh, nw, num_r, num_s, nt, count, i, j
    cdef floating* gplanes
    cdef floating* flat
    cdef floating* wt
    cdef floating* dst
    cdef const floating** aptr
    cdef const floating* src

    with parallel(num_threads=n_threads):
        gplanes = <floating*> fc_aligned_malloc(M * plane_stride * sizeof(floating))
        flat = <floating*> fc_aligned_malloc(max_count * sizeof(floating))
        aptr = <const floating**> malloc(n_taps * sizeof(floating*))
        wt = <floating*> fc_aligned_malloc(n_taps * sizeof(floating))
        memset(gplanes, 0, M * plane_stride * sizeof(floating))
        for plane in prange(geom.batch * C, schedule="static"):
            n = plane // C
            c = plane - n * C
            for m in range(M):
                # grad_out plane k at rows top.. and columns left.. of a zero plane (A x P)
                for a in range(A):
                    dst = gplanes + m * plane_stride + a * P
                    memset(dst, 0, P * sizeof(floating))
                    if top <= a < top + Ho:
                        memcpy(dst + left, &grad_out[n, c * M + m, a - top, 0], Wo * sizeof(floating))
            for ph in range(sh):
                if ph >= H:
                    break
                nh = ceil_div(H - ph, sh)
                for pw in range(sw):
                    if pw >= W:
                        break
                    nw = ceil_div(W - pw, sw)
                    nt = 0
                    for r in range(R):
                        num_r = ph + pt - r * dh + top * sh
                        if num_r % sh != 0:
                            continue
                        for s in range(S):
                            num_s = pw + pl - s * dw + left * sw
                            if num_s % sw != 0:
                                continue
                            for m in range(M):
                                aptr[nt] = gplanes + m * plane_stride + num_r // sh * P + num_s // sw
                                wt[nt] = weight[c * M + m, r * S + s]
                                nt = nt + 1
                    count = ceil_div((nh - 1) * P + nw, VL) * VL
                    run_rows(isa, nt, aptr, wt, 0, count, flat)
                    for i in range(nh):
                        dst = &grad_in[n, c, ph + i * sh, 0]
                        if sw == 1:
                            memcpy(dst, flat + i * P, nw * sizeof(floating))
                        else:
                            for j in range(nw):
                                dst[pw + j * sw] = flat[i * P + j]
        fc_aligned_free(gplanes)
        fc_aligned_free(flat)
        free(aptr)
        fc_aligned_free(wt)


cdef void depthwise_grad_weight_nchw(const floating[:, :, :, ::1] grad_out,
                                     const floating[:, :, :, ::1] x,
                                     floating[:, :, ::1] partial,
                                     floating[:, ::1] grad_weight,
                                     ConvGeometry geom, int n_threads) noexcept nogil:
    cdef int isa = active_isa()
    cdef Py_ssize_t VL = dw_row_lanes(isa, sizeof(floating))
    cdef Py_ssize_t H = geom.in_h, W = geom.in_w, C = geom.in_c, K = geom.out_c, M = geom.out_c // geom.in_c
    cdef Py_ssize_t Ho = geom.out_h, Wo = geom.out_w, R = geom.kernel_h, S = geom.kernel_w
    cdef Py_ssize_t sh = geom.stride_h, sw = geom.stride_w, dh = geom.dilation_h, dw = geom.dilation_w
    cdef Py_ssize_t A = Ho + (R - 1) * dh // sh, P = Wo + (S - 1) * dw // sw
    cdef Py_ssize_t plane_stride = A * P + 2 * VL
    cdef Py_ssize_t count = ceil_div((Ho - 1) * P + Wo, VL) * VL
    cdef Py_ssize_t n_taps = R * S
    cdef Py_ssize_t gwt = dw_gw_taps(isa)
    cdef Py_ssize_t plane, n, c, m, k, r, s, t, t0, nt, ho, l, item, chunk
    cdef floating total
    cdef floating* planes
    cdef floating* gflat
    cdef floating* acc
    cdef floating* dst
    cdef const floating** aptr

    with parallel(num_threads=n_threads):
        planes = <floating*> fc_aligned_malloc(sh * sw * plane_stride * sizeof(floating))
        gflat = <floating*> fc_aligned_malloc(count * sizeof(floating))
        acc = <floating*> fc_aligned_malloc(gwt * VL * sizeof(floating))
        aptr = <const floating**> malloc(n_taps * sizeof(floating*))
        memset(planes, 0, sh * sw * plane_stride * sizeof(floating))
        memset(gflat, 0, count * sizeof(floating))
        for plane in prange(geom.batch * C, schedule="static"):
            n = plane // C
            c = plane - n * C
            pack_phase_planes(&x[n, c, 0, 0], H, W, sh, sw, geom.pad_top, geom.pad_left, A, P, plane_stride, planes)
            for r in range(R):
                for s in range(S):
                    aptr[r * S + s] = (planes + ((r * dh) % sh * sw + (s * dw) % sw) * plane_stride
                                       + (r * dh) // sh * P + (s * dw) // sw)
            for m in range(M):
                k = c * M + m
                # grad_out plane k with pitch P; the columns past Wo stay zero
                for ho in range(Ho):
                    memcpy(gflat + ho * P, &grad_out[n, k, ho, 0], Wo * sizeof(floating))
                t0 = 0
                while t0 < n_taps:
                    nt = n_taps - t0 if n_taps - t0 < gwt else gwt
                    memset(acc, 0, nt * VL * sizeof(floating))
                    run_rows_gw(isa, nt, aptr + t0, gflat, count, acc)
                    for t in range(nt):
                        total = 0
                        for l in range(VL):
                            total = total + acc[t * VL + l]
                        partial[n, k, t0 + t] = total
                    t0 = t0 + gwt
        fc_aligned_free(planes)
        fc_aligned_free(gflat)
        fc_aligned_free(acc)
        free(aptr)

    # Images added in order: each weight element has one owner.
    for k in prange(K, num_threads=n_threads, schedule="static"):
        for t in range(n_taps):
            total = partial[0, k, t]
            for chunk in range(1, geom.batch):
                total = total + partial[chunk, k, t]
            grad_weight[k, t] = total


# ---------------------------------------------------------------- Python entry points (validated by the caller)

ISA_LEVELS = {"baseline": DW_ISA_BASELINE, "avx2": DW_ISA_AVX2, "avx512": DW_ISA_AVX512}


def lanes(itemsize):
    """Channels per lane block of the NHWC kernels for an element size (64 bytes' worth)."""
    return DW_BLOCK_BYTES // itemsize


def pack_weights(const floating[:, :] taps, const floating[:] bias, floating[:, :, ::1] packed,
                 floating[::1] packed_bias):
    """packed[b, t, l] = taps[t, b*lanes + l] and packed_bias[b*lanes + l] = bias[b*lanes + l], zero past the last
    channel: the forward kernel's weights from (R*S, K) taps (any strides; bias may be empty for none)."""
    cdef Py_ssize_t T = taps.shape[0], K = taps.shape[1], L = packed.shape[2], NB = packed.shape[0]
    cdef Py_ssize_t b, t, l, k
    with nogil:
        for b in range(NB):
            for t in range(T):
                for l in range(L):
                    k = b * L + l
                    packed[b, t, l] = taps[t, k] if k < K else 0
        for k in range(NB * L):
            packed_bias[k] = bias[k] if k < bias.shape[0] else 0


def pack_weights_reversed(const floating[:, :, :, :] weight, floating[:, :, ::1] packed):
    """packed[b, (r*M + m)*S + S-1-s, l] = weight[r, s, b*lanes + l, m], zero past the last channel: the input
    gradient's weights (kernel rows reversed, per multiplier) from the (R, S, C, M) kernel (any strides)."""
    cdef Py_ssize_t R = weight.shape[0], S = weight.shape[1], C = weight.shape[2], M = weight.shape[3]
    cdef Py_ssize_t L = packed.shape[2], NB = packed.shape[0]
    cdef Py_ssize_t b, r, s, m, l, c
    with nogil:
        for b in range(NB):
            for r in range(R):
                for m in range(M):
                    for s in range(S):
                        for l in range(L):
                            c = b * L + l
                            packed[b, (r * M + m) * S + S - 1 - s, l] = weight[r, s, c, m] if c < C else 0


def forward_nhwc(const floating[:, :, :, ::1] x, const floating[:, :, ::1] packed_weight,
                 const floating[::1] packed_bias, floating[:, :, :, ::1] out, ConvGeometry geom,
                 Py_ssize_t group_blocks, Py_ssize_t band_rows, bint stream, int n_threads):
    """packed_weight: (K blocks, R*S, lanes), [kb, r*S + s, l] = w[r, s, kb*lanes + l]; packed_bias: (K blocks *
    lanes,); both zero-padded past K. stream: write the output with non-temporal stores (where it is 64-byte
    aligned)."""
    with nogil:
        depthwise_forward_nhwc(x, packed_weight, packed_bias, out, geom, group_blocks, band_rows, stream, n_threads)


def grad_input_nhwc(const floating[:, :, :, ::1] grad_out, const floating[:, :, ::1] packed_weight_t,
                    floating[:, :, :, ::1] grad_in, ConvGeometry geom, Py_ssize_t group_blocks,
                    Py_ssize_t band_rows, bint stream, int n_threads):
    """packed_weight_t: (C blocks, R*M*S, lanes), [cb, (r*M + m)*S + S-1-s, l] = w[r, s, (cb*lanes + l)*M + m]
    (kernel rows reversed), zero-padded past C."""
    with nogil:
        depthwise_grad_input_nhwc(grad_out, packed_weight_t, grad_in, geom, group_blocks, band_rows, stream,
                                  n_threads)


def grad_weight_nhwc(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] x,
                     floating[:, :, ::1] partial, floating[:, ::1] grad_weight, ConvGeometry geom,
                     Py_ssize_t group_blocks, Py_ssize_t band_rows, int n_threads):
    """partial: (N * ceil(Ho / band_rows), R*S, Kpad) scratch; grad_weight: (R*S, K)."""
    with nogil:
        depthwise_grad_weight_nhwc(grad_out, x, partial, grad_weight, geom, group_blocks, band_rows, n_threads)


def forward_nchw(const floating[:, :, :, ::1] x, const floating[:, ::1] weight, bias,
                 floating[:, :, :, ::1] out, ConvGeometry geom, int n_threads):
    """weight: (K, R*S); bias: None or (K,)."""
    cdef const floating[::1] bias_view
    cdef const floating* bias_ptr = NULL
    if bias is not None:
        bias_view = bias
        bias_ptr = &bias_view[0]
    with nogil:
        depthwise_forward_nchw(x, weight, bias_ptr, out, geom, n_threads)


def grad_input_nchw(const floating[:, :, :, ::1] grad_out, const floating[:, ::1] weight,
                    floating[:, :, :, ::1] grad_in, ConvGeometry geom, int n_threads):
    with nogil:
        depthwise_grad_input_nchw(grad_out, weight, grad_in, geom, n_threads)


def grad_weight_nchw(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] x,
                     floating[:, :, ::1] partial, floating[:, ::1] grad_weight, ConvGeometry geom, int n_threads):
    """partial: (N, K, R*S) scratch; grad_weight: (K, R*S)."""
    with nogil:
        depthwise_grad_weight_nchw(grad_out, x, partial, grad_weight, geom, n_threads)
