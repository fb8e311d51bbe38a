"""Keras-style layers on top of fastconv's functional API.

Every layer builds its weights from its input shape, runs forward with a ``training`` flag and backward through
the functional kernels; the contract is described in :mod:`fastconv.layers.base`.

>>> import numpy as np
>>> from fastconv import layers
>>> x = np.zeros((4, 28, 28, 1), dtype=np.float32)
>>> y = layers.MaxPooling2D(2)(layers.Conv2D(32, 3, activation="relu")(x))
>>> y.shape, y.dtype
((4, 13, 13, 32), dtype('float32'))
"""
from fastconv.layers.advanced_activations import ELU, LeakyReLU, PReLU
from fastconv.layers.base import Input, InputLayer, Layer, Variable
from fastconv.layers.convolutional import Conv2D, DepthwiseConv2D, SeparableConv2D
from fastconv.layers.core import Activation, Dense, ReLU, Softmax
from fastconv.layers.merge import Add, Concatenate, Multiply
from fastconv.layers.normalization import BatchNormalization
from fastconv.layers.pooling import MaxPool2D, MaxPooling2D
from fastconv.layers.pooling import (AveragePooling2D, AvgPool2D, GlobalAveragePooling2D, GlobalAvgPool2D,
                                     GlobalMaxPool2D, GlobalMaxPooling2D)
from fastconv.layers.regularization import Dropout
from fastconv.layers.reshaping import Flatten, Permute, Reshape, ZeroPadding2D

__all__ = [
    "Layer", "Variable", "Input", "InputLayer", "Conv2D", "MaxPooling2D", "MaxPool2D", "Flatten", "Dense",
    "Dropout", "Activation", "ReLU", "Softmax", "serialize", "deserialize",
    "BatchNormalization", "LeakyReLU", "PReLU", "ELU", "ZeroPadding2D", "Reshape", "Permute", "Add", "Multiply",
    "Concatenate",
    "AveragePooling2D", "AvgPool2D", "GlobalAveragePooling2D", "GlobalAvgPool2D", "GlobalMaxPooling2D",
    "GlobalMaxPool2D",
    "DepthwiseConv2D", "SeparableConv2D",
]

_CLASSES = {cls.__name__: cls for cls in (InputLayer, Conv2D, MaxPooling2D, Flatten, Dense, Dropout, Activation,
                                          ReLU, Softmax)}
_CLASSES.update({cls.__name__: cls for cls in (BatchNormalization, LeakyReLU, PReLU, ELU, ZeroPadding2D, Reshape,
                                               Permute, Add, Multiply, Concatenate)})
_CLASSES.update({cls.__name__: cls for cls in (AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D)})
_CLASSES.update({cls.__name__: cls for cls in (DepthwiseConv2D, SeparableConv2D)})
# Keras's short names, resolved to the class they name.
_ALIASES = {"MaxPool2D": "MaxPooling2D", "AvgPool2D": "AveragePooling2D", "GlobalAvgPool2D": "GlobalAveragePooling2D",
            "GlobalMaxPool2D": "GlobalMaxPooling2D"}


def serialize(layer):
    """``{"class_name": ..., "config": ...}``, JSON-ready; :func:`deserialize` turns it back into a layer."""
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config):
    """A new (unbuilt) layer from :func:`serialize`'s output. Only fastconv's own layer classes are known:
    a config can never name arbitrary code to run.

    Raises
    ------
    ValueError
        For an unknown ``class_name`` or a malformed config.
    """
    if not isinstance(config, dict) or not isinstance(config.get("config", {}), dict):
        raise ValueError(f"a layer config must be a dict with 'class_name' and 'config'; received {config!r}")
    name = config.get("class_name")
    name = _ALIASES.get(name, name) if isinstance(name, str) else name
    cls = _CLASSES.get(name)
    if cls is None:
        raise ValueError(f"class_name must be one of {', '.join(sorted(_CLASSES))}; received class_name={name!r}")
    return cls.from_config(dict(config.get("config", {})))
