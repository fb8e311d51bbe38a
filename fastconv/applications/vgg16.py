"""VGG16 (Simonyan & Zisserman, 2015), layer for layer the network of ``keras.applications.VGG16``, and the
ImageNet weights Keras publishes for it.

Thirteen 3x3 convolutions with ReLU in five blocks, each block closed by 2x2 max pooling, then (with the top)
Flatten and three Dense layers. The layer names, shapes, weight layouts and order are Keras's, so the published
Keras weight files load as they are and weights move between the two with ``get_weights``/``set_weights``.

>>> from fastconv.applications import VGG16
>>> model = VGG16(weights=None, include_top=False, input_shape=(32, 32, 3), pooling="avg")
>>> model.output_shape, model.count_params()
((None, 512), 14714688)
"""
import collections
import os

from fastconv.applications import imagenet_utils
from fastconv.formats.download import get_file
from fastconv.layers import (Conv2D, Dense, Flatten, GlobalAveragePooling2D, GlobalMaxPooling2D, Input,
                             MaxPooling2D)
from fastconv.layers.base import InputLayer
from fastconv.layers.symbolic import SymbolicTensor
from fastconv.models.model import Model

__all__ = ["VGG16", "preprocess_input", "WEIGHTS"]

PublishedWeights = collections.namedtuple("PublishedWeights", ["fname", "origin", "file_hash"])

# The files keras.applications.VGG16 downloads (Keras 2 HDF5 weight files, channels_last kernels) and their md5,
# as keras/src/applications/vgg16.py lists them. Keyed by include_top.
_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
WEIGHTS = {
    True: PublishedWeights("vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                           _BASE + "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                           "64373286793e3c8b2b4e3219cbf3544b"),
    False: PublishedWeights("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                            _BASE + "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                            "6d6bbae143d832006294945121d1f1fc"),
}

# (block, number of convolutions, filters)
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
_DEFAULT_SIZE = 224
_MIN_SIZE = 32


def _source_inputs(tensor):
    """The Input tensors ``tensor`` is computed from (Keras's ``get_source_inputs``), in the order found."""
    found, seen, stack = [], set(), [tensor]
    while stack:
        t = stack.pop()
        if isinstance(t.layer, InputLayer):
            if id(t) not in seen:
                seen.add(id(t))
                found.append(t)
            continue
        stack.extend(reversed(t.node.inputs))
    return found[0] if len(found) == 1 else found


def _check_weights(weights):
    if weights is None or (isinstance(weights, str) and weights == "imagenet"):
        return weights
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return os.fspath(weights)
    raise ValueError(f"weights must be None (random initialisation), 'imagenet' (pre-trained on ImageNet) or the "
                     f"path of an existing weights file; received weights={weights!r}")


def VGG16(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None, classes=1000,
          classifier_activation="softmax", name="vgg16"):
    """The VGG16 network, optionally with the ImageNet weights Keras publishes (channels_last).

    Parameters
    ----------
    include_top : bool
        End with the classifier: Flatten, Dense 4096 ``fc1``, Dense 4096 ``fc2``, Dense ``classes``
        ``predictions``. It needs a fixed input size (224x224x3 with the ImageNet weights).
    weights : None, "imagenet" or str/os.PathLike
        Random initialisation, the ImageNet weights (from Keras's cache, else downloaded and verified: see
        :func:`fastconv.formats.download.get_file`), or a weights file loaded with ``model.load_weights``.
    input_tensor : SymbolicTensor, optional
        A tensor from :func:`fastconv.layers.Input` (or computed from one) to build the network on; the model's
        inputs are then the Inputs it comes from.
    input_shape : tuple of 3 (int or None), optional
        ``(height, width, channels)``. Without the top, any size of at least 32x32 (None for a free size, the
        default ``(None, None, 3)``); with the top, 224x224x3 by default.
    pooling : {None, "avg", "max"}
        Without the top: the output is the last block's 4-D feature map (None), or its global average or max
        (a 2-D ``(batch, 512)``). Ignored with the top, as in Keras.
    classes : int
        Outputs of the top; must be 1000 with the ImageNet weights and the top.
    classifier_activation : str, Activation or None
        Of the ``predictions`` layer; only None or "softmax" with pretrained weights.
    name : str

    Returns
    -------
    fastconv.Model

    Raises
    ------
    ValueError
        For inconsistent arguments (as Keras raises them); a weights file that does not fit.
    TypeError
        For an ``input_tensor`` that is not a symbolic tensor.
    fastconv.formats.download.DownloadError
        When the ImageNet weights are neither cached nor downloadable; the message says where to put the file.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.applications import VGG16
    >>> model = VGG16(weights=None, include_top=False, input_shape=(32, 48, 3))
    >>> model.get_layer("block5_pool").output.shape
    (None, 1, 1, 512)
    >>> model.predict(np.zeros((2, 32, 48, 3), dtype=np.float32), verbose=0).shape
    (2, 1, 1, 512)
    """
    if not isinstance(include_top, (bool, int)) or include_top not in (True, False):
        raise TypeError(f"include_top must be a bool; received include_top={include_top!r}")
    include_top = bool(include_top)
    weights = _check_weights(weights)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive int; received classes={classes!r}")
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(f"with weights='imagenet' and include_top=True, classes must be 1000; received "
                         f"classes={classes!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f'pooling must be None, "avg" or "max"; received pooling={pooling!r}')
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str; received name={name!r}")
    if include_top:
        activation = imagenet_utils.validate_activation(classifier_activation, weights)

    if input_tensor is not None:
        if not isinstance(input_tensor, SymbolicTensor):
            raise TypeError(f"input_tensor must be a symbolic tensor from fastconv.layers.Input (or computed from "
                            f"one); received input_tensor of type {type(input_tensor).__name__}")
        if len(input_tensor.shape) != 4:
            raise ValueError(f"input_tensor must be a batch of images (4 dims); received input_tensor with shape "
                             f"{input_tensor.shape}")
        tensor_shape = tuple(input_tensor.shape[1:])
        if input_shape is not None and tuple(input_shape) != tensor_shape:
            raise ValueError(f"input_shape must match input_tensor's shape {tensor_shape}; received "
                             f"input_shape={input_shape!r}")
        input_shape = tensor_shape
    input_shape = imagenet_utils.obtain_input_shape(input_shape, _DEFAULT_SIZE, _MIN_SIZE,
                                                    require_flatten=include_top, weights=weights)
    if weights == "imagenet":  # fetched before the network is built, so that being offline fails at once
        published = WEIGHTS[include_top]
        weights = get_file(published.fname, published.origin, published.file_hash, cache_subdir="models")

    image = input_tensor if input_tensor is not None else Input(input_shape)

    x = image
    for block, convolutions, filters in _BLOCKS:
        for i in range(1, convolutions + 1):
            x = Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv{i}")(x)
        x = MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    if include_top:
        x = Flatten(name="flatten")(x)
        x = Dense(4096, activation="relu", name="fc1")(x)
        x = Dense(4096, activation="relu", name="fc2")(x)
        x = Dense(classes, activation=activation, name="predictions")(x)
    elif pooling == "avg":
        x = GlobalAveragePooling2D()(x)
    elif pooling == "max":
        x = GlobalMaxPooling2D()(x)

    inputs = _source_inputs(input_tensor) if input_tensor is not None else image
    model = Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def preprocess_input(x, data_format=None):
    """VGG16's preprocessing: RGB -> BGR and the ImageNet channel means subtracted ("caffe" mode of
    :func:`fastconv.applications.imagenet_utils.preprocess_input`).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.applications.vgg16 import preprocess_input
    >>> preprocess_input(np.zeros((1, 1, 1, 3), dtype=np.uint8))[0, 0, 0]
    array([-103.939, -116.779, -123.68 ], dtype=float32)
    """
    return imagenet_utils.preprocess_input(x, data_format=data_format, mode="caffe")
