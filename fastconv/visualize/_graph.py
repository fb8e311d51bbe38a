"""What the visualisations need to know about a model's graph: the tensor a layer name stands for, which axis
holds the channels, which layers are convolutions, and sub-models that share the model's weights."""
import numpy as np

__all__ = ["check_model", "layer_names", "layer_tensor", "data_format", "input_data_format", "is_spatial",
           "spatial_layer_names", "conv_layer_names", "submodel", "image_batch", "feeds"]


def check_model(model, what):
    """A built fastconv Model (Sequential included), or TypeError/ValueError."""
    from fastconv.models.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"{what} takes a fastconv Model or Sequential; received model of type "
                        f"{type(model).__name__}")
    if model.inputs is None:
        raise ValueError(f"model {model.name!r} is not built: start it with an Input(shape) or call build() first")
    return model


def _nodes(model):
    return model._graph.nodes


def layer_names(model):
    """The names :func:`layer_tensor` accepts: every layer of the model, inputs excluded, in the order they run."""
    from fastconv.layers.base import InputLayer

    return [layer.name for layer in model.layers if not isinstance(layer, InputLayer)]


def layer_tensor(model, name, what="layer_name"):
    """The symbolic output of layer ``name`` in ``model``'s graph.

    Raises
    ------
    ValueError
        For a name that is not one of the model's layers (the message lists them), or a layer called several
        times in the graph (its output is then ambiguous).
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a layer name (str); received {what}={name!r}")
    names = layer_names(model)
    if name not in names:
        raise ValueError(f"{what} must be one of the layers of model {model.name!r}: {names}; received "
                         f"{what}={name!r}")
    tensors = [node.outputs[0] for node in _nodes(model) if node.layer.name == name]
    if len(tensors) != 1:
        raise ValueError(f"{what}: layer {name!r} is called {len(tensors)} times in model {model.name!r}, so its "
                         f"output is ambiguous; received {what}={name!r}")
    return tensors[0]


def is_spatial(tensor):
    """Whether the tensor is an image batch: (batch, rows, cols, channels) or (batch, channels, rows, cols)."""
    return len(tensor.shape) == 4


def data_format(model, tensor):
    """The layout of a 4-D tensor: that of the nearest layer upstream that declares a ``data_format`` (Conv2D,
    pooling, Flatten ...), else that of the first such layer in the model, else channels_last."""
    seen = set()
    frontier = [tensor]
    while frontier:
        current = frontier.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        layer = current.node.layer
        layout = getattr(layer, "data_format", None)
        if layout in ("channels_last", "channels_first"):
            return layout
        frontier.extend(t for t in current.node.inputs if len(t.shape) == 4)
    return input_data_format(model)


def input_data_format(model):
    """The layout the model's image input is read in: that of the first layer that declares one."""
    for node in _nodes(model):
        layout = getattr(node.layer, "data_format", None)
        if layout in ("channels_last", "channels_first"):
            return layout
    return "channels_last"


def spatial_layer_names(model):
    """The layers whose output is an image batch (4-D)."""
    return [node.layer.name for node in _nodes(model) if is_spatial(node.outputs[0])]


def conv_layer_names(model):
    """The convolution layers (Conv2D, DepthwiseConv2D, SeparableConv2D) with a 4-D output, in graph order."""
    from fastconv.layers.convolutional import Conv2D, DepthwiseConv2D, SeparableConv2D

    return [node.layer.name for node in _nodes(model)
            if isinstance(node.layer, (Conv2D, DepthwiseConv2D, SeparableConv2D)) and is_spatial(node.outputs[0])]


def submodel(model, outputs, purpose):
    """A model from ``model``'s inputs to ``outputs`` (tensors of its graph), sharing its layers and weights."""
    from fastconv.models.model import Model

    # An explicit name: no automatic name is drawn, so building views leaves later layer/model names unchanged.
    return Model(model.input, outputs, name=f"{model.name}_{purpose}")


def image_batch(model, x, name="x"):
    """``x`` as a float batch for a single-input model, and whether it was one image without a batch axis."""
    if len(model.inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs; this function needs a model with "
                         f"one image input")
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array; received {name} of type {type(x).__name__}") from exc
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers; received {name} with dtype {array.dtype}")
    expected = model.inputs[0].shape
    single = array.ndim == len(expected) - 1
    if single:
        array = array[None]
    if array.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], array.shape[1:])):
        from fastconv.layers.base import format_shape

        raise ValueError(f"{name} must have shape {format_shape(expected)} (or one sample of it, without the batch "
                         f"axis) to fit the input of model {model.name!r}; received {name} with shape "
                         f"{np.shape(x)}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample; received {name} with shape {array.shape}")
    return array.astype(model.inputs[0].dtype, copy=False), single


def feeds(tensor, target):
    """Whether ``target`` is computed from ``tensor`` (or is it)."""
    seen, frontier = set(), [target]
    while frontier:
        current = frontier.pop()
        if current is tensor:
            return True
        if id(current) in seen:
            continue
        seen.add(id(current))
        frontier.extend(current.node.inputs)
    return False
