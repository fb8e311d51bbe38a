"""Pooling layers."""
import math

import numpy as np

import fastconv.functional as F
from fastconv import activations
from fastconv.layers import _arguments as args
from fastconv.layers.base import Layer, format_shape

__all__ = ["MaxPooling2D", "MaxPool2D", "AveragePooling2D", "AvgPool2D", "GlobalAveragePooling2D",
           "GlobalAvgPool2D", "GlobalMaxPooling2D", "GlobalMaxPool2D"]


def pool_output_length(size, pool, stride, padding):
    if size is None:
        return None
    if padding == "same":
        return math.ceil(size / stride)
    return (size - pool) // stride + 1 if size >= pool else 0


class _Pooling2D(Layer):
    """What the windowed pooling layers share: Keras's arguments, output shapes and config."""

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = args.int_tuple(pool_size, 2, "pool_size")
        self.strides = self.pool_size if strides is None else args.int_tuple(strides, 2, "strides")
        self.padding = args.padding(padding)
        self.data_format = args.data_format(data_format)

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

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=list(self.pool_size), strides=list(self.strides), padding=self.padding,
                      data_format=self.data_format)
        return config


class MaxPooling2D(_Pooling2D):
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

    def _options(self):
        return dict(stride=self.strides, padding=self.padding, data_format=self.data_format)

    def _index_options(self):
        # Window positions (1 byte per output cell, not 8) wherever they apply: channels_last, windows of at
        # most 256 cells. Both passes must agree.
        cells = self.pool_size[0] * self.pool_size[1]
        window = self.data_format == "channels_last" and cells <= 256
        return dict(self._options(), index_format="window" if window else "flat")

    def call(self, x, training=False):
        if not self._keep_state(training):
            self._cache = None
            return F.max_pool2d(x, self.pool_size, **self._options())
        out, indices = F.max_pool2d(x, self.pool_size, return_indices=True, **self._index_options())
        self._cache = (x.shape, indices, out)
        return out

    def backward(self, grad_output, need_input_grad=True):
        input_shape, indices, _ = self._cached()
        if not need_input_grad:
            return None, []
        grad = F.max_pool2d_grad(np.ascontiguousarray(grad_output, dtype=self.dtype), indices, input_shape,
                                 pool_size=self.pool_size, out=self._recycled("grad", input_shape, self.dtype),
                                 **self._index_options())
        return self._keep_for_reuse("grad", grad), []

    def backward_through_relu(self, grad_output):
        """The gradient with respect to the *logits* of a plain ReLU whose output this layer pooled.

        ReLU's derivative at a window's winning cell is ``pooled output > 0`` (the winner's value is the output),
        and every other cell gets no gradient: masking the pooled gradient before the scatter equals ReLU's
        backward after it, on an array ``pool_size**2`` times smaller.
        """
        input_shape, indices, out = self._cached()
        grad_output = np.ascontiguousarray(grad_output, dtype=self.dtype)
        masked = activations.relu_grad(grad_output, out)
        grad = F.max_pool2d_grad(masked, indices, input_shape, pool_size=self.pool_size,
                                 out=self._recycled("grad", input_shape, self.dtype), **self._index_options())
        return self._keep_for_reuse("grad", grad)



MaxPool2D = MaxPooling2D


class AveragePooling2D(_Pooling2D):
    """2-D average-pooling layer, Keras's ``AveragePooling2D``.

    Parameters
    ----------
    pool_size : int or (int, int)
    strides : int or (int, int), optional
        Defaults to ``pool_size``.
    padding : {"valid", "same"}
        "same" pads as Keras/TensorFlow do; padded cells are left out of each window's average (TensorFlow's
        rule, PyTorch's ``count_include_pad=False``).
    data_format : {"channels_last", "channels_first"}, optional
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import AveragePooling2D
    >>> AveragePooling2D(2, padding="same")(np.ones((1, 5, 5, 3), dtype=np.float32))[0, :, :, 0]
    array([[1., 1., 1.],
           [1., 1., 1.],
           [1., 1., 1.]], dtype=float32)
    """

    def _options(self):
        return dict(pool_size=self.pool_size, stride=self.strides, padding=self.padding,
                    data_format=self.data_format)

    def call(self, x, training=False):
        self._cache = x.shape if self._keep_state(training) else None
        return F.avg_pool2d(x, **self._options())

    def backward(self, grad_output, need_input_grad=True):
        input_shape = self._cached()
        if not need_input_grad:
            return None, []
        grad = F.avg_pool2d_grad(np.ascontiguousarray(grad_output, dtype=self.dtype), input_shape,
                                 **self._options())
        return grad, []



AvgPool2D = AveragePooling2D


class _GlobalPooling2D(Layer):
    """Shared shape logic of the global pooling layers: (N, H, W, C) or (N, C, H, W) -> (N, C), or with
    ``keepdims`` (N, 1, 1, C) / (N, C, 1, 1)."""

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = args.data_format(data_format)
        if not isinstance(keepdims, (bool, np.bool_)):
            raise TypeError(f"keepdims must be a bool; received keepdims={keepdims!r}")
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"input of layer {self.name!r} must be 4-D; received input with shape "
                             f"{format_shape(input_shape)}")
        spatial = input_shape[1:3] if self.data_format == "channels_last" else input_shape[2:4]
        if any(d is not None and d < 1 for d in spatial):
            raise ValueError(f"input of layer {self.name!r} must have a non-empty (H, W) plane; received input "
                             f"with shape {format_shape(input_shape)}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        n = input_shape[0]
        c = input_shape[3] if self.data_format == "channels_last" else input_shape[1]
        if not self.keepdims:
            return (n, c)
        return (n, 1, 1, c) if self.data_format == "channels_last" else (n, c, 1, 1)

    def _shaped(self, pooled):
        """The (N, C) result in the layer's output shape."""
        if not self.keepdims:
            return pooled
        n, c = pooled.shape
        return pooled.reshape((n, 1, 1, c) if self.data_format == "channels_last" else (n, c, 1, 1))

    def _pooled_grad(self, grad_output, input_shape):
        """grad_output (the layer's output shape) as the contiguous (N, C) array the functional API takes."""
        n = input_shape[0]
        c = input_shape[3] if self.data_format == "channels_last" else input_shape[1]
        return np.ascontiguousarray(grad_output, dtype=self.dtype).reshape(n, c)

    def get_config(self):
        config = super().get_config()
        config.update(data_format=self.data_format, keepdims=self.keepdims)
        return config


class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over the spatial axes, Keras's ``GlobalAveragePooling2D``.

    Parameters
    ----------
    data_format : {"channels_last", "channels_first"}, optional
    keepdims : bool
        Keep the spatial axes with size 1: output (N, 1, 1, C) or (N, C, 1, 1) instead of (N, C).
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import GlobalAveragePooling2D
    >>> GlobalAveragePooling2D()(np.ones((2, 7, 7, 8), dtype=np.float32)).shape
    (2, 8)
    >>> GlobalAveragePooling2D(keepdims=True)(np.ones((2, 7, 7, 8), dtype=np.float32)).shape
    (2, 1, 1, 8)
    """

    def call(self, x, training=False):
        self._cache = x.shape if self._keep_state(training) else None
        return self._shaped(F.global_avg_pool2d(x, data_format=self.data_format))

    def backward(self, grad_output, need_input_grad=True):
        input_shape = self._cached()
        if not need_input_grad:
            return None, []
        grad = F.global_avg_pool2d_grad(self._pooled_grad(grad_output, input_shape), input_shape,
                                        data_format=self.data_format)
        return grad, []


GlobalAvgPool2D = GlobalAveragePooling2D


class GlobalMaxPooling2D(_GlobalPooling2D):
    """Maximum over the spatial axes, Keras's ``GlobalMaxPooling2D``.

    Parameters
    ----------
    data_format : {"channels_last", "channels_first"}, optional
    keepdims : bool
        Keep the spatial axes with size 1: output (N, 1, 1, C) or (N, C, 1, 1) instead of (N, C).
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Notes
    -----
    Ties go to the first maximum of the plane (row-major), and the gradient flows to that one cell only.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import GlobalMaxPooling2D
    >>> GlobalMaxPooling2D(data_format="channels_first")(np.arange(8.0).reshape(1, 2, 2, 2)).tolist()
    [[3.0, 7.0]]
    """

    def call(self, x, training=False):
        if not self._keep_state(training):
            self._cache = None
            return self._shaped(F.global_max_pool2d(x, data_format=self.data_format))
        out, indices = F.global_max_pool2d(x, data_format=self.data_format, return_indices=True)
        self._cache = (x.shape, indices)
        return self._shaped(out)

    def backward(self, grad_output, need_input_grad=True):
        input_shape, indices = self._cached()
        if not need_input_grad:
            return None, []
        grad = F.global_max_pool2d_grad(self._pooled_grad(grad_output, input_shape), indices, input_shape,
                                        data_format=self.data_format)
        return grad, []


GlobalMaxPool2D = GlobalMaxPooling2D
