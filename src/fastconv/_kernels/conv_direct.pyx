"""Direct convolution kernels (NHWC activations, HWIO weights).

The innermost loops run over contiguous channels so that the compiler vectorises them: output channels in the
forward pass and the weight gradient, input channels in the input gradient.
"""
from cython.parallel cimport parallel, prange
from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from fastconv._kernels.cpu_dispatch cimport active_isa
from fastconv._kernels.finite_check cimport fc_any_nonfinite_f32, fc_any_nonfinite_f64
from fastconv._kernels.geometry cimport ConvGeometry, first_valid, end_valid
from fastconv._kernels.transpose_tile cimport fc_transpose_for_f32, fc_transpose_for_f64

cdef extern from "strided_rows.h" nogil:
    void fc_copy_strided_rows(const void *src, Py_ssize_t src_stride, void *dst, Py_ssize_t n_rows,
                              Py_ssize_t row_bytes)

cdef extern from "aligned_buffer.h" nogil:
    # (buffers the tiles load vectors from or store them to: see the header for what a straddling load costs)
    int FC_BUFFER_ALIGN
    void* fc_aligned_malloc(size_t bytes)
    void fc_aligned_free(void* p)

cdef extern from "direct_tile.h" nogil:
    ctypedef void (*fc_tile_f32)(Py_ssize_t, const float * const *, Py_ssize_t, Py_ssize_t,
                                 const float * const *, Py_ssize_t, Py_ssize_t, float *, Py_ssize_t,
                                 const float *) noexcept nogil
    ctypedef void (*fc_tile_f64)(Py_ssize_t, const double * const *, Py_ssize_t, Py_ssize_t,
                                 const double * const *, Py_ssize_t, Py_ssize_t, double *, Py_ssize_t,
                                 const double *) noexcept nogil
    fc_tile_f32 fc_tile_for_f32(int isa, int wide)
    fc_tile_f64 fc_tile_for_f64(int isa, int wide)
    int fc_tile_pixels(int isa, int wide)
    int fc_tile_lanes(int isa, int itemsize, int wide)
    int fc_tile_wide_for(int isa, int itemsize, Py_ssize_t channels)

cdef extern from "nchw_store.h" nogil:
    ctypedef void (*fc_nchw_store_f32)(const float *, Py_ssize_t, float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                       int) noexcept nogil
    ctypedef void (*fc_nchw_store_f64)(const double *, Py_ssize_t, double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                       int) noexcept nogil
    fc_nchw_store_f32 fc_nchw_store_for_f32(int isa)
    fc_nchw_store_f64 fc_nchw_store_for_f64(int isa)

cdef enum:
    # Output pixels along a row processed together, so each weight vector loaded is reused this many times.
    PIXEL_BLOCK = 4
    # Input channels per grad-weight work item: keeps the owned (block, K) slice of the gradient in cache.
    GRAD_WEIGHT_CHANNEL_BLOCK = 16
    # Bytes of packed weights one pass of the tiled forward kernel streams per row: sized to stay in cache. The
    # wide tile (twice the lanes) takes twice the bytes, the same input channels per pass: blocks of 16 or 8
    # channels, inside L1, measured no faster at 2 threads and slower at 1 (BENCHMARKS.md, session 7). On Zen 5
    # (48 KiB L1, 1 MiB L2), 192 KiB against 96 ran level to 4% faster at 1 and 2 threads (vgg_conv2_2 and
    # small_c4 most), 384 KiB no faster again; 24 KiB lost up to 37%.
    WEIGHT_BLOCK_BYTES = 196608
    # Output pixels per block of the tiled forward's NCHW write-out: 32 x 64 lanes of 4 bytes = 8 KiB of the
    # unit's buffer, read once per channel from L1, and 128 bytes written per channel row.
    NCHW_BLOCK = 32
    # The tiled forward's first channel block starts its sums at the bias in the registers, except in an output
    # of one block of channels over this size, which is filled with it first (see conv2d_forward_nhwc_tiled).
    INIT_IN_PLACE_MAX_BYTES = 8388608
    # The tiled weight gradient of a gradient of at most SEGMENT_GRAD_BYTES, over at least SEGMENT_MIN_CHUNKS
    # chunks of output rows, sums SEGMENTS segments of those rows in parallel, each into a partial gradient of
    # its own (at most 4 MiB of partials together).
    # It pays where the chunk loop leaves threads idle (fewer than SEGMENT_FEW_ITEMS gradient tiles) or where
    # every thread would stream an output gradient of SEGMENT_STREAM_BYTES or more (measured, 2 threads:
    # small_c1 +30%, 28x28x1 -> 32 +45%, small_c2 +15%). The stream bound was 16 MiB, from a Zen 5 where MNIST's
    # 2 MB second conv ran level; on Zen 3 (AVX2, 16-lane tiles: 4 blocks of lanes per 64 filters, and two
    # barriers per chunk of rows) 1 MiB against 16, 4-way A/B at 2 threads: vgg_conv1_2 +24-48%, resnet_stem
    # +18%, mnist_c2 +9%; at 1 thread +5-16%, -2% and -7%.
    SEGMENTS = 16
    SEGMENT_GRAD_BYTES = 262144
    SEGMENT_MIN_CHUNKS = 4
    SEGMENT_FEW_ITEMS = 16
    SEGMENT_STREAM_BYTES = 1048576
    # Gradient rows (R * S * C / groups) from which a misaligned one-block output gradient is copied into
    # 64-byte aligned panels for the weight gradient (see conv2d_grad_weight_nhwc_tiled).
    PANEL_MIN_GRAD_ROWS = 192
    # Input pixels of at least this many bytes (all channels) are gathered into xpack by a weight-gradient tile
    # with more than two blocks of lanes; narrower ones are read in place, a few consecutive channels per cache
    # line. 4-way A/B on Zen 3 (AVX2, 16-lane tiles) of never gathering against always: resnet_stem +21-22%,
    # small_c2 +18%, vgg_conv1_2 +11-16%, mnist_c2 +9%, vgg_conv2_2 +6%, small_c4 +3-5%, small_c3 -2-4%, and
    # from 256 channels on it lost (vgg_conv3_2 -6%, vgg_conv5_2 -10%), at 1 and 2 threads.
    PACK_X_MIN_PIXEL_BYTES = 1024


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


cdef inline void run_tile(Py_ssize_t n_taps, const floating** a, Py_ssize_t a_off, Py_ssize_t a_step,
                          const floating** b, Py_ssize_t b_step, Py_ssize_t count,
                          floating* out, Py_ssize_t ldo, int isa, int wide,
                          const floating* init=NULL) noexcept nogil:
    if floating is float:
        fc_tile_for_f32(isa, wide)(n_taps, a, a_off, a_step, b, b_step, count, out, ldo, init)
    else:
        fc_tile_for_f64(isa, wide)(n_taps, a, a_off, a_step, b, b_step, count, out, ldo, init)


cdef inline void store_nchw(const floating* buf, Py_ssize_t ldb, floating* dst, Py_ssize_t ldd, Py_ssize_t n_px,
                            Py_ssize_t n_k, bint relu, int isa) noexcept nogil:
    if floating is float:
        fc_nchw_store_for_f32(isa)(buf, ldb, dst, ldd, n_px, n_k, relu)
    else:
        fc_nchw_store_for_f64(isa)(buf, ldb, dst, ldd, n_px, n_k, relu)


cdef inline void advance_row_major(Py_ssize_t* n, Py_ssize_t* ho, Py_ssize_t* wo, Py_ssize_t step, Py_ssize_t Ho,
                                   Py_ssize_t Wo) noexcept nogil:
    """Moves the output position (n, ho, wo) `step` pixels on in row-major order, within its row (wo + step <= Wo)."""
    wo[0] = wo[0] + step
    if wo[0] == Wo:
        wo[0] = 0
        ho[0] = ho[0] + 1
        if ho[0] == Ho:
            ho[0] = 0
            n[0] = n[0] + 1


cdef inline void fill_rows(floating* dst, Py_ssize_t n_rows, const floating* row, Py_ssize_t width) noexcept nogil:
    """n_rows consecutive copies of row[0:width] at dst, in doubling copies (few calls however many rows)."""
    cdef Py_ssize_t done = 1, step
    if n_rows <= 0:
        return
    memcpy(dst, row, width * sizeof(floating))
    while done < n_rows:
        step = done if 2 * done <= n_rows else n_rows - done
        memcpy(dst + done * width, dst, step * width * sizeof(floating))
        done = done + step


cdef int conv2d_forward_nhwc_tiled(const floating[:, :, :, ::1] x,
                                   const floating[::1] packed_weight,
                                   const floating* bias,
                                   const floating* zeros,
                                   floating[:, :, :, ::1] out,
                                   ConvGeometry geom, Py_ssize_t unit_tiles, bint relu, bint out_nchw,
                                   bint batch_inner, int n_threads, Py_ssize_t weight_row=0,
                                   bint copy_per_pass=False, bint check_finite=False,
                                   bint weight_oihw=False, bint all_kblocks=False) noexcept nogil:
    # Output pixels, flattened over (n, ho, wo), are cut into tiles of WB (rows of the register tile may belong
    # to different output rows or images, so no lanes idle at row ends) and tiles into units. Work item = (unit,
    # group, block of output channels). Per item: the input pointers of every (tile, tap) are laid out once;
    # the unit's outputs are accumulated in a small per-thread buffer, input channels in blocks whose packed
    # weights stay in cache (outer), tiles inner. A tap that no pixel of a tile can reach is skipped; a pixel
    # whose tap falls in the padding reads zeros. batch_inner (NHWC output only) flattens the pixels over
    # (ho, wo, n) instead: a tile's rows are then mostly one output position in different images, which all see
    # the same taps, so a padded layer on small images computes no zeros (the MNIST convnet's second input
    # gradient, 11x11 padded by 2: 29% of its row-major tiles' products were zeros). all_kblocks: an item is
    # (unit, group) and runs every block of output channels over the pointers it laid out once (see
    # _planning.forward_all_kblocks).
    cdef int isa = active_isa()
    cdef Py_ssize_t K = geom.out_c, Cg = geom.in_c // geom.groups, Kg = K // geom.groups
    cdef int wide = fc_tile_wide_for(isa, sizeof(floating), Kg)
    cdef Py_ssize_t WB = fc_tile_pixels(isa, wide), KB = fc_tile_lanes(isa, sizeof(floating), wide)
    cdef Py_ssize_t R = geom.kernel_h, S = geom.kernel_w, Ho = geom.out_h, Wo = geom.out_w
    cdef Py_ssize_t n_pixels = geom.batch * Ho * Wo
    cdef Py_ssize_t unit_pixels = unit_tiles * WB
    cdef Py_ssize_t n_units = (n_pixels + unit_pixels - 1) // unit_pixels
    cdef Py_ssize_t n_kblocks = (Kg + KB - 1) // KB
    cdef Py_ssize_t kblocks_per_item = n_kblocks if all_kblocks else 1
    cdef Py_ssize_t n_kitems = n_kblocks // kblocks_per_item
    cdef Py_ssize_t n_items = n_units * geom.groups * n_kitems
    # Packed weights: blocks of (R, S, Cg, KB) one after another, rows KB apart. weight_row (not 0): HWIO itself
    # (one group, K a whole number of blocks), rows weight_row = K apart, block kb starting kb * KB into each row;
    # with copy_per_pass, each pass first copies the rows of its block of input channels into wbuf, packed there
    # as (R, S, nc, KB) (see below). weight_oihw (with copy_per_pass): OIHW itself (one group, K a whole number of
    # blocks), each pass transposing its (KB, nc * R * S) block into wbuf as (nc, R, S, KB), so a tap's channels
    # lie R * S * KB apart there (no merged kernel rows). Returns the number of passes that copied a NaN or an
    # infinity, counted with check_finite (one unit's passes copy every weight once), else 0.
    cdef Py_ssize_t w_row = weight_row if weight_row else KB
    cdef Py_ssize_t tap_stride = Cg * w_row
    cdef Py_ssize_t wblock_stride = KB if weight_row else R * S * Cg * KB
    cdef Py_ssize_t tile_ptrs = R * S * WB
    cdef Py_ssize_t cblock = WEIGHT_BLOCK_BYTES * (2 if wide else 1) // (R * S * KB * sizeof(floating))
    cdef const floating* packed = &packed_weight[0]
    cdef floating* out_flat = &out[0, 0, 0, 0]
    cdef Py_ssize_t item, unit, g, kb, kb0, k0, kw, cb, c0, nc, tile, p, p0, p1, r, s, j, k, t, n, rem, ho, wo
    cdef Py_ssize_t iw, taps, tile_count, seg_end, jb, je
    cdef floating v
    cdef Py_ssize_t r_lo, r_hi
    cdef bint* merged
    cdef const floating* wblock
    cdef const floating** xptrs
    cdef const floating** wptrs
    cdef Py_ssize_t* tap_offsets
    cdef Py_ssize_t* n_taps
    cdef Py_ssize_t* pix_off
    cdef Py_ssize_t* pix_lo
    cdef Py_ssize_t* pix_hi
    cdef Py_ssize_t* pix_w
    cdef Py_ssize_t h0, lo, hi, row_off, last_h0, corner
    cdef Py_ssize_t pixel_step = geom.stride_w * geom.in_c
    cdef const floating* tap_x
    cdef const floating* x0 = zeros  # (an input with no pixels: no tap ever reads it)
    cdef floating* unitbuf
    cdef floating* bias_row
    cdef floating* acc
    cdef floating* wbuf
    cdef Py_ssize_t tap
    cdef int n_bad = 0
    cdef bint reached

    if x.shape[1] > 0 and x.shape[2] > 0:
        x0 = &x[0, 0, 0, 0]
    if cblock < 1:
        cblock = 1
    # Equal blocks: 512 channels in blocks of at most 170 become 4 x 128, not 3 x 170 + 2.
    cblock = (Cg + ((Cg + cblock - 1) // cblock) - 1) // ((Cg + cblock - 1) // cblock)
    # Tiles accumulate straight in an NHWC output whose channels are whole blocks of lanes (see below).
    cdef bint in_place = not out_nchw and geom.groups == 1 and K % KB == 0
    cdef Py_ssize_t out_tiles
    cdef bint whole_rows = cblock == Cg and geom.groups == 1 and geom.dilation_w == 1 and not weight_oihw
    cdef Py_ssize_t pass_channel_step = R * S * KB if weight_oihw else KB  # (between a tap's channels in wbuf)
    # (the bias fill of large outputs is one string copy per unit only where a pixel's channels are one block)
    cdef bint prefill = K == KB and n_pixels * K * sizeof(floating) > INIT_IN_PLACE_MAX_BYTES
    with parallel(num_threads=n_threads):
        xptrs = <const floating**> malloc(unit_tiles * tile_ptrs * sizeof(floating*))
        wptrs = <const floating**> malloc(R * S * sizeof(floating*))
        tap_offsets = <Py_ssize_t*> malloc(unit_tiles * R * S * sizeof(Py_ssize_t))
        n_taps = <Py_ssize_t*> malloc(unit_tiles * sizeof(Py_ssize_t))
        merged = <bint*> malloc(unit_tiles * sizeof(bint))
        pix_off = <Py_ssize_t*> malloc(WB * sizeof(Py_ssize_t))
        pix_lo = <Py_ssize_t*> malloc(WB * sizeof(Py_ssize_t))
        pix_hi = <Py_ssize_t*> malloc(WB * sizeof(Py_ssize_t))
        pix_w = <Py_ssize_t*> malloc(WB * sizeof(Py_ssize_t))
        unitbuf = <floating*> fc_aligned_malloc(unit_pixels * KB * sizeof(floating))
        bias_row = <floating*> fc_aligned_malloc(KB * sizeof(floating))
        wbuf = <floating*> fc_aligned_malloc((R * S * cblock * KB if copy_per_pass else 1) * sizeof(floating))
        for item in prange(n_items, schedule="dynamic"):
            kb0 = item % n_kitems * kblocks_per_item
            g = (item // n_kitems) % geom.groups
            unit = item // (n_kitems * geom.groups)
            p0 = unit * unit_pixels
            p1 = p0 + unit_pixels
            if p1 > n_pixels:
                p1 = n_pixels
            tile_count = (p1 - p0 + WB - 1) // WB
            # (n, ho, wo) of pixel p0, then stepped along: no divisions per pixel (they cost more than the
            # arithmetic of a tile when the channels are few).
            if batch_inner:
                n = p0 % geom.batch
                rem = p0 // geom.batch
            else:
                n = p0 // (Ho * Wo)
                rem = p0 - n * Ho * Wo
            ho = rem // Wo
            wo = rem - ho * Wo
            last_h0 = -geom.pad_top - 1  # (no window starts there: h0 >= -pad_top)
            for tile in range(tile_count):
                # A whole tile of consecutive pixels of one output row whose windows lie inside the input across
                # (most tiles): its pixels see the same taps, stride_w columns apart, so their pointers follow
                # from the first one's without the per-pixel work below (a tenth of a 7x7 RGB stem's call).
                if (not batch_inner and wo + WB <= Wo and p0 + (tile + 1) * WB <= p1
                        and wo * geom.stride_w >= geom.pad_left
                        and (wo + WB - 1) * geom.stride_w - geom.pad_left + (S - 1) * geom.dilation_w < geom.in_w):
                    h0 = ho * geom.stride_h - geom.pad_top
                    if h0 != last_h0:
                        last_h0 = h0
                        lo = first_valid(h0, geom.dilation_h)
                        hi = end_valid(h0, geom.dilation_h, geom.in_h, R)
                    corner = ((n * geom.in_h + h0) * geom.in_w + wo * geom.stride_w - geom.pad_left) * geom.in_c
                    taps = 0
                    merged[tile] = whole_rows
                    for r in range(lo, hi):
                        row_off = corner + r * geom.dilation_h * geom.in_w * geom.in_c
                        for s in range(1 if whole_rows else S):
                            tap_offsets[tile * R * S + taps] = r * S + s
                            tap_x = x0 + (row_off + s * geom.dilation_w * geom.in_c + g * Cg)
                            for j in range(WB):
                                xptrs[tile * tile_ptrs + taps * WB + j] = tap_x + j * pixel_step
                            taps = taps + 1
                    n_taps[tile] = taps
                    advance_row_major(&n, &ho, &wo, WB, Ho, Wo)
                    continue
                # Per pixel: the flat offset of its window's corner (n, h0, w0) in x (formed into a pointer only
                # where the tap lies inside), its first column w0, and the kernel rows [rlo, rhi) inside the
                # input; rows are an interval, an empty one is (0, 0), and past the unit's end every pixel is.
                for j in range(WB):
                    p = p0 + tile * WB + j
                    pix_lo[j] = 0
                    pix_hi[j] = 0
                    if p < p1:
                        h0 = ho * geom.stride_h - geom.pad_top
                        pix_w[j] = wo * geom.stride_w - geom.pad_left
                        pix_off[j] = ((n * geom.in_h + h0) * geom.in_w + pix_w[j]) * geom.in_c
                        if h0 != last_h0:  # (a row's pixels share it: the two divisions were a tenth of the
                            last_h0 = h0   # set-up of a 7x7 RGB stem)
                            lo = first_valid(h0, geom.dilation_h)
                        hi = end_valid(h0, geom.dilation_h, geom.in_h, R)
                        if lo < hi:
                            pix_lo[j] = lo
                            pix_hi[j] = hi
                        if batch_inner:
                            n = n + 1
                            if n == geom.batch:
                                n = 0
                                wo = wo + 1
                                if wo == Wo:
                                    wo = 0
                                    ho = ho + 1
                        else:
                            advance_row_major(&n, &ho, &wo, 1, Ho, Wo)
                    else:
                        pix_w[j] = -1  # never inside: no merging
                taps = 0
                # With one channel block, no groups and no column dilation, the S taps of a kernel row read
                # S*C consecutive inputs per pixel (and the packed weights are consecutive too): a tile whose
                # pixels all see the whole kernel row takes it as one long tap, which matters when C is small.
                # A kernel row that some pixels reach and others do not needs per-pixel zeros: no merging.
                merged[tile] = whole_rows
                for j in range(WB):
                    if (pix_w[j] < 0 or pix_w[j] + S > geom.in_w
                            or pix_lo[j] != pix_lo[0] or pix_hi[j] != pix_hi[0]):
                        merged[tile] = False
                # Kernel rows that some pixel reaches: the span of the pixels' intervals (a row in a gap between
                # them, possible only with padding wider than the image, reads zeros for every pixel). Asking each
                # row whether a pixel reaches it took a fifth of a 7x7 RGB stem's set-up.
                r_lo = R
                r_hi = 0
                for j in range(WB):
                    if pix_lo[j] < pix_hi[j]:
                        if pix_lo[j] < r_lo:
                            r_lo = pix_lo[j]
                        if pix_hi[j] > r_hi:
                            r_hi = pix_hi[j]
                for r in range(r_lo, r_hi):
                    row_off = r * geom.dilation_h * geom.in_w * geom.in_c
                    if merged[tile]:
                        tap_offsets[tile * R * S + taps] = r * S
                        for j in range(WB):
                            xptrs[tile * tile_ptrs + taps * WB + j] = x0 + (pix_off[j] + row_off)
                        taps = taps + 1
                        continue
                    # A tap no pixel reaches is skipped, as the rows above: in tiles over the batch all pixels
                    # share one output position, and at a padded border column every pixel misses the same
                    # kernel columns (4-way A/B on Zen 3, 2 threads: MNIST's second input gradient +14%, its
                    # third +41%; row-major layers level).
                    for s in range(S):
                        tap_offsets[tile * R * S + taps] = r * S + s
                        reached = False
                        for j in range(WB):
                            iw = pix_w[j] + s * geom.dilation_w
                            if pix_lo[j] <= r < pix_hi[j] and 0 <= iw < geom.in_w:
                                xptrs[tile * tile_ptrs + taps * WB + j] = x0 + (
                                    pix_off[j] + row_off + s * geom.dilation_w * geom.in_c + g * Cg)
                                reached = True
                            else:
                                xptrs[tile * tile_ptrs + taps * WB + j] = zeros
                        if reached:
                            taps = taps + 1
                n_taps[tile] = taps
            for kb in range(kb0, kb0 + kblocks_per_item):
                k0 = g * Kg + kb * KB
                kw = Kg - kb * KB
                if kw > KB:
                    kw = KB
                wblock = packed + (g * n_kblocks + kb) * wblock_stride
                # The unit's whole tiles accumulate straight in the output when its pixels' channels are whole
                # blocks of lanes (NHWC, no groups): no copying pass (on a 3-channel layer with a 90 MB output that
                # pass took 40% of the call; with 128 channels in two blocks, small_c3's took 8%). The rest
                # accumulate in unitbuf.
                out_tiles = (p1 - p0) // WB if in_place and not batch_inner else 0
                # Accumulators start at the bias (a per-element choice here cost as much as the whole arithmetic
                # of a 3-channel layer): the first channel block's tiles load it, except those accumulating in an
                # output of one block of channels too large for the caches, which is filled with it first (one
                # string copy per unit, as a pixel's channels are one run). There a tile's stores to lines it
                # has not read each cost a read from memory, which the fill's string copies avoid (small_c1, 90 MB:
                # 5% slower without the fill; the 3 MB output of a 7x7 RGB stem: 5% faster).
                for k in range(KB):
                    bias_row[k] = bias[k0 + k] if (bias != NULL and k < kw) else 0
                if prefill:
                    fill_rows(out_flat + p0 * K, out_tiles * WB, bias_row, KB)
                for cb in range((Cg + cblock - 1) // cblock):
                    c0 = cb * cblock
                    nc = Cg - c0
                    if nc > cblock:
                        nc = cblock
                    # Copied per pass: HWIO read in place with rows over HWIO_IN_PLACE_MAX_ROW_BYTES was 40-70%
                    # slower (each tap's block lies in short runs spread over long rows, which the tiles re-read),
                    # and a packing pass before the call writes and re-reads every weight once more. Here the copy
                    # lands in this core's cache and its tiles read it there (vgg_conv5_2 at 2 threads 3.4 -> 3.0
                    # ms; vgg_conv4_2 -5%). The first unit checks the weights in its copies, once they are in cache
                    # (checking while copying, element by element, cost 15% of vgg_conv5_2 at one thread on Zen 4).
                    if copy_per_pass and weight_oihw:  # (rows of wblock: output channels, Cg * R * S apart)
                        if floating is float:
                            fc_transpose_for_f32(isa)(wblock + c0 * R * S, Cg * R * S, wbuf, KB, KB, nc * R * S)
                        else:
                            fc_transpose_for_f64(isa)(wblock + c0 * R * S, Cg * R * S, wbuf, KB, KB, nc * R * S)
                    elif copy_per_pass:
                        for tap in range(R * S):
                            fc_copy_strided_rows(wblock + (tap * Cg + c0) * weight_row, weight_row * sizeof(floating),
                                                 wbuf + tap * nc * KB, nc, KB * sizeof(floating))
                    if copy_per_pass and check_finite and unit == 0:
                        if floating is float:
                            n_bad += fc_any_nonfinite_f32(<const float*> wbuf, nc * R * S * KB)
                        else:
                            n_bad += fc_any_nonfinite_f64(<const double*> wbuf, nc * R * S * KB)
                    for tile in range(tile_count):
                        for t in range(n_taps[tile]):
                            if copy_per_pass:
                                wptrs[t] = wbuf + tap_offsets[tile * R * S + t] * (KB if weight_oihw else nc * KB)
                            else:
                                wptrs[t] = wblock + tap_offsets[tile * R * S + t] * tap_stride + c0 * w_row
                        if tile < out_tiles:
                            acc = out_flat + (p0 + tile * WB) * K + k0
                        else:
                            acc = unitbuf + tile * WB * KB
                        run_tile(n_taps[tile], xptrs + tile * tile_ptrs, c0, 1, wptrs,
                                 pass_channel_step if copy_per_pass else w_row,
                                 S * nc if merged[tile] else nc, acc, K if tile < out_tiles else KB, isa, wide,
                                 bias_row if cb == 0 and (not prefill or tile >= out_tiles) else NULL)
                if out_nchw:
                    # NCHW: each output channel's pixels of one image are consecutive; one image at a time, in
                    # blocks of NCHW_BLOCK pixels whose unitbuf rows stay in L1 while every channel reads them (a
                    # channel's walk over the whole unit missed L1 at every pixel: small_c1's call took 31 ms with
                    # it, 19 without, 16 with an NHWC output).
                    p = p0
                    while p < p1:
                        n = p // (Ho * Wo)
                        seg_end = (n + 1) * Ho * Wo
                        if seg_end > p1:
                            seg_end = p1
                        jb = p
                        while jb < seg_end:
                            je = jb + NCHW_BLOCK if jb + NCHW_BLOCK < seg_end else seg_end
                            store_nchw(unitbuf + (jb - p0) * KB, KB,
                                       out_flat + (n * K + k0) * Ho * Wo - n * Ho * Wo + jb, Ho * Wo, je - jb, kw,
                                       relu, isa)
                            jb = je
                        p = seg_end
                else:
                    if relu:  # fused ReLU: v < 0, not v > 0, so NaN stays NaN (as np.maximum)
                        for p in range(p0, p0 + out_tiles * WB):
                            for j in range(p * K + k0, p * K + k0 + KB):
                                v = out_flat[j]
                                out_flat[j] = 0 if v < 0 else v  # a select, which vectorises (a conditional store did not)
                    for p in range(p0 + out_tiles * WB, p1):
                        # (ho * Wo + wo) * N + n -> (n * Ho + ho) * Wo + wo
                        j = (p % geom.batch) * Ho * Wo + p // geom.batch if batch_inner else p
                        for k in range(kw):
                            v = unitbuf[(p - p0) * KB + k]
                            out_flat[j * K + k0 + k] = 0 if (relu and v < 0) else v
        free(xptrs)
        free(wptrs)
        free(tap_offsets)
        free(n_taps)
        free(merged)
        free(pix_off)
        free(pix_lo)
        free(pix_hi)
        free(pix_w)
        fc_aligned_free(unitbuf)
        fc_aligned_free(bias_row)
        fc_aligned_free(wbuf)
    return n_bad


cdef inline void pack_grad_out_rows(const floating[:, :, :, ::1] grad_out, Py_ssize_t row0, Py_ssize_t row1,
                                    Py_ssize_t chunk_row0, Py_ssize_t chunk_pixels, floating* panels,
                                    Py_ssize_t lanes) noexcept nogil:
    # Output-gradient rows [row0, row1) of a chunk starting at chunk_row0 into the chunk's panels: one per block
    # of lanes, (chunk_pixels, lanes) row-major, so the tile reads each block's pixels contiguously.
    cdef Py_ssize_t Ho = grad_out.shape[1], Wo = grad_out.shape[2], n_blocks = grad_out.shape[3] // lanes
    cdef Py_ssize_t row, n, ho, wo, b
    cdef floating* dst
    for row in range(row0, row1):
        n = row // Ho
        ho = row - n * Ho
        for wo in range(Wo):
            dst = panels + ((row - chunk_row0) * Wo + wo) * lanes
            for b in range(n_blocks):
                memcpy(dst + b * chunk_pixels * lanes, &grad_out[n, ho, wo, b * lanes], lanes * sizeof(floating))


cdef inline void grad_weight_tile(const floating* x0, const floating* go, Py_ssize_t block_stride,
                                  Py_ssize_t pixel_stride, Py_ssize_t pixel0, floating* grad_flat, ConvGeometry geom,
                                  Py_ssize_t row0, Py_ssize_t row1, Py_ssize_t item, bint across_taps,
                                  Py_ssize_t n_rtiles, Py_ssize_t n_ctiles,
                                  const floating** aptrs, const floating** bptrs, Py_ssize_t* row_offsets,
                                  Py_ssize_t* tap_pixels, floating* xpack, floating* scratch, int isa,
                                  int wide) noexcept nogil:
    # One work item (group, tile of gradient rows) over output rows [row0, row1): adds their contribution to its
    # rows of grad_flat, (R * S * Cg, K) row-major, one block of output channels after another. Block b's lanes
    # of output pixel p (flat over N, Ho, Wo) are at go + b * block_stride + (p - pixel0) * pixel_stride: the
    # chunk's panels (see pack_grad_out_rows) or the padded output gradient itself.
    # With more than two blocks and wide input pixels (PACK_X_MIN_PIXEL_BYTES), the tile's input values are first
    # gathered into xpack, (pixels, WB) row-major,
    # then read contiguously by every block (on vgg_conv4_2, strided reads of both operands from L2 held the
    # tile to ~140 GFLOP/s a core; packed, ~190).
    cdef Py_ssize_t C = geom.in_c, K = geom.out_c, Cg = C // geom.groups, Kg = K // geom.groups
    cdef Py_ssize_t WB = fc_tile_pixels(isa, wide), KB = fc_tile_lanes(isa, sizeof(floating), wide)
    cdef Py_ssize_t R = geom.kernel_h, S = geom.kernel_w, Ho = geom.out_h, Wo = geom.out_w
    cdef Py_ssize_t n_kblocks = (Kg + KB - 1) // KB
    cdef Py_ssize_t n_grad_rows = R * S * Cg
    cdef Py_ssize_t g, r, s, rt, kb, q0, nq, q, k0, kw, j, k, t, row, n, ho, ih, x_offset, count, a_step
    cdef Py_ssize_t offset_w, wo_lo, wo_hi, wo, n_taps, c_src, x_step, o0 = 0, o1 = 0, o2 = 0, o3 = 0, o4 = 0, o5 = 0
    cdef bint full, pack_x = n_kblocks > 2 and C * <Py_ssize_t> sizeof(floating) >= PACK_X_MIN_PIXEL_BYTES
    cdef floating* dst
    cdef floating* packed_row
    cdef const floating* src
    cdef const floating* panel
    rt = item % n_rtiles
    g = item // n_rtiles
    # This tile's gradient rows are q0 .. q0 + nq - 1 of HWIO flattened to (R * S * Cg, K).
    if across_taps:
        q0 = rt * WB
        nq = n_grad_rows - q0
        r = 0
        wo_lo = 0
        wo_hi = Wo
    else:
        s = (rt // n_ctiles) % S
        r = rt // (n_ctiles * S)
        q0 = (r * S + s) * Cg + (rt % n_ctiles) * WB
        nq = Cg - (rt % n_ctiles) * WB
        offset_w = s * geom.dilation_w - geom.pad_left
        wo_lo = first_valid(offset_w, geom.stride_w)
        wo_hi = end_valid(offset_w, geom.stride_w, geom.in_w, Wo)
    if nq > WB:
        nq = WB
    if wo_hi <= wo_lo:
        return
    count = wo_hi - wo_lo
    # Rows past the tile's last real one repeat its first; their results are discarded. (No division in the
    # per-tap case: it runs for every item.)
    if across_taps:
        for j in range(WB):
            q = q0 + j if j < nq else q0
            row_offsets[j] = ((q // (Cg * S)) * geom.dilation_h * geom.in_w
                              + ((q // Cg) % S) * geom.dilation_w) * C + q % Cg
    else:
        c_src = (rt % n_ctiles) * WB
        for j in range(WB):
            row_offsets[j] = s * geom.dilation_w * C + c_src + (j if j < nq else 0)
    x_step = geom.stride_w * C
    if pack_x and WB == 6:
        o0 = row_offsets[0]
        o1 = row_offsets[1]
        o2 = row_offsets[2]
        o3 = row_offsets[3]
        o4 = row_offsets[4]
        o5 = row_offsets[5]
    n_taps = 0
    n = row0 // Ho
    ho = row0 - n * Ho - 1
    for row in range(row0, row1):
        ho = ho + 1
        if ho == Ho:
            ho = 0
            n = n + 1
        ih = ho * geom.stride_h - geom.pad_top + r * geom.dilation_h
        if ih < 0 or ih >= geom.in_h:
            continue
        # Input pixel of output (n, ho, wo_lo) at tap (r, 0) of this group (tap r's row in the per-tap tiles,
        # r = 0 across taps); each row's offset adds its own tap and channel.
        x_offset = ((n * geom.in_h + ih) * geom.in_w + wo_lo * geom.stride_w - geom.pad_left) * C + g * Cg
        if pack_x:
            packed_row = xpack + n_taps * count * WB
            if WB == 6:  # (the wide tile's rows, spelled out: a loop of 6 ran at half the speed)
                for wo in range(count):
                    src = x0 + (x_offset + wo * x_step)
                    dst = packed_row + wo * 6
                    dst[0] = src[o0]
                    dst[1] = src[o1]
                    dst[2] = src[o2]
                    dst[3] = src[o3]
                    dst[4] = src[o4]
                    dst[5] = src[o5]
            else:
                for wo in range(count):
                    src = x0 + (x_offset + wo * x_step)
                    for j in range(WB):
                        packed_row[wo * WB + j] = src[row_offsets[j]]
            for j in range(WB):
                aptrs[n_taps * WB + j] = packed_row + j
        else:
            for j in range(WB):
                aptrs[n_taps * WB + j] = x0 + (x_offset + row_offsets[j])
        tap_pixels[n_taps] = row * Wo + wo_lo - pixel0
        n_taps = n_taps + 1
    if n_taps == 0:
        return
    a_step = WB if pack_x else x_step
    for kb in range(n_kblocks):
        k0 = g * Kg + kb * KB
        kw = Kg - kb * KB
        if kw > KB:
            kw = KB
        panel = go + (g * n_kblocks + kb) * block_stride
        for t in range(n_taps):
            bptrs[t] = panel + tap_pixels[t] * pixel_stride
        full = nq == WB and kw == KB
        if full:
            dst = grad_flat + q0 * K + k0
        else:
            for j in range(WB):
                for k in range(KB):
                    scratch[j * KB + k] = grad_flat[(q0 + j) * K + k0 + k] if (j < nq and k < kw) else 0
            dst = scratch
        run_tile(n_taps, aptrs, 0, a_step, bptrs, pixel_stride, count, dst, K if full else KB, isa, wide)
        if not full:
            for j in range(nq):
                for k in range(kw):
                    grad_flat[(q0 + j) * K + k0 + k] = scratch[j * KB + k]


cdef int conv2d_grad_weight_nhwc_tiled(const floating[:, :, :, ::1] grad_out,
                                       const floating[:, :, :, ::1] x,
                                       floating[:, :, :, ::1] grad_weight,
                                       ConvGeometry geom, Py_ssize_t chunk_rows, int n_threads) noexcept nogil:
    # Work item = (group, tile of gradient rows): it owns those rows of the gradient, accumulated in registers
    # over every output pixel of a chunk of output rows, one block of output channels at a time. Chunks (sized to
    # stay in cache) run one after another, so each element sums in the same order whatever the thread count.
    # With more than one block of lanes per group, each chunk's output gradient is first packed into panels
    # (pack_grad_out_rows), by all threads: at 512 lanes a pixel's block lay 2 KiB from the next one's, and the
    # tile's reads of it missed L1 (vgg_conv4_2 +13%, small_c4 +9%, 2 threads). With one block (64 channels) the
    # rows are 256 bytes apart, and the packing pass only cost: read in place (resnet_stem -19%, vgg_conv1_2 -8%).
    # A gradient row is one (tap, input channel) of HWIO. Tiles take WB input channels of one tap; when every tap
    # of every output pixel lies inside the input (no padding reached) and a group has fewer channels than that,
    # tiles take WB consecutive rows of HWIO across taps instead (3 channels: 4 tiles for a 3x3 kernel, not 9).
    # grad_out's channel axis is padded to whole blocks of lanes per group (groups * k_blocks * lanes).
    #
    # A small gradient (at most SEGMENT_GRAD_BYTES) over many rows may instead be summed in SEGMENTS segments of
    # consecutive output rows, in parallel (each in pieces of chunk_rows, packed by the thread that sums them),
    # each into its own zeroed partial gradient; the partials are then added in segment order. Each thread then
    # streams only its segments' output gradient, once: with few gradient tiles per chunk (3 input channels: 2)
    # every thread read the whole output gradient, and that stream bounded the call; with one tile, one thread
    # did all the work. The choice and the segments depend on the shape only, so results do not depend on the
    # thread count. Returns -1 where a workspace (a chunk's panels, at most a few MiB) could not be allocated.
    cdef int isa = active_isa()
    cdef Py_ssize_t C = geom.in_c, K = geom.out_c, Cg = C // geom.groups, Kg = K // geom.groups
    cdef int wide = fc_tile_wide_for(isa, sizeof(floating), Kg)
    cdef Py_ssize_t WB = fc_tile_pixels(isa, wide), KB = fc_tile_lanes(isa, sizeof(floating), wide)
    cdef Py_ssize_t R = geom.kernel_h, S = geom.kernel_w, Ho = geom.out_h, Wo = geom.out_w
    cdef Py_ssize_t n_ctiles = (Cg + WB - 1) // WB
    cdef Py_ssize_t n_grad_rows = R * S * Cg
    cdef bint all_taps_inside = (geom.pad_top == 0 and geom.pad_left == 0
                                 and (Ho - 1) * geom.stride_h + (R - 1) * geom.dilation_h < geom.in_h
                                 and (Wo - 1) * geom.stride_w + (S - 1) * geom.dilation_w < geom.in_w)
    cdef bint across_taps = all_taps_inside and (n_grad_rows + WB - 1) // WB < R * S * n_ctiles
    cdef Py_ssize_t n_rtiles = (n_grad_rows + WB - 1) // WB if across_taps else R * S * n_ctiles
    cdef Py_ssize_t n_items = geom.groups * n_rtiles
    cdef Py_ssize_t n_rows = geom.batch * Ho
    cdef Py_ssize_t n_chunks = (n_rows + chunk_rows - 1) // chunk_rows
    cdef Py_ssize_t grad_size = n_grad_rows * K
    cdef Py_ssize_t K_padded = grad_out.shape[3]
    # Panels also for one block where grad_out is not 64-byte aligned (NumPy's large arrays lie 16 bytes past a
    # page) and each of its values meets enough gradient rows that the copy costs less than the tile's vector
    # loads straddling cache lines (one thread, misaligned -> panels: vgg_conv1_2 29.3 -> 26.4 ms, MNIST's
    # second conv 2.30 -> 2.00; a 7x7 RGB stem, 147 rows, lost: 1.04-1.13 -> 1.20 ms at 2 threads).
    cdef bint use_panels = (Kg + KB - 1) // KB > 1 or (
        n_grad_rows >= PANEL_MIN_GRAD_ROWS and (<size_t> &grad_out[0, 0, 0, 0]) % FC_BUFFER_ALIGN != 0)
    cdef Py_ssize_t panel_size = chunk_rows * Wo * K_padded
    cdef Py_ssize_t chunk_pixels = chunk_rows * Wo
    # Where grad_weight_tile finds block b of pixel p: go + b * block_stride + (p - pixel0) * pixel_stride, go
    # being a chunk's panels (pixel0 its first pixel) or grad_out itself (pixel0 0).
    cdef Py_ssize_t block_stride = chunk_pixels * KB if use_panels else KB
    cdef Py_ssize_t pixel_stride = KB if use_panels else K_padded
    cdef const floating* go_flat = &grad_out[0, 0, 0, 0]
    cdef const floating* go
    cdef const floating* own_go
    cdef Py_ssize_t pixel0
    cdef floating* grad_flat = &grad_weight[0, 0, 0, 0]
    cdef const floating* x0 = &x[0, 0, 0, 0]
    cdef Py_ssize_t chunk, item, row, row0, row1, seg, e, seg_row0, seg_row1, seg_end, seg_item
    cdef floating total
    cdef floating* partials = NULL
    cdef floating* shared_panels = NULL
    cdef floating* partial
    cdef floating* own_panels
    cdef const floating** aptrs
    cdef const floating** bptrs
    cdef Py_ssize_t* row_offsets
    cdef Py_ssize_t* tap_pixels
    cdef floating* xpack
    cdef floating* scratch
    cdef int failed = 0
    cdef int* failed_flag = &failed

    cdef Py_ssize_t grad_out_bytes = n_rows * Wo * grad_out.shape[3] * sizeof(floating)
    if (n_chunks >= SEGMENT_MIN_CHUNKS and grad_size * sizeof(floating) <= SEGMENT_GRAD_BYTES
            and (n_items * ((Kg + KB - 1) // KB) < SEGMENT_FEW_ITEMS or grad_out_bytes >= SEGMENT_STREAM_BYTES)):
        # (if NULL: the chunk loop)
        partials = <floating*> fc_aligned_malloc(SEGMENTS * grad_size * sizeof(floating))
    if partials == NULL and use_panels:
        shared_panels = <floating*> fc_aligned_malloc(panel_size * sizeof(floating))
        if shared_panels == NULL:
            return -1

    with parallel(num_threads=n_threads):
        aptrs = <const floating**> malloc(chunk_rows * WB * sizeof(floating*))
        bptrs = <const floating**> malloc(chunk_rows * sizeof(floating*))
        row_offsets = <Py_ssize_t*> malloc(WB * sizeof(Py_ssize_t))
        tap_pixels = <Py_ssize_t*> malloc(chunk_rows * sizeof(Py_ssize_t))
        xpack = <floating*> fc_aligned_malloc(chunk_rows * Wo * WB * sizeof(floating))
        scratch = <floating*> fc_aligned_malloc(WB * KB * sizeof(floating))
        own_panels = NULL
        if partials != NULL:
            if use_panels:
                own_panels = <floating*> fc_aligned_malloc(panel_size * sizeof(floating))
                if own_panels == NULL:
                    failed_flag[0] = 1
            own_go = own_panels if use_panels else go_flat
            for seg in prange(SEGMENTS, schedule="dynamic"):
                if use_panels and own_panels == NULL:
                    continue
                partial = partials + seg * grad_size
                memset(partial, 0, grad_size * sizeof(floating))
                seg_end = (seg + 1) * n_rows // SEGMENTS
                seg_row0 = seg * n_rows // SEGMENTS
                while seg_row0 < seg_end:
                    seg_row1 = seg_row0 + chunk_rows
                    if seg_row1 > seg_end:
                        seg_row1 = seg_end
                    if use_panels:
                        pack_grad_out_rows(grad_out, seg_row0, seg_row1, seg_row0, chunk_pixels, own_panels, KB)
                    for seg_item in range(n_items):
                        grad_weight_tile(x0, own_go, block_stride, pixel_stride, seg_row0 * Wo if use_panels else 0,
                                         partial, geom, seg_row0, seg_row1, seg_item, across_taps, n_rtiles,
                                         n_ctiles, aptrs, bptrs, row_offsets, tap_pixels, xpack, scratch, isa, wide)
                    seg_row0 = seg_row1
            for e in prange(grad_size, schedule="static"):
                total = 0
                for seg in range(SEGMENTS):
                    total = total + partials[seg * grad_size + e]
                grad_flat[e] = grad_flat[e] + total
        else:
            for chunk in range(n_chunks):
                row0 = chunk * chunk_rows
                row1 = row0 + chunk_rows
                if row1 > n_rows:
                    row1 = n_rows
                go = go_flat
                pixel0 = 0
                if use_panels:
                    for row in prange(row0, row1, schedule="static"):
                        pack_grad_out_rows(grad_out, row, row + 1, row0, chunk_pixels, shared_panels, KB)
                    go = shared_panels
                    pixel0 = row0 * Wo
                for item in prange(n_items, schedule="static"):
                    grad_weight_tile(x0, go, block_stride, pixel_stride, pixel0, grad_flat, geom, row0, row1, item,
                                     across_taps, n_rtiles, n_ctiles, aptrs, bptrs, row_offsets, tap_pixels, xpack,
                                     scratch, isa, wide)
        free(aptrs)
        free(bptrs)
        free(row_offsets)
        free(tap_pixels)
        fc_aligned_free(xpack)
        fc_aligned_free(scratch)
        fc_aligned_free(own_panels)
    fc_aligned_free(partials)
    fc_aligned_free(shared_panels)
    return -1 if failed else 0


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


def tile_shape(itemsize, Py_ssize_t channels):
    """(rows, channel lanes) of the register tile the tiled kernels use at the active instruction set for a
    reduction into `channels` lanes per group (output channels): the packing and padding they expect."""
    cdef int isa = active_isa()
    cdef int wide = fc_tile_wide_for(isa, itemsize, channels)
    return fc_tile_pixels(isa, wide), fc_tile_lanes(isa, itemsize, wide)


def forward_nhwc_tiled(const floating[:, :, :, ::1] x, const floating[::1] packed_weight, bias,
                       const floating[::1] zeros, floating[:, :, :, ::1] out, ConvGeometry geom,
                       Py_ssize_t unit_tiles, bint relu, bint out_nchw, bint batch_inner, int n_threads,
                       Py_ssize_t weight_row=0, bint copy_per_pass=False, bint check_finite=False,
                       bint weight_oihw=False, bint all_kblocks=False):
    """packed_weight: (groups, K/groups/lanes rounded up, R, S, C/groups, lanes), zero-padded (_layout), best
    64-byte aligned (its vector loads straddle cache lines otherwise: 15-20% slower);
    zeros: at least C/groups zeros; relu: write max(out, 0) (NaN kept); out_nchw: out is (N, K, Ho, Wo);
    batch_inner: tiles run over the images at each output position (not with out_nchw);
    weight_row (not 0): packed_weight is HWIO, rows weight_row = K apart (one group, whole blocks of lanes), read in
    place, or with copy_per_pass copied by each pass into an aligned packed buffer (any alignment then);
    weight_oihw (with copy_per_pass, weight_row 0): packed_weight is OIHW itself (one group, whole blocks of lanes),
    each pass transposing its block into that buffer; all_kblocks: each work item runs every block of output
    channels of its pixels (one set-up of their input pointers).
    Returns False where check_finite (with copy_per_pass) met a NaN or an infinity among the weights, else True."""
    cdef const floating[::1] bias_view
    cdef const floating* bias_ptr = NULL
    if bias is not None:
        bias_view = bias
        bias_ptr = &bias_view[0]
    cdef int n_bad
    with nogil:
        n_bad = conv2d_forward_nhwc_tiled(x, packed_weight, bias_ptr, &zeros[0], out, geom, unit_tiles, relu,
                                          out_nchw, batch_inner and not out_nchw, n_threads, weight_row,
                                          copy_per_pass, check_finite, weight_oihw, all_kblocks)
    return n_bad == 0


def grad_weight_nhwc_tiled(const floating[:, :, :, ::1] grad_out_padded, const floating[:, :, :, ::1] x,
                           floating[:, :, :, ::1] grad_weight, ConvGeometry geom, Py_ssize_t chunk_rows,
                           int n_threads):
    """grad_out_padded: (N, Ho, Wo, groups * k_blocks * lanes), each group's channels zero-padded to whole blocks;
    grad_weight: HWIO, zero-filled (the kernel accumulates into it)."""
    cdef int status
    with nogil:
        status = conv2d_grad_weight_nhwc_tiled(grad_out_padded, x, grad_weight, geom, chunk_rows, n_threads)
    if status != 0:
        raise MemoryError("grad_weight_nhwc_tiled: no memory for the packed output gradient of a chunk "
                          f"({chunk_rows} rows)")


def grad_input_nhwc(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] weight_t,
                    floating[:, :, :, ::1] grad_in, ConvGeometry geom, int n_threads):
    with nogil:
        conv2d_grad_input_nhwc(grad_out, weight_t, grad_in, geom, n_threads)


def grad_weight_nhwc(const floating[:, :, :, ::1] grad_out, const floating[:, :, :, ::1] x,
                     floating[:, :, :, ::1] grad_weight, ConvGeometry geom, int n_threads):
    with nogil:
        conv2d_grad_weight_nhwc(grad_out, x, grad_weight, geom, n_threads)
