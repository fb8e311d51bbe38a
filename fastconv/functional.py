"""fastconv's functional API: NumPy arrays in, NumPy arrays out.

Each function validates and normalises its arguments (through _validation and _problem), allocates its output,
picks an algorithm (_planning), and makes one kernel call with the GIL released. Layouts, padding rules and dtype
rules are described in docs/functional.md.
"""
import numpy as np

from fastconv import _call_memo, _layout, _planning
from fastconv import _validation as check
from fastconv._kernels import conv_direct, pooling, reductions
from fastconv._memory import reusing_blocks
from fastconv._problem import conv_problem, pool_problem
from fastconv._threads import blas_single_threaded, threads_for_bytes, threads_for_flops

__all__ = [
    "conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias", "max_pool2d", "max_pool2d_grad",
]


def _im2col():
    """The im2col kernels, imported on first use: they pull in SciPy's BLAS, the slowest part of an import."""
    from fastconv._kernels import conv_im2col

    return conv_im2col


def _common_dtype(named_arrays):
    arrays = [a for a in named_arrays.values() if a is not None]
    first = arrays[0].dtype
    if first in _NATIVE_FLOATS and all(a.dtype == first for a in arrays):  # (the usual case, without the checks)
        return first
    return np.result_type(*(check.compute_dtype_of(a, name) for name, a in named_arrays.items() if a is not None))


_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _column_buffer(n_threads, elements_per_thread, dtype):
    return np.empty((n_threads, max(1, elements_per_thread)), dtype=dtype)


# BLAS takes its matrix sizes and leading dimensions as 32-bit ints (blas.pyx casts them).
BLAS_INT_MAX = 2 ** 31 - 1


def _im2col_fits(problem):
    """Whether every size im2col hands to BLAS fits a BLAS int: channels, R*S*C/groups, and for channels_first the
    pixels of an input or output plane (its leading dimensions). Column tiles are bounded by _planning."""
    sizes = [problem.in_c, problem.out_c, problem.kernel_h * problem.kernel_w * (problem.in_c // problem.groups)]
    if not problem.channels_last:
        sizes += [problem.in_h * problem.in_w, problem.out_h * problem.out_w]
    return max(sizes) <= BLAS_INT_MAX


def _check_im2col_request(problem, requested):
    if requested == "im2col" and not _im2col_fits(problem):
        raise ValueError(
            f'algorithm="im2col" hands BLAS 32-bit sizes (at most {BLAS_INT_MAX}), too small for this convolution '
            f"(input {problem.input_shape}, output {problem.output_shape}, kernel {problem.kernel_h}x"
            f'{problem.kernel_w}); use algorithm="direct" or "auto"; received algorithm={requested!r}')


def _finite(a):
    """No NaN or infinity in `a`, an array or PackedWeights (which know it already). One parallel pass over the
    bits of a C-contiguous float array (the operands the algorithm choice checks), else one summing pass (a
    finite array whose sum overflows then counts as non-finite, which only sends it down the exact path)."""
    if isinstance(a, _layout.PackedWeights):
        return a.finite
    if a.flags.c_contiguous and a.dtype in (np.float32, np.float64):
        return reductions.all_finite(a.reshape(-1), threads_for_bytes(a.nbytes))
    with np.errstate(all="ignore"):
        return bool(np.isfinite(np.add.reduce(a, axis=None)))


def _settle_algorithm(chosen, requested, problem, operands):
    """The algorithm that runs. With algorithm="auto" and a NaN or infinity among `operands`, im2col: it computes
    every product PyTorch computes, padded zeros included (0 * inf = NaN), while the direct and depthwise kernels
    skip some of them or multiply zeros PyTorch never forms (docs/bad_input.md, "Numerics"). im2col only where
    BLAS can take the sizes."""
    if requested == "auto" and chosen != "im2col" and _im2col_fits(problem) and not all(map(_finite, operands)):
        return "im2col"
    if chosen == "im2col" and not _im2col_fits(problem):
        return "direct"  # (only an "auto" choice: an explicit one was refused by _check_im2col_request)
    return chosen


def _meets_padded_zeros(problem, operand):
    """[operand] when some product of the zero-padded definition multiplies it by a padded zero, else []: the
    operands whose finiteness decides the algorithm (see _settle_algorithm) in the forward pass (the weight) and
    the weight gradient (grad_output). Without padding no such product exists, and no summing pass is needed."""
    return [] if problem.padding == ((0, 0), (0, 0)) else [operand]


def _conv_received(x_name, x_shape, w_name, w_shape, stride, padding, dilation):
    return (f"{x_name} with shape {tuple(x_shape)}, {w_name} with shape {tuple(w_shape)}, stride={stride!r}, "
            f"padding={padding!r}, dilation={dilation!r}")


def _pack_for_tiles(problem, weight, *, flip_transpose=False, oihw=False):
    """The weights packed for the tiled direct forward of `problem` (_layout.pack_direct_weights), or None where
    that kernel does not run it."""
    if not _planning.use_register_tiles(problem):
        return None
    _, lanes = conv_direct.tile_shape(weight.dtype.itemsize, problem.out_c // problem.groups)
    return _layout.pack_direct_weights(weight, problem.groups, lanes, flip_transpose=flip_transpose, oihw=oihw)


def _direct_forward_nhwc(problem, x, weight, bias, out, n_threads, *, packed=None, flip_transpose=False,
                         oihw=False, relu=False, out_nchw=False, learn_finite=False):
    """The direct forward of `problem` on NHWC `x`. weight: HWIO, or OIHW with oihw; packed: its
    _pack_for_tiles, when the caller has it. flip_transpose: `problem` is the stride-1 input-gradient convolution
    and `weight` the forward kernel, whose flipped, transposed form (_layout.flipped_transposed_hwio) this
    convolution applies. relu: out = max(out, 0) (NaN kept). out_nchw: `out` is (N, K, Ho, Wo) (x stays NHWC).
    learn_finite: weights the kernel copies per pass (packed.copy_per_pass) are checked as they are copied, and
    packed.finite is set from it. Returns whether the ReLU was applied."""
    if packed is None:
        packed = _pack_for_tiles(problem, weight, flip_transpose=flip_transpose, oihw=oihw)
    if packed is not None:
        zeros = np.zeros(problem.in_c // problem.groups, dtype=x.dtype)
        pixels, lanes = conv_direct.tile_shape(x.dtype.itemsize, problem.out_c // problem.groups)
        unit_tiles = _planning.forward_unit_tiles(problem, pixels, lanes, n_threads, x.dtype.itemsize)
        batch_inner = not out_nchw and _planning.forward_tiles_over_batch(problem, pixels)
        learn_finite = learn_finite and packed.copy_per_pass
        finite = conv_direct.forward_nhwc_tiled(x, packed.values, bias, zeros, out, problem.geometry, unit_tiles,
                                                relu, out_nchw, batch_inner, n_threads, packed.row,
                                                packed.copy_per_pass, learn_finite, packed.oihw,
                                                _planning.forward_all_kblocks(problem, lanes, x.dtype.itemsize))
        if learn_finite:
            packed.finite = finite
        return relu
    hwio = _layout.oihw_to_hwio(weight) if oihw else weight
    if flip_transpose:
        hwio = _layout.flipped_transposed_hwio(hwio, problem.groups)
    nhwc = np.empty((problem.batch, problem.out_h, problem.out_w, problem.out_c), x.dtype) if out_nchw else out
    conv_direct.forward_nhwc(x, hwio, bias, nhwc, problem.geometry, n_threads)
    if out_nchw:
        _layout.nhwc_to_nchw(nhwc, out=out)
    return False


def conv2d(x, weight, bias=None, *, stride=1, padding="valid", dilation=1, groups=1,
           data_format="channels_last", algorithm="auto", out=None):
    """2-D convolution (cross-correlation, as in every deep-learning framework).

    Parameters
    ----------
    x : array_like, shape (N, H, W, C) or (N, C, H, W)
        Input batch, in the layout given by ``data_format``.
    weight : array_like, shape (R, S, C // groups, K) or (K, C // groups, R, S)
        Kernel: HWIO for "channels_last" (Keras), OIHW for "channels_first" (PyTorch).
    bias : array_like, shape (K,), optional
    stride, dilation : int or (int, int)
        At least 1.
    padding : "valid", "same", int, (ph, pw) or ((top, bottom), (left, right))
        "same" follows Keras/TensorFlow: output size ceil(H / stride), extra row/column at the bottom/right.
    groups : int
        Divides C and K; ``groups == C`` is a depthwise convolution.
    data_format : "channels_last" or "channels_first"
    algorithm : "auto", "direct" or "im2col"
    out : ndarray, optional
        Exact output shape and dtype, writable, C-contiguous, not overlapping an input.

    Returns
    -------
    ndarray, shape (N, Ho, Wo, K) or (N, K, Ho, Wo)
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
    >>> x = np.ones((1, 5, 5, 2), dtype=np.float32)        # NHWC
    >>> w = np.ones((3, 3, 2, 4), dtype=np.float32)        # HWIO
    >>> y = fastconv.conv2d(x, w, padding="same")
    >>> y.shape, y.dtype, float(y[0, 2, 2, 0]), float(y[0, 0, 0, 0])
    ((1, 5, 5, 4), dtype('float32'), 18.0, 8.0)
    """
    return conv2d_relu(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
                       data_format=data_format, algorithm=algorithm, out=out, relu=False)


_forward_calls = _call_memo.CallMemo()


def _forward_front(x, weight, bias, stride, padding, dilation, groups, data_format, algorithm, allocates):
    """conv2d's checks of everything its signature fixes (_call_memo): the arrays as ndarrays, then what is
    remembered, (channels_last, requested algorithm, problem, compute dtype)."""
    channels_last = check.data_format(data_format)
    requested = check.algorithm(algorithm)
    x_arr = check.array(x, "x", 4)
    w_arr = check.array(weight, "weight", 4)
    b_arr = None if bias is None else check.array(bias, "bias", 1)
    problem = conv_problem(x_arr.shape, w_arr.shape, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, channels_last=channels_last)
    if b_arr is not None and b_arr.shape != (problem.out_c,):
        raise ValueError(f"bias must have shape ({problem.out_c},), one value per output channel; "
                         f"received bias with shape {b_arr.shape}")
    dtype = _common_dtype({"x": x_arr, "weight": w_arr, "bias": b_arr})
    _check_im2col_request(problem, requested)
    if allocates:
        check.allocation(problem.output_shape, dtype, "conv2d's output",
                         lambda: _conv_received("x", x_arr.shape, "weight", w_arr.shape, stride, padding, dilation))
    return x_arr, w_arr, b_arr, channels_last, requested, problem, dtype


@reusing_blocks
def conv2d_relu(x, weight, bias=None, *, stride=1, padding="valid", dilation=1, groups=1,
                data_format="channels_last", algorithm="auto", out=None, relu=True):
    """``conv2d`` followed by a plain ReLU (``max(y, 0)``, NaN kept), applied by the tiled kernel as it writes
    each output (no second pass over the output) where that kernel runs, in place afterwards otherwise. For
    layers (Conv2D with activation="relu"); not part of the public API."""
    key = _call_memo.signature((x, weight, bias),
                               (stride, padding, dilation, groups, data_format, algorithm, out is None))
    front = _forward_calls.get(key)
    if front is None:
        x, weight, bias, *front = _forward_front(x, weight, bias, stride, padding, dilation, groups, data_format,
                                                 algorithm, out is None)
        _forward_calls.put(key, front)
    channels_last, requested, problem, dtype = front
    x_arr, w_arr, b_arr = x, weight, bias
    if out is not None:
        result = check.output_buffer(out, problem.output_shape, dtype, {"x": x_arr, "weight": w_arr, "bias": b_arr})
    else:
        result = np.empty(problem.output_shape, dtype=dtype)
    if result.size == 0:
        return result
    xc = check.contiguous(x_arr, dtype)
    wc = check.contiguous(w_arr, dtype)
    bc = None if b_arr is None else check.contiguous(b_arr, dtype)
    n_threads = threads_for_flops(problem.flops)

    chosen = _planning.choose_forward(problem, requested, dtype.itemsize)
    # Packing reads every weight, and learns their finiteness on the way (no separate pass). Weights the kernel
    # copies per pass are checked as it copies them: with a NaN or an infinity among them, the direct result is
    # then replaced by im2col's (a rare case, computed twice, rather than a pass over every weight each call).
    packed = _pack_for_tiles(problem, wc, oihw=not channels_last) if chosen == "direct" else None
    checked = _meets_padded_zeros(problem, wc if packed is None else packed)
    deferred = packed is not None and packed.copy_per_pass and not packed.finite_known
    algorithm = _settle_algorithm(chosen, requested, problem, [] if deferred else checked)
    applied = False
    if algorithm == "direct":
        x_nhwc = xc if channels_last else _layout.nchw_to_nhwc(xc)
        applied = _direct_forward_nhwc(problem, x_nhwc, wc, bc, result, n_threads, packed=packed,
                                       oihw=not channels_last, relu=relu, out_nchw=not channels_last,
                                       learn_finite=deferred and bool(checked) and requested == "auto")
        if deferred and packed.finite_known:
            algorithm = _settle_algorithm(chosen, requested, problem, checked)
            applied = applied and algorithm == "direct"
    if algorithm == "depthwise":   # (allocates its own output, aligned for streaming stores, unless given one)
        result = _depthwise._forward(problem, xc, wc, bc, result if out is not None else None, n_threads)
    elif algorithm != "direct":
        rsc = problem.kernel_h * problem.kernel_w * (problem.in_c // problem.groups)
        pixels = problem.out_h * problem.out_w * (problem.batch if channels_last else 1)
        tile = _planning.column_tile(rsc * dtype.itemsize, pixels)
        cols = _column_buffer(n_threads, 0 if _planning.is_pointwise(problem) else tile * rsc, dtype)
        with blas_single_threaded():
            _im2col().forward(xc, wc, bc, result, cols, problem.geometry, tile, channels_last, n_threads)
    if relu and not applied:
        np.maximum(result, result.dtype.type(0), out=result)
    return result


def _grad_output_array(grad_output, problem, what):
    go = check.array(grad_output, "grad_output", 4)
    if go.shape != problem.output_shape:
        raise ValueError(f"grad_output must have shape {problem.output_shape}, the output shape of the convolution "
                         f"of {what}; received grad_output with shape {go.shape}")
    return go


_grad_input_calls = _call_memo.CallMemo()


def _grad_input_front(grad_output, weight, input_shape, stride, padding, dilation, groups, data_format, algorithm):
    """conv2d_grad_input's checks of its signature (as _forward_front): grad_output and weight as ndarrays, then
    (channels_last, requested algorithm, problem, compute dtype)."""
    channels_last = check.data_format(data_format)
    requested = check.algorithm(algorithm)
    w_arr = check.array(weight, "weight", 4)
    input_shape = check.shape4(input_shape, "input_shape")
    problem = conv_problem(input_shape, w_arr.shape, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, channels_last=channels_last, input_name="input_shape")
    go = _grad_output_array(grad_output, problem, f"input_shape={input_shape}")
    dtype = _common_dtype({"grad_output": go, "weight": w_arr})
    _check_im2col_request(problem, requested)
    check.allocation(input_shape, dtype, "conv2d_grad_input's result", f"input_shape={input_shape}")
    return go, w_arr, channels_last, requested, problem, dtype


@reusing_blocks
def conv2d_grad_input(grad_output, weight, input_shape, *, stride=1, padding="valid", dilation=1, groups=1,
                      data_format="channels_last", algorithm="auto"):
    """Gradient of ``conv2d`` with respect to its input.

    Parameters
    ----------
    grad_output : array_like, shape (N, Ho, Wo, K) or (N, K, Ho, Wo)
        Gradient of the loss with respect to conv2d's output.
    weight : array_like
        The kernel used in the forward pass (HWIO or OIHW as ``data_format`` says).
    input_shape : tuple of 4 ints
        Shape of the forward input, in the layout of ``data_format``.
    stride, padding, dilation, groups, data_format, algorithm
        As in the forward call.

    Returns
    -------
    ndarray of shape ``input_shape``

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> g = np.ones((1, 3, 3, 1))
    >>> w = np.ones((3, 3, 1, 1))
    >>> fastconv.conv2d_grad_input(g, w, (1, 5, 5, 1))[0, :, :, 0]
    array([[1., 2., 3., 2., 1.],
           [2., 4., 6., 4., 2.],
           [3., 6., 9., 6., 3.],
           [2., 4., 6., 4., 2.],
           [1., 2., 3., 2., 1.]])
    """
    key = _call_memo.signature((grad_output, weight),
                               (input_shape, stride, padding, dilation, groups, data_format, algorithm))
    front = _grad_input_calls.get(key)
    if front is None:
        grad_output, weight, *front = _grad_input_front(grad_output, weight, input_shape, stride, padding,
                                                        dilation, groups, data_format, algorithm)
        _grad_input_calls.put(key, front)
    channels_last, requested, problem, dtype = front
    go, w_arr, input_shape = grad_output, weight, problem.input_shape
    if problem.batch == 0:
        return np.zeros(input_shape, dtype=dtype)
    goc = check.contiguous(go, dtype)
    wc = check.contiguous(w_arr, dtype)
    n_threads = threads_for_flops(problem.flops)

    chosen = _planning.choose_grad_input(problem, requested, n_threads, dtype.itemsize)
    # With stride 1 the input gradient is itself a convolution: of grad_output with the spatially flipped kernel,
    # input and output channels swapped, padded by (kernel extent - 1 - padding).
    transposed = _planning.transposed_problem(problem) if problem.stride == (1, 1) else None
    packed = None
    if chosen == "direct" and transposed is not None:
        packed = _pack_for_tiles(transposed, wc, flip_transpose=True, oihw=not channels_last)
    algorithm = _settle_algorithm(chosen, requested, problem, [wc if packed is None else packed])
    if algorithm == "depthwise":
        return _depthwise._grad_input(problem, goc, wc, n_threads)
    if algorithm == "direct":
        go_nhwc = goc if channels_last else _layout.nchw_to_nhwc(goc)
        if transposed is not None:
            result = np.empty(input_shape, dtype=dtype)
            _direct_forward_nhwc(transposed, go_nhwc, wc, None, result, n_threads, packed=packed,
                                 flip_transpose=True, oihw=not channels_last, out_nchw=not channels_last)
            return result
        hwio = wc if channels_last else _layout.oihw_to_hwio(wc)
        nhwc = np.empty((problem.batch, problem.in_h, problem.in_w, problem.in_c), dtype=dtype)
        weight_t = np.ascontiguousarray(hwio.transpose(0, 1, 3, 2))
        conv_direct.grad_input_nhwc(go_nhwc, weight_t, nhwc, problem.geometry, n_threads)
        return nhwc if channels_last else _layout.nhwc_to_nchw(nhwc)

    result = np.empty(input_shape, dtype=dtype)
    rsc = problem.kernel_h * problem.kernel_w * (problem.in_c // problem.groups)
    tile = _planning.column_tile(rsc * dtype.itemsize, problem.out_h * problem.out_w)
    cols = _column_buffer(n_threads, 0 if _planning.is_pointwise(problem) else tile * rsc, dtype)
    with blas_single_threaded():
        _im2col().grad_input(goc, wc, result, cols, problem.geometry, tile, channels_last, n_threads)
    return result


_grad_weight_calls = _call_memo.CallMemo()


def _grad_weight_front(grad_output, x, weight_shape, stride, padding, dilation, groups, data_format, algorithm):
    """conv2d_grad_weight's checks of its signature (as _forward_front): grad_output and x as ndarrays, then
    (channels_last, requested algorithm, problem, compute dtype)."""
    channels_last = check.data_format(data_format)
    requested = check.algorithm(algorithm)
    x_arr = check.array(x, "x", 4)
    weight_shape = check.shape4(weight_shape, "weight_shape")
    problem = conv_problem(x_arr.shape, weight_shape, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, channels_last=channels_last, weight_name="weight_shape")
    go = _grad_output_array(grad_output, problem, f"x with shape {x_arr.shape}")
    dtype = _common_dtype({"grad_output": go, "x": x_arr})
    _check_im2col_request(problem, requested)
    check.allocation(weight_shape, dtype, "conv2d_grad_weight's result", f"weight_shape={weight_shape}")
    return go, x_arr, channels_last, requested, problem, dtype


@reusing_blocks
def conv2d_grad_weight(grad_output, x, weight_shape, *, stride=1, padding="valid", dilation=1, groups=1,
                       data_format="channels_last", algorithm="auto"):
    """Gradient of ``conv2d`` with respect to its weight.

    Parameters
    ----------
    grad_output : array_like, shape (N, Ho, Wo, K) or (N, K, Ho, Wo)
    x : array_like
        The forward input.
    weight_shape : tuple of 4 ints
        HWIO (channels_last) or OIHW (channels_first).
    stride, padding, dilation, groups, data_format, algorithm
        As in the forward call.

    Returns
    -------
    ndarray of shape ``weight_shape``
        Summed over the batch, in a fixed order (identical for any thread count).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> g = np.ones((1, 2, 2, 1))
    >>> fastconv.conv2d_grad_weight(g, x, (3, 3, 1, 1))[:, :, 0, 0]
    array([[10., 14., 18.],
           [26., 30., 34.],
           [42., 46., 50.]])
    """
    key = _call_memo.signature((grad_output, x),
                               (weight_shape, stride, padding, dilation, groups, data_format, algorithm))
    front = _grad_weight_calls.get(key)
    if front is None:
        grad_output, x, *front = _grad_weight_front(grad_output, x, weight_shape, stride, padding, dilation,
                                                    groups, data_format, algorithm)
        _grad_weight_calls.put(key, front)
    channels_last, requested, problem, dtype = front
    go, x_arr, weight_shape = grad_output, x, problem.weight_shape
    if problem.batch == 0:
        return np.zeros(weight_shape, dtype=dtype)
    goc = check.contiguous(go, dtype)
    xc = check.contiguous(x_arr, dtype)
    n_threads = threads_for_flops(problem.flops)
    r, s, cg, k = problem.kernel_h, problem.kernel_w, problem.in_c // problem.groups, problem.out_c

    # x's own values reach the direct kernels' products exactly as they reach im2col's; only grad_output meets
    # x's padded zeros.
    algorithm = _settle_algorithm(_planning.choose_grad_weight(problem, requested), requested, problem,
                                  _meets_padded_zeros(problem, goc))
    if algorithm == "depthwise":
        return _depthwise._grad_weight(problem, goc, xc, n_threads).reshape(weight_shape)
    if algorithm == "direct":
        go_nhwc = goc if channels_last else _layout.nchw_to_nhwc(goc)
        x_nhwc = xc if channels_last else _layout.nchw_to_nhwc(xc)
        if _planning.use_register_tiles(problem):
            hwio = np.zeros((r, s, cg, k), dtype=dtype)
            tile_rows, lanes = conv_direct.tile_shape(dtype.itemsize, k // problem.groups)
            # Only for "auto": grad_output is then known finite where it meets the padding (above), so the
            # zeros' products change nothing; "direct" by name keeps skipping them.
            tiled = problem
            if requested == "auto" and _planning.pads_input_for_grad_weight(problem, tile_rows, dtype.itemsize):
                tiled = _planning.without_padding(problem)
                x_nhwc = _layout.zero_padded_nhwc(x_nhwc, problem.padding)
            chunk_rows = _planning.grad_weight_chunk_rows(tiled, dtype.itemsize)
            conv_direct.grad_weight_nhwc_tiled(_layout.pad_channel_blocks(go_nhwc, problem.groups, lanes), x_nhwc,
                                               hwio, tiled.geometry, chunk_rows, n_threads)
        else:
            hwio = np.empty((r, s, cg, k), dtype=dtype)
            conv_direct.grad_weight_nhwc(go_nhwc, x_nhwc, hwio, problem.geometry, n_threads)
        return hwio if channels_last else _layout.hwio_to_oihw(hwio)

    cblock = min(cg, _planning.GRAD_WEIGHT_CHANNEL_BLOCK)
    pixels = problem.out_h * problem.out_w * (problem.batch if channels_last else 1)
    tile = _planning.column_tile(cblock * dtype.itemsize, pixels)
    cols = _column_buffer(n_threads, 0 if _planning.is_pointwise(problem) else tile * cblock, dtype)
    result = np.empty((r, s, cg, k) if channels_last else (r, s, k, cg), dtype=dtype)
    with blas_single_threaded():
        _im2col().grad_weight(goc, xc, result, cols, problem.geometry, tile, cblock, channels_last, n_threads)
    return result if channels_last else _layout.hwoi_to_oihw(result)


@reusing_blocks
def conv2d_grad_bias(grad_output, *, data_format="channels_last"):
    """Gradient of ``conv2d`` with respect to its bias: ``grad_output`` summed over batch and space.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv2d_grad_bias(np.ones((2, 3, 3, 4), dtype=np.float32))
    array([18., 18., 18., 18.], dtype=float32)
    """
    channels_last = check.data_format(data_format)
    go = check.array(grad_output, "grad_output", 4)
    dtype = _common_dtype({"grad_output": go})
    goc = check.contiguous(go, dtype)
    if not channels_last:  # contiguous planes: NumPy's pairwise sums are already at memory speed
        return np.add.reduce(goc, axis=(0, 2, 3), dtype=dtype)
    rows = goc.reshape(-1, goc.shape[3])
    out = np.empty(goc.shape[3], dtype=dtype)
    if out.size == 0 or rows.shape[0] == 0:
        out.fill(0)
        return out
    partial = np.empty((reductions.block_count(rows.shape[0]), rows.shape[1]), dtype=dtype)
    reductions.column_sums(rows, out, partial, threads_for_bytes(goc.nbytes))
    return out


_pool_calls = _call_memo.CallMemo()


def _pool_front(x, pool_size, stride, padding, ceil_mode, data_format, return_indices, index_format):
    """max_pool2d's checks of its signature (as _forward_front): x as an ndarray, then (channels_last,
    return_indices, problem, window indices, compute dtype, index dtype)."""
    channels_last = check.data_format(data_format)
    return_indices = check.flag(return_indices, "return_indices")
    x_arr = check.array(x, "x", 4)
    problem = pool_problem(x_arr.shape, pool_size=pool_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                           channels_last=channels_last)
    window = check.index_format(index_format, channels_last, problem.pool_size[0] * problem.pool_size[1])
    dtype = _common_dtype({"x": x_arr})
    index_dtype = np.uint8 if window else np.int64
    check.allocation(problem.output_shape, np.result_type(index_dtype, dtype) if return_indices else dtype,
                     "max_pool2d's output",
                     f"x with shape {x_arr.shape}, pool_size={pool_size!r}, stride={stride!r}, padding={padding!r}")
    return x_arr, channels_last, return_indices, problem, window, dtype, index_dtype


@reusing_blocks
def max_pool2d(x, pool_size=2, *, stride=None, padding="valid", ceil_mode=False, data_format="channels_last",
               return_indices=False, index_format="flat"):
    """2-D max-pooling.

    Parameters
    ----------
    x : array_like, shape (N, H, W, C) or (N, C, H, W)
    pool_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``pool_size``.
    padding : "valid", "same", int, (ph, pw) or ((top, bottom), (left, right))
        Padded cells never win; each side's padding must be smaller than the pool size.
    ceil_mode : bool
        Round the output size up (PyTorch's rule: the last window must start inside the input or left padding).
    data_format : "channels_last" or "channels_first"
    return_indices : bool
        Also return, per output cell, where its winner lies.
    index_format : "flat" or "window"
        How ``indices`` says it: "flat", the index ``h * W + w`` of the winner in its input plane (int64, as
        PyTorch's); "window", its position ``dy * pool_w + dx`` in its own window, padded cells counted (uint8:
        8x less memory to write and read back, what the layers use; channels_last, windows of at most 256 cells).
        ``max_pool2d_grad`` must be given the same ``index_format``.

    Returns
    -------
    out : ndarray
    indices : ndarray of int64 ("flat") or uint8 ("window"), only with ``return_indices=True``

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> out, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    >>> out[0, :, :, 0], idx[0, :, :, 0]
    (array([[ 5.,  7.],
           [13., 15.]]), array([[ 5,  7],
           [13, 15]]))
    """
    key = _call_memo.signature((x,), (pool_size, stride, padding, ceil_mode, data_format, return_indices,
                                      index_format))
    front = _pool_calls.get(key)
    if front is None:
        x, *front = _pool_front(x, pool_size, stride, padding, ceil_mode, data_format, return_indices,
                                index_format)
        _pool_calls.put(key, front)
    channels_last, return_indices, problem, window, dtype, index_dtype = front
    x_arr = x
    out = np.empty(problem.output_shape, dtype=dtype)
    indices = np.empty(problem.output_shape, dtype=index_dtype) if return_indices else None
    if out.size:
        xc = check.contiguous(x_arr, dtype)
        n_threads = threads_for_bytes(x_arr.size * np.dtype(dtype).itemsize)
        if return_indices and window:
            pooling.forward_window(xc, out, indices, problem.geometry, n_threads)
        else:
            pooling.forward(xc, out, indices, problem.geometry, channels_last, n_threads)
    return (out, indices) if return_indices else out


_pool_grad_calls = _call_memo.CallMemo()


def _pool_grad_front(grad_output, indices, input_shape, pool_size, stride, padding, ceil_mode, data_format,
                     index_format, allocates):
    """max_pool2d_grad's checks of its signature (as _forward_front): grad_output and indices as ndarrays, then
    (channels_last, problem, window indices, compute dtype)."""
    channels_last = check.data_format(data_format)
    input_shape = check.shape4(input_shape, "input_shape")
    problem = pool_problem(input_shape, pool_size=pool_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                           channels_last=channels_last, input_name="input_shape")
    go = check.array(grad_output, "grad_output", 4)
    if go.shape != problem.output_shape:
        raise ValueError(f"grad_output must have shape {problem.output_shape}, the pooled shape of "
                         f"input_shape={input_shape}; received grad_output with shape {go.shape}")
    window = check.index_format(index_format, channels_last, problem.pool_size[0] * problem.pool_size[1])
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array; received indices with dtype={idx.dtype}")
    if window and idx.dtype != np.uint8:
        raise TypeError(f'indices must be uint8 with index_format="window" (max_pool2d\'s window positions); '
                        f"received indices with dtype={idx.dtype}")
    if idx.shape != go.shape:
        raise ValueError(f"indices must have the shape of grad_output {go.shape}; received indices with shape "
                         f"{idx.shape}")
    dtype = _common_dtype({"grad_output": go})
    if allocates:
        check.allocation(input_shape, dtype, "max_pool2d_grad's result", f"input_shape={input_shape}")
    return go, idx, channels_last, problem, window, dtype


@reusing_blocks
def max_pool2d_grad(grad_output, indices, input_shape, *, pool_size=2, stride=None, padding="valid",
                    ceil_mode=False, data_format="channels_last", index_format="flat", out=None):
    """Gradient of ``max_pool2d``: each ``grad_output`` cell added onto its window's winning input cell.

    Parameters
    ----------
    grad_output : array_like
        Shape of max_pool2d's output.
    indices : array_like of ints
        The ``indices`` returned by ``max_pool2d(..., return_indices=True)``.
    input_shape : tuple of 4 ints
        Shape of the forward input.
    pool_size, stride, padding, ceil_mode, data_format
        As in the forward call (used to check the shapes, and with "window" indices to place them).
    index_format : "flat" or "window"
        As in the forward call. "window" indices must be uint8, and each must name a cell of its window inside
        the input (ValueError otherwise).
    out : ndarray, optional
        Exact shape ``input_shape`` and grad_output's dtype, writable, C-contiguous, not overlapping an input;
        overwritten entirely.

    Returns
    -------
    ndarray of shape ``input_shape`` (``out`` when given)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> out, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    >>> fastconv.max_pool2d_grad(np.ones_like(out), idx, x.shape)[0, :, :, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """
    key = _call_memo.signature((grad_output, indices), (input_shape, pool_size, stride, padding, ceil_mode,
                                                        data_format, index_format, out is None))
    front = _pool_grad_calls.get(key)
    if front is None:
        grad_output, indices, *front = _pool_grad_front(grad_output, indices, input_shape, pool_size, stride,
                                                        padding, ceil_mode, data_format, index_format, out is None)
        _pool_grad_calls.put(key, front)
    channels_last, problem, window, dtype = front
    go, idx, input_shape = grad_output, indices, problem.input_shape
    idx_c = np.ascontiguousarray(idx, dtype=np.uint8 if window else np.int64)
    if out is not None:
        result = check.output_buffer(out, input_shape, dtype, {"grad_output": go, "indices": idx_c})
    else:
        result = np.empty(input_shape, dtype=dtype)
    if result.size == 0:
        return result
    go = check.contiguous(go, dtype)
    n_threads = threads_for_bytes(idx_c.nbytes + np.dtype(dtype).itemsize * result.size)
    if window:
        if not pooling.backward_window(go, idx_c, result, problem.geometry, n_threads):
            raise ValueError(f"indices must name, for each grad_output cell, a cell of its own "
                             f"{problem.pool_size[0]}x{problem.pool_size[1]} window inside the input "
                             f'(max_pool2d\'s index_format="window" positions); received values up to '
                             f"{int(idx_c.max())}")
        return result
    # channels_last gathers: it reads indices only to compare them, so it needs no range check, and it reports
    # whether every index lay inside its own window, as indices from max_pool2d do. Other indices, and
    # channels_first (whose plane-wise scatter is fast), take the scatter.
    if channels_last and pooling.backward_windowed(go, idx_c, result, problem.geometry, n_threads):
        return result
    plane = problem.in_h * problem.in_w
    if not pooling.indices_in_range(idx_c.reshape(-1), plane, n_threads):
        raise ValueError(f"indices must lie in [0, {plane}) (flat positions in a {problem.in_h}x{problem.in_w} "
                         f"plane); received indices from {idx.min()} to {idx.max()}")
    pooling.backward_scatter(go, idx_c, result, channels_last, n_threads)
    return result


# Average and global pooling live in their own module (same floor); re-exported so this module is the whole API.
from fastconv.functional_pooling import (  # noqa: E402
    avg_pool2d, avg_pool2d_grad, global_avg_pool2d, global_avg_pool2d_grad, global_max_pool2d,
    global_max_pool2d_grad,
)

__all__ += [
    "avg_pool2d", "avg_pool2d_grad", "global_avg_pool2d", "global_avg_pool2d_grad", "global_max_pool2d",
    "global_max_pool2d_grad",
]

# Depthwise convolution (groups == in_channels, with a channel multiplier) has kernels of its own; conv2d routes
# groups == in_channels there with algorithm="auto".
from fastconv import functional_depthwise as _depthwise  # noqa: E402
from fastconv.functional_depthwise import (  # noqa: E402
    depthwise_conv2d, depthwise_conv2d_grad_input, depthwise_conv2d_grad_weight,
)

__all__ += ["depthwise_conv2d", "depthwise_conv2d_grad_input", "depthwise_conv2d_grad_weight"]
