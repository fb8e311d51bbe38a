"""Max-pooling forward (with optional argmax) and backward, channels_last and channels_first.

NaN propagates: a NaN beats any number, and a later NaN in the window takes the index (PyTorch's rule).
Among equal maxima the first in row-major window order wins.
"""
from cython.parallel cimport parallel, prange
from cython cimport floating
from libc.math cimport INFINITY
from libc.stdint cimport INT32_MAX, int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from fastconv._kernels.geometry cimport ConvGeometry, window_begin, window_end

cdef enum:
    # Channels per backward work item in NHWC: enough items for all threads even at batch 1.
    BACKWARD_CHANNEL_BLOCK = 64


cdef void max_pool2d_forward_nhwc(const floating[:, :, :, ::1] x,
                                  floating[:, :, :, ::1] out,
                                  int64_t* indices,
                                  ConvGeometry geom, int n_threads) noexcept nogil:
    cdef Py_ssize_t C = geom.in_c, Ho = geom.out_h, Wo = geom.out_w
    # float32 values and int32 positions have the same width, so the select loop vectorises when it tracks
    # positions in int32 (widened to int64 once per output cell); float64 pairs with int64 directly.
    cdef bint narrow = floating is float and geom.in_h * geom.in_w <= INT32_MAX
    cdef Py_ssize_t row, n, ho, wo, c, ih, iw, ih0, ih1, iw0, iw1
    cdef int64_t flat, first
    cdef int32_t flat32
    cdef floating v, best
    cdef bint take
    cdef floating* op
    cdef int64_t* ip
    cdef int32_t* where
    cdef const floating* xp

    with parallel(num_threads=n_threads):
        where = <int32_t*> malloc(C * sizeof(int32_t))
        for row in prange(geom.batch * Ho, schedule="static"):
            n = row // Ho
            ho = row - n * Ho
            ih0 = window_begin(ho * geom.stride_h - geom.pad_top)
            ih1 = window_end(ho * geom.stride_h - geom.pad_top, geom.kernel_h, geom.in_h)
            for wo in range(Wo):
                iw0 = window_begin(wo * geom.stride_w - geom.pad_left)
                iw1 = window_end(wo * geom.stride_w - geom.pad_left, geom.kernel_w, geom.in_w)
                op = &out[n, ho, wo, 0]
                for c in range(C):
                    op[c] = -INFINITY
                # Branch-free selects (no conditional stores) so that the channel loops vectorise.
                if indices == NULL:
                    for ih in range(ih0, ih1):
                        for iw in range(iw0, iw1):
                            xp = &x[n, ih, iw, 0]
                            for c in range(C):
                                v = xp[c]
                                best = op[c]
                                op[c] = v if (v > best or v != v) else best
                elif narrow:
                    ip = indices + ((n * Ho + ho) * Wo + wo) * C
                    flat32 = <int32_t>(ih0 * geom.in_w + iw0)
                    for c in range(C):
                        where[c] = flat32
                    for ih in range(ih0, ih1):
                        for iw in range(iw0, iw1):
                            xp = &x[n, ih, iw, 0]
                            flat32 = <int32_t>(ih * geom.in_w + iw)
                            for c in range(C):
                                v = xp[c]
                                best = op[c]
                                take = v > best or v != v
                                op[c] = v if take else best
                                where[c] = flat32 if take else where[c]
                    for c in range(C):
                        ip[c] = where[c]
                else:
                    ip = indices + ((n * Ho + ho) * Wo + wo) * C
                    first = ih0 * geom.in_w + iw0
                    for c in range(C):
                        ip[c] = first
                    for ih in range(ih0, ih1):
                        for iw in range(iw0, iw1):
                            xp = &x[n, ih, iw, 0]
                            flat = ih * geom.in_w + iw
                            for c in range(C):
                                v = xp[c]
                                best = op[c]
                                take = v > best or v != v
                                op[c] = v if take else best
                                ip[c] = flat if take else ip[c]
        free(where)


cdef void max_pool2d_forward_nchw(const floating[:, :, :, ::1] x,
                                  floating[:, :, :, ::1] out,
                                  int64_t* indices,
                                  ConvGeometry geom, int n_threads) noexcept nogil:
    cdef Py_ssize_t C = geom.in_c, Ho = geom.out_h, Wo = geom.out_w, W = geom.in_w
    cdef Py_ssize_t plane, n, c, ho, wo, ih, iw, ih0, ih1, iw0, iw1
    cdef int64_t best_index
    cdef floating v, best
    cdef const floating* xp
    cdef floating* op

    for plane in prange(geom.batch * C, num_threads=n_threads, schedule="static"):
        n = plane // C
        c = plane - n * C
        xp = &x[n, c, 0, 0]
        op = &out[n, c, 0, 0]
        for ho in range(Ho):
            ih0 = window_begin(ho * geom.stride_h - geom.pad_top)
            ih1 = window_end(ho * geom.stride_h - geom.pad_top, geom.kernel_h, geom.in_h)
            for wo in range(Wo):
                iw0 = window_begin(wo * geom.stride_w - geom.pad_left)
                iw1 = window_end(wo * geom.stride_w - geom.pad_left, geom.kernel_w, geom.in_w)
                best = -INFINITY
                best_index = ih0 * W + iw0
                for ih in range(ih0, ih1):
                    for iw in range(iw0, iw1):
                        v = xp[ih * W + iw]
                        if v > best or v != v:
                            best = v
                            best_index = ih * W + iw
                op[ho * Wo + wo] = best
                if indices != NULL:
                    indices[plane * Ho * Wo + ho * Wo + wo] = best_index


cdef void max_pool2d_backward_nhwc(const floating[:, :, :, ::1] grad_out,
                                   const int64_t[:, :, :, ::1] indices,
                                   floating[:, :, :, ::1] grad_in,
                                   int n_threads) noexcept nogil:
    cdef Py_ssize_t N = grad_in.shape[0], H = grad_in.shape[1], W = grad_in.shape[2], C = grad_in.shape[3]
    cdef Py_ssize_t Ho = grad_out.shape[1], Wo = grad_out.shape[2]
    cdef Py_ssize_t n_cblocks = (C + BACKWARD_CHANNEL_BLOCK - 1) // BACKWARD_CHANNEL_BLOCK
    cdef Py_ssize_t item, n, cb, c0, c1, c, pix
    cdef floating* dx
    cdef const floating* gp
    cdef const int64_t* ip

    for item in prange(N * n_cblocks, num_threads=n_threads, schedule="static"):
        n = item // n_cblocks
        cb = item - n * n_cblocks
        c0 = cb * BACKWARD_CHANNEL_BLOCK
        c1 = c0 + BACKWARD_CHANNEL_BLOCK
        if c1 > C:
            c1 = C
        dx = &grad_in[n, 0, 0, 0]
        for pix in range(H * W):
            memset(dx + pix * C + c0, 0, (c1 - c0) * sizeof(floating))
        for pix in range(Ho * Wo):
            gp = &grad_out[n, 0, 0, 0] + pix * C
            ip = &indices[n, 0, 0, 0] + pix * C
            for c in range(c0, c1):
                dx[ip[c] * C + c] += gp[c]


cdef void max_pool2d_backward_nchw(const floating[:, :, :, ::1] grad_out,
                                   const int64_t[:, :, :, ::1] indices,
                                   floating[:, :, :, ::1] grad_in,
                                   int n_threads) noexcept nogil:
    cdef Py_ssize_t N = grad_in.shape[0], C = grad_in.shape[1], H = grad_in.shape[2], W = grad_in.shape[3]
    cdef Py_ssize_t Ho = grad_out.shape[2], Wo = grad_out.shape[3]
    cdef Py_ssize_t plane, n, c, p
    cdef floating* dx
    cdef const floating* gp
    cdef const int64_t* ip

    for plane in prange(N * C, num_threads=n_threads, schedule="static"):
        n = plane // C
        c = plane - n * C
        dx = &grad_in[n, c, 0, 0]
        gp = &grad_out[n, c, 0, 0]
        ip = &indices[n, c, 0, 0]
        memset(dx, 0, H * W * sizeof(floating))
        for p in range(Ho * Wo):
            dx[ip[p]] += gp[p]


cdef void max_pool2d_backward_disjoint_nhwc(const floating[:, :, :, ::1] grad_out,
                                            const int64_t[:, :, :, ::1] indices,
                                            floating[:, :, :, ::1] grad_in,
                                            ConvGeometry geom, int n_threads) noexcept nogil:
    # Windows that do not overlap (stride == pool size): every input cell lies in at most one window, so each
    # is written exactly once -- the window's gradient where it won, zero elsewhere -- with no zeroing pass and
    # no scatter; the channel loop vectorises.
    cdef Py_ssize_t C = geom.in_c, H = geom.in_h, W = geom.in_w, Ho = geom.out_h, Wo = geom.out_w
    cdef Py_ssize_t covered_h = Ho * geom.stride_h - geom.pad_top
    cdef Py_ssize_t covered_w = Wo * geom.stride_w - geom.pad_left
    cdef Py_ssize_t row, n, ho, wo, r, s, ih, iw, c, h_end
    cdef int64_t flat
    cdef floating* dst
    cdef const floating* gp
    cdef const int64_t* ip

    if covered_h > H:
        covered_h = H
    if covered_w > W:
        covered_w = W
    for row in prange(geom.batch * Ho, num_threads=n_threads, schedule="static"):
        n = row // Ho
        ho = row - n * Ho
        for r in range(geom.kernel_h):
            ih = ho * geom.stride_h - geom.pad_top + r
            if ih < 0 or ih >= H:
                continue
            for wo in range(Wo):
                gp = &grad_out[n, ho, wo, 0]
                ip = &indices[n, ho, wo, 0]
                for s in range(geom.kernel_w):
                    iw = wo * geom.stride_w - geom.pad_left + s
                    if iw < 0 or iw >= W:
                        continue
                    dst = &grad_in[n, ih, iw, 0]
                    flat = ih * W + iw
                    for c in range(C):
                        dst[c] = gp[c] if ip[c] == flat else 0
            if covered_w < W:
                memset(&grad_in[n, ih, covered_w, 0], 0, (W - covered_w) * C * sizeof(floating))
        if ho == Ho - 1 and covered_h < H:
            # Rows below the last window belong to no window.
            memset(&grad_in[n, covered_h, 0, 0], 0, (H - covered_h) * W * C * sizeof(floating))


cdef void max_pool2d_backward_disjoint_nchw(const floating[:, :, :, ::1] grad_out,
                                            const int64_t[:, :, :, ::1] indices,
                                            floating[:, :, :, ::1] grad_in,
                                            ConvGeometry geom, int n_threads) noexcept nogil:
    cdef Py_ssize_t C = geom.in_c, H = geom.in_h, W = geom.in_w, Ho = geom.out_h, Wo = geom.out_w
    cdef Py_ssize_t plane, n, c, ho, wo, r, s, ih, iw
    cdef int64_t flat
    cdef floating* dx
    cdef const floating* gp
    cdef const int64_t* ip

    for plane in prange(geom.batch * C, num_threads=n_threads, schedule="static"):
        n = plane // C
        c = plane - n * C
        dx = &grad_in[n, c, 0, 0]
        gp = &grad_out[n, c, 0, 0]
        ip = &indices[n, c, 0, 0]
        memset(dx, 0, H * W * sizeof(floating))
        for ho in range(Ho):
            for r in range(geom.kernel_h):
                ih = ho * geom.stride_h - geom.pad_top + r
                if ih < 0 or ih >= H:
                    continue
                for wo in range(Wo):
                    for s in range(geom.kernel_w):
                        iw = wo * geom.stride_w - geom.pad_left + s
                        if iw < 0 or iw >= W:
                            continue
                        flat = ih * W + iw
                        dx[flat] = gp[ho * Wo + wo] if ip[ho * Wo + wo] == flat else 0


# ---------------------------------------------------------------- Python entry points

def forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, indices, ConvGeometry geom,
            bint channels_last, int n_threads):
    """indices: None or an int64 C-contiguous array with out's shape."""
    cdef int64_t[:, :, :, ::1] index_view
    cdef int64_t* index_ptr = NULL
    if indices is not None:
        index_view = indices
        index_ptr = &index_view[0, 0, 0, 0]
    with nogil:
        if channels_last:
            max_pool2d_forward_nhwc(x, out, index_ptr, geom, n_threads)
        else:
            max_pool2d_forward_nchw(x, out, index_ptr, geom, n_threads)


def backward(const floating[:, :, :, ::1] grad_out, const int64_t[:, :, :, ::1] indices,
             floating[:, :, :, ::1] grad_in, ConvGeometry geom, bint channels_last, int n_threads):
    """Windows that do not overlap (stride == pool size) take the write-once path, others the scatter."""
    cdef bint disjoint = geom.stride_h == geom.kernel_h and geom.stride_w == geom.kernel_w
    with nogil:
        if channels_last and disjoint:
            max_pool2d_backward_disjoint_nhwc(grad_out, indices, grad_in, geom, n_threads)
        elif channels_last:
            max_pool2d_backward_nhwc(grad_out, indices, grad_in, n_threads)
        elif disjoint:
            max_pool2d_backward_disjoint_nchw(grad_out, indices, grad_in, geom, n_threads)
        else:
            max_pool2d_backward_nchw(grad_out, indices, grad_in, n_threads)


def indices_in_range(const int64_t[::1] flat_indices, int64_t limit, int n_threads):
    """True when every index lies in [0, limit): the check max_pool2d_grad's wrapper makes before the scatter,
    done in one parallel pass instead of NumPy's separate min and max."""
    cdef Py_ssize_t i, n = flat_indices.shape[0]
    cdef Py_ssize_t bad = 0
    cdef int64_t v
    with nogil:
        for i in prange(n, num_threads=n_threads, schedule="static"):
            v = flat_indices[i]
            if v < 0 or v >= limit:
                bad += 1
    return bad == 0
