"""Put a PyTorch state dict's tensors into a fastconv model built to match the PyTorch model.

The mapping goes by order, not by name: the model's layers with weights are walked in ``model.weights`` order
(nested models included) and each takes the next PyTorch module's entries (those sharing a key prefix, as
``features.0.weight`` and ``features.0.bias`` do), converting layouts on the way:

=====================  ================================================  ==========================================
fastconv layer         PyTorch module (entries)                          conversion
=====================  ================================================  ==========================================
Conv2D                 Conv2d (weight, bias)                             OIHW -> HWIO (any ``groups``)
DepthwiseConv2D        Conv2d with groups=C (weight, bias)               (C*M, 1, R, S) -> (R, S, C, M)
SeparableConv2D        two Conv2d: depthwise, then 1x1 pointwise         as above; a depthwise bias is folded into
                                                                         the output bias (exact)
Dense                  Linear (weight, bias)                             (out, in) -> (in, out), rows permuted
                                                                         after a Flatten (below)
BatchNormalization     BatchNorm1d/2d (weight, bias, running_mean,       num_batches_tracked is skipped
                       running_var, num_batches_tracked)
PReLU                  PReLU (weight: one slope or one per channel)      broadcast to ``alpha``'s shape
=====================  ================================================  ==========================================

PyTorch flattens an NCHW tensor in (C, H, W) order; a fastconv ``Flatten`` gives (H, W, C) order whenever it
moves or finds channels last. The first ``Dense`` after a ``Flatten`` (through dropout, activations and
per-feature layers, whose parameters are permuted alike) gets its kernel rows permuted to match, from the
flattened tensor's shape and layout as the fastconv model defines them.

Hyperparameters are the model's own: build the fastconv layers with the PyTorch model's padding, strides,
``epsilon=1e-5`` for BatchNorm, and so on.
"""
from collections import deque
from collections.abc import Mapping

import numpy as np

from fastconv import _layout
from fastconv.layers.advanced_activations import ELU, LeakyReLU, PReLU
from fastconv.layers.base import InputLayer
from fastconv.layers.convolutional import Conv2D, DepthwiseConv2D, SeparableConv2D
from fastconv.layers.core import Activation, Dense, ReLU, Softmax
from fastconv.layers.normalization import BatchNormalization
from fastconv.layers.regularization import Dropout
from fastconv.layers.reshaping import Flatten, Permute, Reshape
from fastconv.models.model import Model

__all__ = ["assign_torch_state_dict"]

# layers that act on each feature of a (batch, features) tensor alone: a Flatten's feature order flows through them
_PER_FEATURE = (Dropout, Activation, ReLU, LeakyReLU, ELU, Softmax, BatchNormalization, PReLU)
_KEY_ORDERS = ("given", "natural")


class _Module:
    """The state dict entries of one PyTorch module: its key prefix and {parameter name: (key, array)}."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.entries = {}

    def first_key(self):
        return next(iter(self.entries.values()))[0]


def _natural_key(prefix):
    """``features.10`` after ``features.2``: dotted parts compared as numbers where they are numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in prefix.split(".")]


def _modules(state_dict, source, key_order):
    modules = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"{source}: state dict keys must be str; received the key {key!r:.80}")
        try:
            array = np.asarray(value)
        except Exception as exc:  # a torch tensor that needs grad, a bfloat16 tensor ...
            raise TypeError(f"{source}: state dict entry {key!r} is not convertible to a NumPy array (read the file "
                            f"with fastconv.formats.torch_zip.read_state_dict); received {type(value).__name__}") \
                from exc
        prefix, _, name = key.rpartition(".")
        modules.setdefault(prefix, _Module(prefix)).entries[name] = (key, array)
    ordered = list(modules.values())
    if key_order == "natural":
        ordered.sort(key=lambda module: _natural_key(module.prefix))
    return ordered


class _Graphs:
    """Where each layer sits in the model's graphs (nested models included), to trace a tensor's producers."""

    def __init__(self, model):
        self.node_of = {}  # id(layer) -> its first node
        self.feeds = {}  # id(InputLayer of a nested model) -> the tensor that feeds it in the outer graph
        self._visit(model)

    def _visit(self, model):
        graph = getattr(model, "_graph", None)
        if graph is None:
            return
        for node in graph.nodes:
            self.node_of.setdefault(id(node.layer), node)
            if isinstance(node.layer, Model) and node.layer._graph is not None:
                for input_layer, tensor in zip(node.layer._graph.input_layers, node.inputs):
                    self.feeds.setdefault(id(input_layer), tensor)
                self._visit(node.layer)

    def producer(self, tensor):
        """The tensor with the same values one step up: through a nested model's input or output boundary."""
        layer = tensor.layer
        if isinstance(layer, InputLayer):
            return self.feeds.get(id(layer))
        if isinstance(layer, Model) and layer._graph is not None:
            return layer._graph.outputs[tensor.index]
        return None

    def layout(self, tensor):
        """The data_format of a 4-D tensor, from the nearest producer that knows it; None if none does."""
        while tensor is not None:
            layer = tensor.layer
            if isinstance(layer, (InputLayer, Model)):
                tensor = self.producer(tensor)
                continue
            if isinstance(layer, (Flatten, Reshape, Permute)):
                return None
            if isinstance(layer, BatchNormalization) and len(tensor.shape) == 4:
                return {1: "channels_first", 3: "channels_last"}.get(layer._axis)
            data_format = getattr(layer, "data_format", None)
            if data_format is not None:
                return data_format
            tensor = tensor.node.inputs[0] if tensor.node.inputs else None
        return None

    def feature_order(self, layer):
        """For a layer fed (batch, features) from a Flatten: fastconv feature j is PyTorch feature order[j].
        None when no permutation is needed."""
        node = self.node_of.get(id(layer))
        tensor = node.inputs[0] if node is not None and len(node.inputs) == 1 else None
        while tensor is not None:
            source = tensor.layer
            if isinstance(source, (InputLayer, Model)):
                tensor = self.producer(tensor)
            elif isinstance(source, Flatten):
                return self._flatten_order(tensor.node)
            elif isinstance(source, _PER_FEATURE) and len(tensor.shape) == 2:
                tensor = tensor.node.inputs[0]
            else:
                return None
        return None

    def _flatten_order(self, node):
        flatten, tensor = node.layer, node.inputs[0]
        sample = tensor.shape[1:]
        if len(sample) != 3 or None in sample:
            return None
        layout = self.layout(tensor) or flatten.data_format
        labels = "hwc" if layout == "channels_last" else "chw"  # the tensor's axes
        size = dict(zip(labels, sample))
        # the flattened order: Flatten(data_format="channels_first") moves the sample's first axis last
        axes = labels[1:] + labels[0] if flatten.data_format == "channels_first" else labels
        torch_index = np.arange(size["c"] * size["h"] * size["w"]).reshape(size["c"], size["h"], size["w"])
        order = torch_index.transpose(["chw".index(a) for a in axes]).ravel()
        return None if np.array_equal(order, np.arange(order.size)) else order


class _Mapper:
    def __init__(self, model, modules, source):
        self.graphs = _Graphs(model)
        self.modules = deque(modules)
        self.source = source
        self.plan = []  # (variable, value), assigned only once every layer has checked out

    # --- consuming the state dict ---------------------------------------------------------------------------
    def take(self, layer, what="its weights"):
        if not self.modules:
            raise ValueError(f"{self.source}: the state dict has no entries left for {what} of fastconv layer "
                             f"{layer.name!r} ({type(layer).__name__}): the PyTorch model has fewer layers with "
                             f"weights than the fastconv model")
        return self.modules.popleft()

    def check_names(self, layer, module, required, optional=()):
        names = set(module.entries)
        missing = [n for n in required if n not in names]
        extra = sorted(names - set(required) - set(optional))
        if missing or extra:
            found = ", ".join(repr(key) for key, _ in module.entries.values())
            raise ValueError(f"{self.source}: fastconv layer {layer.name!r} ({type(layer).__name__}) needs a "
                             f"PyTorch module with entries {', '.join(required)}, but the next module "
                             f"{module.prefix!r} has {found}"
                             + (f" (missing {', '.join(missing)})" if missing else "")
                             + (f" (unexpected {', '.join(extra)})" if extra else ""))

    def tensor(self, layer, module, name, expected, target):
        """The entry ``name`` of ``module``, checked to have shape ``expected`` (PyTorch's layout of ``target``)."""
        key, array = module.entries[name]
        if array.dtype.kind != "f":
            raise ValueError(f"{self.source}: PyTorch entry {key!r} for fastconv layer {layer.name!r} must hold "
                             f"floats; received dtype {array.dtype}")
        if array.shape != tuple(expected):
            raise ValueError(f"{self.source}: fastconv layer {layer.name!r} ({type(layer).__name__}) weight "
                             f"{target.path!r} has shape {target.shape}, which needs PyTorch shape "
                             f"{tuple(expected)}; received PyTorch entry {key!r} with shape {array.shape}")
        return array

    def put(self, variable, value):
        self.plan.append((variable, np.asarray(value)))

    def leftovers(self, last_layer):
        if self.modules:
            module = self.modules[0]
            key, array = next(iter(module.entries.values()))
            after = f"after fastconv layer {last_layer.name!r}" if last_layer is not None else "(none has weights)"
            raise ValueError(f"{self.source}: the state dict has more modules than the fastconv model has layers "
                             f"with weights: {len(self.modules)} left {after}, starting with entry {key!r} with "
                             f"shape {array.shape}")

    # --- one method per layer type --------------------------------------------------------------------------
    def conv2d(self, layer):
        module = self.take(layer)
        self.check_names(layer, module, ["weight"] + (["bias"] if layer.use_bias else []))
        r, s, cg, k = layer.kernel.shape
        self.put(layer.kernel, _layout.oihw_to_hwio(self.tensor(layer, module, "weight", (k, cg, r, s), layer.kernel)))
        if layer.use_bias:
            self.put(layer.bias, self.tensor(layer, module, "bias", (k,), layer.bias))

    def _depthwise(self, layer, variable, module):
        r, s, c, m = variable.shape
        weight = self.tensor(layer, module, "weight", (c * m, 1, r, s), variable)
        return np.ascontiguousarray(weight.reshape(c, m, r, s).transpose(2, 3, 0, 1))

    def depthwise_conv2d(self, layer):
        module = self.take(layer)
        self.check_names(layer, module, ["weight"] + (["bias"] if layer.use_bias else []))
        self.put(layer.kernel, self._depthwise(layer, layer.kernel, module))
        if layer.use_bias:
            self.put(layer.bias, self.tensor(layer, module, "bias", layer.bias.shape, layer.bias))

    def separable_conv2d(self, layer):
        depthwise = self.take(layer, "the depthwise step")
        self.check_names(layer, depthwise, ["weight"], ["bias"] if layer.use_bias else [])
        pointwise = self.take(layer, "the pointwise step")
        self.check_names(layer, pointwise, ["weight"], ["bias"] if layer.use_bias else [])
        _, _, cm, k = layer.pointwise_kernel.shape
        self.put(layer.depthwise_kernel, self._depthwise(layer, layer.depthwise_kernel, depthwise))
        weight = self.tensor(layer, pointwise, "weight", (k, cm, 1, 1), layer.pointwise_kernel)
        self.put(layer.pointwise_kernel, _layout.oihw_to_hwio(weight))
        if not layer.use_bias:
            return
        if "bias" not in depthwise.entries and "bias" not in pointwise.entries:
            raise ValueError(f"{self.source}: fastconv layer {layer.name!r} (SeparableConv2D) has a bias but PyTorch "
                             f"modules {depthwise.prefix!r} and {pointwise.prefix!r} have none; received entries "
                             f"{depthwise.first_key()!r} and {pointwise.first_key()!r}")
        bias = np.zeros(k, dtype=np.float64)
        if "bias" in pointwise.entries:
            bias += self.tensor(layer, pointwise, "bias", (k,), layer.bias)
        if "bias" in depthwise.entries:  # pointwise(depthwise(x) + b) = pointwise(depthwise(x)) + W @ b
            bias += weight[:, :, 0, 0].astype(np.float64) @ self.tensor(layer, depthwise, "bias", (cm,), layer.bias)
        self.put(layer.bias, bias)

    def dense(self, layer):
        module = self.take(layer)
        self.check_names(layer, module, ["weight"] + (["bias"] if layer.use_bias else []))
        n_in, units = layer.kernel.shape
        kernel = self.tensor(layer, module, "weight", (units, n_in), layer.kernel).T
        order = self.graphs.feature_order(layer)
        self.put(layer.kernel, kernel if order is None else kernel[order])
        if layer.use_bias:
            self.put(layer.bias, self.tensor(layer, module, "bias", (units,), layer.bias))

    def batch_normalization(self, layer):
        module = self.take(layer)
        pairs = ([("weight", layer.gamma)] if layer.scale else []) + ([("bias", layer.beta)] if layer.center else [])
        pairs += [("running_mean", layer.moving_mean), ("running_var", layer.moving_variance)]
        self.check_names(layer, module, [name for name, _ in pairs], ["num_batches_tracked"])
        order = self.graphs.feature_order(layer)
        for name, variable in pairs:
            value = self.tensor(layer, module, name, variable.shape, variable)
            self.put(variable, value if order is None else value[order])

    def prelu(self, layer):
        module = self.take(layer)
        self.check_names(layer, module, ["weight"])
        alpha = layer.alpha
        _, weight = module.entries["weight"]
        if weight.size == 1:  # nn.PReLU(): one slope for everything
            self.put(alpha, np.full(alpha.shape, self.tensor(layer, module, "weight", weight.shape, alpha).item()))
            return
        # one slope per channel, PyTorch's axis 1 (of NCHW or (N, features)); alpha is per sample, batch excluded
        ndim = len(alpha.shape)
        node = self.graphs.node_of.get(id(layer))
        layout = self.graphs.layout(node.inputs[0]) if node is not None and ndim == 3 else None
        if layout is None and ndim == 3 and alpha.shape[0] == weight.size != alpha.shape[-1]:
            layout = "channels_first"  # nothing upstream tells the layout, but only axis 0 fits the slopes
        axis = 0 if layout == "channels_first" else ndim - 1
        channels = alpha.shape[axis]
        weight = self.tensor(layer, module, "weight", (channels,), alpha)
        if ndim == 1:
            order = self.graphs.feature_order(layer)
            self.put(alpha, weight if order is None else weight[order])
            return
        shape = [1] * ndim
        shape[axis] = channels
        self.put(alpha, np.broadcast_to(weight.reshape(shape), alpha.shape))


_HANDLERS = [(SeparableConv2D, _Mapper.separable_conv2d), (DepthwiseConv2D, _Mapper.depthwise_conv2d),
             (Conv2D, _Mapper.conv2d), (Dense, _Mapper.dense), (BatchNormalization, _Mapper.batch_normalization),
             (PReLU, _Mapper.prelu)]


def _weighted_layers(model, seen):
    """Layers with weights in ``model.weights`` order, nested models' layers in place of the models."""
    for layer in model._layers_with_weights():
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, Model):
            yield from _weighted_layers(layer, seen)
        elif layer.weights:
            yield layer


def assign_torch_state_dict(model, state_dict, source="state_dict", key_order="given"):
    """Set a built fastconv model's weights from a PyTorch state dict, by order (see the module notes).

    Parameters
    ----------
    model : fastconv.Model
        Built (from an ``Input``), with the PyTorch model's layers with weights in the same order and
        hyperparameters; either ``data_format``.
    state_dict : mapping of str to array_like
        From :func:`fastconv.formats.torch_zip.read_state_dict`, :func:`fastconv.formats.safetensors.
        read_safetensors`, or ``torch_model.state_dict()`` itself; entries are grouped into modules by their key
        prefix (``layer1.0.conv1.weight`` belongs to ``layer1.0.conv1``).
    source : str
        Names the state dict (its file, say) in error messages.
    key_order : {"given", "natural"}
        The order of the modules: as given (a ``state_dict()``'s order is module registration order), or sorted by
        key prefix with numbers compared as numbers (``0``, ``2``, ``10``): use it for a file that lost the
        order, such as one written by ``safetensors.torch.save_file``, which sorts keys by dtype and name; it is
        right for ``nn.Sequential`` numbering and for names that sort in execution order.

    Raises
    ------
    TypeError
        If ``model`` is not a fastconv model, ``state_dict`` not a mapping, or an entry not an array.
    ValueError
        If the model is not built, a layer with weights has no PyTorch mapping, or on any mismatch: a module with
        other entries than the layer needs, a shape that does not fit (naming the fastconv layer and weight, the
        PyTorch key, and both shapes), modules left over or missing. Nothing is assigned unless every weight
        checks out.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> from fastconv.layers import Input, Dense
    >>> from fastconv.formats.torch_mapping import assign_torch_state_dict
    >>> model = fastconv.Sequential([Input((3,)), Dense(2)])
    >>> assign_torch_state_dict(model, {"fc.weight": np.arange(6.0).reshape(2, 3), "fc.bias": np.zeros(2)})
    >>> model.get_weights()[0]  # Linear's (out, in) weight transposed
    array([[0., 3.],
           [1., 4.],
           [2., 5.]], dtype=float32)
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a fastconv model (fastconv.Model or fastconv.Sequential); received model of "
                        f"type {type(model).__name__}")
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built (start it with an Input) before weights are assigned")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to arrays; received state_dict of type "
                        f"{type(state_dict).__name__}")
    if key_order not in _KEY_ORDERS:
        raise ValueError(f'key_order must be "given" or "natural"; received key_order={key_order!r}')
    source = str(source)
    mapper = _Mapper(model, _modules(state_dict, source, key_order), source)
    last = None
    for layer in _weighted_layers(model, set()):
        handler = next((method for cls, method in _HANDLERS if isinstance(layer, cls)), None)
        if handler is None:
            raise ValueError(f"{source}: fastconv layer {layer.name!r} ({type(layer).__name__}) has weights but no "
                             f"PyTorch mapping; mappable layers are "
                             f"{', '.join(cls.__name__ for cls, _ in _HANDLERS)}")
        handler(mapper, layer)
        last = layer
    mapper.leftovers(last)
    for variable, value in mapper.plan:
        variable.assign(value)
