"""Reshaping layers."""
import math

import numpy as np

from fastconv.layers import _arguments as args
from fastconv.layers.base import Layer, format_shape

__all__ = ["Flatten"]


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
        self._cache = x.shape if training else None
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
