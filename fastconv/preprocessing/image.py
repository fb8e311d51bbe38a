"""ImageDataGenerator: Keras's random image augmentation, drawn and warped a whole batch at a time."""
import numbers
from collections.abc import Mapping

import numpy as np

from fastconv.preprocessing import _checks as check
from fastconv.preprocessing.affine import FILL_MODES, affine_matrices, warp_affine
from fastconv.preprocessing.directory import DirectoryIterator
from fastconv.preprocessing.iterator import NumpyArrayIterator

__all__ = ["ImageDataGenerator"]

_TRANSFORM_KEYS = ("theta", "tx", "ty", "shear", "zx", "zy", "flip_horizontal", "flip_vertical")
_IDENTITY = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0,
             "flip_horizontal": False, "flip_vertical": False}


def _shift_spec(value, name):
    """Keras's shift range as (values, kind, is_fraction).

    A float draws uniformly from [-value, value); an int draws whole pixels from ``range(value)`` with a random
    sign; a 1-D array-like draws one of its entries with a random sign. Ranges whose largest magnitude is below 1
    are fractions of the image size, others are pixels.
    """
    if check.is_bool(value):
        raise TypeError(f"{name} must be a float, an int or a 1-D list of numbers; received {name}={value!r}")
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise ValueError(f"{name} must not be negative; received {name}={value!r}")
        values = np.arange(int(value), dtype=np.float64)
        return values, ("choice" if value > 1 else "none"), False
    if isinstance(value, numbers.Real):
        value = check.real(value, name, minimum=0.0)
        return np.array([value]), ("uniform" if value > 0 else "none"), value < 1
    try:
        values = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a float, an int or a 1-D list of numbers; "
                        f"received {name}={value!r}") from None
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be a float, an int or a non-empty 1-D list of finite numbers; "
                         f"received {name}={value!r}")
    kind = "choice" if np.any(values != 0) else "none"
    return values, kind, float(np.max(np.abs(values))) < 1


def _zoom_spec(value):
    """[lower, upper] zoom factors from a float z (giving [1 - z, 1 + z]) or a pair."""
    if check.is_bool(value):
        raise TypeError(f"zoom_range must be a float or a pair [lower, upper]; received zoom_range={value!r}")
    if isinstance(value, numbers.Real):
        z = check.real(value, "zoom_range", minimum=0.0, below=1.0)
        return 1.0 - z, 1.0 + z
    try:
        lower, upper = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"zoom_range must be a float or a pair [lower, upper]; "
                         f"received zoom_range={value!r}") from None
    if not (np.isfinite(lower) and np.isfinite(upper) and 0 < lower <= upper):
        raise ValueError(f"zoom_range must satisfy 0 < lower <= upper; received zoom_range={value!r}")
    return lower, upper


class ImageDataGenerator:
    """Random image augmentation and rescaling, as Keras's ``ImageDataGenerator``.

    Each batch gets its own random rotation, shift, shear, zoom and flips per image, applied as one affine warp
    with bilinear interpolation (vectorised NumPy over the whole batch), then ``rescale``.

    Parameters
    ----------
    rotation_range : float
        Degrees; rotations are drawn from [-rotation_range, rotation_range).
    width_shift_range, height_shift_range : float, int or 1-D array_like
        Horizontal / vertical shift. A float below 1 is a fraction of the image width / height, a float >= 1 a
        number of pixels, both drawn uniformly from [-range, range); an int draws whole pixels from
        ``(-range, range)``; an array draws one of its values with a random sign.
    shear_range : float
        Shear angle in degrees, drawn from [-shear_range, shear_range).
    zoom_range : float or [lower, upper]
        Zoom factors, drawn independently along rows and columns from [1 - zoom_range, 1 + zoom_range] or
        [lower, upper]; factors above 1 zoom out.
    horizontal_flip, vertical_flip : bool
        Flip each image left-right / top-bottom with probability 1/2.
    fill_mode : {"nearest", "constant", "reflect", "wrap"}
        How points outside the image are filled: aaaa|abcd|dddd, kkkk|abcd|kkkk (k = ``cval``),
        dcba|abcd|dcba, abcd|abcd|abcd.
    cval : float
        Fill value for ``fill_mode="constant"``.
    rescale : float, optional
        Multiplies the (transformed) images, e.g. ``1 / 255``; None or 0 leaves them as they are.
    data_format : {"channels_last", "channels_first"}
        Image layout, (rows, cols, channels) or (channels, rows, cols).
    validation_split : float
        Fraction of the data in the "validation" ``subset`` of :meth:`flow` and :meth:`flow_from_directory`;
        0 <= validation_split < 1.

    Raises
    ------
    ValueError, TypeError
        For a negative or non-finite range, a float ``zoom_range`` outside [0, 1) or a pair without
        0 < lower <= upper, an unknown ``fill_mode`` or ``data_format``, or ``validation_split`` outside [0, 1).

    Notes
    -----
    Transforms compose as in Keras's ``apply_affine_transform`` (the tests check the matrices against its
    construction), with two departures. Keras draws ``tx`` from ``height_shift_range`` scaled by the height but
    its warp applies ``tx`` along columns, and it turns images about (row, col) = ((W - 1) / 2, (H - 1) / 2),
    the transposed centre. Here ``width_shift_range`` moves images horizontally by a fraction of their width,
    as Keras documents, and rotations turn about the true centre. On square images with equal shift ranges
    the two agree.

    Examples
    --------
    >>> gen = ImageDataGenerator(horizontal_flip=True, rescale=1 / 255)
    >>> x = np.zeros((10, 8, 8, 1), dtype=np.uint8)
    >>> xb, yb = next(gen.flow(x, np.arange(10), batch_size=4, seed=0))
    >>> xb.shape, xb.dtype, yb.shape
    ((4, 8, 8, 1), dtype('float32'), (4,))
    """

    def __init__(self, rotation_range=0, width_shift_range=0.0, height_shift_range=0.0, shear_range=0.0,
                 zoom_range=0.0, horizontal_flip=False, vertical_flip=False, fill_mode="nearest", cval=0.0,
                 rescale=None, data_format="channels_last", validation_split=0.0):
        self.rotation_range = check.real(rotation_range, "rotation_range", minimum=0.0)
        self.width_shift_range = width_shift_range
        self.height_shift_range = height_shift_range
        self._width_shift = _shift_spec(width_shift_range, "width_shift_range")
        self._height_shift = _shift_spec(height_shift_range, "height_shift_range")
        self.shear_range = check.real(shear_range, "shear_range", minimum=0.0)
        self.zoom_range = _zoom_spec(zoom_range)
        self.horizontal_flip = check.flag(horizontal_flip, "horizontal_flip")
        self.vertical_flip = check.flag(vertical_flip, "vertical_flip")
        self.fill_mode = check.choice(fill_mode, "fill_mode", FILL_MODES)
        self.cval = check.real(cval, "cval")
        self.rescale = None if rescale is None else check.real(rescale, "rescale")
        self.data_format = check.data_format(data_format)
        self.validation_split = check.real(validation_split, "validation_split", minimum=0.0, below=1.0)
        self.dtype = np.dtype(np.float32)
        self._rng = np.random.default_rng()
        if self.data_format == "channels_last":
            self.row_axis, self.col_axis, self.channel_axis = 1, 2, 3
        else:
            self.row_axis, self.col_axis, self.channel_axis = 2, 3, 1

    # ---- random parameters --------------------------------------------------------------------------------

    @property
    def _warps(self):
        """Whether any affine part (beyond flips) is switched on."""
        return bool(self.rotation_range or self.shear_range or self._width_shift[1] != "none"
                    or self._height_shift[1] != "none" or self.zoom_range != (1.0, 1.0))

    @staticmethod
    def _draw_shift(spec, n, size, rng):
        values, kind, is_fraction = spec
        if kind == "none":
            return np.zeros(n)
        if kind == "uniform":
            shift = rng.uniform(-values[0], values[0], n)
        else:
            shift = rng.choice(values, n) * rng.choice(np.array([-1.0, 1.0]), n)
        return shift * size if is_fraction else shift

    def _draw(self, n, rows, cols, rng):
        """Per-image transform parameters for ``n`` images of ``rows x cols`` pixels, as arrays."""
        zero = np.zeros(n)
        theta = rng.uniform(-self.rotation_range, self.rotation_range, n) if self.rotation_range else zero
        ty = self._draw_shift(self._height_shift, n, rows, rng)
        tx = self._draw_shift(self._width_shift, n, cols, rng)
        shear = rng.uniform(-self.shear_range, self.shear_range, n) if self.shear_range else zero
        if self.zoom_range == (1.0, 1.0):
            zx = zy = np.ones(n)
        else:
            zx, zy = rng.uniform(self.zoom_range[0], self.zoom_range[1], (2, n))
        flip_h = (rng.random(n) < 0.5) & self.horizontal_flip
        flip_v = (rng.random(n) < 0.5) & self.vertical_flip
        return {"theta": theta, "tx": tx, "ty": ty, "shear": shear, "zx": zx, "zy": zy,
                "flip_horizontal": flip_h, "flip_vertical": flip_v}

    def _image_size(self, shape, name):
        if len(shape) != 3:
            raise ValueError(f"{name} must be a single 3-D image ({self._layout_text()}); "
                             f"received {name} with shape {tuple(shape)}")
        return shape[self.row_axis - 1], shape[self.col_axis - 1]

    def _layout_text(self):
        return "rows, cols, channels" if self.data_format == "channels_last" else "channels, rows, cols"

    def get_random_transform(self, img_shape, seed=None):
        """Draw random transform parameters for one image, as Keras does.

        Parameters
        ----------
        img_shape : tuple of int
            Shape of the single image, in ``data_format`` layout.
        seed : int, optional
            Seed for this draw; otherwise the generator's own random stream is used.

        Returns
        -------
        dict
            ``theta`` (degrees), ``tx``, ``ty`` (pixels along columns / rows), ``shear`` (degrees), ``zx``,
            ``zy``, ``flip_horizontal``, ``flip_vertical``: the keys :meth:`apply_transform` takes.
        """
        rows, cols = self._image_size(img_shape, "img_shape")
        rng = self._rng if seed is None else np.random.default_rng(check.seed(seed))
        params = self._draw(1, rows, cols, rng)
        return {k: (bool(v[0]) if k.startswith("flip") else float(v[0])) for k, v in params.items()}

    # ---- applying transforms ------------------------------------------------------------------------------

    def _transform_batch(self, x, params):
        """Warp a float batch (in ``data_format``) with per-image parameter arrays."""
        rows, cols = x.shape[self.row_axis], x.shape[self.col_axis]
        affine = any(np.any(params[k] != _IDENTITY[k]) for k in ("theta", "tx", "ty", "shear", "zx", "zy"))
        if affine:
            matrices = affine_matrices(rows, cols, **params)
            return warp_affine(x, matrices, self.fill_mode, self.cval, self.data_format)
        # flips alone are exact permutations: plain slicing on a float copy
        x = x.astype(x.dtype if x.dtype in (np.float32, np.float64) else self.dtype)
        fh, fv = np.asarray(params["flip_horizontal"], bool), np.asarray(params["flip_vertical"], bool)
        col_slice = [slice(None)] * 4
        col_slice[self.col_axis] = slice(None, None, -1)
        row_slice = [slice(None)] * 4
        row_slice[self.row_axis] = slice(None, None, -1)
        if fh.any():
            x[fh] = x[fh][tuple(col_slice)]
        if fv.any():
            x[fv] = x[fv][tuple(row_slice)]
        return x

    def apply_transform(self, x, transform_parameters):
        """Apply given transform parameters to one image, as Keras's ``apply_transform``.

        Parameters
        ----------
        x : array_like, shape (rows, cols, channels) or (channels, rows, cols)
            A single image in ``data_format`` layout.
        transform_parameters : dict
            Any of ``theta`` (rotation in degrees, counter-clockwise: 90 gives ``np.rot90``), ``tx`` / ``ty``
            (shift in pixels along columns / rows; positive values sample from the right / below, moving the
            content left / up), ``shear`` (degrees), ``zx`` / ``zy`` (zoom along columns / rows, > 1 zooms out),
            ``flip_horizontal``, ``flip_vertical``. Missing keys mean no change.

        Returns
        -------
        ndarray
            The transformed image, same shape, float32 (float64 for float64 input).

        Raises
        ------
        ValueError
            For an image that is not 3-D or an unknown key.

        Examples
        --------
        >>> img = np.arange(9.0).reshape(3, 3, 1)
        >>> np.array_equal(ImageDataGenerator().apply_transform(img, {"theta": 90}), np.rot90(img))
        True
        """
        x = np.asarray(x)
        self._image_size(x.shape, "x")
        if not isinstance(transform_parameters, Mapping):
            raise TypeError("transform_parameters must be a dict; "
                            f"received transform_parameters={transform_parameters!r}")
        unknown = sorted(set(transform_parameters) - set(_TRANSFORM_KEYS)
                         - {k for k in ("channel_shift_intensity", "brightness")
                            if k in transform_parameters and transform_parameters[k] is None})
        if unknown:
            raise ValueError(f"transform_parameters has unknown keys {unknown} (known: {list(_TRANSFORM_KEYS)}); "
                             f"received transform_parameters={transform_parameters!r}")
        params = {k: np.array([transform_parameters.get(k, _IDENTITY[k])]) for k in _TRANSFORM_KEYS}
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else self.dtype
        return self._transform_batch(x[None].astype(dtype, copy=False), params)[0]

    def random_transform(self, x, seed=None):
        """Apply a random transformation (drawn with :meth:`get_random_transform`) to one image.

        Parameters
        ----------
        x : array_like, shape (rows, cols, channels) or (channels, rows, cols)
        seed : int, optional
            Makes the draw reproducible.

        Returns
        -------
        ndarray
            Same shape as ``x``, float32 (float64 for float64 input). ``rescale`` is not applied
            (see :meth:`standardize`).
        """
        x = np.asarray(x)
        return self.apply_transform(x, self.get_random_transform(x.shape, seed))

    def standardize(self, x):
        """Apply ``rescale`` to an image or batch; returns a new array (Keras works in place).

        Examples
        --------
        >>> ImageDataGenerator(rescale=0.5).standardize(np.full((1, 1, 1), 4.0, np.float32))
        array([[[2.]]], dtype=float32)
        """
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(self.dtype)
        if self.rescale:
            x = x * x.dtype.type(self.rescale)
        return x

    def _augment(self, x, rng):
        """Random transforms and ``rescale`` for a batch in ``data_format`` layout, as float32 (iterators call it).

        ``x`` must be a fresh array the caller gives up (it may be scaled in place) of any real dtype: integer
        images go straight into the warp's float32 buffers without an intermediate float copy.
        """
        if x.dtype != self.dtype and x.dtype.kind == "f":
            x = x.astype(self.dtype)
        if self._warps or self.horizontal_flip or self.vertical_flip:
            params = self._draw(len(x), x.shape[self.row_axis], x.shape[self.col_axis], rng)
            x = self._transform_batch(x, params)
        else:
            x = x.astype(self.dtype, copy=False)
        if self.rescale:
            x *= x.dtype.type(self.rescale)         # x is always a fresh float array here: scale in place
        return x

    # ---- iterators ----------------------------------------------------------------------------------------

    def flow(self, x, y=None, batch_size=32, shuffle=True, seed=None, subset=None, ignore_class_split=False):
        """Endless batches of augmented images from arrays, as Keras's ``flow``.

        Parameters
        ----------
        x : array_like, shape (n, rows, cols, channels) or (n, channels, rows, cols)
            Images in ``data_format`` layout; any numeric dtype (batches come out float32).
        y : array_like, optional
            Labels, ``len(y) == n``. Without them the iterator yields image batches alone.
        batch_size : int
        shuffle : bool
            Reshuffle the samples at the start of every epoch.
        seed : int, optional
            Makes shuffling and augmentation reproducible.
        subset : {"training", "validation"}, optional
            With ``validation_split``: the last ``1 - validation_split`` or the first ``validation_split`` of x.
        ignore_class_split : bool
            Skip the check that both subsets hold the same classes.

        Returns
        -------
        NumpyArrayIterator
            ``len(it) == ceil(n / batch_size)`` batches per epoch; iterating yields ``(x_batch, y_batch)``
            (float32 images) forever.
        """
        return NumpyArrayIterator(x, y, self, batch_size=batch_size, shuffle=shuffle, seed=seed, subset=subset,
                                  ignore_class_split=ignore_class_split)

    def flow_from_directory(self, directory, target_size=(256, 256), color_mode="rgb", classes=None,
                            class_mode="categorical", batch_size=32, shuffle=True, seed=None,
                            interpolation="bilinear", subset=None):
        """Endless batches of augmented images read from one sub-folder per class, as Keras's method.

        Parameters
        ----------
        directory : str or path-like
            Holds one sub-folder per class (searched recursively for .png, .jpg, .jpeg, .bmp, .ppm, .tif, .tiff).
        target_size : (int, int)
            (rows, cols) every image is resized to.
        color_mode : {"rgb", "rgba", "grayscale"}
        classes : list of str, optional
            Sub-folder names, in label order; default: every sub-folder, sorted.
        class_mode : {"categorical", "binary", "sparse", "input", None}
            Labels: one-hot float32 rows, float32 0/1 (two classes), float32 class indices, the images
            themselves, or none (batches of images alone).
        batch_size : int
        shuffle : bool
        seed : int, optional
        interpolation : {"nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"}
            Pillow resampling filter used for resizing.
        subset : {"training", "validation"}, optional
            With ``validation_split``: per class, the first ``validation_split`` of the sorted files are the
            validation subset and the rest the training subset.

        Returns
        -------
        DirectoryIterator
            With ``class_indices``, ``classes``, ``filenames``, ``filepaths``, ``samples``, ``num_classes``.

        Raises
        ------
        ImportError
            Without Pillow (``pip install Pillow``).
        FileNotFoundError, ValueError
            For a missing directory, one with no class sub-folders, or a class folder without images.
        OSError
            When a batch meets a file Pillow cannot read; the message names the file.
        """
        return DirectoryIterator(directory, self, target_size=target_size, color_mode=color_mode, classes=classes,
                                 class_mode=class_mode, batch_size=batch_size, shuffle=shuffle, seed=seed,
                                 interpolation=interpolation, subset=subset)
