"""Model configs: a model's architecture as JSON-ready data, and back, without ever naming code to run.

A graph model's config follows Keras's functional layout::

    {"name": ..., "trainable": ...,
     "layers": [{"class_name": "Conv2D", "config": {...}, "name": "conv2d",
                 "inbound_nodes": [[["input_layer", 0, 0]], ...]}, ...],
     "input_layers": [["input_layer", 0, 0]], "output_layers": [["dense", 0, 0]]}

``inbound_nodes`` holds, per call of the layer, the ``[layer_name, node_index, tensor_index]`` of each tensor it
reads; node indices count the calls of a layer within this model. Nested models appear as layers whose config is
their own model config (class ``Sequential`` or ``Functional``). Only fastconv's own classes can be named.
"""
from fastconv.layers import deserialize as deserialize_plain_layer
from fastconv.layers import serialize as serialize_plain_layer
from fastconv.layers.base import InputLayer

__all__ = ["serialize", "deserialize", "graph_config", "graph_from_config", "model_class_name"]

_MODEL_CLASS_NAMES = ("Sequential", "Functional", "Model")


def model_class_name(model):
    from fastconv.models.sequential import Sequential

    return "Sequential" if isinstance(model, Sequential) else "Functional"


def serialize(layer):
    """``{"class_name", "config"}`` of a layer or of a (nested) model."""
    from fastconv.models.model import Model

    if isinstance(layer, Model):
        return {"class_name": model_class_name(layer), "config": layer.get_config()}
    return serialize_plain_layer(layer)


def deserialize(config):
    """A layer or a model from :func:`serialize`'s output (fastconv's own classes only)."""
    if isinstance(config, dict) and config.get("class_name") in _MODEL_CLASS_NAMES:
        from fastconv.models.model import Model
        from fastconv.models.sequential import Sequential

        inner = config.get("config")
        if not isinstance(inner, dict):
            raise ValueError(f"a model config must be a dict; received {inner!r}")
        cls = Sequential if config["class_name"] == "Sequential" else Model
        return cls.from_config(inner)
    return deserialize_plain_layer(config)


def graph_config(graph):
    local = {}
    calls = {}
    for layer in graph.input_layers:
        local[id(layer.output.node)] = 0
    for node in graph.nodes:
        local[id(node)] = calls.get(id(node.layer), 0)
        calls[id(node.layer)] = local[id(node)] + 1

    def ref(tensor):
        return [tensor.layer.name, local[id(tensor.node)], tensor.index]

    entries = []
    for layer in graph.input_layers:
        entries.append(dict(serialize(layer), name=layer.name, inbound_nodes=[]))
    for layer in graph.layers:
        nodes = [node for node in graph.nodes if node.layer is layer]
        entries.append(dict(serialize(layer), name=layer.name,
                            inbound_nodes=[[ref(t) for t in node.inputs] for node in nodes]))
    return {"layers": entries, "input_layers": [ref(t) for t in graph.inputs],
            "output_layers": [ref(t) for t in graph.outputs]}


def _ref_key(ref, what):
    if not isinstance(ref, (list, tuple)) or len(ref) < 3 or not isinstance(ref[0], str):
        raise ValueError(f"{what} must be [layer_name, node_index, tensor_index]; received {ref!r}")
    return ref[0], int(ref[1]), int(ref[2])


def graph_from_config(config):
    """Rebuild the layers of a graph config and call them as recorded; returns ``(inputs, outputs)``."""
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ValueError(f"a model config must be a dict with a 'layers' list; received {config!r}")
    layers, pending, tensors = {}, [], {}
    for entry in config["layers"]:
        if not isinstance(entry, dict):
            raise ValueError(f"each layer of a model config must be a dict; received {entry!r}")
        layer = deserialize(entry)
        name = entry.get("name", layer.name)
        if name in layers:
            raise ValueError(f"a model config names layer {name!r} twice")
        layers[name] = layer
        if isinstance(layer, InputLayer):
            tensors[(name, 0, 0)] = layer.output
        for k, inbound in enumerate(entry.get("inbound_nodes") or []):
            if not isinstance(inbound, list):
                raise ValueError(f"inbound_nodes of layer {name!r} must be lists of tensor references; received "
                                 f"{inbound!r}")
            pending.append((name, k, [_ref_key(r, f"an inbound node of layer {name!r}") for r in inbound]))
    # Call the layers as soon as what they read exists (a shared layer's later calls may read later layers).
    while pending:
        remaining = []
        for name, k, refs in pending:
            ready = all(r in tensors for r in refs) and (k == 0 or (name, k - 1, 0) in tensors)
            if not ready:
                remaining.append((name, k, refs))
                continue
            layer = layers[name]
            args = [tensors[r] for r in refs]
            tensors[(name, k, 0)] = layer(args if layer.multi_input else args[0])
        if len(remaining) == len(pending):
            missing = sorted({r[0] for _, _, refs in remaining for r in refs if r not in tensors})
            raise ValueError(f"a model config refers to layers that are never computed: {missing}")
        pending = remaining

    def lookup(ref, what):
        key = _ref_key(ref, what)
        if key not in tensors:
            raise ValueError(f"{what} refers to an unknown tensor {list(key)}")
        return tensors[key]

    inputs = [lookup(r, "input_layers") for r in config.get("input_layers") or []]
    outputs = [lookup(r, "output_layers") for r in config.get("output_layers") or []]
    if not inputs or not outputs:
        raise ValueError("a model config needs input_layers and output_layers")
    return (inputs[0] if len(inputs) == 1 else inputs), (outputs[0] if len(outputs) == 1 else outputs)
