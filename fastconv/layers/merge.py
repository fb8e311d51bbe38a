"""Merge layers: combine a list of tensors into one (Add, Multiply, Concatenate).

Each is a ``multi_input`` layer (see :mod:`fastconv.layers.base`): ``build`` takes a list of shapes, ``call`` a
list of at least two arrays, and ``backward`` returns one gradient per input.

Add and Multiply follow Keras's shape rule for inputs of the same rank: the batch sizes are equal (Keras 3 refuses
to merge different batch sizes, a batch of one included), and along every other axis the sizes are equal or one of
them is 1 and is broadcast; the gradient of a broadcast input is summed back over the axes it was broadcast along.
Inputs of different ranks (which Keras would first expand) are refused with a ValueError.
"""
import numpy as np

from fastconv.layers import _arguments as args
from fastconv.layers.base import Layer, format_shape

__all__ = ["Add", "Multiply", "Concatenate"]


def _shapes_text(shapes):
    return "[" + ", ".join(format_shape(s) for s in shapes) + "]"


class _Merge(Layer):
    multi_input = True

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not all(isinstance(s, (list, tuple)) for s in input_shape):
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}) must be called on a list of inputs; "
                             f"received input_shape={input_shape!r}")
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) < 2:
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}) merges at least 2 inputs; received "
                             f"{len(shapes)} input(s) with shapes {_shapes_text(shapes)}")
        super().build(shapes)

    def check_input_shape(self, shape, what="input"):
        # Also the rules between the inputs (the batch sizes may change from call to call, but must agree within
        # one), so a bad combination gets this layer's error rather than NumPy's.
        shapes = [tuple(s) for s in shape]
        self.compute_output_shape(shapes)
        super().check_input_shape(shapes, what)

    def _batch_size(self, shapes):
        """The inputs' common batch size (None when unknown); ValueError if two known ones differ."""
        batches = {s[0] for s in shapes if s} - {None}
        if len(batches) > 1:
            raise ValueError(f"inputs of layer {self.name!r} ({type(self).__name__}) must have the same batch size; "
                             f"received inputs with shapes {_shapes_text(shapes)}")
        return batches.pop() if batches else None


class _Elementwise(_Merge):
    """Add and Multiply: same-rank inputs, equal sizes or 1 along each axis."""

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if len({len(s) for s in shapes}) != 1:
            raise ValueError(f"inputs of layer {self.name!r} ({type(self).__name__}) must all have the same rank; "
                             f"received inputs with shapes {_shapes_text(shapes)}")
        out = [self._batch_size(shapes)]
        for sizes in list(zip(*shapes))[1:]:
            known = {d for d in sizes if d is not None and d != 1}
            if len(known) > 1:
                raise ValueError(f"inputs of layer {self.name!r} ({type(self).__name__}) must have equal shapes "
                                 f"(or size 1 along an axis to broadcast); received inputs with shapes "
                                 f"{_shapes_text(shapes)}")
            if None in sizes:
                out.append(None)
            else:
                out.append(known.pop() if known else 1)
        return tuple(out)

    def _input_grads(self, grad_output, factors, shapes):
        return [_unbroadcast(grad_output if factor is None else grad_output * factor, shape)
                for factor, shape in zip(factors, shapes)]


def _unbroadcast(grad, shape):
    """``grad`` summed over the axes where an input of ``shape`` was broadcast to the output's size."""
    axes = tuple(i for i, (n, g) in enumerate(zip(shape, grad.shape)) if n == 1 and g != 1)
    if not axes:
        return grad
    return np.sum(grad, axis=axes, keepdims=True, dtype=np.float64).astype(grad.dtype)


class Add(_Elementwise):
    """Sums a list of inputs elementwise, Keras's ``Add``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Add
    >>> Add()([np.ones((2, 3), dtype=np.float32), np.full((2, 3), 2, dtype=np.float32)])
    array([[3., 3., 3.],
           [3., 3., 3.]], dtype=float32)
    """

    def call(self, xs, training=False):
        self._cache = [x.shape for x in xs] if self._keep_state(training) else None
        out = xs[0] + xs[1]
        for x in xs[2:]:
            if out.shape == np.broadcast_shapes(out.shape, x.shape):
                out += x
            else:
                out = out + x              # x broadcasts the sum further
        return out

    def backward(self, grad_output, need_input_grad=True):
        shapes = self._cached()
        if not need_input_grad:
            return None, []
        # Inputs of the output's shape get grad_output itself: the first one the array, the others copies, so
        # that no two inputs share a gradient array a graph model could accumulate into in place.
        grads = self._input_grads(grad_output, [None] * len(shapes), shapes)
        return [g.copy() if i and g is grad_output else g for i, g in enumerate(grads)], []


class Multiply(_Elementwise):
    """Multiplies a list of inputs elementwise, Keras's ``Multiply``.

    The gradient of each input is the output gradient times the product of the other inputs (computed from
    prefix and suffix products, never by dividing, so zeros are fine).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Multiply
    >>> Multiply()([np.full((1, 2), 3, dtype=np.float32), np.array([[1, 2]], dtype=np.float32)])
    array([[3., 6.]], dtype=float32)
    """

    def call(self, xs, training=False):
        self._cache = list(xs) if self._keep_state(training) else None
        out = xs[0] * xs[1]
        for x in xs[2:]:
            out = out * x                  # not in place: a later input may broadcast the product further
        return out

    def backward(self, grad_output, need_input_grad=True):
        xs = self._cached()
        if not need_input_grad:
            return None, []
        n = len(xs)
        prefix = [None] * n                # prefix[i] = xs[0] * ... * xs[i - 1]
        suffix = [None] * n                # suffix[i] = xs[i + 1] * ... * xs[n - 1]
        for i in range(1, n):
            prefix[i] = xs[0] if i == 1 else prefix[i - 1] * xs[i - 1]
        for i in range(n - 2, -1, -1):
            suffix[i] = xs[n - 1] if i == n - 2 else suffix[i + 1] * xs[i + 1]
        others = [p if s is None else s if p is None else p * s for p, s in zip(prefix, suffix)]
        return self._input_grads(grad_output, others, [x.shape for x in xs]), []


class Concatenate(_Merge):
    """Concatenates a list of inputs along ``axis``, Keras's ``Concatenate``.

    All inputs have the same rank and the same sizes along every other axis.

    Parameters
    ----------
    axis : int
        The axis to concatenate along, -1 (the last, channels_last's channel axis) by default; negative values
        count from the end.
    name, trainable, dtype
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Concatenate
    >>> Concatenate()([np.zeros((2, 4, 4, 3), np.float32), np.ones((2, 4, 4, 5), np.float32)]).shape
    (2, 4, 4, 8)
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = args.integer(axis, "axis")

    def _resolved_axis(self, shapes):
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ValueError(f"inputs of layer {self.name!r} (Concatenate) must all have the same rank; received "
                             f"inputs with shapes {_shapes_text(shapes)}")
        ndim = ranks.pop()
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"axis of layer {self.name!r} (Concatenate) must be in [-{ndim}, {ndim}) for "
                             f"{ndim}-D inputs; received axis={self.axis}")
        return self.axis % ndim

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        axis = self._resolved_axis(shapes)
        if axis != 0:
            self._batch_size(shapes)
        out = []
        for i, sizes in enumerate(zip(*shapes)):
            if i == axis:
                out.append(None if None in sizes else sum(sizes))
                continue
            known = {d for d in sizes if d is not None}
            if len(known) > 1:
                raise ValueError(f"inputs of layer {self.name!r} (Concatenate) must have equal sizes along every "
                                 f"axis but axis={self.axis}; received inputs with shapes {_shapes_text(shapes)}")
            out.append(known.pop() if len(known) == 1 else None)
        return tuple(out)

    def call(self, xs, training=False):
        self._cache = [x.shape for x in xs] if self._keep_state(training) else None
        return np.concatenate(xs, axis=self.axis)

    def backward(self, grad_output, need_input_grad=True):
        shapes = self._cached()
        if not need_input_grad:
            return None, []
        axis = self.axis % len(shapes[0])
        bounds = np.cumsum([s[axis] for s in shapes])[:-1]
        return [np.ascontiguousarray(g) for g in np.split(grad_output, bounds, axis=axis)], []

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis)
        return config
