"""Depthwise convolution: each input channel convolved with its own filters (``groups == in_channels``).

With a channel multiplier M, input channel c produces output channels ``c*M + m`` for ``m < M`` (K = C*M), as in
Keras's ``DepthwiseConv2D(depth_multiplier=M)`` and PyTorch's ``conv2d(..., groups=C)`` with ``C*M`` filters.

Weights:

=================  ==============  ========================================================
data_format        activations     weight
=================  ==============  ========================================================
channels_last      (N, H, W, C)    (R, S, C, M), Keras's DepthwiseConv2D kernel
channels_first     (N, C, H, W)    (C*M, 1, R, S), PyTorch's depthwise conv2d weight
=================  ==============  ========================================================

The (R, S, C, M) kernel has the memory of the HWIO kernel (R, S, 1, C*M) that ``conv2d(..., groups=C)`` takes, and
``conv2d`` with ``groups == in_channels`` runs these kernels when ``algorithm="auto"``.
"""
import functools
import math

import numpy as np

from fastconv import _validation as check
from fastconv._kernels import conv_depthwise
from fastconv._memory import empty_aligned, reusing_blocks
from fastconv._problem import conv_problem
from fastconv._threads import threads_for_flops

__all__ = ["depthwise_conv2d", "depthwise_conv2d_grad_input", "depthwise_conv2d_grad_weight"]

# Bytes of packed rows one NHWC work item keeps (its ring of rows, one lane block at a time): within L1.
RING_BYTES = 24 << 10
# With several channel groups, each group reads a band's rows again: bands are cut so their rows stay in L2.
BAND_BYTES = 512 << 10
# Work items the NHWC kernels aim to offer (images x bands x channel groups), and the fewest rows per band
# (each band packs the rows its first output row reads again).
MIN_UNITS = 32
MIN_BAND_ROWS = 8
# Narrowest channel group (lane blocks): packing reads this many bytes of each input pixel at a time, and narrower
# strided reads cost more than a ring in L2 (measured on 112x112 rows).
MIN_GROUP_BLOCKS = 4
# NHWC outputs at least this large are written with non-temporal stores, into 64-byte aligned arrays where fastconv
# allocates them: they would not stay in the caches anyway, and streaming skips reading every line before writing
# it (measured 1.4x on a 12.8 MB output).
STREAM_BYTES = 4 << 20
# The kernels malloc scratch per thread that grows with the problem's geometry, not its data: NHWC a ring of rows
# (dilated kernel height x padded row width), NCHW stride_h x stride_w phase planes (or, for the input gradient,
# planes padded by the dilated kernel). Huge strides, dilations or paddings (a small output) would ask for more
# than any machine has. Scratch above this many bytes, and larger than the input and output together, sends the
# problem to conv2d's direct kernels instead (they need no such buffers).
SCRATCH_LIMIT_BYTES = 64 << 20


def _common_dtype(named_arrays):
    return np.result_type(*(check.compute_dtype_of(a, name) for name, a in named_arrays.items() if a is not None))


# ---------------------------------------------------------------- planning (shape only: results never depend on it)

def _nhwc_plan(problem, itemsize, n_channels, n_rows, bytes_per_lane_block, source_bytes_per_row):
    """(group_blocks, band_rows): lane blocks per work item (so that its ring of packed rows fits RING_BYTES, but
    at least MIN_GROUP_BLOCKS) and
    rows per band (enough work items for the threads, and rows that stay in L2 while every group reads them).
    Depends on the shape only, so the weight gradient's chunks -- and its summation order -- are the same for any
    thread count."""
    lanes = conv_depthwise.lanes(itemsize)
    n_blocks = -(-n_channels // lanes)
    group_blocks = min(n_blocks, max(MIN_GROUP_BLOCKS, RING_BYTES // max(1, bytes_per_lane_block)))
    n_groups = -(-n_blocks // group_blocks)
    group_blocks = -(-n_blocks // n_groups)  # equal groups
    n_bands = -(-MIN_UNITS // (problem.batch * n_groups))
    if n_groups > 1:
        n_bands = max(n_bands, math.ceil(n_rows * source_bytes_per_row / BAND_BYTES))
    n_bands = max(1, min(n_bands, n_rows // MIN_BAND_ROWS))
    return group_blocks, -(-n_rows // n_bands)


@functools.lru_cache(maxsize=256)
def _forward_plan(problem, itemsize):
    """Work shape of the NHWC forward pass and weight gradient (rings of input rows, lanes over output channels)."""
    lanes = conv_depthwise.lanes(itemsize)
    span = (problem.kernel_h - 1) * problem.dilation[0] + 1
    cols = (problem.out_w - 1) * problem.stride[1] + (problem.kernel_w - 1) * problem.dilation[1] + 1
    row_bytes = problem.stride[0] * problem.in_w * problem.in_c * itemsize     # input read per output row
    return _nhwc_plan(problem, itemsize, problem.out_c, problem.out_h, span * cols * lanes * itemsize, row_bytes)


@functools.lru_cache(maxsize=256)
def _grad_input_plan(problem, itemsize):
    """Work shape of the NHWC input gradient (rings of grad_output rows, lanes over input channels)."""
    lanes = conv_depthwise.lanes(itemsize)
    multiplier = problem.out_c // problem.in_c
    (_, _), (pad_left, _) = problem.padding
    span = (problem.kernel_h - 1) * problem.dilation[0] // problem.stride[0] + 1
    reach = (problem.kernel_w - 1) * problem.dilation[1] - pad_left
    left = -(-reach // problem.stride[1]) if reach > 0 else 0
    cols = max(problem.out_w, (problem.in_w - 1 + pad_left) // problem.stride[1] + 1) + left
    row_bytes = problem.out_w * problem.out_c * itemsize / problem.stride[0]   # grad_output read per input row
    return _nhwc_plan(problem, itemsize, problem.in_c, problem.in_h, span * multiplier * cols * lanes * itemsize,
                      row_bytes)


def _scratch_bytes(problem, itemsize, grad_input=False):
    """Bytes of scratch one thread mallocs (the kernels' own formulas, conv_depthwise.pyx; lane counts rounded
    up)."""
    lanes = conv_depthwise.lanes(itemsize)
    r, s, (sh, sw), (dh, dw) = problem.kernel_h, problem.kernel_w, problem.stride, problem.dilation
    multiplier = problem.out_c // problem.in_c
    if not problem.channels_last:
        if grad_input:
            (top_pad, _), (left_pad, _) = problem.padding
            top = -(-((r - 1) * dh - top_pad) // sh) if (r - 1) * dh > top_pad else 0
            left = -(-((s - 1) * dw - left_pad) // sw) if (s - 1) * dw > left_pad else 0
            rows = max(problem.out_h, (problem.in_h - 1 + top_pad) // sh + 1) + top
            cols = max(problem.out_w, (problem.in_w - 1 + left_pad) // sw + 1) + left
            return (multiplier * (rows * cols + 2 * lanes) + rows * cols + lanes) * itemsize
        rows, cols = problem.out_h + (r - 1) * dh // sh, problem.out_w + (s - 1) * dw // sw
        return (sh * sw * (rows * cols + 2 * lanes) + problem.out_h * cols + lanes) * itemsize
    if grad_input:
        group_lanes = _grad_input_plan(problem, itemsize)[0] * lanes
        pad_left = problem.padding[1][0]
        left = -(-((s - 1) * dw - pad_left) // sw) if (s - 1) * dw > pad_left else 0
        cols = max(problem.out_w, (problem.in_w - 1 + pad_left) // sw + 1) + left
        return ((r - 1) * dh // sh + 1) * multiplier * cols * group_lanes * itemsize
    group_lanes = _forward_plan(problem, itemsize)[0] * lanes
    cols = (problem.out_w - 1) * sw + (s - 1) * dw + 1
    return ((r - 1) * dh + 1) * cols * group_lanes * itemsize


def _needs_direct(problem, itemsize, grad_input=False):
    """Whether the scratch these kernels would malloc is out of proportion (SCRATCH_LIMIT_BYTES)."""
    scratch = _scratch_bytes(problem, itemsize, grad_input)
    data = (math.prod(problem.input_shape) + math.prod(problem.output_shape)) * itemsize
    return scratch > SCRATCH_LIMIT_BYTES and scratch > data


def _direct_options(problem):
    """conv2d's arguments for the same problem (groups == C, explicit padding, the problem's layout)."""
    return dict(stride=problem.stride, padding=problem.padding, dilation=problem.dilation, groups=problem.groups,
                data_format="channels_last" if problem.channels_last else "channels_first", algorithm="direct")


def _conv_weight(weight, problem):
    """A depthwise weight as conv2d(groups=C) takes it: (R, S, C, M) as HWIO (R, S, 1, C*M) (the same memory);
    (C*M, 1, R, S) already is OIHW."""
    if problem.channels_last:
        return weight.reshape(problem.kernel_h, problem.kernel_w, 1, problem.out_c)
    return weight


def _streams(shape, dtype):
    return math.prod(shape) * np.dtype(dtype).itemsize >= STREAM_BYTES


def _taps_by_channel(weight, channels_last):
    """The depthwise weight as (R*S, K): (R, S, C, M) or (R, S, 1, K) for channels_last, (K, 1, R, S) otherwise."""
    if channels_last:
        return weight.reshape(weight.shape[0] * weight.shape[1], -1)
    return weight.reshape(weight.shape[0], -1).T


# ---------------------------------------------------------------- kernel calls (validated problems only)

def _forward(problem, x, weight, bias, out, n_threads):
    """The depthwise convolution of x (contiguous, compute dtype) into out (allocated when None); weight in the
    layout's depthwise format."""
    rsk = _taps_by_channel(weight, problem.channels_last)
    if _needs_direct(problem, x.dtype.itemsize):
        from fastconv import functional

        return functional.conv2d(x, _conv_weight(weight, problem), bias, out=out, **_direct_options(problem))
    if out is None:
        out = (empty_aligned if problem.channels_last else np.empty)(problem.output_shape, x.dtype)
    if problem.channels_last:
        lanes = conv_depthwise.lanes(x.dtype.itemsize)
        blocks = -(-problem.out_c // lanes)
        packed, packed_bias = np.empty((blocks, rsk.shape[0], lanes), x.dtype), np.empty(blocks * lanes, x.dtype)
        conv_depthwise.pack_weights(rsk, bias if bias is not None else packed_bias[:0], packed, packed_bias)
        group_blocks, band_rows = _forward_plan(problem, x.dtype.itemsize)
        conv_depthwise.forward_nhwc(x, packed, packed_bias, out, problem.geometry, group_blocks, band_rows,
                                    _streams(out.shape, out.dtype), n_threads)
    else:
        conv_depthwise.forward_nchw(x, np.ascontiguousarray(rsk.T), bias, out, problem.geometry, n_threads)
    return out


def _grad_input(problem, grad_output, weight, n_threads):
    rsk = _taps_by_channel(weight, problem.channels_last)
    if _needs_direct(problem, grad_output.dtype.itemsize, grad_input=True):
        from fastconv import functional

        return functional.conv2d_grad_input(grad_output, _conv_weight(weight, problem), problem.input_shape,
                                            **_direct_options(problem))
    result = (empty_aligned if problem.channels_last else np.empty)(problem.input_shape, grad_output.dtype)
    if problem.channels_last:
        lanes = conv_depthwise.lanes(grad_output.dtype.itemsize)
        r, s, c, m = problem.kernel_h, problem.kernel_w, problem.in_c, problem.out_c // problem.in_c
        packed = np.empty((-(-c // lanes), r * m * s, lanes), dtype=grad_output.dtype)
        conv_depthwise.pack_weights_reversed(rsk.reshape(r, s, c, m), packed)
        group_blocks, band_rows = _grad_input_plan(problem, grad_output.dtype.itemsize)
        conv_depthwise.grad_input_nhwc(grad_output, packed, result, problem.geometry, group_blocks, band_rows,
                                       _streams(result.shape, result.dtype), n_threads)
    else:
        conv_depthwise.grad_input_nchw(grad_output, np.ascontiguousarray(rsk.T), result, problem.geometry,
                                       n_threads)
    return result


def _grad_weight(problem, grad_output, x, n_threads):
    """The weight gradient as (R*S, K) for channels_last, (K, R*S) for channels_first."""
    taps, dtype = problem.kernel_h * problem.kernel_w, x.dtype
    if _needs_direct(problem, dtype.itemsize):
        from fastconv import functional

        grad = functional.conv2d_grad_weight(grad_output, x, problem.weight_shape, **_direct_options(problem))
        return grad.reshape(taps, problem.out_c) if problem.channels_last else grad.reshape(problem.out_c, taps)
    if problem.channels_last:
        lanes = conv_depthwise.lanes(dtype.itemsize)
        group_blocks, band_rows = _forward_plan(problem, dtype.itemsize)
        chunks = problem.batch * -(-problem.out_h // band_rows)
        partial = np.empty((chunks, taps, -(-problem.out_c // lanes) * lanes), dtype=dtype)
        result = np.empty((taps, problem.out_c), dtype=dtype)
        conv_depthwise.grad_weight_nhwc(grad_output, x, partial, result, problem.geometry, group_blocks,
                                        band_rows, n_threads)
    else:
        partial = np.empty((problem.batch, problem.out_c, taps), dtype=dtype)
        result = np.empty((problem.out_c, taps), dtype=dtype)
        conv_depthwise.grad_weight_nchw(grad_output, x, partial, result, problem.geometry, n_threads)
    return result


# ---------------------------------------------------------------- validation

def _channels(shape, channels_last, name):
    c = shape[-1] if channels_last else shape[1]
    if c < 1:
        layout = "channels_last" if channels_last else "channels_first"
        raise ValueError(f"{name} must have at least one channel; received {name} with shape {tuple(shape)} "
                         f"({layout})")
    return c


def _grouped_weight_shape(weight_shape, in_channels, channels_last, name, input_name):
    """The conv2d(groups=C) weight shape of a depthwise weight shape, after checking it fits the input."""
    weight_shape = tuple(weight_shape)
    if min(weight_shape) < 1:
        raise ValueError(f"{name} must have no zero-sized axis; received {name} with shape {weight_shape}")
    if channels_last:
        r, s, c, m = weight_shape
        if c != in_channels:
            raise ValueError(f"{name} must have shape (R, S, C, M) with C = {in_channels}, the channels of "
                             f"{input_name}; received {name} with shape {weight_shape}")
        return (r, s, 1, c * m)
    k, one, r, s = weight_shape
    if one != 1 or k % in_channels != 0 or k == 0:
        raise ValueError(f"{name} must have shape (C*M, 1, R, S) with C = {in_channels}, the channels of "
                         f"{input_name}; received {name} with shape {weight_shape}")
    return weight_shape


def _problem(input_shape, weight_shape, stride, padding, dilation, channels_last, input_name, weight_name):
    c = _channels(input_shape, channels_last, input_name)
    grouped = _grouped_weight_shape(weight_shape, c, channels_last, weight_name, input_name)
    return conv_problem(input_shape, grouped, stride=stride, padding=padding, dilation=dilation, groups=c,
                        channels_last=channels_last, input_name=input_name, weight_name=weight_name)


def _exact_path(problem, *operands):
    """A NaN or infinity among `operands` takes conv2d's im2col path with groups=C, which propagates it as PyTorch
    does (functional._settle_algorithm); these kernels skip some of PyTorch's products (0 * inf = NaN) or form
    others. Imported here, not at the top: functional imports this module."""
    from fastconv import functional

    return functional._im2col_fits(problem) and not all(map(functional._finite, operands))


def _grouped(shape, channels_last):
    """The conv2d(groups=C) weight shape of a depthwise weight shape: (R, S, C, M) -> (R, S, 1, C*M) (the same
    memory); (C*M, 1, R, S) already is one."""
    return (shape[0], shape[1], 1, shape[2] * shape[3]) if channels_last else tuple(shape)


def _grad_output_array(grad_output, problem, what):
    go = check.array(grad_output, "grad_output", 4)
    if go.shape != problem.output_shape:
        raise ValueError(f"grad_output must have shape {problem.output_shape}, the output shape of the depthwise "
                         f"convolution of {what}; received grad_output with shape {go.shape}")
    return go


# ---------------------------------------------------------------- public API

@reusing_blocks
def depthwise_conv2d(x, weight, bias=None, *, stride=1, padding="valid", dilation=1, data_format="channels_last",
                     out=None):
    """Depthwise 2-D convolution (cross-correlation) with a channel multiplier.

    Parameters
    ----------
    x : array_like, shape (N, H, W, C) or (N, C, H, W)
        Input batch, in the layout given by ``data_format``.
    weight : array_like, shape (R, S, C, M) or (C*M, 1, R, S)
        Keras's DepthwiseConv2D kernel for "channels_last", PyTorch's depthwise weight for "channels_first".
        Output channel ``c*M + m`` is input channel ``c`` convolved with filter ``weight[:, :, c, m]``
        (``weight[c*M + m, 0]``).
    bias : array_like, shape (C*M,), optional
    stride, dilation : int or (int, int)
        At least 1.
    padding : "valid", "same", int, (ph, pw) or ((top, bottom), (left, right))
        "same" follows Keras/TensorFlow: output size ceil(H / stride), extra row/column at the bottom/right.
    data_format : "channels_last" or "channels_first"
    out : ndarray, optional
        Exact output shape and dtype, writable, C-contiguous, not overlapping an input.

    Returns
    -------
    ndarray, shape (N, Ho, Wo, C*M) or (N, C*M, Ho, Wo)
        float32 for float32 (or float16) input, float64 for float64 or integer input.

    Raises
    ------
    ValueError
        Bad shapes or option values (the message names the argument and the value received).
    TypeError
        Unsupported dtypes or argument types, or ``out`` of the wrong dtype.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 4, 4, 2), dtype=np.float32)            # NHWC, 2 channels
    >>> w = np.ones((3, 3, 2, 2), dtype=np.float32)            # (R, S, C, M): 2 filters per channel
    >>> w[..., 1] = 2
    >>> y = fastconv.depthwise_conv2d(x, w, padding="same")
    >>> y.shape, y.dtype, y[0, 1, 1].tolist(), y[0, 0, 0].tolist()
    ((1, 4, 4, 4), dtype('float32'), [9.0, 18.0, 9.0, 18.0], [4.0, 8.0, 4.0, 8.0])
    """
    channels_last = check.data_format(data_format)
    x_arr = check.array(x, "x", 4)
    w_arr = check.array(weight, "weight", 4)
    b_arr = None if bias is None else check.array(bias, "bias", 1)
    problem = _problem(x_arr.shape, w_arr.shape, stride, padding, dilation, channels_last, "x", "weight")
    if b_arr is not None and b_arr.shape != (problem.out_c,):
        raise ValueError(f"bias must have shape ({problem.out_c},), one value per output channel; "
                         f"received bias with shape {b_arr.shape}")
    dtype = _common_dtype({"x": x_arr, "weight": w_arr, "bias": b_arr})
    if out is not None:
        out = check.output_buffer(out, problem.output_shape, dtype, {"x": x_arr, "weight": w_arr, "bias": b_arr})
    else:
        check.allocation(problem.output_shape, dtype, "depthwise_conv2d's output",
                         f"x with shape {x_arr.shape}, weight with shape {w_arr.shape}, stride={stride!r}, "
                         f"padding={padding!r}, dilation={dilation!r}")
    if math.prod(problem.output_shape) == 0:
        return out if out is not None else np.empty(problem.output_shape, dtype=dtype)
    if _exact_path(problem, w_arr):
        from fastconv import functional

        return functional.conv2d(x_arr, w_arr.reshape(_grouped(w_arr.shape, channels_last)), b_arr, stride=stride,
                                 padding=padding, dilation=dilation, groups=problem.groups, data_format=data_format,
                                 algorithm="im2col", out=out)
    return _forward(problem, check.contiguous(x_arr, dtype), check.contiguous(w_arr, dtype),
                    None if b_arr is None else check.contiguous(b_arr, dtype), out, threads_for_flops(problem.flops))


@reusing_blocks
def depthwise_conv2d_grad_input(grad_output, weight, input_shape, *, stride=1, padding="valid", dilation=1,
                                data_format="channels_last"):
    """Gradient of ``depthwise_conv2d`` with respect to its input.

    Parameters
    ----------
    grad_output : array_like, shape (N, Ho, Wo, C*M) or (N, C*M, Ho, Wo)
        Gradient of the loss with respect to depthwise_conv2d's output.
    weight : array_like, shape (R, S, C, M) or (C*M, 1, R, S)
        The kernel used in the forward pass.
    input_shape : tuple of 4 ints
        Shape of the forward input, in the layout of ``data_format``.
    stride, padding, dilation, data_format
        As in the forward call.

    Returns
    -------
    ndarray of shape ``input_shape``
        Each element gathered by one thread from the outputs it fed (identical for any thread count).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> g = np.ones((1, 3, 3, 2))
    >>> w = np.ones((3, 3, 1, 2))                              # one channel, multiplier 2
    >>> fastconv.depthwise_conv2d_grad_input(g, w, (1, 5, 5, 1))[0, :, :, 0]
    array([[ 2.,  4.,  6.,  4.,  2.],
           [ 4.,  8., 12.,  8.,  4.],
           [ 6., 12., 18., 12.,  6.],
           [ 4.,  8., 12.,  8.,  4.],
           [ 2.,  4.,  6.,  4.,  2.]])
    """
    channels_last = check.data_format(data_format)
    w_arr = check.array(weight, "weight", 4)
    input_shape = check.shape4(input_shape, "input_shape")
    problem = _problem(input_shape, w_arr.shape, stride, padding, dilation, channels_last, "input_shape", "weight")
    go = _grad_output_array(grad_output, problem, f"input_shape={input_shape}")
    dtype = _common_dtype({"grad_output": go, "weight": w_arr})
    check.allocation(input_shape, dtype, "depthwise_conv2d_grad_input's result", f"input_shape={input_shape}")
    if problem.batch == 0:
        return np.zeros(input_shape, dtype=dtype)
    if _exact_path(problem, w_arr):
        from fastconv import functional

        return functional.conv2d_grad_input(go, w_arr.reshape(_grouped(w_arr.shape, channels_last)), input_shape,
                                            stride=stride, padding=padding, dilation=dilation, groups=problem.groups,
                                            data_format=data_format, algorithm="im2col")
    return _grad_input(problem, check.contiguous(go, dtype), check.contiguous(w_arr, dtype), threads_for_flops(problem.flops))


@reusing_blocks
def depthwise_conv2d_grad_weight(grad_output, x, weight_shape, *, stride=1, padding="valid", dilation=1,
                                 data_format="channels_last"):
    """Gradient of ``depthwise_conv2d`` with respect to its weight.

    Parameters
    ----------
    grad_output : array_like, shape (N, Ho, Wo, C*M) or (N, C*M, Ho, Wo)
    x : array_like
        The forward input.
    weight_shape : tuple of 4 ints
        (R, S, C, M) for channels_last, (C*M, 1, R, S) for channels_first.
    stride, padding, dilation, data_format
        As in the forward call.

    Returns
    -------
    ndarray of shape ``weight_shape``
        Summed over the batch in a fixed order (identical for any thread count).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> g = np.ones((1, 2, 2, 1))
    >>> fastconv.depthwise_conv2d_grad_weight(g, x, (3, 3, 1, 1))[:, :, 0, 0]
    array([[10., 14., 18.],
           [26., 30., 34.],
           [42., 46., 50.]])
    """
    channels_last = check.data_format(data_format)
    x_arr = check.array(x, "x", 4)
    weight_shape = check.shape4(weight_shape, "weight_shape")
    problem = _problem(x_arr.shape, weight_shape, stride, padding, dilation, channels_last, "x", "weight_shape")
    go = _grad_output_array(grad_output, problem, f"x with shape {x_arr.shape}")
    dtype = _common_dtype({"grad_output": go, "x": x_arr})
    check.allocation(weight_shape, dtype, "depthwise_conv2d_grad_weight's result", f"weight_shape={weight_shape}")
    if problem.batch == 0:
        return np.zeros(weight_shape, dtype=dtype)
    if _exact_path(problem, go, x_arr):
        from fastconv import functional

        return functional.conv2d_grad_weight(go, x_arr, _grouped(weight_shape, channels_last), stride=stride,
                                             padding=padding, dilation=dilation, groups=problem.groups,
                                             data_format=data_format, algorithm="im2col").reshape(weight_shape)
    result = _grad_weight(problem, check.contiguous(go, dtype), check.contiguous(x_arr, dtype), threads_for_flops(problem.flops))
    return result.reshape(weight_shape)
