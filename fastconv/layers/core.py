"""Core layers: Dense and the activation layers."""
import numpy as np

import fastconv.functional as F
from fastconv import activations, initializers
from fastconv.layers import _arguments as args
from fastconv.layers.base import ActivationMixin, Layer, format_shape

__all__ = ["Dense", "Activation", "ReLU", "Softmax"]


class Dense(ActivationMixin, Layer):
    """Densely connected layer, Keras's ``Dense``: ``activation(x @ kernel + bias)`` on the last axis.

    The product runs through fastconv's functional convolution as a 1x1 convolution of a ``(M, 1, 1, in)``
    batch, so Dense shares the kernels' guarantees: float32 end to end, and identical results for any thread
    count.

    Parameters
    ----------
    units : int
    activation : str or Activation, optional
    use_bias : bool
    kernel_initializer, bias_initializer : str or Initializer
        ``"glorot_uniform"`` and ``"zeros"`` by default.
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Dense
    >>> dense = Dense(3, kernel_initializer="ones")
    >>> dense(np.ones((2, 4), dtype=np.float32))
    array([[4., 4., 4.],
           [4., 4., 4.]], dtype=float32)
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units = args.integer(units, "units", minimum=1)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self.kernel = self.bias = None

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"input of layer {self.name!r} must be at least 2-D with a known last axis; "
                             f"received input with shape {format_shape(input_shape)}")
        self.kernel = self.add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.units,), self.bias_initializer)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def call(self, x, training=False):
        rows = x.reshape(-1, 1, 1, x.shape[-1])
        weight = self.kernel.value.reshape(1, 1, *self.kernel.shape)
        bias = self.bias.value if self.use_bias else None
        logits = F.conv2d(rows, weight, bias).reshape(x.shape[:-1] + (self.units,))
        self._cache = rows if self._keep_state(training) else None
        return self._activate(logits, training, owned=True)

    def backward_from_logits(self, grad_logits, need_input_grad=True):
        rows = self._cached()
        grad = np.ascontiguousarray(grad_logits, dtype=self.dtype).reshape(-1, 1, 1, self.units)
        grads = []
        if self.trainable:
            grads.append(F.conv2d_grad_weight(grad, rows, (1, 1) + self.kernel.shape).reshape(self.kernel.shape))
            if self.use_bias:
                grads.append(F.conv2d_grad_bias(grad))
        grad_input = None
        if need_input_grad:
            weight = self.kernel.value.reshape(1, 1, *self.kernel.shape)
            grad_input = F.conv2d_grad_input(grad, weight, rows.shape).reshape(
                grad_logits.shape[:-1] + (self.kernel.shape[0],))
        return grad_input, grads

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=activations.serialize(self.activation), use_bias=self.use_bias,
                      kernel_initializer=initializers.serialize(self.kernel_initializer),
                      bias_initializer=initializers.serialize(self.bias_initializer))
        return config


class _ActivationLayer(ActivationMixin, Layer):
    """A layer that only applies an activation: its logits are its input."""

    def call(self, x, training=False):
        self._cache = () if self._keep_state(training) else None
        return self._activate(x, training)

    def backward_from_logits(self, grad_logits, need_input_grad=True):
        self._cached()
        return (grad_logits if need_input_grad else None), []


class Activation(_ActivationLayer):
    """Applies an activation function by name, Keras's ``Activation``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Activation
    >>> Activation("relu")(np.array([[-1.0, 2.0]], dtype=np.float32))
    array([[0., 2.]], dtype=float32)
    """

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def get_config(self):
        config = super().get_config()
        config.update(activation=activations.serialize(self.activation))
        return config


class ReLU(_ActivationLayer):
    """Rectified linear unit layer, Keras's ``ReLU``.

    ``max_value`` above ``max_value``; ``x`` for ``threshold <= x < max_value``; ``negative_slope * (x -
    threshold)`` below ``threshold``. Plain ``max(x, 0)`` by default.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import ReLU
    >>> ReLU(max_value=6.0, negative_slope=0.5)(np.array([[-2.0, 3.0, 9.0]], dtype=np.float32))
    array([[-1.,  3.,  6.]], dtype=float32)
    """

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        if max_value is not None and not max_value >= 0:
            raise ValueError(f"max_value must be non-negative or None; received max_value={max_value!r}")
        if not negative_slope >= 0:
            raise ValueError(f"negative_slope must be non-negative; received negative_slope={negative_slope!r}")
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope = float(negative_slope)
        self.threshold = float(threshold)
        self.activation = activations._ReLU(self.negative_slope, self.max_value, self.threshold)

    def get_config(self):
        config = super().get_config()
        config.update(max_value=self.max_value, negative_slope=self.negative_slope, threshold=self.threshold)
        return config


class Softmax(_ActivationLayer):
    """Softmax along ``axis`` (the last one by default), Keras's ``Softmax``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Softmax
    >>> Softmax()(np.array([[0.0, 0.0, 0.0, 0.0]], dtype=np.float32))
    array([[0.25, 0.25, 0.25, 0.25]], dtype=float32)
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = args.integer(axis, "axis")
        self.activation = activations._Softmax(self.axis)

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis)
        return config
