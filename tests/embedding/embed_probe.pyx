# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""A separate extension that cimports fastconv's kernels (built in a temporary folder by
test_cython_embedding.py, the way a user's package would build against an installed fastconv).

The kernels trust their inputs, so this wrapper does what fastconv.functional does for them: it checks every
shape and option, allocates the outputs, fills the geometry structs, and only then releases the GIL.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t

from fastconv._kernels.conv_direct cimport conv2d_forward_nhwc
from fastconv._kernels.geometry cimport ConvGeometry
from fastconv._kernels.pooling cimport max_pool2d_forward_nhwc


cdef tuple _shape(const floating[:, :, :, ::1] a):
    return (a.shape[0], a.shape[1], a.shape[2], a.shape[3])


cdef ConvGeometry conv_geometry(tuple x_shape, tuple w_shape, Py_ssize_t stride, tuple pads) except *:
    """Geometry of a stride-`stride`, groups-1 NHWC/HWIO convolution; pads = (top, bottom, left, right)."""
    cdef ConvGeometry g
    if x_shape[3] != w_shape[2]:
        raise ValueError(f"weight must have {x_shape[3]} input channels; received weight with shape {w_shape}")
    if stride < 1 or min(pads) < 0:
        raise ValueError(f"stride must be >= 1 and pads >= 0; received stride={stride}, pads={pads}")
    g.batch, g.in_h, g.in_w, g.in_c = x_shape
    g.kernel_h, g.kernel_w, _, g.out_c = w_shape
    g.stride_h = g.stride_w = stride
    g.dilation_h = g.dilation_w = 1
    g.groups = 1
    g.pad_top, g.pad_left = pads[0], pads[2]
    # ConvGeometry holds only the top/left padding: the bottom/right padding is in the output size.
    g.out_h = (g.in_h + pads[0] + pads[1] - g.kernel_h) // stride + 1
    g.out_w = (g.in_w + pads[2] + pads[3] - g.kernel_w) // stride + 1
    if g.out_h < 1 or g.out_w < 1 or g.batch < 1 or g.out_c < 1:
        raise ValueError(f"the convolution has an empty output; received x with shape {x_shape}, "
                         f"weight with shape {w_shape}")
    return g


def conv_pool(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight, const floating[::1] bias,
              Py_ssize_t stride, tuple pads, Py_ssize_t pool, int n_threads):
    """conv2d (NHWC, HWIO, bias) then max_pool2d(pool) with indices, both kernels in one nogil block."""
    cdef ConvGeometry g = conv_geometry(_shape(x), _shape(weight), stride, pads)
    cdef ConvGeometry p = g
    if bias.shape[0] != g.out_c:
        raise ValueError(f"bias must have shape ({g.out_c},); received bias with shape ({bias.shape[0]},)")
    if pool < 1 or pool > g.out_h or pool > g.out_w:
        raise ValueError(f"pool must lie in [1, {min(g.out_h, g.out_w)}]; received pool={pool}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1; received n_threads={n_threads}")
    # Pooling reuses ConvGeometry: window = kernel, dilation 1, groups 1, out_c = in_c.
    p.in_h, p.in_w, p.in_c = g.out_h, g.out_w, g.out_c
    p.kernel_h = p.kernel_w = p.stride_h = p.stride_w = pool
    p.pad_top = p.pad_left = 0
    p.out_h, p.out_w = g.out_h // pool, g.out_w // pool

    dtype = np.float32 if floating is float else np.float64
    conv = np.empty((g.batch, g.out_h, g.out_w, g.out_c), dtype=dtype)
    pooled = np.empty((p.batch, p.out_h, p.out_w, p.out_c), dtype=dtype)
    indices = np.empty((p.batch, p.out_h, p.out_w, p.out_c), dtype=np.int64)
    cdef floating[:, :, :, ::1] conv_v = conv
    cdef floating[:, :, :, ::1] pooled_v = pooled
    cdef int64_t[:, :, :, ::1] indices_v = indices
    with nogil:
        conv2d_forward_nhwc(x, weight, &bias[0], conv_v, g, n_threads)
        max_pool2d_forward_nhwc(conv_v, pooled_v, &indices_v[0, 0, 0, 0], p, n_threads)
    return conv, pooled, indices


def conv_per_image(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight, int outer_threads):
    """Valid stride-1 conv2d without bias, one image per iteration of this module's own parallel loop, each
    kernel call given n_threads=1 (the rule for calling fastconv from inside a parallel region)."""
    cdef ConvGeometry g = conv_geometry(_shape(x), _shape(weight), 1, (0, 0, 0, 0))
    cdef ConvGeometry one = g
    cdef Py_ssize_t i
    if outer_threads < 1:
        raise ValueError(f"outer_threads must be at least 1; received outer_threads={outer_threads}")
    one.batch = 1
    out = np.empty((g.batch, g.out_h, g.out_w, g.out_c), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, :, :, ::1] out_v = out
    for i in prange(g.batch, nogil=True, num_threads=outer_threads, schedule="static"):
        conv2d_forward_nhwc(x[i:i + 1], weight, NULL, out_v[i:i + 1], one, 1)
    return out
