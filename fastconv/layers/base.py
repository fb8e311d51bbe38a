"""The layer contract every fastconv layer follows, and the ``Input`` placeholder.

A layer holds weights (:class:`Variable` objects) and runs its numerics through fastconv's functional API;
it never calls a kernel directly.

The contract
------------
``build(input_shape)``
    Creates the weights from the input shape (batch axis included, as ``None`` or an int). ``__call__`` builds
    on first use; ``Sequential`` builds every layer as soon as it knows the input shape.
``call(x, training=False) -> y``
    The forward pass on a batch. With ``training=True`` the layer keeps what its backward pass needs (the input,
    the pooling indices, the dropout mask ...) until the next forward call; with ``training=False`` it keeps
    nothing and dropout is the identity.
``backward(grad_output, need_input_grad=True) -> (grad_input, weight_grads)``
    After a ``training=True`` forward: the gradient of the loss with respect to the layer's input (``None`` when
    ``need_input_grad`` is False, which the model passes to the first layer with weights, saving its most
    expensive product) and a list of gradients, one per entry of :attr:`trainable_weights`, in that order. A
    frozen layer (``trainable=False``) has no trainable weights, so computes no weight gradients at all.

Layers whose output goes through an activation (``Dense``, ``Conv2D``, ``Activation``, ``ReLU``, ``Softmax``) also
keep their pre-activation output (:attr:`ActivationMixin.logits`) and offer
``backward_from_logits(grad_logits, need_input_grad)``, which starts the backward pass below the activation:
the model uses it to fuse a final sigmoid/softmax with a cross-entropy loss (see fastconv.losses).

Layers that merge several tensors (``Add``, ``Concatenate`` ...) set :attr:`Layer.multi_input`: their ``build``
takes a list of shapes, ``call`` a list of arrays, and ``backward`` returns a list of input gradients (one per
input, or ``None`` when ``need_input_grad`` is False).

A forward call keeps its backward state when ``training`` is true or inside :func:`recording_state` (test it
with :meth:`Layer._keep_state`), so a model can also backpropagate through an inference pass.

Called on a :class:`~fastconv.layers.symbolic.SymbolicTensor` (``Conv2D(32, 3)(Input((28, 28, 1)))``) a layer
computes nothing: it records the call for a graph model (:mod:`fastconv.layers.symbolic`). Everything a layer
keeps between its forward and backward passes lives in ``_cache`` (and ``_activation_cache``), so a graph model
that calls one layer several times can keep each call's state apart (:meth:`Layer._forward_state`).

Weights are float32 unless the layer is built with ``dtype="float64"`` (used by the gradient checks); input is
cast to the layer's dtype on the way in, so a uint8 image batch becomes float32 at the first layer.
"""
import contextlib
import math
import re
import sys
import threading

import numpy as np

from fastconv import _memory, activations
from fastconv.layers import _arguments as args

__all__ = ["Variable", "Layer", "InputLayer", "Input", "ActivationMixin"]

_name_lock = threading.Lock()
_name_counts = {}
_recording = threading.local()
_training_step = threading.local()


@contextlib.contextmanager
def _flag_on(flag):
    """Set a thread-local flag for the block, restoring its previous value (blocks may nest)."""
    previous = getattr(flag, "on", False)
    flag.on = True
    try:
        yield
    finally:
        flag.on = previous


def recording_state():
    """Layers called inside this block (in this thread) keep their backward state even in inference mode, so that
    a model can backpropagate through an inference pass (``Model.gradients``: dropout off, moving statistics)."""
    return _flag_on(_recording)


def training_step():
    """A model's training step runs inside this block (in this thread). Nothing outside the step reads the
    layers' logits or the arrays they produced for it (the model releases their state after it), so a plain ReLU
    may overwrite its logits and the next step may reuse those arrays."""
    return _flag_on(_training_step)


def _snake_case(name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(base):
    """Keras's automatic layer names: ``conv2d``, then ``conv2d_1``, ``conv2d_2`` ... within this process."""
    with _name_lock:
        count = _name_counts.get(base, 0)
        _name_counts[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def format_shape(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


# What the weights created in this thread may still take, in bytes (None: no limit). A model rebuilt from a
# file's config allocates its weights before they are compared with the file's arrays; the budget keeps a forged
# config from making that allocation far larger than the file (see weight_budget).
_budget = threading.local()


@contextlib.contextmanager
def weight_budget(nbytes, description):
    """Refuse, within the block, to create weights of more than ``nbytes`` in all (a ValueError naming
    ``description`` and the weight, raised before anything is allocated)."""
    previous = getattr(_budget, "state", None)
    _budget.state = [int(nbytes), description]
    try:
        yield
    finally:
        _budget.state = previous


def _spend(nbytes, path, shape):
    state = getattr(_budget, "state", None)
    if state is None:
        return
    if nbytes > state[0]:
        raise ValueError(f"{state[1]}: the model it describes declares weight {path!r} of shape {tuple(shape)}, "
                         f"more than the file's weight data can fill")
    state[0] -= nbytes


class Variable:
    """A layer weight: a NumPy array with a name, a path (``"layer_name/weight_name"``) and a trainable flag.

    The optimizer updates :attr:`value` in place; :meth:`numpy` returns a copy.
    """

    __slots__ = ("value", "name", "path", "trainable")

    def __init__(self, value, name, path, trainable=True):
        self.value = np.ascontiguousarray(value)
        self.name = name
        self.path = path
        self.trainable = bool(trainable)

    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    def numpy(self):
        return self.value.copy()

    def assign(self, value):
        """Copy ``value`` (same shape, any real dtype) into the variable."""
        array = np.asarray(value)
        if array.shape != self.value.shape:
            raise ValueError(f"weight {self.path!r} has shape {self.value.shape}; received value with shape "
                             f"{array.shape}")
        if array.dtype.kind not in "fiub":
            raise TypeError(f"weight {self.path!r} takes real numbers; received value with dtype {array.dtype}")
        np.copyto(self.value, array, casting="unsafe")

    def __repr__(self):
        return f"<Variable {self.path!r} shape={self.value.shape} dtype={self.value.dtype}>"


class Layer:
    """Base class of fastconv layers.

    Subclasses that take a list of inputs set the class attribute ``multi_input = True``.

    Parameters
    ----------
    trainable : bool
        False freezes the layer: its weights get no gradients and the optimizer never changes them.
    name : str, optional
        Unique within a model; by default the class name in snake case, numbered (``conv2d_1``).
    dtype : {"float32", "float64"}, optional
        Weights and computation dtype; float32 by default.
    input_shape : tuple of ints, optional
        Shape of one sample (no batch axis); only meaningful on the first layer of a ``Sequential``.
    """

    #: True for layers that merge a list of inputs (see the module docstring)
    multi_input = False

    def __init__(self, *, trainable=True, name=None, dtype=None, input_shape=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments; received {kwargs!r}")
        if name is None:
            name = unique_name(_snake_case(type(self).__name__))
        elif not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"name must be a non-empty str without '/'; received name={name!r}")
        self.name = name
        self.trainable = bool(trainable)
        self.dtype = args.dtype(dtype)
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self._declared_input_shape = None if input_shape is None else args.shape(input_shape, "input_shape")
        self._weights = []
        self._cache = None
        self._inbound_nodes = []

    # --- weights -------------------------------------------------------------------------------------------
    def add_weight(self, name, shape, initializer, trainable=True):
        """Create, initialise and register a weight; returns its :class:`Variable`."""
        from fastconv import initializers

        shape = tuple(shape)
        _spend(math.prod(shape) * np.dtype(self.dtype).itemsize, f"{self.name}/{name}", shape)
        # (on a cache line, as the tiled kernels read their weights best: a 64-channel kernel is then read in
        # place, not copied, at every call; see _memory.VECTOR_ALIGNMENT)
        value = _memory.empty_aligned(shape, self.dtype)
        np.copyto(value, initializers.get(initializer)(shape, dtype=self.dtype), casting="unsafe")
        variable = Variable(value, name, f"{self.name}/{name}", trainable)
        self._weights.append(variable)
        return variable

    @property
    def weights(self):
        return list(self._weights)

    @property
    def trainable_weights(self):
        return [w for w in self._weights if w.trainable] if self.trainable else []

    @property
    def non_trainable_weights(self):
        return [w for w in self._weights if not w.trainable] if self.trainable else list(self._weights)

    def get_weights(self):
        """Copies of the weights, as a list of arrays in creation order (kernel before bias)."""
        return [w.numpy() for w in self._weights]

    def set_weights(self, weights):
        """Set the weights from a list of arrays shaped as :meth:`get_weights` returns them."""
        weights = list(weights)
        if len(weights) != len(self._weights):
            raise ValueError(f"layer {self.name!r} has {len(self._weights)} weights; received a list of "
                             f"{len(weights)} arrays")
        for variable, value in zip(self._weights, weights):
            variable.assign(value)

    def count_params(self):
        return int(sum(w.value.size for w in self._weights))

    # --- shapes and building -------------------------------------------------------------------------------
    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape`` (batch axis included). Subclasses call super()."""
        if self.multi_input:
            self.input_shape = [tuple(s) for s in input_shape]
            self.output_shape = tuple(self.compute_output_shape(self.input_shape))
            self.built = True
            return
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(self.compute_output_shape(self.input_shape))
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _only_node(self, what):
        if not self._inbound_nodes:
            raise AttributeError(f"layer {self.name!r} has no {what}: it has not been called on a symbolic tensor "
                                 f"(fastconv.layers.Input or another layer's output)")
        if len(self._inbound_nodes) > 1:
            raise AttributeError(f"layer {self.name!r} has been called {len(self._inbound_nodes)} times, so its "
                                 f"{what} is ambiguous; use get_output_at(node_index) / get_input_at(node_index)")
        return self._inbound_nodes[0]

    @property
    def output(self):
        """The symbolic output of the layer's only call in a graph (Keras's ``layer.output``)."""
        return self._only_node("output").outputs[0]

    @property
    def input(self):
        """The symbolic input (a list for a merging layer) of the layer's only call in a graph."""
        inputs = self._only_node("input").inputs
        return list(inputs) if self.multi_input else inputs[0]

    def get_output_at(self, node_index):
        return self._inbound_nodes[node_index].outputs[0]

    def get_input_at(self, node_index):
        inputs = self._inbound_nodes[node_index].inputs
        return list(inputs) if self.multi_input else inputs[0]

    @property
    def output_dtype(self):
        """The dtype of the layer's output (its computation dtype)."""
        return self.dtype

    def check_input_shape(self, shape, what="input"):
        """Raise ValueError if ``shape`` (batch included) does not fit the shape the layer was built for.

        For a ``multi_input`` layer ``shape`` is a list of shapes, checked against the list it was built for.
        """
        expected = self.input_shape
        if expected is None:
            return
        if self.multi_input:
            shapes = [tuple(s) for s in shape]
            if len(shapes) != len(expected) or any(
                    len(s) != len(e) or any(a is not None and a != b for a, b in zip(e[1:], s[1:]))
                    for s, e in zip(shapes, expected)):
                raise ValueError(f"inputs of layer {self.name!r} must have shapes "
                                 f"[{', '.join(format_shape(e) for e in expected)}]; received {what}s with shapes "
                                 f"{shapes}")
            return
        shape = tuple(shape)
        if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
            raise ValueError(f"{what} of layer {self.name!r} must have shape {format_shape(expected)}; "
                             f"received {what} with shape {shape}")

    def _as_input(self, inputs):
        x = np.asarray(inputs)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"input of layer {self.name!r} must be a real-valued array; received input with "
                            f"dtype {x.dtype}")
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def _as_inputs(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 1:
            raise TypeError(f"layer {self.name!r} takes a list of arrays; received {type(inputs).__name__}")
        return [self._as_input(x) for x in inputs]

    def __call__(self, inputs, training=False):
        """Build on first use, check the input shape, cast to the layer's dtype and run :meth:`call`.

        On symbolic tensors, record the call for a graph model and return a symbolic output instead.
        """
        from fastconv.layers import symbolic

        if symbolic.is_symbolic(inputs):
            return symbolic.call_layer(self, inputs)
        if self.multi_input:
            xs = self._as_inputs(inputs)
            if not self.built:
                self.build([(None,) + x.shape[1:] for x in xs])
            self.check_input_shape([x.shape for x in xs])
            return self.call(xs, training=bool(training))
        x = self._as_input(inputs)
        if not self.built:
            self.build((None,) + x.shape[1:])
        self.check_input_shape(x.shape)
        return self.call(x, training=bool(training))

    # --- computation ---------------------------------------------------------------------------------------
    def call(self, x, training=False):
        raise NotImplementedError

    def backward(self, grad_output, need_input_grad=True):
        raise NotImplementedError

    @staticmethod
    def _keep_state(training):
        """Whether a forward call keeps what its backward pass needs: in training, or under
        :func:`recording_state`."""
        return bool(training) or getattr(_recording, "on", False)

    def _forward_state(self):
        """What the last forward call kept for the backward pass; :meth:`_restore_forward_state` puts it back."""
        return (self._cache, getattr(self, "_activation_cache", None))

    def _restore_forward_state(self, state):
        self._cache = state[0]
        if state[1] is not None or hasattr(self, "_activation_cache"):
            self._activation_cache = state[1]

    def _clear_forward_state(self):
        self._cache = None
        if hasattr(self, "_activation_cache") and not getattr(self, "_keep_logits", False):
            self._activation_cache = None

    # --- arrays reused from one training step to the next -------------------------------------------------
    def _recycled(self, role, shape, dtype):
        """The array this layer produced for ``role`` in an earlier training step, to be overwritten in this one,
        when its shape and dtype fit and nothing but this layer holds it any more; else None. Only inside a
        model's training step: a fresh 90 MB array costs about 8 ms of page faults, a reused one none."""
        if not getattr(_training_step, "on", False):
            return None
        old = self.__dict__.get("_recycle", {}).get(role)
        # Its references: the slot, `old`, getrefcount's argument. Any other (a caller's variable, a view's
        # base, a cache) means someone may still read it.
        if old is None or old.shape != tuple(shape) or old.dtype != dtype or sys.getrefcount(old) > 3:
            return None
        return old

    def _keep_for_reuse(self, role, array):
        """Remember ``array`` (returned by this training step for ``role``) for :meth:`_recycled`."""
        if getattr(_training_step, "on", False):
            self.__dict__.setdefault("_recycle", {})[role] = array
        return array

    def _drop_recycled(self):
        """Let go of the arrays kept for reuse (at the end of ``fit``)."""
        self.__dict__.pop("_recycle", None)

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"layer {self.name!r}: backward needs a forward call with training=True first")
        return self._cache

    # --- configuration -------------------------------------------------------------------------------------
    def get_config(self):
        """The constructor arguments, JSON-ready: ``type(layer).from_config(layer.get_config())`` is a copy."""
        return {"name": self.name, "trainable": self.trainable, "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"


class ActivationMixin:
    """Adds an activation to a layer's affine output, with the hooks for a fused loss.

    The layer computes ``logits`` (its output before the activation) and calls :meth:`_activate`; in training
    mode the logits and the activated output are kept for the backward pass.
    """

    #: set by a model whose loss reads this layer's logits, so they are kept at inference too
    _keep_logits = False

    def _relu_in_place(self, training):
        """Whether this call may overwrite its logits with a plain ReLU: at inference, and in a model's training
        step, unless a fused loss reads the logits. (Plain ReLU's backward needs only where the output is > 0,
        which is where the logits were.) A training-mode call outside a step keeps the true logits."""
        if self._keep_logits or not getattr(self.activation, "_plain", False):
            return False
        return not self._keep_state(training) or getattr(_training_step, "on", False)

    def _activate(self, logits, training, owned=False, relu_applied=False):
        """``owned``: the layer computed ``logits`` itself, so nothing else holds them. ``relu_applied``: the
        kernel already wrote them through the plain ReLU (asked only where :meth:`_relu_in_place` allowed it)."""
        keep = self._keep_state(training) or self._keep_logits
        if relu_applied or (owned and self._relu_in_place(training)):
            if not relu_applied:
                np.maximum(logits, logits.dtype.type(0), out=logits)  # no second array
            self._activation_cache = (logits, logits) if keep else None
            return logits
        out = self.activation(logits)
        self._activation_cache = (logits, out) if keep else None
        return out

    @property
    def logits(self):
        """The pre-activation output of the last ``training=True`` forward call."""
        if getattr(self, "_activation_cache", None) is None:
            raise RuntimeError(f"layer {self.name!r}: no logits kept; call it with training=True first")
        return self._activation_cache[0]

    def _activation_backward(self, grad_output):
        logits, out = self._activation_cache
        return self.activation.backward(grad_output, logits, out)

    def backward(self, grad_output, need_input_grad=True):
        self._cached()
        return self.backward_from_logits(self._activation_backward(grad_output), need_input_grad)

    def backward_from_logits(self, grad_logits, need_input_grad=True):
        raise NotImplementedError


class InputLayer(Layer):
    """The input of a model: the shape of one sample (batch axis excluded). Has no weights, computes nothing.

    Use it through :func:`Input` as the first entry of a :class:`fastconv.Sequential`.
    """

    def __init__(self, shape=None, batch_size=None, dtype=None, name=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        if shape is None:
            raise ValueError("shape must be given (a tuple of ints, without the batch axis); received shape=None")
        self.shape = args.shape(shape)
        self.batch_size = None if batch_size is None else args.integer(batch_size, "batch_size", minimum=1)
        self.build((self.batch_size,) + self.shape)
        from fastconv.layers.symbolic import Node

        Node(self, [], [self.output_shape], self.dtype)  # its one node: self.output is the input tensor

    def call(self, x, training=False):
        return x

    def backward(self, grad_output, need_input_grad=True):
        return grad_output, []

    def get_config(self):
        return {"shape": list(self.shape), "batch_size": self.batch_size, "dtype": self.dtype.name,
                "name": self.name}


def Input(shape, batch_size=None, name=None, dtype=None):
    """The input of a model, as a symbolic tensor: ``Sequential([Input((28, 28, 1)), ...])``, or
    ``inputs = Input((28, 28, 1)); outputs = Conv2D(32, 3)(inputs); Model(inputs, outputs)``.

    Parameters
    ----------
    shape : tuple of ints
        The shape of one sample, without the batch axis (``(28, 28, 1)`` for MNIST in channels_last).
    batch_size : int, optional
    name : str, optional
    dtype : {"float32", "float64"}, optional

    Returns
    -------
    SymbolicTensor
        Its ``layer`` is the :class:`InputLayer`.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.layers.Input((28, 28, 1)).shape
    (None, 28, 28, 1)
    """
    return InputLayer(shape=shape, batch_size=batch_size, name=name, dtype=dtype).output


def activation_config(activation):
    return activations.serialize(activation)
