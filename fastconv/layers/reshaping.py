"""Reshaping layers."""
import math

import numpy as np

from fastconv.layers import _arguments as args
from fastconv.layers.base import Layer, format_shape

__all__ = ["Flatten", "ZeroPadding2D", "Reshape", "Permute"]


class Flatten(Layer):
    """Flattens each sample to one axis, Keras's ``Flatten``.

    With ``data_format="channels_first"`` the channel axis is moved last before flattening (as Keras does), so
    the flattened order, and therefore the following Dense kernel, is the same in both layouts.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Flatten
    >>> Flatten()(np.zeros((2, 3, 3, 64), dtype=np.float32)).shape
    (2, 576)
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = args.data_format(data_format)

    def _moves_channels(self, ndim):
        return self.data_format == "channels_first" and ndim > 2

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"input of layer {self.name!r} must have at least 2 axes (batch, ...); received "
                             f"input with shape {format_shape(input_shape)}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        size = None if any(d is None for d in rest) else math.prod(rest)
        return (input_shape[0], size)

    def call(self, x, training=False):
        self._cache = x.shape if self._keep_state(training) else None
        if self._moves_channels(x.ndim):
            x = np.moveaxis(x, 1, -1)
        return np.ascontiguousarray(x).reshape(x.shape[0], -1)

    def backward(self, grad_output, need_input_grad=True):
        shape = self._cached()
        if not need_input_grad:
            return None, []
        if self._moves_channels(len(shape)):
            moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
            return np.ascontiguousarray(np.moveaxis(grad_output.reshape(moved), -1, 1)), []
        return grad_output.reshape(shape), []

    def get_config(self):
        config = super().get_config()
        config.update(data_format=self.data_format)
        return config


class ZeroPadding2D(Layer):
    """Pads the rows and columns of a 4-D image batch with zeros, Keras's ``ZeroPadding2D``.

    Parameters
    ----------
    padding : int, (int, int) or ((int, int), (int, int))
        The same amount on all four sides; ``(rows, cols)`` on both sides of each axis; or ``((top, bottom),
        (left, right))``. Non-negative; ``(1, 1)`` by default.
    data_format : "channels_last" (default, NHWC) or "channels_first" (NCHW)
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import ZeroPadding2D
    >>> ZeroPadding2D(((1, 0), (2, 1)))(np.ones((2, 3, 3, 4), dtype=np.float32)).shape
    (2, 4, 6, 4)
    """

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _zero_padding(padding)
        self.data_format = args.data_format(data_format)

    def _spatial_axes(self):
        return (2, 3) if self.data_format == "channels_first" else (1, 2)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"input of layer {self.name!r} must be 4-D (batch, rows, cols, channels) or (batch, "
                             f"channels, rows, cols); received input with shape {format_shape(input_shape)}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis, (before, after) in zip(self._spatial_axes(), self.padding):
            if shape[axis] is not None:
                shape[axis] += before + after
        return tuple(shape)

    def call(self, x, training=False):
        self._cache = x.shape if self._keep_state(training) else None
        out = np.zeros(self.compute_output_shape(x.shape), dtype=x.dtype)
        out[self._interior(x.shape)] = x
        return out

    def _interior(self, shape):
        index = [slice(None)] * 4
        for axis, (before, _) in zip(self._spatial_axes(), self.padding):
            index[axis] = slice(before, before + shape[axis])
        return tuple(index)

    def backward(self, grad_output, need_input_grad=True):
        shape = self._cached()
        if not need_input_grad:
            return None, []
        return np.ascontiguousarray(grad_output[self._interior(shape)]), []

    def get_config(self):
        config = super().get_config()
        config.update(padding=[list(p) for p in self.padding], data_format=self.data_format)
        return config


def _zero_padding(value):
    """ZeroPadding2D's padding as ((top, bottom), (left, right)) non-negative ints."""
    message = ("padding must be a non-negative int, a pair of them (rows, cols) or ((top, bottom), (left, right)); "
               f"received padding={value!r}")
    try:
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(message)
            pairs = tuple(tuple(args.int_tuple(v, 2, "padding", minimum=0)) for v in value)
        else:
            pairs = (args.int_tuple(value, 2, "padding", minimum=0),) * 2
    except TypeError:
        raise TypeError(message) from None
    except ValueError:
        raise ValueError(message) from None
    return pairs


class Reshape(Layer):
    """Reshapes each sample to ``target_shape``, Keras's ``Reshape`` (the batch axis is kept).

    Parameters
    ----------
    target_shape : tuple of ints
        The shape of one sample (batch axis excluded); one entry may be -1, inferred from the others.
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Reshape
    >>> Reshape((3, -1))(np.zeros((2, 12), dtype=np.float32)).shape
    (2, 3, 4)
    """

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = _target_shape(target_shape)

    def build(self, input_shape):
        if len(input_shape) < 1:
            raise ValueError(f"input of layer {self.name!r} must have a batch axis; received input with shape "
                             f"{format_shape(input_shape)}")
        super().build(input_shape)

    def _resolve(self, sample_shape):
        """``target_shape`` with its -1 worked out (None while the input's size is unknown)."""
        target = self.target_shape
        if any(d is None for d in sample_shape):
            return tuple(None if d == -1 else d for d in target)
        size = math.prod(sample_shape)
        known = math.prod(d for d in target if d != -1)
        if -1 in target:
            if size % known:
                raise ValueError(f"layer {self.name!r} cannot reshape samples of shape {tuple(sample_shape)} "
                                 f"({size} values) to target_shape={target}: {size} is not a multiple of {known}")
            return tuple(size // known if d == -1 else d for d in target)
        if size != known:
            raise ValueError(f"layer {self.name!r} cannot reshape samples of shape {tuple(sample_shape)} ({size} "
                             f"values) to target_shape={target} ({known} values)")
        return target

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self._resolve(input_shape[1:])

    def call(self, x, training=False):
        self._cache = x.shape if self._keep_state(training) else None
        return np.ascontiguousarray(x).reshape((x.shape[0],) + self._resolve(x.shape[1:]))

    def backward(self, grad_output, need_input_grad=True):
        shape = self._cached()
        if not need_input_grad:
            return None, []
        return np.ascontiguousarray(grad_output).reshape(shape), []

    def get_config(self):
        config = super().get_config()
        config.update(target_shape=list(self.target_shape))
        return config


def _target_shape(value):
    message = ("target_shape must be a tuple of positive ints, at most one of them -1 (batch axis excluded); "
               f"received target_shape={value!r}")
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if not isinstance(value, (list, tuple)):
        raise TypeError(message)
    try:
        dims = tuple(args.integer(d, "target_shape") for d in value)
    except TypeError:
        raise TypeError(message) from None
    if not dims or any(d < 1 and d != -1 for d in dims) or dims.count(-1) > 1:
        raise ValueError(message)
    return dims


class Permute(Layer):
    """Permutes the axes of each sample, Keras's ``Permute``.

    Parameters
    ----------
    dims : tuple of ints
        A permutation of ``1 .. ndim - 1`` (1-based: the batch axis 0 stays in place). Output axis ``i`` is input
        axis ``dims[i - 1]``, so ``Permute((3, 1, 2))`` turns NHWC into NCHW.
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Permute
    >>> Permute((3, 1, 2))(np.zeros((2, 5, 6, 3), dtype=np.float32)).shape
    (2, 3, 5, 6)
    """

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        message = f"dims must be a permutation of 1, 2, ..., n (1-based, batch axis excluded); received dims={dims!r}"
        if not isinstance(dims, (list, tuple)):
            raise TypeError(message)
        try:
            self.dims = tuple(args.integer(d, "dims") for d in dims)
        except TypeError:
            raise TypeError(message) from None
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(message)
        self._inverse = tuple(int(i) for i in np.argsort((0,) + self.dims))

    def build(self, input_shape):
        if len(input_shape) != len(self.dims) + 1:
            raise ValueError(f"input of layer {self.name!r} must have {len(self.dims) + 1} axes for dims={self.dims}; "
                             f"received input with shape {format_shape(input_shape)}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[d] for d in self.dims)

    def call(self, x, training=False):
        self._cache = () if self._keep_state(training) else None
        return np.ascontiguousarray(np.transpose(x, (0,) + self.dims))

    def backward(self, grad_output, need_input_grad=True):
        self._cached()
        if not need_input_grad:
            return None, []
        return np.ascontiguousarray(np.transpose(grad_output, self._inverse)), []

    def get_config(self):
        config = super().get_config()
        config.update(dims=list(self.dims))
        return config
