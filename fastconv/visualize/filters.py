"""Filter patterns: the input each convolution filter responds to most, found by gradient ascent in input space.

Start from a nearly blank image of faint noise, then repeatedly step the image along the gradient of the
filter's mean activation, normalised to unit root-mean-square so that every step changes the image by the same
amount whatever the gradient's scale, and keep the pixels in the model's value range.

>>> import numpy as np, fastconv
>>> from fastconv.layers import Input, Conv2D
>>> model = fastconv.Sequential([Input((16, 16, 1)), Conv2D(4, 3, activation="relu", name="conv")])
>>> filter_pattern(model, "conv", 0, steps=5, seed=0).shape
(16, 16, 1)
"""
import os

import numpy as np

from fastconv.visualize import _graph
from fastconv.visualize.images import image_grid, save_image

__all__ = ["filter_pattern", "filter_patterns", "plot_filters", "pattern_to_input"]

#: images optimised together in one forward/backward pass (bounds memory for large inputs)
_CHUNK = 16
#: grey levels by which the start of a filter that is zero everywhere is lifted, in turn (118: mid-grey)
_LIFTS = (24, 48, 72, 96, 118)


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int; received {name}={value!r}")
    return int(value)


def _value_range(value_range):
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be two numbers (low, high); received value_range={value_range!r}") \
            from None
    if not np.isfinite([low, high]).all() or not low < high:
        raise ValueError(f"value_range must be two finite numbers with low < high; received "
                         f"value_range={value_range!r}")
    return low, high


def _input_size(model, size):
    """The (rows, cols) of the images to optimise: the model's own when it fixes them."""
    shape = model.inputs[0].shape
    layout = _graph.input_data_format(model)
    rows, cols = shape[1:3] if layout == "channels_last" else shape[2:4]
    if size is None:
        return (rows or 150, cols or 150), layout
    given = size
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ValueError(f"size must be a positive int or (rows, cols); received size={given!r}")
    for wanted, fixed in zip(size, (rows, cols)):
        if fixed is not None and wanted != fixed:
            raise ValueError(f"size must match the input of model {model.name!r}, which takes images of shape "
                             f"{shape[1:]}; received size={given!r}")
    return (int(size[0]), int(size[1])), layout


def _filter_target(model, layer_name):
    from fastconv.layers.base import format_shape

    model = _graph.check_model(model, "filter_pattern")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError(f"filter patterns need a model with one image input; model {model.name!r} has inputs "
                         f"{[format_shape(t.shape) for t in model.inputs]}")
    tensor = _graph.layer_tensor(model, layer_name)
    if not _graph.is_spatial(tensor):
        raise ValueError(f"layer_name must name a layer with a spatial (4-D) output, whose filters are images; "
                         f"layer {layer_name!r} has output shape {format_shape(tensor.shape)}; layers with spatial "
                         f"outputs: {_graph.spatial_layer_names(model)}")
    layout = _graph.data_format(model, tensor)
    channels = tensor.shape[-1] if layout == "channels_last" else tensor.shape[1]
    return model, tensor, layout, channels


def _start_images(indices, shape, seed, low, high):
    """Faint noise near the bottom of the value range (grey levels 0..20 of 255): an almost blank image, so the
    pattern that grows on it is what the filter adds. Each filter's noise comes from ``(seed, filter)`` alone, so
    a pattern does not depend on which other filters are optimised alongside it."""
    entropy = np.random.SeedSequence().entropy if seed is None else seed
    noise = np.stack([np.random.default_rng([int(entropy), int(i)]).random(shape) for i in indices])
    return low + (high - low) * (20.0 / 255.0) * noise


def filter_patterns(model, layer_name, filter_indices=None, size=None, steps=40, step_size=1.0, seed=None,
                    value_range=(0.0, 1.0), return_start=False):
    """:func:`filter_pattern` for several filters of one layer (all of them by default), optimised together in
    batches of 16; each result is the same as :func:`filter_pattern` with the same ``seed`` would give.

    Returns
    -------
    ndarray of uint8, shape (len(filter_indices), rows, cols, channels)
        With ``return_start=True``, also the starting images, as the float batch the model was given (its
        input layout).
    """
    model, tensor, layout, channels = _filter_target(model, layer_name)
    if filter_indices is None:
        filter_indices = range(channels)
    indices = list(filter_indices) if not isinstance(filter_indices, (int, np.integer)) else [filter_indices]
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < channels:
            raise ValueError(f"filter_index must be an int in [0, {channels}) for layer {layer_name!r} with "
                             f"{channels} filters; received filter_index={i!r}")
    if not indices:
        raise ValueError("filter_indices must name at least one filter; received an empty list")
    steps = _positive_int(steps, "steps")
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float, np.integer, np.floating)) \
            or not np.isfinite(step_size) or step_size <= 0:
        raise ValueError(f"step_size must be a positive number; received step_size={step_size!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None; received seed={seed!r}")
    low, high = _value_range(value_range)
    (rows, cols), input_layout = _input_size(model, size)
    in_channels = model.inputs[0].shape[-1] if input_layout == "channels_last" else model.inputs[0].shape[1]
    view = _graph.submodel(model, tensor, "filters")
    dtype = model.inputs[0].dtype
    step = float(step_size) * 0.01 * (high - low)           # step_size is in percent of the value range
    results, starts = [], []
    for start in range(0, len(indices), _CHUNK):
        chunk = indices[start:start + _CHUNK]
        x = _start_images(chunk, (rows, cols, in_channels), seed, low, high)
        if input_layout == "channels_first":
            x = np.moveaxis(x, -1, 1)
        x = x.astype(dtype)
        objective = _mean_of_filters(chunk, layout)

        def ascent_direction(images):
            grads = view.gradients(images, objective)
            rms = np.sqrt(np.mean(np.square(grads, dtype=np.float64), axis=(1, 2, 3), keepdims=True))
            return np.divide(grads, rms, out=np.zeros(grads.shape), where=rms > 0), rms.reshape(-1)

        direction, rms = ascent_direction(x)
        base = x.copy()
        for lift in _LIFTS:
            dead = rms == 0
            if not dead.any():
                break
            # Zero everywhere (a ReLU that needs more light to wake up): brighten those starts step by step, up
            # to mid-grey, and start from the dimmest one the filter responds to.
            x[dead] = np.minimum(base[dead] + (high - low) * (lift / 255.0), high).astype(dtype)
            new_direction, new_rms = ascent_direction(x)
            direction[dead], rms[dead] = new_direction[dead], new_rms[dead]
        starts.append(x.copy())
        for i in range(steps):
            x = np.clip(x + step * direction, low, high).astype(dtype)
            if i + 1 < steps:
                direction, _ = ascent_direction(x)
        if input_layout == "channels_first":
            x = np.moveaxis(x, 1, -1)
        results.append(np.round((x - low) / (high - low) * 255.0).clip(0, 255).astype(np.uint8))
    patterns = np.concatenate(results)
    return (patterns, np.concatenate(starts)) if return_start else patterns


def _mean_of_filters(indices, layout):
    """The gradient of sum_i mean(activation[i, ..., filter_i]) with respect to the layer's output."""
    def seed(outputs):
        gradient = np.zeros_like(outputs)
        spatial = outputs.shape[1] * outputs.shape[2] if layout == "channels_last" else \
            outputs.shape[2] * outputs.shape[3]
        for row, k in enumerate(indices):
            if layout == "channels_last":
                gradient[row, :, :, k] = 1.0 / spatial
            else:
                gradient[row, k] = 1.0 / spatial
        return gradient
    return seed


def filter_pattern(model, layer_name, filter_index, size=None, steps=40, step_size=1.0, seed=None,
                   value_range=(0.0, 1.0)):
    """The input image that maximises the mean activation of one filter, by gradient ascent in input space.

    Parameters
    ----------
    model : fastconv.Model or fastconv.Sequential
        With one image input.
    layer_name : str
        A layer with a spatial output (a convolution, usually).
    filter_index : int
        The channel of that layer's output.
    size : int or (int, int), optional
        The image size; by default the model's input size (150 x 150 for a model that takes any size). A model
        with a fixed input size only takes that size.
    steps : int
        Gradient-ascent steps.
    step_size : float
        Each step moves the image by ``step_size`` percent of the value range (root mean square over pixels),
        along the gradient normalised to unit root mean square.
    seed : int, optional
        Seeds the starting noise (random when None).
    value_range : (float, float)
        The pixel values the model was trained on, ``(0, 1)`` for fastconv's image pipelines (``rescale=1/255``),
        ``(0, 255)`` for raw images. The image stays inside it.

    Returns
    -------
    ndarray of uint8, shape (rows, cols, channels)
        The optimised image, ``value_range`` mapped linearly onto 0..255 (always channels last, ready for
        :func:`fastconv.visualize.save_image`). :func:`pattern_to_input` maps it back.

    Notes
    -----
    The start is faint noise at the dark end of the range (grey levels 0..20), rather than mid-grey: a mid-grey
    image already excites every filter that sums brightness, leaving the ascent little to add. A filter that is
    zero everywhere on that start (its ReLU needs more light to wake up) starts instead from the same noise
    lifted by the fewest of 24, 48, 72, 96 or 118 grey levels (mid-grey) that make it respond. One that is zero
    even on mid-grey noise has no gradient to follow: its pattern is that noise, and :func:`plot_filters` draws it
    blank.
    """
    return filter_patterns(model, layer_name, [filter_index], size=size, steps=steps, step_size=step_size,
                           seed=seed, value_range=value_range)[0]


def pattern_to_input(pattern, value_range=(0.0, 1.0), data_format="channels_last"):
    """A uint8 pattern from :func:`filter_pattern` back in the model's input space, as a float32 batch of one
    (or of n for a stack of patterns)."""
    low, high = _value_range(value_range)
    array = np.asarray(pattern)
    if array.dtype != np.uint8 or array.ndim not in (3, 4):
        raise ValueError(f"pattern must be a uint8 (rows, cols, channels) image or a stack of them; received "
                         f"pattern with shape {array.shape} and dtype {array.dtype}")
    batch = array[None] if array.ndim == 3 else array
    batch = (low + batch.astype(np.float64) / 255.0 * (high - low)).astype(np.float32)
    return np.moveaxis(batch, -1, 1) if data_format == "channels_first" else batch


def plot_filters(model, layer_name, n=64, path="filters.png", images_per_row=8, size=None, steps=40,
                 step_size=1.0, seed=0, value_range=(0.0, 1.0)):
    """Write a grid of the patterns of a layer's first ``n`` filters (all of them if it has fewer).

    Each tile is one :func:`filter_pattern`, upscaled (nearest neighbour) to at least 64 pixels on its shorter
    side and contrast-stretched on its own, so that faint patterns show; a filter that stays zero on its pattern
    (dead) is drawn blank (black). Tiles are separated by 2 white pixels. Other parameters as in
    :func:`filter_pattern` (``seed`` defaults to 0 here, so the picture is reproducible).

    Returns
    -------
    str
        The path written (its directory is created if missing).
    """
    from fastconv.visualize.images import resize

    model, tensor, layout, channels = _filter_target(model, layer_name)
    n = min(_positive_int(n, "n"), channels)
    patterns = filter_patterns(model, layer_name, range(n), size=size, steps=steps, step_size=step_size,
                               seed=seed, value_range=value_range)
    responses = _graph.submodel(model, tensor, "filters").predict(
        pattern_to_input(patterns, value_range, _graph.input_data_format(model)), verbose=0)
    responses = np.moveaxis(responses, 1, -1) if layout == "channels_first" else responses
    rows, cols = patterns.shape[1:3]
    scale = max(1, -(-64 // min(rows, cols)))
    tiles = []
    for k, pattern in enumerate(patterns):
        values = pattern.astype(np.float64)
        low, high = values.min(), values.max()
        alive = responses[k, :, :, k].max() > 0 and high > low
        tile = np.round((values - low) / (high - low) * 255.0).astype(np.uint8) if alive else \
            np.zeros(pattern.shape, dtype=np.uint8)
        tiles.append(resize(tile, (rows * scale, cols * scale), "nearest") if scale > 1 else tile)
    grid = image_grid(np.stack(tiles), images_per_row=images_per_row, padding=2)
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    return save_image(path, grid)
