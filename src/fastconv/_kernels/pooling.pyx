"""Max-pooling forward (with optional argmax) and backward, channels_last and channels_first.

NaN propagates: a NaN beats any number, and a later NaN in the window takes the index (PyTorch's rule).
Among equal maxima the first in row-major window order wins.

channels_last runs pool_rows.h's channel loops at the CPU's instruction set (cpu_dispatch); its backward pass
gathers (each input cell written once), channels_first's scatters plane by plane.
"""
from cython.parallel cimport parallel, prange
from cython cimport floating
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from fastconv._kernels.cpu_dispatch cimport active_isa
from fastconv._kernels.geometry cimport ConvGeometry, window_begin, window_end

cdef enum:
    # Channels per backward work item in NHWC: enough items for all threads even at batch 1.
    BACKWARD_CHANNEL_BLOCK = 64


cdef extern from "pool_rows.h" nogil:
    ctypedef Py_ssize_t pr_index
    ctypedef struct pr_dims:
        pr_index in_h, in_w, channels, out_h, out_w
        pr_index kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left
    ctypedef void (*pr_max_row_f32)(const float*, float*, int64_t*, int32_t*, const pr_dims*, pr_index)
    ctypedef void (*pr_max_row_f64)(const double*, double*, int64_t*, int32_t*, const pr_dims*, pr_index)
    ctypedef int64_t (*pr_max_grad_row_f32)(const float*, const int64_t*, float*, const pr_dims*, pr_index)
    ctypedef int64_t (*pr_max_grad_row_f64)(const double*, const int64_t*, double*, const pr_dims*, pr_index)
    pr_max_row_f32 pr_max_row_for_f32(int isa)
    pr_max_row_f64 pr_max_row_for_f64(int isa)
    pr_max_grad_row_f32 pr_max_grad_row_for_f32(int isa)
    pr_max_grad_row_f64 pr_max_grad_row_for_f64(int isa)
    ctypedef void (*pr_max_row_w_f32)(const float*, float*, uint8_t*, int32_t*, const pr_dims*, pr_index)
    ctypedef void (*pr_max_row_w_f64)(const double*, double*, uint8_t*, int32_t*, const pr_dims*, pr_index)
    ctypedef int64_t (*pr_max_grad_row_w_f32)(const float*, const uint8_t*, float*, const pr_dims*, pr_index)
    ctypedef int64_t (*pr_max_grad_row_w_f64)(const double*, const uint8_t*, double*, const pr_dims*, pr_index)
    pr_max_row_w_f32 pr_max_row_w_for_f32(int isa)
    pr_max_row_w_f64 pr_max_row_w_for_f64(int isa)
    pr_max_grad_row_w_f32 pr_max_grad_row_w_for_f32(int isa)
    pr_max_grad_row_w_f64 pr_max_grad_row_w_for_f64(int isa)
    void pr_windows_covering(pr_index i, pr_index size, pr_index stride, pr_index pad, pr_index n_out,
                             pr_index* lo, pr_index* hi)


cdef inline pr_dims image_dims(ConvGeometry geom) noexcept nogil:
    cdef pr_dims d
    d.in_h = geom.in_h
    d.in_w = geom.in_w
    d.channels = geom.in_c
    d.out_h = geom.out_h
    d.out_w = geom.out_w
    d.kernel_h = geom.kernel_h
    d.kernel_w = geom.kernel_w
    d.stride_h = geom.stride_h
    d.stride_w = geom.stride_w
    d.pad_top = geom.pad_top
    d.pad_left = geom.pad_left
    return d


cdef inline void forward_rows_nhwc(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                                   int64_t* indices, uint8_t* window_indices, ConvGeometry geom,
                                   int n_threads) noexcept nogil:
    # The channel loops are pool_rows.h's, at the CPU's instruction set; this function shares the rows out. At
    # most one of the two index arrays is given.
    cdef Py_ssize_t C = geom.in_c, Ho = geom.out_h, Wo = geom.out_w
    cdef Py_ssize_t image_size = geom.in_h * geom.in_w * C
    cdef pr_dims dims = image_dims(geom)
    cdef int isa = active_isa()
    cdef pr_max_row_f32 row_f32 = pr_max_row_for_f32(isa)
    cdef pr_max_row_f64 row_f64 = pr_max_row_for_f64(isa)
    cdef pr_max_row_w_f32 row_w_f32 = pr_max_row_w_for_f32(isa)
    cdef pr_max_row_w_f64 row_w_f64 = pr_max_row_w_for_f64(isa)
    cdef const floating* x0 = &x[0, 0, 0, 0]
    cdef floating* out0 = &out[0, 0, 0, 0]
    cdef Py_ssize_t row, n, ho
    cdef int64_t* row_indices
    cdef int32_t* where

    with parallel(num_threads=n_threads):
        where = <int32_t*> malloc(C * sizeof(int32_t))  # scratch for the float kernel's int32 positions
        for row in prange(geom.batch * Ho, schedule="static"):
            n = row // Ho
            ho = row - n * Ho
            if window_indices != NULL:
                if floating is float:
                    row_w_f32(x0 + n * image_size, out0 + row * Wo * C, window_indices + row * Wo * C, where,
                              &dims, ho)
                else:
                    row_w_f64(x0 + n * image_size, out0 + row * Wo * C, window_indices + row * Wo * C, where,
                              &dims, ho)
                continue
            row_indices = indices + row * Wo * C if indices != NULL else NULL
            if floating is float:
                row_f32(x0 + n * image_size, out0 + row * Wo * C, row_indices, where, &dims, ho)
            else:
                row_f64(x0 + n * image_size, out0 + row * Wo * C, row_indices, where, &dims, ho)
        free(where)


cdef void max_pool2d_forward_nhwc(const floating[:, :, :, ::1] x,
                                  floating[:, :, :, ::1] out,
                                  int64_t* indices,
                                  ConvGeometry geom, int n_threads) noexcept nogil:
    forward_rows_nhwc(x, out, indices, NULL, geom, n_threads)


cdef void max_pool2d_forward_window_nhwc(const floating[:, :, :, ::1] x,
                                         floating[:, :, :, ::1] out,
                                         uint8_t* window_indices,
                                         ConvGeometry geom, int n_threads) noexcept nogil:
    forward_rows_nhwc(x, out, NULL, window_indices, geom, n_threads)


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


cdef inline int64_t backward_rows_nhwc(const floating[:, :, :, ::1] grad_out, const int64_t* indices,
                                      const uint8_t* window_indices, floating[:, :, :, ::1] grad_in,
                                      ConvGeometry geom, int n_threads) noexcept nogil:
    # Gathered per input row by pool_rows.h (each cell written once, at the CPU's instruction set), with flat
    # indices or, when window_indices is not NULL, window positions. Returns the number of (window, channel)
    # pairs whose index named one of the window's cells inside the input.
    cdef Py_ssize_t H = geom.in_h, W = geom.in_w, C = geom.in_c
    cdef Py_ssize_t pooled_size = geom.out_h * geom.out_w * C
    cdef pr_dims dims = image_dims(geom)
    cdef int isa = active_isa()
    cdef pr_max_grad_row_f32 row_f32 = pr_max_grad_row_for_f32(isa)
    cdef pr_max_grad_row_f64 row_f64 = pr_max_grad_row_for_f64(isa)
    cdef pr_max_grad_row_w_f32 row_w_f32 = pr_max_grad_row_w_for_f32(isa)
    cdef pr_max_grad_row_w_f64 row_w_f64 = pr_max_grad_row_w_for_f64(isa)
    cdef const floating* go0 = &grad_out[0, 0, 0, 0]
    cdef floating* gi0 = &grad_in[0, 0, 0, 0]
    cdef Py_ssize_t row, n, ih
    cdef int64_t matches = 0

    for row in prange(geom.batch * H, num_threads=n_threads, schedule="static"):
        n = row // H
        ih = row - n * H
        if window_indices != NULL:
            if floating is float:
                matches += row_w_f32(go0 + n * pooled_size, window_indices + n * pooled_size, gi0 + row * W * C,
                                     &dims, ih)
            else:
                matches += row_w_f64(go0 + n * pooled_size, window_indices + n * pooled_size, gi0 + row * W * C,
                                     &dims, ih)
        elif floating is float:
            matches += row_f32(go0 + n * pooled_size, indices + n * pooled_size, gi0 + row * W * C, &dims, ih)
        else:
            matches += row_f64(go0 + n * pooled_size, indices + n * pooled_size, gi0 + row * W * C, &dims, ih)
    return matches


cdef int64_t max_pool2d_backward_windowed_nhwc(const floating[:, :, :, ::1] grad_out,
                                               const int64_t[:, :, :, ::1] indices,
                                               floating[:, :, :, ::1] grad_in,
                                               ConvGeometry geom, int n_threads) noexcept nogil:
    return backward_rows_nhwc(grad_out, &indices[0, 0, 0, 0], NULL, grad_in, geom, n_threads)


cdef int64_t max_pool2d_backward_window_nhwc(const floating[:, :, :, ::1] grad_out,
                                             const uint8_t[:, :, :, ::1] window_indices,
                                             floating[:, :, :, ::1] grad_in,
                                             ConvGeometry geom, int n_threads) noexcept nogil:
    return backward_rows_nhwc(grad_out, NULL, &window_indices[0, 0, 0, 0], grad_in, geom, n_threads)


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


def forward_window(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                   uint8_t[:, :, :, ::1] window_indices, ConvGeometry geom, int n_threads):
    """channels_last, with each winner's position in its window (uint8, out's shape; windows of at most 256
    cells)."""
    with nogil:
        max_pool2d_forward_window_nhwc(x, out, &window_indices[0, 0, 0, 0], geom, n_threads)


def backward_window(const floating[:, :, :, ::1] grad_out, const uint8_t[:, :, :, ::1] window_indices,
                    floating[:, :, :, ::1] grad_in, ConvGeometry geom, int n_threads):
    """channels_last, from window positions: gathers like backward_windowed. True when every position named a
    cell of its window inside the input; False means some gradients were dropped (the indices were not the
    forward pass's)."""
    cdef int64_t matches
    with nogil:
        matches = max_pool2d_backward_window_nhwc(grad_out, window_indices, grad_in, geom, n_threads)
    return matches == grad_out.shape[0] * grad_out.shape[1] * grad_out.shape[2] * grad_out.shape[3]


def backward_windowed(const floating[:, :, :, ::1] grad_out, const int64_t[:, :, :, ::1] indices,
                      floating[:, :, :, ::1] grad_in, ConvGeometry geom, int n_threads):
    """channels_last: gather each input cell's gradient from the windows that contain it. True when every index
    lay inside its own window (indices from the forward pass); False means grad_in lacks the gradients of the
    others, and the caller should use backward_scatter."""
    cdef int64_t matches
    with nogil:
        matches = max_pool2d_backward_windowed_nhwc(grad_out, indices, grad_in, geom, n_threads)
    return matches == grad_out.shape[0] * grad_out.shape[1] * grad_out.shape[2] * grad_out.shape[3]


def backward_scatter(const floating[:, :, :, ::1] grad_out, const int64_t[:, :, :, ::1] indices,
                     floating[:, :, :, ::1] grad_in, bint channels_last, int n_threads):
    """Add each grad_out cell onto the input cell its index names, wherever that is; every index must lie in
    [0, H * W) (see indices_in_range)."""
    with nogil:
        if channels_last:
            max_pool2d_backward_nhwc(grad_out, indices, grad_in, n_threads)
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
