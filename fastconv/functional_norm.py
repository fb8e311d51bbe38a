"""Batch normalisation, functional: the numerics behind :class:`fastconv.layers.BatchNormalization`.

NumPy only (no kernel): every function is a handful of vectorised passes over the array. ``axis`` is the feature
(channel) axis, which keeps its own statistics; every other axis is reduced over. It may be negative: ``-1`` for
channels_last images or Dense outputs, ``1`` for channels_first images.

The formulas are Keras's (and PyTorch's in training mode)::

    mean, variance = moments of x over every axis but ``axis``      (biased variance: divided by the count)
    y = (x - mean) * (gamma / sqrt(variance + epsilon)) + beta
    moving = moving * momentum + batch_statistic * (1 - momentum)

Numerics: float32 stays float32 for every array the size of ``x``, but every per-channel reduction (the mean, the
variance, and the backward sums) is a pairwise sum within cache-sized blocks of the batch (its rounding error grows
with the log of the count, not the count) and a float64 sum across blocks, and the variance is the two-pass
``mean((x - mean)**2)``, not ``E[x**2] - E[x]**2``, so it stays accurate for features with a large mean and a small
spread (where the one-pass formula Keras uses can lose every digit in float32). ``x - mean`` is taken before
scaling, so a large offset never cancels catastrophically either. The passes run block by block (about 64k elements
at a time, through small reused buffers): no temporary the size of ``x`` is made besides the output.

Examples
--------
>>> import numpy as np
>>> from fastconv import functional_norm as FN
>>> x = np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32)
>>> mean, variance = FN.batch_norm_moments(x, axis=-1)
>>> mean, variance
(array([ 2., 20.], dtype=float32), array([  1., 100.], dtype=float32))
>>> FN.batch_norm_forward(x, mean, variance, epsilon=0.0)
array([[-1., -1.],
       [ 1.,  1.]], dtype=float32)
"""
import numbers

import numpy as np

from fastconv import _validation as check
from fastconv._memory import reusing_blocks

__all__ = ["batch_norm_moments", "batch_norm_forward", "batch_norm_backward", "update_moving_statistics"]


# --- argument checks (BatchNorm-specific; the general helpers live in fastconv._validation) -------------------------
def _input(x, name="x"):
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be an array; received {name} of type {type(x).__name__}") from exc
    dtype = check.compute_dtype_of(x, name)
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least 1 axis; received {name} with shape {x.shape}")
    return x if x.dtype == dtype else x.astype(dtype)


def _axis(axis, ndim):
    """``axis`` as a non-negative int in ``range(ndim)``."""
    value = check._int(axis, "axis")
    if not -ndim <= value < ndim:
        raise ValueError(f"axis must be in [-{ndim}, {ndim}) for an input with {ndim} axes; received axis={axis!r}")
    return value % ndim


def _channel_vector(value, name, channels, dtype, required=True):
    """A per-channel vector of shape ``(channels,)`` in ``dtype``; None stays None unless required."""
    if value is None:
        if required:
            raise TypeError(f"{name} must be an array of shape ({channels},); received {name}=None")
        return None
    array = np.asarray(value)
    check.compute_dtype_of(array, name)
    if array.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},) (the size of the normalised axis); received {name} "
                         f"with shape {array.shape}")
    return array.astype(dtype, copy=False)


def _nonnegative_float(value, name, maximum=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float; received {name}={value!r}")
    if not value >= 0 or (maximum is not None and not value <= maximum):  # also rejects NaN
        bound = f"in [0, {maximum}]" if maximum is not None else "non-negative"
        raise ValueError(f"{name} must be {bound}; received {name}={value!r}")
    return float(value)


# --- layout helpers ------------------------------------------------------------------------------------------------
#: elements per block of the blocked passes: small enough that a block and its temporaries stay in the L2 cache
_BLOCK = 1 << 16


def _as_3d(array, axis):
    """``array`` viewed (or copied, for an awkward view) as ``(outer, channels, inner)`` around ``axis``."""
    shape = array.shape
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return array.reshape(outer, shape[axis], inner)


def _blocks(array3):
    """Slices of the outer axis of an ``(outer, channels, inner)`` array, about ``_BLOCK`` elements each, and a
    scratch buffer the size of one block."""
    outer, per_row = array3.shape[0], array3.shape[1] * array3.shape[2]
    step = max(1, _BLOCK // max(1, per_row))
    scratch = np.empty((min(step, outer),) + array3.shape[1:], dtype=array3.dtype)
    return [slice(i, min(i + step, outer)) for i in range(0, outer, step)], scratch


def _column(vector, scratch):
    """A per-channel vector as an operand for blocks shaped like ``scratch``; slice it ``[:rows]`` for a block.

    ``(1, channels, 1)`` in general; for channels-last blocks (inner size 1) it is tiled to a whole block instead,
    so that the ufuncs run on equal shapes (NumPy's broadcasting loops over short rows run at half the speed).
    """
    column = vector.reshape(1, -1, 1)
    if scratch.shape[2] == 1 and scratch.shape[0] > 1:
        return np.ascontiguousarray(np.broadcast_to(column, scratch.shape))
    return column


def _channel_sum(block3, owned=False):
    """Per-channel sum of a ``(rows, channels, inner)`` block, as float64.

    Pairwise in the block's dtype: NumPy's pairwise sum along the contiguous inner axis, then the rows added in
    halves (``rows[:h] += rows[h:]``, repeated), so the rounding error grows with log2 of the count, not with the
    count, and every add is a vectorised contiguous one. The callers add the blocks' sums in float64. ``owned``
    lets it overwrite ``block3`` instead of copying it.
    """
    if block3.shape[2] > 1:
        rows = np.add.reduce(block3, axis=2)
    else:
        rows = block3[:, :, 0] if owned else block3[:, :, 0].copy()
    n = rows.shape[0]
    if n == 0:
        return np.zeros(block3.shape[1])
    while n > 1:
        half = n // 2
        rows[:half] += rows[n - half:n]
        n -= half
    return rows[0].astype(np.float64)


def _inv_std(variance, epsilon, dtype):
    return (1.0 / np.sqrt(variance.astype(np.float64) + epsilon)).astype(dtype)


# --- public API ----------------------------------------------------------------------------------------------------
@reusing_blocks
def batch_norm_moments(x, axis=-1):
    """Per-channel mean and (biased) variance of a batch, as BatchNormalization uses them in training.

    Parameters
    ----------
    x : array_like, any shape with at least 1 axis
        float32 stays float32; float64 stays float64 (float16/int/bool follow the functional API's rules).
    axis : int
        The feature axis, kept; every other axis is reduced over. Negative values count from the end.

    Returns
    -------
    mean, variance : ndarray, shape (x.shape[axis],), x's compute dtype
        Pairwise sums, float64 across blocks; two passes: the variance is the mean of ``(x - mean)**2``.

    Raises
    ------
    ValueError
        ``axis`` out of range, or nothing to reduce over (an empty batch).
    TypeError
        Non-real input or a non-int ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.functional_norm import batch_norm_moments
    >>> x = np.float32(1e4) + np.array([[-1.0], [1.0]], dtype=np.float32)   # large mean, small spread
    >>> batch_norm_moments(x)
    (array([10000.], dtype=float32), array([1.], dtype=float32))
    """
    x = _input(x)
    axis = _axis(axis, x.ndim)
    x3 = _as_3d(x, axis)
    count = x3.shape[0] * x3.shape[2]
    if count == 0:
        raise ValueError(f"x must have at least one element per channel to take batch statistics; received x with "
                         f"shape {x.shape}")
    blocks, buffer = _blocks(x3)
    squared = np.empty_like(buffer)
    total = np.zeros(x3.shape[1])
    for block in blocks:
        total += _channel_sum(x3[block])
    mean = (total / count).astype(x.dtype)
    # Second pass, about the rounded mean, block by block through small buffers. Var = E[(x - m)^2] - (E[x] - m)^2
    # holds for any m: the second term takes out what rounding the mean to x's dtype left over.
    residual, squares = np.zeros(x3.shape[1]), np.zeros(x3.shape[1])
    mean_column = _column(mean, buffer)
    for block in blocks:
        rows = block.stop - block.start
        centred = np.subtract(x3[block], mean_column[:rows], out=buffer[:rows])
        squares += _channel_sum(np.square(centred, out=squared[:rows]), owned=True)
        residual += _channel_sum(centred, owned=True)
    residual /= count
    variance = squares / count - residual * residual
    return mean, np.maximum(variance, 0.0).astype(x.dtype)


@reusing_blocks
def batch_norm_forward(x, mean, variance, gamma=None, beta=None, *, axis=-1, epsilon=1e-3):
    """Normalise ``x`` with the given statistics: ``(x - mean) / sqrt(variance + epsilon) * gamma + beta``.

    Pass the batch statistics (:func:`batch_norm_moments`) in training, the moving ones at inference. Keep ``x``,
    ``mean`` and ``variance`` for :func:`batch_norm_backward`: nothing else is needed (no normalised copy of ``x``
    is made).

    Parameters
    ----------
    x : array_like, any shape with at least 1 axis
    mean, variance : array_like, shape (x.shape[axis],)
    gamma, beta : array_like, shape (x.shape[axis],), optional
        Scale and offset; None means 1 and 0 (Keras's ``scale=False`` / ``center=False``).
    axis : int
        The feature axis (negative values count from the end).
    epsilon : float
        Added to the variance, non-negative (Keras's default 1e-3).

    Returns
    -------
    ndarray, x's shape and compute dtype, C-contiguous

    Raises
    ------
    ValueError
        Statistics or parameters of the wrong shape, a negative ``epsilon``, or ``axis`` out of range.
    TypeError
        Non-real arrays or a non-int ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.functional_norm import batch_norm_forward
    >>> x = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    >>> batch_norm_forward(x, mean=[1.0, 2.0], variance=[4.0, 4.0], beta=[10.0, 0.0], epsilon=0.0)
    array([[ 9.5, -0.5],
           [10.5,  0.5]], dtype=float32)
    """
    x = _input(x)
    axis = _axis(axis, x.ndim)
    channels, dtype = x.shape[axis], x.dtype
    mean = _channel_vector(mean, "mean", channels, dtype)
    variance = _channel_vector(variance, "variance", channels, dtype)
    gamma = _channel_vector(gamma, "gamma", channels, dtype, required=False)
    beta = _channel_vector(beta, "beta", channels, dtype, required=False)
    epsilon = _nonnegative_float(epsilon, "epsilon")

    inv_std = _inv_std(variance, epsilon, dtype)
    x3 = _as_3d(x, axis)
    blocks, scratch = _blocks(x3)
    mean_column = _column(mean, scratch)
    scale = _column(inv_std if gamma is None else inv_std * gamma, scratch)
    beta_column = None if beta is None else _column(beta, scratch)
    out = np.empty(x3.shape, dtype=dtype)
    for block in blocks:                          # x - mean first: a large mean never cancels against the scale
        rows = block.stop - block.start
        y = np.subtract(x3[block], mean_column[:rows], out=out[block])
        y *= scale[:rows]
        if beta_column is not None:
            y += beta_column[:rows]
    return out.reshape(x.shape)


@reusing_blocks
def batch_norm_backward(grad_output, x, mean, variance, gamma=None, *, axis=-1, epsilon=1e-3, batch_statistics=True,
                        need_input_grad=True, need_param_grads=True):
    """Gradients of :func:`batch_norm_forward` with respect to ``x``, ``gamma`` and ``beta``.

    Parameters
    ----------
    grad_output : array_like, x's shape
        Gradient of the loss with respect to the output.
    x, mean, variance, gamma, axis, epsilon
        As given to :func:`batch_norm_forward` (``gamma`` None for 1).
    batch_statistics : bool
        True when ``mean`` and ``variance`` were ``x``'s own (training): the input gradient then also flows through
        them. False for fixed (moving) statistics: ``grad_x = grad_y * gamma / sqrt(variance + epsilon)``.
    need_input_grad, need_param_grads : bool
        Skip the input gradient or the parameter gradients (returned as None).

    Returns
    -------
    grad_x : ndarray or None, x's shape and compute dtype
    grad_gamma, grad_beta : ndarray or None, shape (channels,)
        ``sum(grad_y * x_hat)`` and ``sum(grad_y)`` over every axis but ``axis`` (pairwise sums), where
        ``x_hat = (x - mean) / sqrt(variance + epsilon)``.

    Raises
    ------
    ValueError
        Arrays whose shapes do not fit together.
    TypeError
        Non-real arrays or non-bool flags.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.functional_norm import batch_norm_backward
    >>> x = np.array([[1.0], [3.0]], dtype=np.float32)
    >>> grad_x, grad_gamma, grad_beta = batch_norm_backward(np.ones_like(x), x, [2.0], [1.0], epsilon=0.0)
    >>> grad_x.ravel().tolist(), grad_gamma.tolist(), grad_beta.tolist()   # a shift of y is normalised away
    ([0.0, 0.0], [0.0], [2.0])
    """
    x = _input(x)
    axis = _axis(axis, x.ndim)
    dtype, channels = x.dtype, x.shape[axis]
    grad_output = np.asarray(grad_output)
    check.compute_dtype_of(grad_output, "grad_output")
    if grad_output.shape != x.shape:
        raise ValueError(f"grad_output must have the shape of x {x.shape}; received grad_output with shape "
                         f"{grad_output.shape}")
    grad_output = grad_output.astype(dtype, copy=False)
    mean = _channel_vector(mean, "mean", channels, dtype)
    variance = _channel_vector(variance, "variance", channels, dtype)
    gamma = _channel_vector(gamma, "gamma", channels, dtype, required=False)
    epsilon = _nonnegative_float(epsilon, "epsilon")
    batch_statistics = check.flag(batch_statistics, "batch_statistics")
    need_input_grad = check.flag(need_input_grad, "need_input_grad")
    need_param_grads = check.flag(need_param_grads, "need_param_grads")

    inv_std = _inv_std(variance, epsilon, dtype)
    g3, x3 = _as_3d(grad_output, axis), _as_3d(x, axis)
    blocks, buffer = _blocks(x3)
    mean_column = _column(mean, buffer)

    def centred(block):                                        # x - mean for one block, in the shared buffer
        rows = block.stop - block.start
        return np.subtract(x3[block], mean_column[:rows], out=buffer[:rows])

    sum_g = sum_gx = None
    if need_param_grads or (need_input_grad and batch_statistics):
        # sum(g * x_hat) = inv_std * sum(g * (x - mean)), per channel
        sum_g, sum_gx = np.zeros(channels), np.zeros(channels)
        for block in blocks:
            sum_g += _channel_sum(g3[block])
            product = centred(block)
            product *= g3[block]
            sum_gx += _channel_sum(product, owned=True)
        sum_gx *= inv_std
    grad_x = None
    if need_input_grad:
        scale = inv_std if gamma is None else inv_std * gamma
        scale_column = _column(scale, buffer)
        grad3 = np.empty(x3.shape, dtype=dtype)
        if batch_statistics:
            # (g - mean(g) - x_hat * mean(g x_hat)) * scale = (g - mean(g)) * scale - (x - mean) * slope
            count = x3.shape[0] * x3.shape[2]
            mean_g = _column((sum_g / count).astype(dtype), buffer)
            slope = _column(((sum_gx / count) * inv_std * scale).astype(dtype), buffer)
            for block in blocks:
                rows = block.stop - block.start
                out = np.subtract(g3[block], mean_g[:rows], out=grad3[block])
                out *= scale_column[:rows]
                term = centred(block)
                term *= slope[:rows]
                out -= term
        else:
            for block in blocks:
                np.multiply(g3[block], scale_column[:block.stop - block.start], out=grad3[block])
        grad_x = grad3.reshape(x.shape)
    if not need_param_grads:
        return grad_x, None, None
    return grad_x, sum_gx.astype(dtype), sum_g.astype(dtype)


def update_moving_statistics(moving_mean, moving_variance, mean, variance, momentum):
    """Keras's moving-average update, in place: ``moving = moving * momentum + batch * (1 - momentum)``.

    Parameters
    ----------
    moving_mean, moving_variance : ndarray, shape (channels,)
        Updated in place (writable float arrays).
    mean, variance : array_like, shape (channels,)
        This batch's statistics (:func:`batch_norm_moments`).
    momentum : float
        In [0, 1]; Keras's default is 0.99.

    Raises
    ------
    ValueError
        Mismatched shapes or a ``momentum`` outside [0, 1].
    TypeError
        Moving statistics that are not writable float arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.functional_norm import update_moving_statistics
    >>> mm, mv = np.zeros(1, np.float32), np.ones(1, np.float32)
    >>> update_moving_statistics(mm, mv, [1.0], [3.0], momentum=0.5)
    >>> mm, mv
    (array([0.5], dtype=float32), array([2.], dtype=float32))
    """
    momentum = _nonnegative_float(momentum, "momentum", maximum=1.0)
    for name, moving, batch in (("moving_mean", moving_mean, mean), ("moving_variance", moving_variance, variance)):
        if not isinstance(moving, np.ndarray) or moving.dtype.kind != "f" or moving.ndim != 1:
            raise TypeError(f"{name} must be a 1-D float numpy array (updated in place); received {name} of type "
                            f"{type(moving).__name__}")
        if not moving.flags.writeable:
            raise ValueError(f"{name} must be writable; received a read-only {name}")
        batch = _channel_vector(batch, name.replace("moving_", ""), moving.shape[0], moving.dtype)
        # the same float-rounded products and sum as Keras: moving * m + batch * (1 - m)
        kind = moving.dtype.type
        np.add(moving * kind(momentum), batch * kind(1.0 - momentum), out=moving)
