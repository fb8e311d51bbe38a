"""Keras model configs (Keras 2's and Keras 3's JSON) translated into fastconv's own model config.

The two generations differ in the envelope, not in the layers' arguments:

- Keras 3 wraps every object as ``{"module", "class_name", "config", "registered_name"}``, writes dtype policies
  and initializers as such objects, records a layer's calls as ``{"args": [tensor...], "kwargs": {...}}`` whose
  tensors carry ``keras_history = [layer, node, tensor]``, and gives a single input as a flat ``[name, 0, 0]``;
- Keras 2 writes ``[[layer, node, tensor, kwargs], ...]`` per call, ``batch_input_shape`` on InputLayer (or on
  a Sequential's first layer), and an old Sequential's config may be a bare list of layers.

Only fastconv's own classes can come out (a config names classes, never code). An argument fastconv does not
have is refused with its name and value, unless it is one that cannot change what the layer computes at
inference and in training (``sparse=False``, ``renorm=False``...). Regularizers and constraints are dropped
with a warning, because fastconv has none: the loaded weights and predictions are unaffected.
"""
import inspect
import warnings

__all__ = ["translate_model_config"]

MODEL_CLASSES = ("Sequential", "Functional", "Model")
# Arguments that change nothing fastconv computes when they hold these values.
_NEUTRAL_VALUES = {
    "sparse": (False, None), "ragged": (False, None), "optional": (False,), "synchronized": (False,),
    "renorm": (False,), "renorm_clipping": (None,), "renorm_momentum": "any", "quantization_config": (None,),
    "lora_rank": (None,), "lora_alpha": (None,), "noise_shape": (None,), "input_dim": "any", "fused": "any",
    "adjustment": (None,), "virtual_batch_size": (None,), "input_length": (None,), "autocast": "any",
    # Keras 2 repeats the input shape on a Sequential's first layer; _translate_sequential turns it into an Input.
    "batch_input_shape": "any", "batch_shape": "any",
}
_BASE_ARGUMENTS = {"name", "trainable", "dtype"}
_RENAMED = {"LeakyReLU": {"alpha": "negative_slope"}}


def _unwrap_dtype(value, where):
    """A dtype policy object (Keras 3) or name as the float dtype fastconv computes in."""
    if isinstance(value, dict):
        value = (value.get("config") or {}).get("name")
    if value is None or value in ("float32", "float64"):
        return value
    if value in ("float16", "bfloat16", "mixed_float16", "mixed_bfloat16"):
        warnings.warn(f"{where}: dtype {value!r} is computed in float32 by fastconv", stacklevel=4)
        return "float32"
    raise ValueError(f"{where}: dtype must be a float type; received dtype={value!r}")


def _initializer(value):
    """A Keras initializer object as fastconv's ``{"class_name", "config"}``, or None when fastconv lacks that
    initializer (the loaded weights replace what it would draw anyway)."""
    from fastconv import initializers

    if isinstance(value, str):
        value = {"class_name": value, "config": {}}
    if not isinstance(value, dict) or not isinstance(value.get("class_name"), str):
        return None
    candidates = [{"class_name": value["class_name"], "config": dict(value.get("config") or {})},
                  {"class_name": value["class_name"], "config": {}}]
    for candidate in candidates:
        try:
            return initializers.serialize(initializers.get(candidate))
        except (TypeError, ValueError):
            continue
    return None


def _activation(value, where):
    if isinstance(value, dict):  # Keras 3 may wrap a built-in activation's name
        value = value.get("config") if isinstance(value.get("config"), str) else value.get("class_name")
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: activation must be a name; received activation={value!r}")
    return value


def _squeeze_axis(value):
    return value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value


def _translate_layer(entry, where):
    """A Keras ``{"class_name", "config"}`` entry of a plain layer as fastconv's."""
    from fastconv.layers import _ALIASES, _CLASSES

    class_name = entry.get("class_name")
    class_name = _ALIASES.get(class_name, class_name)
    cls = _CLASSES.get(class_name)
    if cls is None:
        raise ValueError(f"{where}: fastconv has no layer class {entry.get('class_name')!r} (it has "
                         f"{', '.join(sorted(_CLASSES))})")
    config = entry.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{where}: a layer config must be a dict; received {config!r}")
    config = dict(config)
    where = f"{where} ({class_name} {config.get('name')!r})"
    if class_name == "InputLayer":
        shape = config.pop("batch_shape", None) or config.pop("batch_input_shape", None)
        if shape is not None:
            config["batch_size"], config["shape"] = shape[0], list(shape[1:])
    for old, new in _RENAMED.get(class_name, {}).items():
        if old in config:
            config[new] = config.pop(old)

    accepted = set(inspect.signature(cls.__init__).parameters) | _BASE_ARGUMENTS
    out = {}
    for key, value in config.items():
        if key == "dtype":
            value = _unwrap_dtype(value, where)
        elif key.endswith("_regularizer") or key.endswith("_constraint"):
            if value is not None:
                warnings.warn(f"{where}: {key} is ignored (fastconv has no regularizers or constraints)",
                              stacklevel=3)
            continue
        elif key.endswith("_initializer"):
            value = _initializer(value)
            if value is None:
                continue
        elif key == "activation":
            value = _activation(value, where)
        elif key == "axis":
            value = _squeeze_axis(value)
        if key not in accepted:
            neutral = _NEUTRAL_VALUES.get(key)
            if neutral == "any" or (neutral is not None and value in neutral):
                continue
            raise ValueError(f"{where}: fastconv does not support argument {key}={value!r}")
        out[key] = value
    return {"class_name": class_name, "config": out}


def _tensor_refs(node, where):
    """The ``[layer, node, tensor]`` references one call reads, from either generation's record of it."""
    if isinstance(node, list):  # Keras 2: [[layer, node, tensor, kwargs], ...]
        return [list(ref[:3]) for ref in node]
    if not isinstance(node, dict):
        raise ValueError(f"{where}: an inbound node must be a list or a dict; received {node!r}")
    refs = []

    def collect(obj):
        if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
            history = (obj.get("config") or {}).get("keras_history")
            if not isinstance(history, list) or len(history) != 3:
                raise ValueError(f"{where}: a tensor without keras_history: {obj!r}")
            refs.append(list(history))
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                collect(item)

    collect(node.get("args", []))
    return refs


def _endpoint_list(value):
    """input_layers / output_layers as a list of references (Keras 3 writes a single one flat)."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return [value]
    return value


def _translate_sequential(config, where):
    layers = config if isinstance(config, list) else config.get("layers")
    if not isinstance(layers, list):
        raise ValueError(f"{where}: a Sequential config needs a 'layers' list")
    name = None if isinstance(config, list) else config.get("name")
    translated = [_translate_entry(entry, f"{where} layer {k}") for k, entry in enumerate(layers)]
    first = layers[0].get("config", {}) if layers else {}
    starts_with_input = bool(translated) and translated[0]["class_name"] == "InputLayer"
    batch_shape = first.get("batch_input_shape") or first.get("batch_shape")
    if not starts_with_input and batch_shape is not None:
        # Keras 2 put the input shape on the first layer instead of an InputLayer.
        translated.insert(0, {"class_name": "InputLayer", "config": {
            "shape": list(batch_shape[1:]), "batch_size": batch_shape[0],
            "name": f"{first.get('name', 'input')}_input"}})
    out = {"name": name, "layers": translated}
    if not isinstance(config, list) and "trainable" in config:
        out["trainable"] = config["trainable"]
    return {"class_name": "Sequential", "config": out}


def _translate_functional(config, where):
    if not isinstance(config.get("layers"), list):
        raise ValueError(f"{where}: a functional model config needs a 'layers' list")
    layers = []
    for k, entry in enumerate(config["layers"]):
        if not isinstance(entry, dict):
            raise ValueError(f"{where} layer {k}: must be a dict; received {entry!r}")
        name = entry.get("name") or (entry.get("config") or {}).get("name")
        translated = _translate_entry(entry, f"{where} layer {k}")
        translated["name"] = name
        translated["inbound_nodes"] = [_tensor_refs(node, f"{where} layer {name!r}")
                                       for node in entry.get("inbound_nodes") or []]
        layers.append(translated)
    out = {"name": config.get("name"), "layers": layers,
           "input_layers": _endpoint_list(config.get("input_layers")),
           "output_layers": _endpoint_list(config.get("output_layers"))}
    if "trainable" in config:
        out["trainable"] = config["trainable"]
    return {"class_name": "Functional", "config": out}


def _translate_entry(entry, where):
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: a layer entry must be a dict; received {entry!r}")
    if entry.get("class_name") in MODEL_CLASSES:
        return translate_model_config(entry, where)
    return _translate_layer(entry, where)


def translate_model_config(entry, where="model config"):
    """fastconv's ``{"class_name": "Sequential" | "Functional", "config": ...}`` for a Keras model entry
    ``{"class_name": ..., "config": ...}`` of either generation (feed it to
    :func:`fastconv.models.serialization.deserialize`).

    Raises
    ------
    ValueError
        Naming the layer and argument fastconv cannot reproduce.
    """
    if not isinstance(entry, dict) or entry.get("class_name") not in MODEL_CLASSES:
        received = entry.get("class_name") if isinstance(entry, dict) else entry
        raise ValueError(f"{where}: the model must be a Sequential or a functional model; received "
                         f"class_name={received!r}")
    config = entry.get("config")
    if entry["class_name"] == "Sequential":
        return _translate_sequential(config, where)
    if not isinstance(config, dict):
        raise ValueError(f"{where}: a model config must be a dict; received {config!r}")
    return _translate_functional(config, where)
