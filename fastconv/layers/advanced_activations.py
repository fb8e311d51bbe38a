"""Activation layers with parameters: LeakyReLU, PReLU (a learned slope) and ELU."""
import numpy as np

from fastconv import activations, initializers
from fastconv.layers import _arguments as args
from fastconv.layers.base import Layer, format_shape
from fastconv.layers.core import _ActivationLayer

__all__ = ["LeakyReLU", "PReLU", "ELU"]


class LeakyReLU(_ActivationLayer):
    """Leaky rectified linear unit, Keras 3's ``LeakyReLU``: ``x`` for ``x >= 0``, ``negative_slope * x`` below.

    Parameters
    ----------
    negative_slope : float
        Non-negative; 0.3 by default (Keras's layer default; the ``"leaky_relu"`` activation's is 0.2). The Keras 2
        keyword ``alpha`` is accepted for it too.
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import LeakyReLU
    >>> LeakyReLU(negative_slope=0.5)(np.array([[-10.0, -5.0, 0.0, 5.0]], dtype=np.float32))
    array([[-5. , -2.5,  0. ,  5. ]], dtype=float32)
    """

    def __init__(self, negative_slope=0.3, **kwargs):
        if "alpha" in kwargs:                      # Keras 2's name for the slope
            negative_slope = kwargs.pop("alpha")
        super().__init__(**kwargs)
        self.negative_slope = args.real(negative_slope, "negative_slope", minimum=0.0)
        self.activation = activations._LeakyReLU(self.negative_slope)

    def get_config(self):
        config = super().get_config()
        config.update(negative_slope=self.negative_slope)
        return config


class ELU(_ActivationLayer):
    """Exponential linear unit, Keras's ``ELU``: ``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise.

    Parameters
    ----------
    alpha : float
        The value the output tends to for very negative input is ``-alpha``; 1.0 by default.
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import ELU
    >>> ELU(alpha=2.0)(np.array([[-1000.0, 0.0, 3.0]], dtype=np.float32))
    array([[-2.,  0.,  3.]], dtype=float32)
    """

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = args.real(alpha, "alpha")
        self.activation = activations._ELU(self.alpha)

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha)
        return config


class PReLU(Layer):
    """Parametric rectified linear unit, Keras's ``PReLU``: ``x`` for ``x > 0``, ``alpha * x`` otherwise, with a
    learned ``alpha``.

    ``alpha`` has the shape of one sample (``input_shape[1:]``), except along ``shared_axes``, where it has size 1
    and is shared (``shared_axes=[1, 2]`` on a channels_last image gives one slope per channel). Its gradient is
    summed over the batch and the shared axes.

    Parameters
    ----------
    alpha_initializer : str or Initializer
        ``"zeros"`` by default (the layer starts as a ReLU).
    shared_axes : int or list of ints, optional
        Axes of the input (1-based: the batch axis is 0 and cannot be shared) along which ``alpha`` is shared.
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import initializers
    >>> from fastconv.layers import PReLU
    >>> prelu = PReLU(alpha_initializer=initializers.Constant(0.25), shared_axes=[1, 2])
    >>> y = prelu(np.full((1, 4, 4, 3), -2.0, dtype=np.float32))
    >>> prelu.alpha.shape, float(y[0, 0, 0, 0])
    ((1, 1, 3), -0.5)
    """

    def __init__(self, alpha_initializer="zeros", shared_axes=None, **kwargs):
        super().__init__(**kwargs)
        self.alpha_initializer = initializers.get(alpha_initializer, "alpha_initializer")
        self.shared_axes = _shared_axes(shared_axes)
        self.alpha = None

    def build(self, input_shape):
        ndim = len(input_shape)
        if ndim < 2:
            raise ValueError(f"input of layer {self.name!r} must have at least 2 axes (batch, ...); received input "
                             f"with shape {format_shape(input_shape)}")
        shared = self.shared_axes or []
        if any(axis >= ndim for axis in shared):
            raise ValueError(f"shared_axes of layer {self.name!r} must be axes 1 to {ndim - 1} of its {ndim}-D "
                             f"input; received shared_axes={self.shared_axes} for input with shape "
                             f"{format_shape(input_shape)}")
        shape = [1 if axis in shared else input_shape[axis] for axis in range(1, ndim)]
        if None in shape:
            raise ValueError(f"input of layer {self.name!r} must have known sizes along its unshared axes; "
                             f"received input with shape {format_shape(input_shape)} and "
                             f"shared_axes={self.shared_axes}")
        self.alpha = self.add_weight("alpha", tuple(shape), self.alpha_initializer)
        super().build(input_shape)

    def call(self, x, training=False):
        positive = x > 0
        self._cache = (x, positive) if self._keep_state(training) else None
        return np.where(positive, x, x * self.alpha.value)

    def backward(self, grad_output, need_input_grad=True):
        x, positive = self._cached()
        grads = []
        if self.trainable:
            # d/d alpha = grad * min(x, 0), summed over the batch and the shared axes (float64 accumulation)
            contribution = grad_output * np.minimum(x, x.dtype.type(0))
            reduce = (0,) + tuple(self.shared_axes or ())
            grads.append(np.sum(contribution, axis=reduce, dtype=np.float64, keepdims=True)
                         .reshape(self.alpha.shape).astype(self.dtype))
        grad_input = np.where(positive, grad_output, grad_output * self.alpha.value) if need_input_grad else None
        return grad_input, grads

    def get_config(self):
        config = super().get_config()
        config.update(alpha_initializer=initializers.serialize(self.alpha_initializer),
                      shared_axes=None if self.shared_axes is None else list(self.shared_axes))
        return config


def _shared_axes(value):
    """None, or a sorted tuple of distinct axes >= 1 from an int or a list of ints."""
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        axes = [args.integer(v, "shared_axes") for v in items]
    except TypeError:
        raise TypeError(f"shared_axes must be an int or a list of ints; received shared_axes={value!r}") from None
    if (axes and min(axes) < 1) or len(set(axes)) != len(axes):
        raise ValueError(f"shared_axes must be distinct axes of at least 1 (the batch axis 0 cannot be shared); "
                         f"received shared_axes={value!r}")
    return tuple(sorted(axes))
