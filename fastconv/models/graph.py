"""The graph a model runs: the layer calls (nodes) between its inputs and outputs, in an order that respects
every dependency, and the forward and backward passes over it.

:class:`Graph` is built once from symbolic tensors (``fastconv.layers.symbolic``). It checks that every output
depends only on the given inputs (a missing input is an error that names the layer that needs it), orders the
nodes topologically, and then runs

- :meth:`Graph.forward`: each node once, freeing at inference every intermediate array as soon as its last
  consumer has run; with ``training=True`` the state each layer keeps for its backward pass is saved per node,
  so a layer that appears at several nodes (weight sharing) backpropagates each call with its own state;
- :meth:`Graph.backward`: the nodes in reverse, summing the gradients of a tensor that feeds several layers and
  the weight gradients of a layer used several times; it skips what no gradient flows to and asks a layer for its
  input gradient only where something upstream needs it.
"""
import numpy as np

from fastconv.layers.base import InputLayer
from fastconv.layers.symbolic import SymbolicTensor

__all__ = ["Graph"]


def _as_tensor_list(value, what):
    if isinstance(value, SymbolicTensor):
        return [value], True
    if isinstance(value, (list, tuple)) and value and all(isinstance(t, SymbolicTensor) for t in value):
        return list(value), False
    if isinstance(value, dict):
        raise TypeError(f"{what} must be a symbolic tensor or a list of them (dicts are not supported); received "
                        f"{what} of type dict")
    raise TypeError(f"{what} must be a symbolic tensor (from fastconv.layers.Input or a layer called on one) or a "
                    f"list of them; received {what}={value!r}")


class Graph:
    """The nodes between ``inputs`` and ``outputs`` (each a SymbolicTensor or a list of them)."""

    def __init__(self, inputs, outputs):
        self.inputs, self.single_input = _as_tensor_list(inputs, "inputs")
        self.outputs, self.single_output = _as_tensor_list(outputs, "outputs")
        for i, tensor in enumerate(self.inputs):
            if not isinstance(tensor.layer, InputLayer):
                raise ValueError(f"inputs must come from fastconv.layers.Input; received inputs[{i}] produced by "
                                 f"layer {tensor.layer.name!r}")
        if len({id(t) for t in self.inputs}) != len(self.inputs):
            raise ValueError("inputs must be distinct tensors; received the same Input twice")
        self.nodes = self._ordered_nodes()
        self.input_layers = [t.layer for t in self.inputs]
        self.layers = []
        for node in self.nodes:
            if node.layer not in self.layers:
                self.layers.append(node.layer)
        self._last_use = {}
        for position, node in enumerate(self.nodes):
            for tensor in node.inputs:
                self._last_use[id(tensor)] = position
        for tensor in self.outputs:
            self._last_use[id(tensor)] = len(self.nodes)
        self._trainable_upstream = None
        self._relu_pools = self._find_relu_pools()

    def _find_relu_pools(self):
        """``{id(max-pool node): id(the node it pools)}`` where a plain ReLU's output goes to one MaxPooling2D and
        nowhere else: backward masks the pooled gradient and skips the ReLU's own pass over the large array."""
        from fastconv import activations
        from fastconv.layers.base import ActivationMixin
        from fastconv.layers.pooling import MaxPooling2D

        uses = {}
        for node in self.nodes:
            for tensor in node.inputs:
                uses[id(tensor)] = uses.get(id(tensor), 0) + 1
        for tensor in self.outputs:
            uses[id(tensor)] = uses.get(id(tensor), 0) + 1
        pairs = {}
        for node in self.nodes:
            if type(node.layer) is not MaxPooling2D or len(node.inputs) != 1:
                continue
            tensor = node.inputs[0]
            producer = getattr(tensor, "node", None)
            activation = getattr(getattr(producer, "layer", None), "activation", None)
            if (producer is not None and uses[id(tensor)] == 1 and isinstance(producer.layer, ActivationMixin)
                    and isinstance(activation, activations._ReLU) and activation._plain):
                pairs[id(node)] = id(producer)
        return pairs

    def _ordered_nodes(self):
        """Depth-first post-order from the outputs: every node comes after the nodes it reads from."""
        input_ids = {id(t) for t in self.inputs}
        input_names = [t.layer.name for t in self.inputs]
        ordered, done, active = [], set(), set()

        def enter(tensor, consumer):
            if id(tensor) in input_ids or id(tensor.node) in done:
                return None
            node = tensor.node
            if isinstance(node.layer, InputLayer):
                needed_by = f"layer {consumer.layer.name!r}" if consumer is not None else "the outputs"
                raise ValueError(f"the graph is disconnected: {needed_by} needs Input {node.layer.name!r}, which is "
                                 f"not among the model's inputs {input_names}")
            if id(node) in active:  # tensors are immutable, so this cannot happen; but never loop forever
                raise ValueError(f"the graph has a cycle through layer {node.layer.name!r}")
            active.add(id(node))
            return node, iter(node.inputs)

        for tensor in self.outputs:
            first = enter(tensor, None)
            stack = [first] if first is not None else []
            while stack:
                node, pending = stack[-1]
                child = next(pending, None)
                if child is None:
                    stack.pop()
                    active.discard(id(node))
                    done.add(id(node))
                    ordered.append(node)
                    continue
                entry = enter(child, node)
                if entry is not None:
                    stack.append(entry)
        return ordered

    # --- forward -------------------------------------------------------------------------------------------
    def forward(self, xs, training, states=None):
        """Run the graph on ``xs`` (one array per input, already checked); returns one array per output.

        With ``training=True``, ``states`` (a dict) receives each node's forward state for :meth:`backward`.
        """
        values = {id(t): x for t, x in zip(self.inputs, xs)}
        for position, node in enumerate(self.nodes):
            layer = node.layer
            args = [values[id(t)] for t in node.inputs]
            if layer.multi_input:
                out = layer.call([layer._as_input(a) for a in args], training=training)
            else:
                out = layer.call(layer._as_input(args[0]), training=training)
            if states is not None:
                states[id(node)] = layer._forward_state()
            values[id(node.outputs[0])] = out
            if not training:
                for tensor in node.inputs:
                    if self._last_use.get(id(tensor)) == position:
                        values.pop(id(tensor), None)
        return [values[id(t)] for t in self.outputs]

    # --- backward ------------------------------------------------------------------------------------------
    def _upstream_trainable(self):
        """For each tensor: does any layer before it have trainable weights? (Then its gradient is needed.)"""
        needs = {id(t): False for t in self.inputs}
        for node in self.nodes:
            upstream = any(needs.get(id(t), False) for t in node.inputs)
            needs[id(node.outputs[0])] = upstream or bool(node.layer.trainable_weights)
        return needs

    def backward(self, output_grads, states, fused_nodes=(), wrt=()):
        """Backpropagate ``output_grads`` (one per output, None for an output that gets no gradient).

        Parameters
        ----------
        states : dict
            The forward states saved by :meth:`forward` with ``training=True``.
        fused_nodes : set of node ids
            Output nodes whose gradient is with respect to their logits (a loss fused with their activation).
        wrt : list of SymbolicTensor
            Tensors whose gradients to return as well (the inputs, an intermediate layer's output ...).

        Returns
        -------
        weight_grads : list of (Variable, ndarray)
            One entry per trainable variable that received a gradient, summed over every use of its layer.
        wrt_grads : list of ndarray or None
        """
        wanted = {id(t) for t in wrt}
        needs = self._upstream_trainable() if not wanted else self._needs_for(wanted)
        grads = {}
        for tensor, grad in zip(self.outputs, output_grads):
            if grad is not None:
                _accumulate(grads, tensor, grad)
        weight_grads = {}
        wrt_grads = {}
        from_logits = set(fused_nodes)  # nodes whose incoming gradient is with respect to their logits
        for node in reversed(self.nodes):
            grad = grads.pop(id(node.outputs[0]), None)
            if id(node.outputs[0]) in wanted:
                wrt_grads[id(node.outputs[0])] = grad
            if grad is None:
                continue
            layer = node.layer
            need_input_grad = any(needs.get(id(t), False) or id(t) in wanted for t in node.inputs)
            if not need_input_grad and not layer.trainable_weights:
                continue
            layer._restore_forward_state(states[id(node)])
            producer = self._relu_pools.get(id(node))
            if producer is not None and need_input_grad and id(node.inputs[0]) not in wanted:
                input_grads, layer_grads = layer.backward_through_relu(grad), []
                from_logits.add(producer)
            elif id(node) in from_logits:
                input_grads, layer_grads = layer.backward_from_logits(grad, need_input_grad)
            else:
                input_grads, layer_grads = layer.backward(grad, need_input_grad)
            for variable, g in zip(layer.trainable_weights, layer_grads):
                if id(variable) in weight_grads:
                    weight_grads[id(variable)] = (variable, weight_grads[id(variable)][1] + g)
                else:
                    weight_grads[id(variable)] = (variable, g)
            if not need_input_grad:
                continue
            if not layer.multi_input:
                input_grads = [input_grads]
            for tensor, g in zip(node.inputs, input_grads):
                if g is not None and (needs.get(id(tensor), False) or id(tensor) in wanted):
                    _accumulate(grads, tensor, g)
        for tensor in self.inputs:
            if id(tensor) in wanted:
                wrt_grads[id(tensor)] = grads.get(id(tensor))
        return list(weight_grads.values()), [wrt_grads.get(id(t)) for t in wrt]

    def _needs_for(self, wanted):
        """Like :meth:`_upstream_trainable`, also counting the tensors in ``wanted`` and everything after them."""
        needs = {id(t): id(t) in wanted for t in self.inputs}
        for node in self.nodes:
            upstream = any(needs.get(id(t), False) for t in node.inputs)
            needs[id(node.outputs[0])] = upstream or bool(node.layer.trainable_weights) or \
                id(node.outputs[0]) in wanted
        return needs

    def release(self):
        """Drop what every layer kept for its backward pass."""
        for layer in self.layers:
            layer._clear_forward_state()


def _accumulate(grads, tensor, grad):
    key = id(tensor)
    if key in grads:
        grads[key] = grads[key] + grad  # a new array: the two may be views of one another
    else:
        grads[key] = grad


def tensor_shapes(tensors):
    return [t.shape for t in tensors]


def check_arrays(arrays, tensors, names, owner):
    """Check a batch (one array per input) against the inputs' shapes; returns the arrays."""
    checked = []
    for array, tensor, name in zip(arrays, tensors, names):
        expected = tensor.shape
        shape = np.shape(array)
        if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
            from fastconv.layers.base import format_shape

            raise ValueError(f"{name} must have shape {format_shape(expected)} to fit the input of model "
                             f"{owner!r}; received {name} with shape {tuple(shape)}")
        checked.append(array)
    return checked
