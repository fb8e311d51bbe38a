"""Keras weight files mapped onto fastconv models, and fastconv models written in Keras's layouts.

Matching follows Keras where it is defined and names where they exist:

- **legacy** files (a list of named layer groups): by layer name when every fastconv layer with weights finds
  its name in the file, otherwise by order among the layers that hold weights (Keras 2's ``by_name=False``
  rule). Within a layer, arrays follow Keras's legacy order (trainable, then non-trainable), reordered by their
  recorded names when those name every weight.
- **Keras 3** trees: within each model, by the name recorded in each layer's ``vars`` when every layer with
  weights finds its name, otherwise by Keras 3's own key (the class name in snake case, numbered per class in
  layer order), so a file loads into any model of the same architecture, whatever its layer names.

Nothing is assigned until every array has been checked, so a mismatch never leaves a model half-loaded; the
error names the layer and both shapes.
"""
import re

from fastconv.formats.keras_h5 import Keras3Node, LegacyLayer

__all__ = ["keras_keys", "assign_legacy", "assign_keras3", "legacy_layers", "keras3_tree"]


def _snake_case(name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _keras_class_name(layer):
    from fastconv.models.model import Model
    from fastconv.models.sequential import Sequential

    if isinstance(layer, Model) and not isinstance(layer, Sequential):
        return "Functional"  # keras.Model(inputs, outputs) is a keras Functional
    return type(layer).__name__


def keras_keys(layers):
    """Keras 3's key for each layer of one model: ``conv2d``, ``conv2d_1``, ``dense``... numbered per class."""
    counts, keys = {}, []
    for layer in layers:
        base = _snake_case(_keras_class_name(layer))
        keys.append(base if base not in counts else f"{base}_{counts[base]}")
        counts[base] = counts.get(base, 0) + 1
    return keys


def _legacy_order(layer):
    """The weights in the order Keras's legacy format stores a layer's (or a nested model's): trainable first."""
    trainable = layer.trainable_weights
    seen = {id(w) for w in trainable}
    return list(trainable) + [w for w in layer.weights if id(w) not in seen]


def _check(variable, value, layer_name, file_label, source):
    if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(f"layer {layer_name!r}: weight {variable.path!r} has shape {tuple(variable.shape)} but "
                         f"{source} holds {file_label} with shape {tuple(value.shape)}")
    return variable, value


def _apply(plan):
    for variable, value in plan:
        variable.assign(value)


def _base_name(weight_name, parts):
    """The last ``parts`` components of a recorded weight name, without TensorFlow's ``:0`` suffix."""
    return "/".join(re.sub(r":\d+$", "", weight_name).split("/")[-parts:])


def _legacy_values(layer, file_layer):
    """The file's arrays ordered like ``_legacy_order(layer)``, by their recorded names when those are usable."""
    from fastconv.models.model import Model

    variables = _legacy_order(layer)
    parts = 2 if isinstance(layer, Model) else 1
    wanted = [w.path if parts == 2 else w.name for w in variables]
    wanted = ["/".join(name.split("/")[-parts:]) for name in wanted]
    recorded = [_base_name(n, parts) for n in file_layer.weight_names]
    if sorted(recorded) == sorted(wanted) and len(set(recorded)) == len(recorded):
        by_name = dict(zip(recorded, zip(file_layer.weight_names, file_layer.arrays)))
        return variables, [by_name[name] for name in wanted]
    return variables, list(zip(file_layer.weight_names, file_layer.arrays))


def assign_legacy(model, file_layers, source):
    """Assign a legacy file's :class:`LegacyLayer` list to ``model`` (see the module notes)."""
    units = [layer for layer in model.layers if layer.weights]
    by_name = {entry.name: entry for entry in file_layers}
    if all(layer.name in by_name for layer in units):
        pairs = [(layer, by_name[layer.name]) for layer in units]
    else:
        weighted = [entry for entry in file_layers if entry.arrays]
        if len(weighted) != len(units):
            raise ValueError(f"model {model.name!r} has {len(units)} layers with weights "
                             f"({', '.join(layer.name for layer in units)}) but {source} holds weights for "
                             f"{len(weighted)} ({', '.join(entry.name for entry in weighted)}), and the names "
                             f"do not match either")
        pairs = list(zip(units, weighted))
    plan = []
    for layer, entry in pairs:
        variables, values = _legacy_values(layer, entry)
        if len(values) != len(variables):
            raise ValueError(f"layer {layer.name!r} has {len(variables)} weights but {source} holds "
                             f"{len(values)} for layer {entry.name!r}")
        for variable, (weight_name, value) in zip(variables, values):
            plan.append(_check(variable, value, layer.name, f"{entry.name}/{weight_name}", source))
    _apply(plan)


def _plan_keras3(model, node, source, prefix, plan):
    from fastconv.models.model import Model

    container = node.children.get("layers")
    children = container.children if container is not None else {}
    named = {child.name: (key, child) for key, child in children.items() if child.name is not None}
    weighted = [(layer, key) for layer, key in zip(model.layers, keras_keys(model.layers)) if layer.weights]
    by_name = all(layer.name in named for layer, _ in weighted)
    for layer, key in weighted:
        key, child = named[layer.name] if by_name else (key, children.get(key))
        where = f"{prefix}layers/{key}"
        if child is None:
            raise ValueError(f"layer {layer.name!r}: {source} has no weights for it (no name match, and no "
                             f"group {where!r}; the file holds {sorted(children)})")
        if isinstance(layer, Model):
            _plan_keras3(layer, child, source, where + "/", plan)
            continue
        if len(child.arrays) != len(layer.weights):
            raise ValueError(f"layer {layer.name!r} has {len(layer.weights)} weights but {source} holds "
                             f"{len(child.arrays)} in {where}/vars")
        for k, (variable, value) in enumerate(zip(layer.weights, child.arrays)):
            plan.append(_check(variable, value, layer.name, f"{where}/vars/{k}", source))


def assign_keras3(model, root, source):
    """Assign a Keras 3 weights tree (:class:`Keras3Node`) to ``model`` (see the module notes)."""
    plan = []
    _plan_keras3(model, root, source, "", plan)
    _apply(plan)


def keras3_tree(model):
    """``model``'s weights as the tree Keras 3's ``save_weights`` writes, ready for ``write_keras3``."""
    from fastconv.models.model import Model

    children = {}
    for layer, key in zip(model.layers, keras_keys(model.layers)):
        if isinstance(layer, Model):
            children[key] = keras3_tree(layer)
        else:
            children[key] = Keras3Node(name=layer.name, arrays=[w.value for w in layer.weights])
    return Keras3Node(name=model.name, arrays=[], children={"layers": Keras3Node(arrays=None, children=children)})


def legacy_layers(model):
    """``model``'s layers as the :class:`LegacyLayer` list of Keras's legacy ``.h5`` weights layout."""
    from fastconv.models.model import Model

    layers = []
    for layer in model.layers:
        variables = _legacy_order(layer)
        names = [w.path if isinstance(layer, Model) else f"{layer.name}/{w.name}" for w in variables]
        layers.append(LegacyLayer(layer.name, names, [w.value for w in variables]))
    return layers
