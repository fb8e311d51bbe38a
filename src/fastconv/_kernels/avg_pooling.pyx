"""Average pooling forward and backward, global average and global max pooling, channels_last and channels_first.

Every output element has one owning thread and a fixed summation order, so results are bit-identical for any
thread count. Averages multiply by the reciprocal of the divisor (a table per output cell, shared by forward and
backward), which equals a division up to one rounding. The backward passes gather: each input cell sums the
gradients of the windows that hold it (or, for global max pooling, each input row is owned by one thread), so
overlapping windows never race.
"""
import numpy as np

from cython.parallel cimport prange
from cython cimport floating
from libc.stdint cimport INT32_MAX, int64_t
from libc.string cimport memset

from fastconv._kernels.geometry cimport ConvGeometry, window_begin, window_end

cdef extern from "avg_pooling_reduce.h" nogil:
    void fc_window_sum_f32(const float* x, Py_ssize_t rows, Py_ssize_t row_stride, Py_ssize_t cols,
                           Py_ssize_t col_stride, Py_ssize_t n, float scale, float* out) noexcept
    void fc_window_sum_f64(const double* x, Py_ssize_t rows, Py_ssize_t row_stride, Py_ssize_t cols,
                           Py_ssize_t col_stride, Py_ssize_t n, double scale, double* out) noexcept
    void fc_channel_max_f32(const float* x, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t n, float* out,
                            int64_t* where) noexcept
    void fc_channel_max_wide_f32(const float* x, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t n, float* out,
                                 int64_t* where) noexcept
    void fc_channel_max_f64(const double* x, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t n, double* out,
                            int64_t* where) noexcept
    float fc_plane_max_f32(const float* x, Py_ssize_t n, int64_t* where) noexcept
    float fc_plane_max_wide_f32(const float* x, Py_ssize_t n, int64_t* where) noexcept
    double fc_plane_max_f64(const double* x, Py_ssize_t n, int64_t* where) noexcept
    int FC_MAX_LANES


cdef inline void window_sum(const floating* x, Py_ssize_t rows, Py_ssize_t row_stride, Py_ssize_t cols,
                            Py_ssize_t col_stride, Py_ssize_t n, floating scale, floating* out) noexcept nogil:
    if floating is float:
        fc_window_sum_f32(x, rows, row_stride, cols, col_stride, n, scale, out)
    else:
        fc_window_sum_f64(x, rows, row_stride, cols, col_stride, n, scale, out)


cdef inline void channel_max(const floating* x, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t n, floating* out,
                             int64_t* where) noexcept nogil:
    """Column maxima of a rows x n block (and the winning rows unless where is NULL)."""
    if floating is float:
        if rows <= INT32_MAX:
            fc_channel_max_f32(x, rows, stride, n, out, where)
        else:
            fc_channel_max_wide_f32(x, rows, stride, n, out, where)
    else:
        fc_channel_max_f64(x, rows, stride, n, out, where)


cdef inline floating plane_max(const floating* x, Py_ssize_t n, int64_t* where) noexcept nogil:
    """The maximum of n contiguous values (and its position unless where is NULL)."""
    if floating is float:
        if n // FC_MAX_LANES <= INT32_MAX:
            return fc_plane_max_f32(x, n, where)
        return fc_plane_max_wide_f32(x, n, where)
    else:
        return fc_plane_max_f64(x, n, where)


cdef enum:
    # Channels per work item of the NHWC global reductions: enough items for all threads even at batch 1, and a
    # block of running sums / maxima that stays in L1.
    CHANNEL_BLOCK = 64


# ---------------------------------------------------------------- tables

cdef inline Py_ssize_t window_cells(Py_ssize_t start, Py_ssize_t size, Py_ssize_t extent, Py_ssize_t pad_after,
                                    bint count_include_pad) noexcept nogil:
    """Cells of a window starting at `start` that count in the divisor, along one axis."""
    cdef Py_ssize_t end
    if count_include_pad:
        end = start + size
        if end > extent + pad_after:
            end = extent + pad_after  # beyond the padding (a ceil_mode window): never counted
        return end - start
    return window_end(start, size, extent) - window_begin(start)


cdef void avg_pool2d_scales(ConvGeometry geom, Py_ssize_t pad_bottom, Py_ssize_t pad_right,
                            bint count_include_pad, floating[:, ::1] scales) noexcept nogil:
    cdef Py_ssize_t ho, wo, rows, cols
    for ho in range(geom.out_h):
        rows = window_cells(ho * geom.stride_h - geom.pad_top, geom.kernel_h, geom.in_h, pad_bottom,
                            count_include_pad)
        for wo in range(geom.out_w):
            cols = window_cells(wo * geom.stride_w - geom.pad_left, geom.kernel_w, geom.in_w, pad_right,
                                count_include_pad)
            scales[ho, wo] = (<floating> 1) / (<floating> (rows * cols))


cdef inline Py_ssize_t first_window(Py_ssize_t i, Py_ssize_t pad_before, Py_ssize_t size,
                                    Py_ssize_t stride) noexcept nogil:
    """Smallest o whose window [o * stride - pad_before, + size) holds input index i."""
    cdef Py_ssize_t t = i + pad_before  # >= 0: the division below rounds down
    return 0 if t < size else (t - size) // stride + 1


cdef inline Py_ssize_t end_window(Py_ssize_t i, Py_ssize_t pad_before, Py_ssize_t stride,
                                  Py_ssize_t out_size) noexcept nogil:
    """One past the largest o whose window starts at or before input index i, capped at out_size."""
    cdef Py_ssize_t e = (i + pad_before) // stride + 1
    return e if e < out_size else out_size


cdef void avg_pool2d_column_windows(ConvGeometry geom, Py_ssize_t[:, ::1] ranges) noexcept nogil:
    cdef Py_ssize_t iw, lo, hi
    for iw in range(geom.in_w):
        lo = first_window(iw, geom.pad_left, geom.kernel_w, geom.stride_w)
        hi = end_window(iw, geom.pad_left, geom.stride_w, geom.out_w)
        ranges[iw, 0] = lo
        ranges[iw, 1] = hi if hi > lo else lo


# ---------------------------------------------------------------- average pooling

cdef void avg_pool2d_forward_nhwc(const floating[:, :, :, ::1] x,
                                  const floating[:, ::1] scales,
                                  floating[:, :, :, ::1] out,
                                  ConvGeometry geom, int n_threads) noexcept nogil:
    cdef Py_ssize_t C = geom.in_c, Ho = geom.out_h, Wo = geom.out_w
    cdef Py_ssize_t row, n, ho, wo, ih0, ih1, iw0, iw1

    for row in prange(geom.batch * Ho, num_threads=n_threads, schedule="static"):
        n = row // Ho
        ho = row - n * Ho
        ih0 = window_begin(ho * geom.stride_h - geom.pad_top)
        ih1 = window_end(ho * geom.stride_h - geom.pad_top, geom.kernel_h, geom.in_h)
        for wo in range(Wo):
            iw0 = window_begin(wo * geom.stride_w - geom.pad_left)
            iw1 = window_end(wo * geom.stride_w - geom.pad_left, geom.kernel_w, geom.in_w)
            window_sum(&x[n, ih0, iw0, 0], ih1 - ih0, geom.in_w * C, iw1 - iw0, C, C, scales[ho, wo],
                       &out[n, ho, wo, 0])


cdef void avg_pool2d_forward_nchw(const floating[:, :, :, ::1] x,
                                  const floating[:, ::1] scales,
                                  floating[:, :, :, ::1] out,
                                  ConvGeometry geom, int n_threads) noexcept nogil:
    cdef Py_ssize_t C = geom.in_c, Ho = geom.out_h, Wo = geom.out_w, W = geom.in_w
    cdef Py_ssize_t plane, n, c, ho, wo, ih, iw, ih0, ih1, iw0, iw1
    cdef floating acc
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
                acc = 0
                for ih in range(ih0, ih1):
                    for iw in range(iw0, iw1):
                        acc = acc + xp[ih * W + iw]
                op[ho * Wo + wo] = acc * scales[ho, wo]


cdef void avg_pool2d_backward_nhwc(const floating[:, :, :, ::1] grad_out,
                                   const floating[:, ::1] scales,
                                   const Py_ssize_t[:, ::1] column_windows,
                                   floating[:, :, :, ::1] grad_in,
                                   ConvGeometry geom, int n_threads) noexcept nogil:
    cdef Py_ssize_t C = geom.in_c, H = geom.in_h, W = geom.in_w, Ho = geom.out_h
    cdef Py_ssize_t row, n, ih, iw, ho, wo, c, ho0, ho1, wo0, wo1
    cdef floating s
    cdef bint first
    cdef floating* dst
    cdef const floating* gp

    for row in prange(geom.batch * H, num_threads=n_threads, schedule="static"):
        n = row // H
        ih = row - n * H
        ho0 = first_window(ih, geom.pad_top, geom.kernel_h, geom.stride_h)
        ho1 = end_window(ih, geom.pad_top, geom.stride_h, Ho)
        for iw in range(W):
            dst = &grad_in[n, ih, iw, 0]
            wo0 = column_windows[iw, 0]
            wo1 = column_windows[iw, 1]
            first = True
            # Windows in a fixed (row-major) order: the same sums for any thread count.
            for ho in range(ho0, ho1):
                for wo in range(wo0, wo1):
                    s = scales[ho, wo]
                    gp = &grad_out[n, ho, wo, 0]
                    if first:
                        for c in range(C):
                            dst[c] = gp[c] * s
                        first = False
                    else:
                        for c in range(C):
                            dst[c] = dst[c] + gp[c] * s
            if first:
                memset(dst, 0, C * sizeof(floating))  # a cell no window holds


cdef void avg_pool2d_backward_nchw(const floating[:, :, :, ::1] grad_out,
                                   const floating[:, ::1] scales,
                                   const Py_ssize_t[:, ::1] column_windows,
                                   floating[:, :, :, ::1] grad_in,
                                   ConvGeometry geom, int n_threads) noexcept nogil:
    cdef Py_ssize_t C = geom.in_c, H = geom.in_h, W = geom.in_w, Ho = geom.out_h, Wo = geom.out_w
    cdef Py_ssize_t plane, n, c, ih, iw, ho, wo, ho0, ho1, wo0, wo1
    cdef floating acc
    cdef floating* dx
    cdef const floating* gp

    for plane in prange(geom.batch * C, num_threads=n_threads, schedule="static"):
        n = plane // C
        c = plane - n * C
        dx = &grad_in[n, c, 0, 0]
        gp = &grad_out[n, c, 0, 0]
        for ih in range(H):
            ho0 = first_window(ih, geom.pad_top, geom.kernel_h, geom.stride_h)
            ho1 = end_window(ih, geom.pad_top, geom.stride_h, Ho)
            for iw in range(W):
                wo0 = column_windows[iw, 0]
                wo1 = column_windows[iw, 1]
                acc = 0
                for ho in range(ho0, ho1):
                    for wo in range(wo0, wo1):
                        acc = acc + gp[ho * Wo + wo] * scales[ho, wo]
                dx[ih * W + iw] = acc


# ---------------------------------------------------------------- global average pooling

cdef void global_avg_pool2d_forward_nhwc(const floating[:, :, :, ::1] x,
                                         floating[:, ::1] out,
                                         int n_threads) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[3], HW = x.shape[1] * x.shape[2]
    cdef Py_ssize_t n_cblocks = (C + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    cdef Py_ssize_t item, n, c0, nc
    cdef floating inv = (<floating> 1) / (<floating> HW)

    for item in prange(N * n_cblocks, num_threads=n_threads, schedule="static"):
        n = item // n_cblocks
        c0 = (item - n * n_cblocks) * CHANNEL_BLOCK
        nc = C - c0 if C - c0 < CHANNEL_BLOCK else CHANNEL_BLOCK
        window_sum(&x[n, 0, 0, c0], HW, C, 1, 0, nc, inv, &out[n, c0])


cdef void global_avg_pool2d_forward_nchw(const floating[:, :, :, ::1] x,
                                         floating[:, ::1] out,
                                         int n_threads) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
    cdef Py_ssize_t full = HW - HW % 8
    cdef Py_ssize_t plane, n, c, p
    cdef floating inv = (<floating> 1) / (<floating> HW)
    cdef floating a0, a1, a2, a3, a4, a5, a6, a7, tail
    cdef const floating* xp

    for plane in prange(N * C, num_threads=n_threads, schedule="static"):
        n = plane // C
        c = plane - n * C
        xp = &x[n, c, 0, 0]
        # Eight running sums (one short vector's worth) break the add-latency chain; combined in a fixed order.
        a0 = 0
        a1 = 0
        a2 = 0
        a3 = 0
        a4 = 0
        a5 = 0
        a6 = 0
        a7 = 0
        for p in range(0, full, 8):
            a0 = a0 + xp[p]
            a1 = a1 + xp[p + 1]
            a2 = a2 + xp[p + 2]
            a3 = a3 + xp[p + 3]
            a4 = a4 + xp[p + 4]
            a5 = a5 + xp[p + 5]
            a6 = a6 + xp[p + 6]
            a7 = a7 + xp[p + 7]
        tail = 0
        for p in range(full, HW):
            tail = tail + xp[p]
        out[n, c] = ((((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))) + tail) * inv


cdef void global_avg_pool2d_backward_nhwc(const floating[:, ::1] grad_out,
                                          floating[:, :, :, ::1] grad_in,
                                          int n_threads) noexcept nogil:
    cdef Py_ssize_t N = grad_in.shape[0], H = grad_in.shape[1], W = grad_in.shape[2], C = grad_in.shape[3]
    cdef Py_ssize_t row, n, iw, c
    cdef floating inv = (<floating> 1) / (<floating> (H * W))
    cdef floating* dst
    cdef const floating* gp

    for row in prange(N * H, num_threads=n_threads, schedule="static"):
        n = row // H
        gp = &grad_out[n, 0]
        dst = &grad_in[n, row - n * H, 0, 0]
        for iw in range(W):
            for c in range(C):
                dst[iw * C + c] = gp[c] * inv


cdef void global_avg_pool2d_backward_nchw(const floating[:, ::1] grad_out,
                                          floating[:, :, :, ::1] grad_in,
                                          int n_threads) noexcept nogil:
    cdef Py_ssize_t N = grad_in.shape[0], C = grad_in.shape[1], HW = grad_in.shape[2] * grad_in.shape[3]
    cdef Py_ssize_t plane, n, c, p
    cdef floating inv = (<floating> 1) / (<floating> HW)
    cdef floating v
    cdef floating* dx

    for plane in prange(N * C, num_threads=n_threads, schedule="static"):
        n = plane // C
        c = plane - n * C
        v = grad_out[n, c] * inv
        dx = &grad_in[n, c, 0, 0]
        for p in range(HW):
            dx[p] = v


# ---------------------------------------------------------------- global max pooling

cdef void global_max_pool2d_forward_nhwc(const floating[:, :, :, ::1] x,
                                         floating[:, ::1] out,
                                         int64_t* indices,
                                         int n_threads) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[3], HW = x.shape[1] * x.shape[2]
    cdef Py_ssize_t n_cblocks = (C + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    cdef Py_ssize_t item, n, c0, nc

    for item in prange(N * n_cblocks, num_threads=n_threads, schedule="static"):
        n = item // n_cblocks
        c0 = (item - n * n_cblocks) * CHANNEL_BLOCK
        nc = C - c0 if C - c0 < CHANNEL_BLOCK else CHANNEL_BLOCK
        channel_max(&x[n, 0, 0, c0], HW, C, nc, &out[n, c0], NULL if indices == NULL else indices + n * C + c0)


cdef void global_max_pool2d_forward_nchw(const floating[:, :, :, ::1] x,
                                         floating[:, ::1] out,
                                         int64_t* indices,
                                         int n_threads) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
    cdef Py_ssize_t plane, n, c

    for plane in prange(N * C, num_threads=n_threads, schedule="static"):
        n = plane // C
        c = plane - n * C
        out[n, c] = plane_max(&x[n, c, 0, 0], HW, NULL if indices == NULL else indices + plane)


cdef void global_max_pool2d_backward_nhwc(const floating[:, ::1] grad_out,
                                          const int64_t[:, ::1] indices,
                                          floating[:, :, :, ::1] grad_in,
                                          int n_threads) noexcept nogil:
    # One owner per input row: it zeroes the row, then writes the channels whose winner lies in it.
    cdef Py_ssize_t N = grad_in.shape[0], H = grad_in.shape[1], W = grad_in.shape[2], C = grad_in.shape[3]
    cdef Py_ssize_t row, n, c, first, p
    cdef floating* dst
    cdef const floating* gp
    cdef const int64_t* ip

    for row in prange(N * H, num_threads=n_threads, schedule="static"):
        n = row // H
        first = (row - n * H) * W
        dst = &grad_in[n, row - n * H, 0, 0]
        gp = &grad_out[n, 0]
        ip = &indices[n, 0]
        memset(dst, 0, W * C * sizeof(floating))
        for c in range(C):
            p = ip[c] - first
            if p >= 0 and p < W:
                dst[p * C + c] = gp[c]


cdef void global_max_pool2d_backward_nchw(const floating[:, ::1] grad_out,
                                          const int64_t[:, ::1] indices,
                                          floating[:, :, :, ::1] grad_in,
                                          int n_threads) noexcept nogil:
    cdef Py_ssize_t N = grad_in.shape[0], C = grad_in.shape[1], HW = grad_in.shape[2] * grad_in.shape[3]
    cdef Py_ssize_t plane, n, c
    cdef floating* dx

    for plane in prange(N * C, num_threads=n_threads, schedule="static"):
        n = plane // C
        c = plane - n * C
        dx = &grad_in[n, c, 0, 0]
        memset(dx, 0, HW * sizeof(floating))
        dx[indices[n, c]] = grad_out[n, c]


# ---------------------------------------------------------------- Python entry points
# Arrays arrive C-contiguous, of one float dtype, with the shapes the functional API checked; sizes are > 0.

def avg_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, ConvGeometry geom,
                Py_ssize_t pad_bottom, Py_ssize_t pad_right, bint count_include_pad, bint channels_last,
                int n_threads):
    """Average pooling of x into out; geom as for max-pooling, pad_bottom / pad_right the far-side padding."""
    cdef floating[:, ::1] scales = np.empty((geom.out_h, geom.out_w),
                                            dtype=np.float32 if floating is float else np.float64)
    with nogil:
        avg_pool2d_scales(geom, pad_bottom, pad_right, count_include_pad, scales)
        if channels_last:
            avg_pool2d_forward_nhwc(x, scales, out, geom, n_threads)
        else:
            avg_pool2d_forward_nchw(x, scales, out, geom, n_threads)


def avg_backward(const floating[:, :, :, ::1] grad_out, floating[:, :, :, ::1] grad_in, ConvGeometry geom,
                 Py_ssize_t pad_bottom, Py_ssize_t pad_right, bint count_include_pad, bint channels_last,
                 int n_threads):
    """Gradient of avg_forward with respect to x, written into grad_in (every cell, no zeroing needed)."""
    cdef floating[:, ::1] scales = np.empty((geom.out_h, geom.out_w),
                                            dtype=np.float32 if floating is float else np.float64)
    cdef Py_ssize_t[:, ::1] column_windows = np.empty((geom.in_w, 2), dtype=np.intp)
    with nogil:
        avg_pool2d_scales(geom, pad_bottom, pad_right, count_include_pad, scales)
        avg_pool2d_column_windows(geom, column_windows)
        if channels_last:
            avg_pool2d_backward_nhwc(grad_out, scales, column_windows, grad_in, geom, n_threads)
        else:
            avg_pool2d_backward_nchw(grad_out, scales, column_windows, grad_in, geom, n_threads)


def global_avg_forward(const floating[:, :, :, ::1] x, floating[:, ::1] out, bint channels_last, int n_threads):
    with nogil:
        if channels_last:
            global_avg_pool2d_forward_nhwc(x, out, n_threads)
        else:
            global_avg_pool2d_forward_nchw(x, out, n_threads)


def global_avg_backward(const floating[:, ::1] grad_out, floating[:, :, :, ::1] grad_in, bint channels_last,
                        int n_threads):
    with nogil:
        if channels_last:
            global_avg_pool2d_backward_nhwc(grad_out, grad_in, n_threads)
        else:
            global_avg_pool2d_backward_nchw(grad_out, grad_in, n_threads)


def global_max_forward(const floating[:, :, :, ::1] x, floating[:, ::1] out, indices, bint channels_last,
                       int n_threads):
    """indices: None or an int64 C-contiguous (N, C) array."""
    cdef int64_t[:, ::1] index_view
    cdef int64_t* index_ptr = NULL
    if indices is not None:
        index_view = indices
        index_ptr = &index_view[0, 0]
    with nogil:
        if channels_last:
            global_max_pool2d_forward_nhwc(x, out, index_ptr, n_threads)
        else:
            global_max_pool2d_forward_nchw(x, out, index_ptr, n_threads)


def global_max_backward(const floating[:, ::1] grad_out, const int64_t[:, ::1] indices,
                        floating[:, :, :, ::1] grad_in, bint channels_last, int n_threads):
    """indices must lie in [0, H * W) (the wrapper checks)."""
    with nogil:
        if channels_last:
            global_max_pool2d_backward_nhwc(grad_out, indices, grad_in, n_threads)
        else:
            global_max_pool2d_backward_nchw(grad_out, indices, grad_in, n_threads)
