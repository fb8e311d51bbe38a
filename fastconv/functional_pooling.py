"""Average pooling and global (average / max) pooling: NumPy arrays in, NumPy arrays out.

The same floor as :mod:`fastconv.functional` (which re-exports these names): each function validates and normalises
its arguments through _validation and _problem, allocates its output and makes one kernel call (the avg_pooling
family) with the GIL released. Layouts, padding rules and dtype rules are those of docs/functional.md.
"""
import numpy as np

from fastconv import _layout
from fastconv import _validation as check
from fastconv._kernels import avg_pooling, pooling
from fastconv._memory import reusing_blocks
from fastconv._problem import pool_problem
from fastconv._threads import threads_for_bytes

__all__ = [
    "avg_pool2d", "avg_pool2d_grad", "global_avg_pool2d", "global_avg_pool2d_grad", "global_max_pool2d",
    "global_max_pool2d_grad",
]


def _far_padding(problem):
    """(bottom, right) padding: ConvGeometry carries only the top and left sides."""
    return problem.padding[0][1], problem.padding[1][1]


@reusing_blocks
def avg_pool2d(x, pool_size=2, *, stride=None, padding="valid", ceil_mode=False, count_include_pad=False,
               data_format="channels_last"):
    """2-D average pooling, PyTorch's ``avg_pool2d`` (and Keras's ``AveragePooling2D``).

    Parameters
    ----------
    x : array_like, shape (N, H, W, C) or (N, C, H, W)
    pool_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``pool_size``.
    padding : "valid", "same", int, (ph, pw) or ((top, bottom), (left, right))
        "same" follows Keras/TensorFlow (output ``ceil(H / stride)``, extra row/column at the bottom/right).
        Each side's padding must be smaller than the pool size.
    ceil_mode : bool
        Round the output size up (PyTorch's rule: the last window must start inside the input or left padding).
    count_include_pad : bool
        Divide by the number of window cells inside the padded input (padding counted) rather than by the number
        of real input cells. Cells of a ceil_mode window that lie beyond the padding never count. Keras and
        TensorFlow average without the padding (``False``, the default).
    data_format : "channels_last" or "channels_first"

    Returns
    -------
    ndarray, shape (N, Ho, Wo, C) or (N, C, Ho, Wo)
        float32 for float32 (or float16) input, float64 for float64 or integer input.

    Raises
    ------
    ValueError
        Bad shapes or option values (the message names the argument and the value received).
    TypeError
        Unsupported dtypes or argument types.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(9.0).reshape(1, 3, 3, 1)
    >>> fastconv.avg_pool2d(x, 2, stride=1)[0, :, :, 0]
    array([[2., 3.],
           [5., 6.]])
    >>> fastconv.avg_pool2d(x, 2, padding="same")[0, :, :, 0]   # padding left out of each divisor
    array([[2. , 3.5],
           [6.5, 8. ]])
    """
    channels_last = check.data_format(data_format)
    count_include_pad = check.flag(count_include_pad, "count_include_pad")
    x_arr = check.array(x, "x", 4)
    problem = pool_problem(x_arr.shape, pool_size=pool_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                           channels_last=channels_last)
    dtype = check.compute_dtype_of(x_arr, "x")
    check.allocation(problem.output_shape, dtype, "avg_pool2d's output",
                     f"x with shape {x_arr.shape}, pool_size={pool_size!r}, stride={stride!r}, padding={padding!r}")
    out = np.empty(problem.output_shape, dtype=dtype)
    if out.size:
        avg_pooling.avg_forward(check.contiguous(x_arr, dtype), out, problem.geometry, *_far_padding(problem),
                                count_include_pad, channels_last, threads_for_bytes(x_arr.size * dtype.itemsize))
    return out


@reusing_blocks
def avg_pool2d_grad(grad_output, input_shape, *, pool_size=2, stride=None, padding="valid", ceil_mode=False,
                    count_include_pad=False, data_format="channels_last"):
    """Gradient of ``avg_pool2d`` with respect to its input.

    Each input cell receives the sum, over the windows that hold it, of the window's ``grad_output`` divided by
    the window's divisor (the one the forward pass used).

    Parameters
    ----------
    grad_output : array_like
        Shape of avg_pool2d's output.
    input_shape : tuple of 4 ints
        Shape of the forward input.
    pool_size, stride, padding, ceil_mode, count_include_pad, data_format
        As in the forward call.

    Returns
    -------
    ndarray of shape ``input_shape``

    Raises
    ------
    ValueError, TypeError
        As for ``avg_pool2d``; ``grad_output`` must have the pooled shape of ``input_shape``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool2d_grad(np.ones((1, 2, 2, 1)), (1, 3, 3, 1), pool_size=2, stride=1)[0, :, :, 0]
    array([[0.25, 0.5 , 0.25],
           [0.5 , 1.  , 0.5 ],
           [0.25, 0.5 , 0.25]])
    """
    channels_last = check.data_format(data_format)
    count_include_pad = check.flag(count_include_pad, "count_include_pad")
    input_shape = check.shape4(input_shape, "input_shape")
    problem = pool_problem(input_shape, pool_size=pool_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                           channels_last=channels_last, input_name="input_shape")
    go = check.array(grad_output, "grad_output", 4)
    if go.shape != problem.output_shape:
        raise ValueError(f"grad_output must have shape {problem.output_shape}, the pooled shape of "
                         f"input_shape={input_shape}; received grad_output with shape {go.shape}")
    dtype = check.compute_dtype_of(go, "grad_output")
    check.allocation(input_shape, dtype, "avg_pool2d_grad's result", f"input_shape={input_shape}")
    result = np.empty(input_shape, dtype=dtype)
    if result.size:
        avg_pooling.avg_backward(check.contiguous(go, dtype), result, problem.geometry, *_far_padding(problem),
                                 count_include_pad, channels_last, threads_for_bytes(result.nbytes))
    return result


# ---------------------------------------------------------------------------------------------- global pooling


def _plane_dims(shape, channels_last, name):
    """(N, H, W, C) of a 4-D shape whose (H, W) plane is not empty."""
    n, h, w, c = _layout.nhwc_shape(shape, channels_last)
    if h < 1 or w < 1:
        layout = "channels_last" if channels_last else "channels_first"
        raise ValueError(f"{name} must have a non-empty (H, W) plane to pool over; received {name} with shape "
                         f"{tuple(shape)} ({layout})")
    return n, h, w, c


def _kernel_layout(a, channels_last):
    """A C-contiguous single-channel NHWC array has the memory of its NCHW view, where the kernels read each plane
    as one contiguous run (faster than channel vectors of length 1)."""
    if channels_last and a.shape[3] == 1:
        n, h, w, _ = a.shape
        return a.reshape(n, 1, h, w), False
    return a, channels_last


def _pooled_grad_output(grad_output, n, c, input_shape):
    go = check.array(grad_output, "grad_output", 2)
    if go.shape != (n, c):
        raise ValueError(f"grad_output must have shape {(n, c)}, one value per (image, channel) of "
                         f"input_shape={input_shape}; received grad_output with shape {go.shape}")
    return go


@reusing_blocks
def global_avg_pool2d(x, *, data_format="channels_last"):
    """Mean over the (H, W) plane of each image and channel (Keras's ``GlobalAveragePooling2D``).

    Parameters
    ----------
    x : array_like, shape (N, H, W, C) or (N, C, H, W)
        H and W at least 1.
    data_format : "channels_last" or "channels_first"

    Returns
    -------
    ndarray, shape (N, C)
        float32 for float32 (or float16) input, float64 for float64 or integer input.

    Raises
    ------
    ValueError
        ``x`` not 4-D, or with an empty (H, W) plane.
    TypeError
        Unsupported dtypes or argument types.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(8.0).reshape(1, 2, 2, 2)      # NHWC: channel 0 holds 0, 2, 4, 6
    >>> fastconv.global_avg_pool2d(x)
    array([[3., 4.]])
    """
    channels_last = check.data_format(data_format)
    x_arr = check.array(x, "x", 4)
    n, _, _, c = _plane_dims(x_arr.shape, channels_last, "x")
    dtype = check.compute_dtype_of(x_arr, "x")
    out = np.empty((n, c), dtype=dtype)
    if out.size:
        xc, kernel_channels_last = _kernel_layout(check.contiguous(x_arr, dtype), channels_last)
        avg_pooling.global_avg_forward(xc, out, kernel_channels_last, threads_for_bytes(xc.nbytes))
    return out


@reusing_blocks
def global_avg_pool2d_grad(grad_output, input_shape, *, data_format="channels_last"):
    """Gradient of ``global_avg_pool2d``: each ``grad_output[n, c]`` spread evenly over its (H, W) plane.

    Parameters
    ----------
    grad_output : array_like, shape (N, C)
    input_shape : tuple of 4 ints
        Shape of the forward input, in the layout of ``data_format``.
    data_format : "channels_last" or "channels_first"

    Returns
    -------
    ndarray of shape ``input_shape``

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.global_avg_pool2d_grad(np.array([[4.0]]), (1, 1, 2, 2), data_format="channels_first")
    array([[[[1., 1.],
             [1., 1.]]]])
    """
    channels_last = check.data_format(data_format)
    input_shape = check.shape4(input_shape, "input_shape")
    n, _, _, c = _plane_dims(input_shape, channels_last, "input_shape")
    go = _pooled_grad_output(grad_output, n, c, input_shape)
    dtype = check.compute_dtype_of(go, "grad_output")
    check.allocation(input_shape, dtype, "global_avg_pool2d_grad's result", f"input_shape={input_shape}")
    result = np.empty(input_shape, dtype=dtype)
    if result.size:
        grad_in, kernel_channels_last = _kernel_layout(result, channels_last)
        avg_pooling.global_avg_backward(check.contiguous(go, dtype), grad_in, kernel_channels_last,
                                        threads_for_bytes(result.nbytes))
    return result


@reusing_blocks
def global_max_pool2d(x, *, data_format="channels_last", return_indices=False):
    """Maximum over the (H, W) plane of each image and channel (Keras's ``GlobalMaxPooling2D``).

    Parameters
    ----------
    x : array_like, shape (N, H, W, C) or (N, C, H, W)
        H and W at least 1.
    data_format : "channels_last" or "channels_first"
    return_indices : bool
        Also return, per (image, channel), the flat index ``h * W + w`` of the winner in its plane (int64). The
        first maximum in row-major order wins; a NaN beats any number (it propagates) and a later NaN takes the
        index, as in ``max_pool2d``.

    Returns
    -------
    out : ndarray, shape (N, C)
    indices : ndarray of int64, shape (N, C), only with ``return_indices=True``

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[1.0, 7.0, 3.0], [7.0, 0.0, 2.0]]).reshape(1, 1, 2, 3)   # NCHW
    >>> fastconv.global_max_pool2d(x, data_format="channels_first", return_indices=True)
    (array([[7.]]), array([[1]]))
    """
    channels_last = check.data_format(data_format)
    return_indices = check.flag(return_indices, "return_indices")
    x_arr = check.array(x, "x", 4)
    n, _, _, c = _plane_dims(x_arr.shape, channels_last, "x")
    dtype = check.compute_dtype_of(x_arr, "x")
    out = np.empty((n, c), dtype=dtype)
    indices = np.empty((n, c), dtype=np.int64) if return_indices else None
    if out.size:
        xc, kernel_channels_last = _kernel_layout(check.contiguous(x_arr, dtype), channels_last)
        avg_pooling.global_max_forward(xc, out, indices, kernel_channels_last, threads_for_bytes(xc.nbytes))
    return (out, indices) if return_indices else out


@reusing_blocks
def global_max_pool2d_grad(grad_output, indices, input_shape, *, data_format="channels_last"):
    """Gradient of ``global_max_pool2d``: each ``grad_output[n, c]`` goes to its plane's winning cell.

    Parameters
    ----------
    grad_output : array_like, shape (N, C)
    indices : array_like of ints, shape (N, C)
        The ``indices`` returned by ``global_max_pool2d(..., return_indices=True)``, each in ``[0, H * W)``.
    input_shape : tuple of 4 ints
        Shape of the forward input.
    data_format : "channels_last" or "channels_first"

    Returns
    -------
    ndarray of shape ``input_shape``
        Zero except at the winning cells.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[1.0, 7.0], [3.0, 2.0]]).reshape(1, 2, 2, 1)
    >>> out, idx = fastconv.global_max_pool2d(x, return_indices=True)
    >>> fastconv.global_max_pool2d_grad(np.array([[5.0]]), idx, x.shape)[0, :, :, 0]
    array([[0., 5.],
           [0., 0.]])
    """
    channels_last = check.data_format(data_format)
    input_shape = check.shape4(input_shape, "input_shape")
    n, h, w, c = _plane_dims(input_shape, channels_last, "input_shape")
    go = _pooled_grad_output(grad_output, n, c, input_shape)
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array; received indices with dtype={idx.dtype}")
    if idx.shape != go.shape:
        raise ValueError(f"indices must have the shape of grad_output {go.shape}; received indices with shape "
                         f"{idx.shape}")
    dtype = check.compute_dtype_of(go, "grad_output")
    check.allocation(input_shape, dtype, "global_max_pool2d_grad's result", f"input_shape={input_shape}")
    plane = h * w
    idx64 = np.ascontiguousarray(idx, dtype=np.int64)
    n_threads = threads_for_bytes(8 * idx64.size + np.dtype(dtype).itemsize * int(np.prod(input_shape)))
    if not pooling.indices_in_range(idx64.reshape(-1), plane, n_threads):
        raise ValueError(f"indices must lie in [0, {plane}) (flat positions in a {h}x{w} plane); received "
                         f"indices from {idx.min()} to {idx.max()}")
    result = np.empty(input_shape, dtype=dtype)
    if result.size:
        grad_in, kernel_channels_last = _kernel_layout(result, channels_last)
        avg_pooling.global_max_backward(check.contiguous(go, dtype), idx64, grad_in, kernel_channels_last, n_threads)
    return result
