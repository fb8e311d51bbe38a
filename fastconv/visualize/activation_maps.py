"""Intermediate activations: what each layer of a convnet makes of one input, channel by channel.

>>> import numpy as np, fastconv
>>> from fastconv.layers import Input, Conv2D, MaxPooling2D
>>> model = fastconv.Sequential([Input((8, 8, 1)), Conv2D(4, 3, name="conv"), MaxPooling2D(2, name="pool")])
>>> {name: a.shape for name, a in activations(model, np.zeros((2, 8, 8, 1))).items()}
{'conv': (2, 6, 6, 4), 'pool': (2, 3, 3, 4)}
"""
import os
import re

import numpy as np

from fastconv.visualize import _graph
from fastconv.visualize.images import image_grid, resize, save_image

__all__ = ["activations", "activation_grid", "plot_activations"]


def _names(model, layer_names, default):
    if layer_names is None:
        return default
    if isinstance(layer_names, str):
        return [layer_names]
    if not isinstance(layer_names, (list, tuple)) or not layer_names:
        raise TypeError(f"layer_names must be a layer name or a non-empty list of them; received "
                        f"layer_names={layer_names!r}")
    return list(layer_names)


def activations(model, x, layer_names=None):
    """The outputs of some of a model's layers on a batch, from one forward pass (inference mode).

    Parameters
    ----------
    model : fastconv.Model or fastconv.Sequential
        Built.
    x : array or list of arrays
        A batch, as ``model.predict`` takes it.
    layer_names : str or list of str, optional
        Every layer's output (inputs excluded) by default.

    Returns
    -------
    dict
        Layer name -> activation array (float32 for a float32 model), shaped like that layer's output with the
        batch axis filled in, in the order of ``layer_names`` (or of the model's layers).

    Raises
    ------
    ValueError
        For a name that is not one of the model's layers (the message lists them).
    """
    model = _graph.check_model(model, "activations")
    names = _names(model, layer_names, _graph.layer_names(model))
    tensors = [_graph.layer_tensor(model, name, "layer_names") for name in names]
    # One model with every requested tensor as an output: one forward pass, intermediate arrays kept only as
    # long as needed (the graph frees the rest).
    view = _graph.submodel(model, tensors if len(tensors) > 1 else tensors[0], "activations")
    outputs = view.predict(x, verbose=0)
    if len(tensors) == 1:
        outputs = [outputs]
    return dict(zip(names, outputs))


def _channel_tiles(activation, channels_axis):
    """One image per channel, each standardised on its own (mean 0, std 1, then 64 grey levels per std around
    128, as Chollet's figure does); a channel that is constant (dead) is left blank (black)."""
    maps = np.moveaxis(np.asarray(activation, dtype=np.float64), channels_axis, 0)
    mean = maps.mean(axis=(1, 2), keepdims=True)
    std = maps.std(axis=(1, 2), keepdims=True)
    alive = std[:, 0, 0] > 1e-12 * np.maximum(1.0, np.abs(mean[:, 0, 0]))
    scaled = np.where(std > 0, (maps - mean) / np.where(std > 0, std, 1.0), 0.0) * 64.0 + 128.0
    tiles = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    tiles[~alive] = 0
    return tiles


def _scale_for(rows, cols, min_size=32):
    """The integer upscaling that makes a tile at least ``min_size`` pixels on its shorter side."""
    return max(1, -(-min_size // max(1, min(rows, cols))))


def activation_grid(activation, images_per_row=16, data_format="channels_last", scale=None, padding=1):
    """The channels of one sample's activation as a grid of small grey images.

    Parameters
    ----------
    activation : array, shape (rows, cols, channels) (or (channels, rows, cols) with channels_first)
    images_per_row : int
    data_format : {"channels_last", "channels_first"}
    scale : int, optional
        Nearest-neighbour upscaling of each tile; by default the least that makes tiles at least 32 pixels on
        their shorter side.
    padding : int
        White pixels between tiles.

    Returns
    -------
    ndarray of uint8, shape (R * (rows * scale + padding) + padding, C * (cols * scale + padding) + padding)
        ``C = min(channels, images_per_row)``, ``R = ceil(channels / C)``.

    Examples
    --------
    >>> activation_grid(np.random.default_rng(0).random((6, 6, 20)), images_per_row=16, scale=2).shape
    (27, 209)
    """
    array = np.asarray(activation)
    if array.ndim != 3 or array.dtype.kind not in "fiub":
        raise ValueError(f"activation must be one sample's 3-D real array (rows, cols, channels); received "
                         f"activation with shape {array.shape} and dtype {array.dtype}")
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f'data_format must be "channels_last" or "channels_first"; received '
                         f'data_format={data_format!r}')
    tiles = _channel_tiles(array, -1 if data_format == "channels_last" else 0)
    rows, cols = tiles.shape[1:]
    if scale is None:
        scale = _scale_for(rows, cols)
    elif isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive int or None; received scale={scale!r}")
    if scale > 1:
        tiles = np.stack([resize(t, (rows * scale, cols * scale), "nearest") for t in tiles])
    return image_grid(tiles, images_per_row=images_per_row, padding=padding)


def safe_filename(text):
    """A layer name made safe as part of a file name: letters, digits, ``-``, ``_`` and ``.`` only."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def plot_activations(model, image, layer_names=None, path="activations", images_per_row=16, scale=None):
    """Write one grid per layer of what that layer makes of ``image``: each channel a small, individually
    normalised grey image, dead channels blank (Chollet's figure of a cat seen through a small convnet).

    Parameters
    ----------
    model : fastconv.Model or fastconv.Sequential
        With one image input.
    image : array
        One sample, shaped like the model's input without the batch axis (a batch of one is accepted too).
    layer_names : str or list of str, optional
        By default every layer with a spatial (4-D) output: convolutions, pooling, activations ...
    path : str or os.PathLike
        The directory to write into (created if missing): ``activations_<position>_<layer>.png``.
    images_per_row, scale
        See :func:`activation_grid`.

    Returns
    -------
    list of str
        The files written, one per layer, in order.

    Raises
    ------
    ValueError
        For an unknown layer name (the message lists the valid ones) or a layer whose output is not spatial.
    """
    model = _graph.check_model(model, "plot_activations")
    batch, _ = _graph.image_batch(model, image, "image")
    if len(batch) != 1:
        raise ValueError(f"image must be one sample; received a batch of {len(batch)}")
    names = _names(model, layer_names, _graph.spatial_layer_names(model))
    if not names:
        raise ValueError(f"model {model.name!r} has no layer with a spatial (4-D) output to draw")
    tensors = [_graph.layer_tensor(model, name, "layer_names") for name in names]
    for name, tensor in zip(names, tensors):
        if not _graph.is_spatial(tensor):
            raise ValueError(f"layer_names: layer {name!r} has output shape {tensor.shape}, which is not an image "
                             f"batch; layers with spatial outputs: {_graph.spatial_layer_names(model)}")
    values = activations(model, batch, names)
    os.makedirs(path, exist_ok=True)
    written = []
    for position, (name, tensor) in enumerate(zip(names, tensors)):
        grid = activation_grid(values[name][0], images_per_row=images_per_row,
                               data_format=_graph.data_format(model, tensor), scale=scale)
        target = os.path.join(os.fspath(path), f"activations_{position:02d}_{safe_filename(name)}.png")
        written.append(save_image(target, grid))
    return written
