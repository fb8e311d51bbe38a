"""Pooling layers."""
import math

import numpy as np

import fastconv.functional as F
from fastconv.layers import _arguments as args
from fastconv.layers.base import Layer, format_shape

__all__ = ["MaxPooling2D", "MaxPool2D"]


def pool_output_length(size, pool, stride, padding):
    if size is None:
        return None
    if padding == "same":
        return math.ceil(size / stride)
    return (size - pool) // stride + 1 if size >= pool else 0


class MaxPooling2D(Layer):
    """2-D max-pooling layer, Keras's ``MaxPooling2D``.

    Parameters
    ----------
    pool_size : int or (int, int)
    strides : int or (int, int), optional
        Defaults to ``pool_size``.
    padding : {"valid", "same"}
        "same" pads as Keras/TensorFlow do; padded cells never win the max.
    data_format : {"channels_last", "channels_first"}, optional
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Notes
    -----
    Ties go to the first maximum of the window (row-major), and the gradient flows to that one cell only.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import MaxPooling2D
    >>> MaxPooling2D(2)(np.zeros((1, 5, 5, 3), dtype=np.float32)).shape
    (1, 2, 2, 3)
    """

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = args.int_tuple(pool_size, 2, "pool_size")
        self.strides = self.pool_size if strides is None else args.int_tuple(strides, 2, "strides")
        self.padding = args.padding(padding)
        self.data_format = args.data_format(data_format)

    def _options(self):
        return dict(stride=self.strides, padding=self.padding, data_format=self.data_format)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"input of layer {self.name!r} must be 4-D; received input with shape "
                             f"{format_shape(input_shape)}")
        out = self.compute_output_shape(input_shape)
        spatial = out[1:3] if self.data_format == "channels_last" else out[2:4]
        if any(d is not None and d < 1 for d in spatial):
            raise ValueError(f"input of layer {self.name!r} is smaller than pool_size={self.pool_size}; "
                             f"received input with shape {format_shape(input_shape)}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        channels_last = self.data_format == "channels_last"
        n, h, w, c = input_shape if channels_last else (input_shape[0], *input_shape[2:], input_shape[1])
        oh, ow = (pool_output_length(size, p, s, self.padding)
                  for size, p, s in zip((h, w), self.pool_size, self.strides))
        return (n, oh, ow, c) if channels_last else (n, c, oh, ow)

    def call(self, x, training=False):
        if not training:
            self._cache = None
            return F.max_pool2d(x, self.pool_size, **self._options())
        out, indices = F.max_pool2d(x, self.pool_size, return_indices=True, **self._options())
        self._cache = (x.shape, indices)
        return out

    def backward(self, grad_output, need_input_grad=True):
        input_shape, indices = self._cached()
        if not need_input_grad:
            return None, []
        grad = F.max_pool2d_grad(np.ascontiguousarray(grad_output, dtype=self.dtype), indices, input_shape,
                                 pool_size=self.pool_size, **self._options())
        return grad, []

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=list(self.pool_size), strides=list(self.strides), padding=self.padding,
                      data_format=self.data_format)
        return config


MaxPool2D = MaxPooling2D
