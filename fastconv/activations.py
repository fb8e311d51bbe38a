"""Activation functions, each with the derivative the layers backpropagate through.

Every activation is an :class:`Activation` object: calling it applies the function elementwise (softmax along an
axis), and :meth:`Activation.backward` maps the gradient of the loss with respect to the output back to the
input. Layers take them by name, as in Keras (``Dense(64, activation="relu")``).

Names: ``"linear"`` (also ``None``), ``"relu"``, ``"sigmoid"``, ``"softmax"``, ``"tanh"``, ``"elu"``,
``"leaky_relu"``. The module-level functions (``fastconv.activations.relu`` ...) are the same objects, so
``activation=fastconv.activations.relu`` works too.

All of them keep the input's dtype (float32 stays float32) and are written to stay finite on extreme inputs:
``sigmoid`` never evaluates ``exp`` of a positive number and ``softmax`` subtracts the row maximum first.

Examples
--------
>>> import numpy as np
>>> from fastconv import activations
>>> act = activations.get("sigmoid")
>>> act(np.array([-1000.0, 0.0, 1000.0], dtype=np.float32))
array([0. , 0.5, 1. ], dtype=float32)
>>> activations.get("softmax")(np.array([[1.0, 1.0]]))
array([[0.5, 0.5]])
"""
import numpy as np

from fastconv._kernels import elementwise
from fastconv._threads import threads_for_bytes

__all__ = ["Activation", "get", "serialize", "linear", "relu", "sigmoid", "softmax", "tanh", "elu", "leaky_relu"]


def relu_grad(grad_y, x):
    """ReLU's backward pass, ``grad_y * (x > 0)`` exactly as NumPy computes it (NaN and infinite gradients where
    ``x <= 0`` give NaN), on all threads for contiguous float arrays of one dtype and shape."""
    if (grad_y.dtype == x.dtype and grad_y.dtype in (np.float32, np.float64) and grad_y.shape == x.shape
            and grad_y.flags.c_contiguous and x.flags.c_contiguous):
        out = np.empty_like(grad_y)
        elementwise.relu_grad(grad_y.reshape(-1), x.reshape(-1), out.reshape(-1), threads_for_bytes(3 * x.nbytes))
        return out
    return grad_y * (x > 0)


class Activation:
    """An elementwise (or row-wise, for softmax) function and its backward pass.

    Subclasses implement ``__call__(x) -> y`` and ``backward(grad_y, x, y) -> grad_x``; ``x`` and ``y`` are the
    forward input and output, so each derivative can use whichever is cheaper.
    """

    name = None

    def __call__(self, x):
        raise NotImplementedError

    def backward(self, grad_y, x, y):
        """Gradient with respect to the input, given the gradient with respect to the output."""
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}

    def __repr__(self):
        return f"<activation {self.name!r}>"


class _Linear(Activation):
    name = "linear"

    def __call__(self, x):
        return x

    def backward(self, grad_y, x, y):
        return grad_y


class _ReLU(Activation):
    """Keras's relu: ``x`` for ``threshold <= x < max_value``, ``max_value`` above, ``negative_slope *
    (x - threshold)`` below. Plain ``max(x, 0)`` by default; its derivative at exactly 0 is taken as 0 (as
    TensorFlow and PyTorch do)."""

    name = "relu"

    def __init__(self, negative_slope=0.0, max_value=None, threshold=0.0):
        self.negative_slope = float(negative_slope)
        self.max_value = None if max_value is None else float(max_value)
        self.threshold = float(threshold)
        self._plain = self.negative_slope == 0 and self.max_value is None and self.threshold == 0

    def __call__(self, x):
        if self._plain:
            return np.maximum(x, x.dtype.type(0))
        t = x.dtype.type(self.threshold)
        y = np.where(x >= t, x, x.dtype.type(self.negative_slope) * (x - t))
        if self.max_value is not None:
            y = np.minimum(y, x.dtype.type(self.max_value))
        return y

    def backward(self, grad_y, x, y):
        if self._plain:
            return relu_grad(grad_y, x)
        t = grad_y.dtype.type
        slope = np.where(x > self.threshold, t(1), t(self.negative_slope))
        if self.max_value is not None:
            slope *= x < self.max_value
        return grad_y * slope


def _sigmoid(x):
    # exp of a non-positive number only: no overflow for any finite input.
    e = np.exp(-np.abs(x))
    one = np.ones((), dtype=e.dtype)
    return np.where(x >= 0, one / (one + e), e / (one + e))


class _Sigmoid(Activation):
    name = "sigmoid"

    def __call__(self, x):
        return _sigmoid(x)

    def backward(self, grad_y, x, y):
        return grad_y * y * (1 - y)


def _softmax(x, axis=-1):
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


class _Softmax(Activation):
    """Softmax along ``axis`` (the last one by default: the channels/classes axis)."""

    name = "softmax"

    def __init__(self, axis=-1):
        self.axis = axis

    def __call__(self, x):
        return _softmax(x, self.axis)

    def backward(self, grad_y, x, y):
        return y * (grad_y - np.sum(grad_y * y, axis=self.axis, keepdims=True))


class _Tanh(Activation):
    name = "tanh"

    def __call__(self, x):
        return np.tanh(x)

    def backward(self, grad_y, x, y):
        return grad_y * (1 - y * y)


class _LeakyReLU(_ReLU):
    """Keras's leaky_relu: ``x`` for ``x >= 0``, ``negative_slope * x`` below (slope 0.2 by default, as
    ``keras.activations.leaky_relu``; the LeakyReLU layer's default is 0.3). Derivative at 0: the slope."""

    name = "leaky_relu"

    def __init__(self, negative_slope=0.2):
        super().__init__(negative_slope=negative_slope)


class _ELU(Activation):
    """Keras's elu: ``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise (``expm1`` of a non-positive number
    only, so no overflow); derivative ``alpha * exp(x)`` for ``x <= 0`` (as PyTorch takes it at 0)."""

    name = "elu"

    def __init__(self, alpha=1.0):
        self.alpha = float(alpha)

    def __call__(self, x):
        t = x.dtype.type
        negative = np.expm1(np.minimum(x, t(0)))
        negative *= t(self.alpha)
        return np.where(x > 0, x, negative)

    def backward(self, grad_y, x, y):
        t = grad_y.dtype.type
        slope = np.exp(np.minimum(x, t(0)))
        slope *= t(self.alpha)
        return grad_y * np.where(x > 0, t(1), slope)


linear = _Linear()
relu = _ReLU()
sigmoid = _Sigmoid()
softmax = _Softmax()
tanh = _Tanh()
elu = _ELU()
leaky_relu = _LeakyReLU()

_BY_NAME = {a.name: a for a in (linear, relu, sigmoid, softmax, tanh, elu, leaky_relu)}


def get(identifier):
    """The :class:`Activation` for a name, ``None`` (linear) or an :class:`Activation` object.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else (a plain Python function has no derivative fastconv could backpropagate through).

    Examples
    --------
    >>> from fastconv import activations
    >>> activations.get("relu").name, activations.get(None).name
    ('relu', 'linear')
    >>> activations.get("rleu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: activation must be one of 'linear', 'relu', ... or None; received activation='rleu'
    """
    if identifier is None:
        return linear
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str):
        try:
            return _BY_NAME[identifier.lower()]
        except KeyError:
            pass
        names = ", ".join(repr(n) for n in _BY_NAME)
        raise ValueError(f"activation must be one of {names} or None; received activation={identifier!r}")
    raise TypeError(f"activation must be a name, None or a fastconv.activations.Activation; "
                    f"received activation={identifier!r}")


def serialize(activation):
    """The name under which ``activation`` is saved in a layer config."""
    return get(activation).name
