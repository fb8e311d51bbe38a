"""Symbolic tensors: what a layer returns when it is called on a model's input instead of on an array.

``x = Conv2D(32, 3)(inputs)`` with ``inputs = Input((28, 28, 1))`` computes nothing: it builds the layer for the
input's shape, records a :class:`Node` (this layer, applied to these tensors) and returns a
:class:`SymbolicTensor` of the output's shape. ``fastconv.Model(inputs, outputs)`` then walks the nodes back from
its outputs to find the graph it runs. A layer called several times (weight sharing) has one node per call.
"""
__all__ = ["SymbolicTensor", "Node", "is_symbolic", "call_layer"]


class SymbolicTensor:
    """A placeholder for an array that flows through a graph model: its shape (batch axis ``None``) and dtype,
    and the node that produces it.

    Attributes
    ----------
    shape : tuple
    dtype : numpy.dtype
    node : Node
        The layer call that produces this tensor.
    index : int
        Which output of that node it is.
    """

    __slots__ = ("shape", "dtype", "node", "index")

    def __init__(self, shape, dtype, node, index=0):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.node = node
        self.index = index

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def layer(self):
        """The layer whose call produces this tensor."""
        return self.node.layer

    @property
    def name(self):
        return f"{self.node.layer.name}/{self.node.index}/{self.index}" if self.node.index else self.node.layer.name

    def __repr__(self):
        shape = "(" + ", ".join("None" if d is None else str(d) for d in self.shape) + ")"
        return f"<SymbolicTensor shape={shape} dtype={self.dtype.name} from {self.name!r}>"

    def __array__(self, *args, **kwargs):
        raise TypeError(f"{self!r} is symbolic: it has no values. Build a model with fastconv.Model(inputs, "
                        f"outputs) and call the model on arrays")


class Node:
    """One call of a layer in a graph: the layer, its input tensors (a list) and its output tensors (a list).

    ``index`` counts the calls of that layer (0 for the first), as Keras's node indices do.
    """

    __slots__ = ("layer", "inputs", "outputs", "index")

    def __init__(self, layer, inputs, output_shapes, dtype):
        self.layer = layer
        self.inputs = list(inputs)
        self.index = len(layer._inbound_nodes)
        layer._inbound_nodes.append(self)
        self.outputs = [SymbolicTensor(shape, dtype, self, i) for i, shape in enumerate(output_shapes)]

    def __repr__(self):
        return f"<Node {self.layer.name}[{self.index}] inputs={[t.name for t in self.inputs]}>"


def is_symbolic(value):
    """True for a SymbolicTensor or a non-empty list/tuple of them."""
    if isinstance(value, SymbolicTensor):
        return True
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(v, SymbolicTensor) for v in value))


def call_layer(layer, inputs):
    """Record ``layer(inputs)`` in the graph: build the layer for the inputs' shapes (or check them if built) and
    return the symbolic output."""
    if layer.multi_input:
        if isinstance(inputs, SymbolicTensor) or not isinstance(inputs, (list, tuple)):
            raise ValueError(f"layer {layer.name!r} merges several tensors: call it on a list of them; received "
                             f"{inputs!r}")
        tensors = list(inputs)
        shapes = [t.shape for t in tensors]
    else:
        if not isinstance(inputs, SymbolicTensor):
            raise ValueError(f"layer {layer.name!r} takes one tensor; received a list of {len(inputs)} tensors")
        tensors = [inputs]
        shapes = inputs.shape
    if not layer.built:
        layer.build(shapes)
    else:
        layer.check_input_shape(shapes)
    output_shape = tuple(layer.compute_output_shape(shapes))
    node = Node(layer, tensors, [output_shape], layer.output_dtype)
    return node.outputs[0]
