"""``model.load_weights``, ``model.save_weights`` and ``fastconv.load_model`` for every format, chosen by content.

The reader is picked from the file's bytes (:func:`fastconv.formats.sniff.detect`), never from its name alone;
the writer from the name the user gives (``.weights.h5``: Keras 3; ``.h5``: Keras's legacy layout; anything
else: fastconv's own format).
"""
import json
import os

from fastconv.formats import keras_h5, keras_weights
from fastconv.formats.sniff import FORMAT_NAMES, detect

__all__ = ["load_weights", "save_weights", "load_model"]


def _description(path):
    return f"filepath={os.fspath(path)!r}"


def _model_weights(f, description):
    """The ``model_weights`` group of a legacy full-model file."""
    if f.get("model_weights", getlink=True) is None:
        raise ValueError(f"{description} is a Keras model file without a model_weights group")
    return keras_h5.member(f, "model_weights", description)


def _assign_hdf5(model, source, description):
    with keras_h5.open_h5(source, description) as f:
        layout = keras_h5.layout_of(f)
        if layout == "legacy_model":
            keras_weights.assign_legacy(model, keras_h5.read_legacy(_model_weights(f, description), description),
                                        description)
        elif layout == "legacy_weights":
            keras_weights.assign_legacy(model, keras_h5.read_legacy(f, description), description)
        elif layout == "keras3":
            keras_weights.assign_keras3(model, keras_h5.read_keras3(f, description), description)
        else:
            raise ValueError(f"{description} is an HDF5 file but not a Keras weights file (no layer_names "
                             f"attribute, no layers group)")


def _assign_torch(model, state_dict, description, key_order="given"):
    from fastconv.formats.torch_mapping import assign_torch_state_dict

    assign_torch_state_dict(model, state_dict, source=description, key_order=key_order)


def load_weights(model, filepath):
    """Load weights from any supported file into a built ``model`` (see :meth:`fastconv.Model.load_weights`)."""
    from fastconv.models import saving

    description = _description(filepath)
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built before weights are loaded into it")
    with saving.file_errors(description):  # whatever the content provokes is the file's fault
        kind = detect(filepath)
        if kind == "fastconv":
            saving.load_fastconv_weights(model, filepath)
        elif kind == "hdf5":
            _assign_hdf5(model, filepath, description)
        elif kind == "keras_archive":
            from fastconv.formats.keras_archive import read_keras_archive

            _, weights = read_keras_archive(filepath, description, need_config=False)
            _assign_hdf5(model, weights, f"{description} (model.weights.h5)")
        elif kind in ("torch_zip", "torch_legacy"):
            from fastconv.formats.torch_zip import read_state_dict

            _assign_torch(model, read_state_dict(filepath), description)
        elif kind == "safetensors":
            from fastconv.formats.safetensors import read_safetensors

            # safetensors files list tensors sorted by name, not in module order: "natural" order puts torch's
            # numbered modules (features.0, features.2 ... features.10) back in sequence.
            _assign_torch(model, read_safetensors(filepath), description, key_order="natural")
        else:
            raise ValueError(f"{description} is {FORMAT_NAMES[kind]}, which describes a whole model: build the "
                             f"model from it with fastconv.load_onnx(filepath)")


def save_weights(model, filepath, overwrite=True):
    """Write ``model``'s weights in the layout the file name asks for, atomically."""
    from fastconv import __version__
    from fastconv.models import saving

    path = os.fspath(filepath)
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built before its weights are saved")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"filepath exists and overwrite=False; received filepath={path!r}")
    if path.endswith(".weights.h5"):
        keras_h5.write_keras3(path, keras_weights.keras3_tree(model))
    elif path.endswith((".h5", ".hdf5")):
        keras_h5.write_legacy(path, keras_weights.legacy_layers(model),
                              attrs={"backend": "fastconv", "keras_version": f"fastconv {__version__}"})
    else:
        saving.save_fastconv_weights(model, path)


def _keras_model(entry, description, stored_bytes):
    """The model a Keras config describes, allocating at most what ``stored_bytes`` of weight data can fill."""
    from fastconv.formats.keras_config import translate_model_config
    from fastconv.layers.base import weight_budget
    from fastconv.models import saving, serialization

    with weight_budget(saving.weight_budget_for(stored_bytes), description):
        model = serialization.deserialize(translate_model_config(entry, description))
    if not model.built:
        # an unbuilt model has no weights yet: the file's would be dropped without a word
        raise ValueError(f"{description}: the model has no input shape (no InputLayer, no batch_input_shape), so "
                         f"the file's weights cannot be loaded into it")
    return model


def load_model(filepath, compile=True):
    """A model from a fastconv model file, a Keras ``.keras`` archive or a legacy Keras full-model ``.h5``."""
    from fastconv.models import saving

    description = _description(filepath)
    with saving.file_errors(description):
        kind = detect(filepath)
        if kind == "fastconv":
            return saving.load_fastconv_model(filepath, compile=compile)
        if kind == "keras_archive":
            from fastconv.formats.keras_archive import read_keras_archive

            config, weights = read_keras_archive(filepath, description)
            model = _keras_model(config, f"{description} (config.json)", len(weights))
            _assign_hdf5(model, weights, f"{description} (model.weights.h5)")
            return model
        if kind == "hdf5":
            with keras_h5.open_h5(filepath, description) as f:
                if keras_h5.layout_of(f) != "legacy_model" or "model_config" not in f.attrs:
                    raise ValueError(f"{description} holds weights only, not a model: build the model and call "
                                     f"model.load_weights(filepath)")
                raw = keras_h5.attribute(f, "model_config", description)
                try:
                    entry = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
                except ValueError as exc:
                    raise ValueError(f"{description}: model_config is not valid JSON ({exc})") from None
                model = _keras_model(entry, f"{description} (model_config)", os.path.getsize(filepath))
                keras_weights.assign_legacy(model, keras_h5.read_legacy(_model_weights(f, description), description),
                                            description)
            return model
        if kind == "onnx":
            raise ValueError(f"{description} is an ONNX model: load it with fastconv.load_onnx(filepath)")
        if kind == "torch_legacy":
            raise ValueError(f"{description} is not a fastconv model file: it is {FORMAT_NAMES[kind]}")
        raise ValueError(f"{description} is {FORMAT_NAMES[kind]}, which holds weights only: build the model and call "
                         f"model.load_weights(filepath)")
