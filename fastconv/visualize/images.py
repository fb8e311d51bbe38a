"""Pictures as NumPy arrays: colormaps, resizing, tile grids, heatmap overlays, and writing image files.

Everything here but :func:`save_image` and :func:`read_image` needs only NumPy; those two import Pillow when they
are called. Images are ``(rows, cols)`` grey or ``(rows, cols, channels)`` arrays with 1, 3 or 4 channels, uint8
(0..255) or float (0..1).

>>> import numpy as np
>>> from fastconv.visualize.images import apply_colormap
>>> apply_colormap(np.array([0.0, 0.5, 1.0]), "jet")
array([[  0,   0, 128],
       [128, 255, 128],
       [128,   0,   0]], dtype=uint8)
"""
import os

import numpy as np

__all__ = ["COLORMAPS", "apply_colormap", "to_uint8", "as_display", "resize", "image_grid", "overlay_heatmap",
           "save_image", "read_image"]

COLORMAPS = ("jet", "hot", "gray", "grey")


def _jet(t):
    # The classic piecewise-linear jet (dark blue, blue, cyan, yellow, red, dark red), as MATLAB and matplotlib
    # draw it: each channel is a tent of width 4 around its own peak.
    r = np.clip(1.5 - np.abs(4.0 * t - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * t - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * t - 1.0), 0.0, 1.0)
    return np.stack([r, g, b], axis=-1)


def _hot(t):
    r = np.clip(3.0 * t, 0.0, 1.0)
    g = np.clip(3.0 * t - 1.0, 0.0, 1.0)
    b = np.clip(3.0 * t - 2.0, 0.0, 1.0)
    return np.stack([r, g, b], axis=-1)


def _gray(t):
    return np.stack([t, t, t], axis=-1)


_MAPS = {"jet": _jet, "hot": _hot, "gray": _gray, "grey": _gray}


def _real_array(value, name):
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array; received {name} of type {type(value).__name__}") from exc
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers; received {name} with dtype {array.dtype}")
    return array


def apply_colormap(values, colormap="jet"):
    """Map values in [0, 1] to RGB colours.

    Parameters
    ----------
    values : array of floats, any shape
        Clipped to [0, 1]; NaN is not allowed.
    colormap : {"jet", "hot", "gray"}

    Returns
    -------
    ndarray of uint8, shape ``values.shape + (3,)``

    Raises
    ------
    ValueError
        For an unknown colormap or NaN values.

    Examples
    --------
    >>> apply_colormap(np.array([[0.0, 1.0]]), "gray").tolist()
    [[[0, 0, 0], [255, 255, 255]]]
    """
    if not isinstance(colormap, str) or colormap.lower() not in _MAPS:
        raise ValueError(f"colormap must be one of {list(COLORMAPS)}; received colormap={colormap!r}")
    t = _real_array(values, "values").astype(np.float64)
    if np.isnan(t).any():
        raise ValueError("values must not contain NaN; received values with NaN")
    rgb = _MAPS[colormap.lower()](np.clip(t, 0.0, 1.0))
    return np.round(rgb * 255.0).astype(np.uint8)


def to_uint8(image, name="image"):
    """An image as uint8: uint8 as it is, bool as 0/255, other integers in 0..255, floats in [0, 1] (scaled).

    Raises
    ------
    ValueError
        For values outside those ranges, or NaN.
    """
    array = _real_array(image, name)
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"{name} with integer values must lie in 0..255; received values in "
                             f"[{array.min()}, {array.max()}]")
        return array.astype(np.uint8)
    if np.isnan(array).any():
        raise ValueError(f"{name} must not contain NaN; received {name} with NaN")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(f"{name} with float values must lie in [0, 1]; received values in "
                         f"[{array.min():.6g}, {array.max():.6g}] (divide 0..255 images by 255)")
    return np.round(array * 255.0).astype(np.uint8)


def _int_argument(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}; received {name}={value!r}")
    return int(value)


def _check_image_shape(array, name):
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) or array.ndim not in (2, 3):
        raise ValueError(f"{name} must be (rows, cols) or (rows, cols, channels) with 1, 3 or 4 channels; "
                         f"received {name} with shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column; received {name} with shape "
                         f"{array.shape}")


def as_display(image, name="image"):
    """An image for display, as float64 RGB in [0, 1], shape ``(rows, cols, 3)``.

    uint8 (and bool) images are read as 0..255; float images already in [0, 1] are kept as they are, other real
    images (0..255 floats, mean-subtracted inputs ...) are stretched from their minimum to their maximum. Grey
    images are repeated on three channels; an alpha channel is dropped.
    """
    array = _real_array(image, name)
    _check_image_shape(array, name)
    if array.dtype == np.uint8 or array.dtype == np.bool_:
        values = to_uint8(array, name).astype(np.float64) / 255.0
    else:
        values = array.astype(np.float64)
        if np.isnan(values).any():
            raise ValueError(f"{name} must not contain NaN; received {name} with NaN")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if values.ndim == 2:
        values = values[:, :, None]
    if values.shape[-1] == 1:
        values = np.repeat(values, 3, axis=-1)
    return values[:, :, :3]


def _axis_weights(n_in, n_out):
    """Source indices and weights of a 1-D linear resize with half-pixel centres (Pillow's and OpenCV's rule)."""
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    centres = np.clip(centres, 0.0, n_in - 1)
    low = np.floor(centres).astype(np.intp)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, centres - low


def resize(array, size, method="bilinear"):
    """Resize the first two axes of ``array`` to ``size`` = (rows, cols).

    Parameters
    ----------
    array : ndarray, shape (rows, cols) or (rows, cols, channels)
    size : (int, int)
    method : {"bilinear", "nearest"}
        Bilinear with half-pixel centres (a heatmap's cells stay centred on the pixels they cover), or nearest.

    Returns
    -------
    ndarray of float64 (bilinear) or of the input's dtype (nearest)

    Examples
    --------
    >>> resize(np.array([[0.0, 1.0]]), (1, 4)).tolist()
    [[0.0, 0.25, 0.75, 1.0]]
    """
    array = _real_array(array, "array")
    if array.ndim not in (2, 3):
        raise ValueError(f"array must be (rows, cols) or (rows, cols, channels); received array with shape "
                         f"{array.shape}")
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ValueError(f"size must be (rows, cols), two positive ints; received size={size!r}")
    rows, cols = int(size[0]), int(size[1])
    if method == "nearest":
        r = np.minimum((np.arange(rows) * array.shape[0]) // rows, array.shape[0] - 1)
        c = np.minimum((np.arange(cols) * array.shape[1]) // cols, array.shape[1] - 1)
        return array[r][:, c]
    if method != "bilinear":
        raise ValueError(f'method must be "bilinear" or "nearest"; received method={method!r}')
    values = array.astype(np.float64)
    r0, r1, fr = _axis_weights(array.shape[0], rows)
    c0, c1, fc = _axis_weights(array.shape[1], cols)
    fr = fr.reshape((-1, 1) + (1,) * (values.ndim - 2))
    fc = fc.reshape((1, -1) + (1,) * (values.ndim - 2))
    top = values[r0] * (1 - fr) + values[r1] * fr
    return top[:, c0] * (1 - fc) + top[:, c1] * fc


def image_grid(tiles, images_per_row=8, padding=1, pad_value=255):
    """Tile equally sized images into one picture, row by row; the last row is left blank where it runs out.

    Parameters
    ----------
    tiles : array, shape (n, rows, cols) or (n, rows, cols, channels), uint8
    images_per_row : int
    padding : int
        Pixels between tiles and around the grid.
    pad_value : int
        Grey level of the padding.

    Returns
    -------
    ndarray of uint8, shape ``(R * (rows + padding) + padding, C * (cols + padding) + padding[, channels])``
        with ``C = min(n, images_per_row)`` tiles per row and ``R = ceil(n / C)`` rows.

    Examples
    --------
    >>> image_grid(np.zeros((5, 4, 4), dtype=np.uint8), images_per_row=3).shape
    (11, 16)
    """
    tiles = to_uint8(tiles, "tiles")
    if tiles.ndim not in (3, 4) or tiles.shape[0] < 1:
        raise ValueError(f"tiles must be (n, rows, cols) or (n, rows, cols, channels) with n >= 1; received tiles "
                         f"with shape {tiles.shape}")
    per_row = _int_argument(images_per_row, "images_per_row", 1)
    padding = _int_argument(padding, "padding", 0)
    n, h, w = tiles.shape[:3]
    per_row = min(per_row, n)
    n_rows = -(-n // per_row)
    shape = (n_rows * (h + padding) + padding, per_row * (w + padding) + padding) + tiles.shape[3:]
    grid = np.full(shape, pad_value, dtype=np.uint8)
    for i in range(n):
        top = padding + (i // per_row) * (h + padding)
        left = padding + (i % per_row) * (w + padding)
        grid[top:top + h, left:left + w] = tiles[i]
    return grid


def overlay_heatmap(image, heatmap, alpha=0.4, colormap="jet"):
    """Colour a heatmap and blend it over an image, at the image's size (the Grad-CAM picture).

    Parameters
    ----------
    image : array, shape (rows, cols) or (rows, cols, channels)
        uint8 (0..255) or float; see :func:`as_display` for how floats are read.
    heatmap : array, shape (h, w)
        Values in [0, 1] (from :func:`fastconv.visualize.grad_cam`), resized bilinearly to the image's size.
    alpha : float in [0, 1]
        The heatmap's weight: ``(1 - alpha) * image + alpha * colormap(heatmap)``.
    colormap : {"jet", "hot", "gray"}

    Returns
    -------
    ndarray of uint8, shape (rows, cols, 3)

    Examples
    --------
    >>> overlay_heatmap(np.zeros((32, 32), dtype=np.uint8), np.eye(4)).shape
    (32, 32, 3)
    """
    base = as_display(image)
    heat = _real_array(heatmap, "heatmap")
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"heatmap must be 2-D (rows, cols); received heatmap with shape {heat.shape}")
    if np.isnan(heat).any() or heat.min() < 0 or heat.max() > 1:
        raise ValueError(f"heatmap must hold values in [0, 1]; received values in [{np.nanmin(heat):.6g}, "
                         f"{np.nanmax(heat):.6g}]" + (" and NaN" if np.isnan(heat).any() else ""))
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1]; received alpha={alpha!r}")
    colours = apply_colormap(resize(heat, base.shape[:2]), colormap).astype(np.float64) / 255.0
    blended = (1.0 - float(alpha)) * base + float(alpha) * colours
    return np.round(blended * 255.0).astype(np.uint8)


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("writing and reading image files needs Pillow, which is not installed: "
                          "pip install Pillow") from exc
    return Image


def save_image(path, array):
    """Write an image file (PNG, JPEG ... chosen by the extension) with Pillow, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Its extension picks the format; the directory must exist.
    array : array, shape (rows, cols) or (rows, cols, channels) with 1, 3 or 4 channels
        uint8, or floats in [0, 1] (see :func:`to_uint8`).

    Returns
    -------
    str
        The path written.

    Raises
    ------
    ValueError
        For an unknown extension, a bad shape or out-of-range values.
    ImportError
        Without Pillow.

    Examples
    --------
    >>> save_image("square.png", np.ones((8, 8)))   # doctest: +SKIP
    'square.png'
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; received path of type {type(path).__name__}")
    path = os.fspath(path)
    pixels = to_uint8(array, "array")
    _check_image_shape(pixels, "array")
    Image = _pillow()
    extension = os.path.splitext(path)[1].lower()
    image_format = Image.registered_extensions().get(extension)
    if image_format is None or image_format not in Image.SAVE:
        raise ValueError(f"path must end with an image extension Pillow can write (.png, .jpg ...); received "
                         f"path={path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"the directory of path must exist; received path={path!r}")
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[-1] == 4 and image_format == "JPEG":
        raise ValueError(f"JPEG has no alpha channel: give an RGB or grey array for path={path!r}")
    picture = Image.fromarray(np.ascontiguousarray(pixels))
    from fastconv.models.saving import atomic_write

    atomic_write(path, lambda f: picture.save(f, format=image_format))
    return path


def read_image(path, mode="RGB"):
    """Read an image file with Pillow as a uint8 array.

    Parameters
    ----------
    path : str or os.PathLike
    mode : {"RGB", "L"}
        Colour (rows, cols, 3) or grey (rows, cols).

    Raises
    ------
    OSError
        When the file is missing or is not an image Pillow can decode, or has more pixels than
        ``PIL.Image.MAX_IMAGE_PIXELS`` (the message names the file).
    """
    from fastconv.preprocessing._pillow import refuse_bombs

    if mode not in ("RGB", "L"):
        raise ValueError(f'mode must be "RGB" or "L"; received mode={mode!r}')
    Image = _pillow()
    try:
        with Image.open(path) as picture:
            refuse_bombs(Image, picture)
            return np.asarray(picture.convert(mode), dtype=np.uint8).copy()
    except Exception as exc:            # Pillow raises OSError, SyntaxError, ValueError ... for bad files
        raise OSError(f"cannot read image file {os.fspath(path)!r}: {type(exc).__name__}: {exc}") from exc
