"""What the ImageNet applications share: the input preprocessing their published weights expect, and the rules
for their input shapes (Keras's ``keras.applications.imagenet_utils``).

>>> import numpy as np
>>> from fastconv.applications.imagenet_utils import preprocess_input
>>> preprocess_input(np.array([[[255, 0, 0]]], dtype=np.uint8))     # RGB red -> BGR, ImageNet means removed
array([[[-103.939, -116.779,  131.32 ]]], dtype=float32)
"""
import numpy as np

from fastconv import activations

__all__ = ["preprocess_input", "obtain_input_shape", "validate_activation"]

# Per-channel ImageNet statistics: caffe's means are in BGR order (the original VGG weights were trained on BGR
# images in 0..255), torch's means and standard deviations in RGB order on 0..1.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)
_MODES = ("caffe", "tf", "torch")


def _data_format(value):
    if value is None:
        return "channels_last"
    if value in ("channels_last", "channels_first"):
        return value
    raise ValueError(f'data_format must be "channels_last", "channels_first" or None; received data_format={value!r}')


def preprocess_input(x, data_format=None, mode="caffe"):
    """Prepare a batch of RGB images (values 0..255) for a network trained on ImageNet, as Keras does.

    Parameters
    ----------
    x : array_like, shape (N, H, W, 3) or (H, W, 3); (N, 3, H, W) or (3, H, W) with channels_first
        Any real dtype; integers (``uint8`` images) become float32, float16 becomes float32, float32 and float64
        are kept.
    data_format : {"channels_last", "channels_first"}, optional
        None means "channels_last".
    mode : {"caffe", "tf", "torch"}
        ``"caffe"`` (VGG16, ResNet50): RGB -> BGR, then each channel minus its ImageNet mean, no scaling.
        ``"tf"``: scaled to -1..1. ``"torch"``: scaled to 0..1, then standardised per RGB channel.

    Returns
    -------
    numpy.ndarray
        A new array, same shape; ``x`` is never modified (Keras modifies a float array in place).

    Raises
    ------
    ValueError
        For a shape without a 3-channel axis where ``data_format`` puts it, or a bad ``data_format``/``mode``.
    TypeError
        For non-real input (strings, objects, complex numbers).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.applications.imagenet_utils import preprocess_input
    >>> x = np.full((1, 3, 2, 2), 255, dtype=np.uint8)
    >>> preprocess_input(x, data_format="channels_first", mode="tf")[0, :, 0, 0]
    array([1., 1., 1.], dtype=float32)
    """
    data_format = _data_format(data_format)
    if mode not in _MODES:
        raise ValueError(f'mode must be "caffe", "tf" or "torch"; received mode={mode!r}')
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"x must be an array of images; received x of type {type(x).__name__}") from exc
    if array.dtype.kind not in "biuf":
        raise TypeError(f"x must hold real numbers; received x with dtype {array.dtype}")
    if array.ndim not in (3, 4):
        raise ValueError(f"x must be one image (3 dims) or a batch (4 dims); received x with shape {array.shape}")
    axis = -1 if data_format == "channels_last" else array.ndim - 3
    if array.shape[axis] != 3:
        raise ValueError(f"x must have 3 (RGB) channels on axis {axis} for {data_format}; received x with shape "
                         f"{array.shape}")
    dtype = array.dtype if array.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    # Per-channel constants shaped to broadcast along the channel axis.
    channel_shape = [1] * array.ndim
    channel_shape[axis] = 3

    def per_channel(values):
        return np.asarray(values, dtype=dtype).reshape(channel_shape)

    if mode == "tf":
        out = array.astype(dtype, copy=True)
        out /= dtype.type(127.5)
        out -= dtype.type(1.0)
        return out
    if mode == "torch":
        out = array.astype(dtype, copy=True)
        out /= dtype.type(255.0)
        out -= per_channel(_TORCH_MEAN_RGB)
        out /= per_channel(_TORCH_STD_RGB)
        return out
    out = np.flip(array, axis=axis).astype(dtype, copy=True)  # RGB -> BGR
    out -= per_channel(_CAFFE_MEAN_BGR)
    return out


def obtain_input_shape(input_shape, default_size, min_size, require_flatten, weights=None):
    """The input shape (one sample, channels_last) an application network is built for, checked as Keras checks
    it.

    Parameters
    ----------
    input_shape : tuple of 3 (int or None), optional
        ``(height, width, channels)``; None picks the default: ``(default_size, default_size, 3)`` with a
        flattening top, else ``(None, None, 3)`` (any image size).
    default_size, min_size : int
        The size the published weights were trained at, and the smallest image the network accepts.
    require_flatten : bool
        The network ends in ``Flatten`` + ``Dense`` (``include_top=True``): every dimension must be known.
    weights : None, "imagenet" or a path
        With ``"imagenet"`` the image must have 3 channels, and with a flattening top it must be the default size.

    Returns
    -------
    tuple

    Raises
    ------
    ValueError
        For a shape the network cannot take.

    Examples
    --------
    >>> from fastconv.applications.imagenet_utils import obtain_input_shape
    >>> obtain_input_shape(None, 224, 32, require_flatten=False, weights="imagenet")
    (None, None, 3)
    >>> obtain_input_shape((64, 48, 3), 224, 32, require_flatten=False, weights="imagenet")
    (64, 48, 3)
    """
    default_shape = (default_size, default_size, 3)
    if input_shape is not None:
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3 or any(
                d is not None and (isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 1)
                for d in input_shape):
            raise ValueError(f"input_shape must be a tuple of three positive ints (or None for a free size), "
                             f"(height, width, channels); received input_shape={input_shape!r}")
        input_shape = tuple(None if d is None else int(d) for d in input_shape)
        if weights != "imagenet" and input_shape[-1] is not None:
            default_shape = (default_size, default_size, input_shape[-1])
    if weights == "imagenet" and require_flatten:
        if input_shape is not None and input_shape != default_shape:
            raise ValueError(f"with include_top=True and weights='imagenet', input_shape must be {default_shape}; "
                             f"received input_shape={input_shape!r}")
        return default_shape
    if input_shape is None:
        return default_shape if require_flatten else (None, None, 3)
    if weights == "imagenet" and input_shape[-1] != 3:
        raise ValueError(f"with weights='imagenet' the input must have 3 channels; received "
                         f"input_shape={input_shape!r}")
    if any(d is not None and d < min_size for d in input_shape[:2]):
        raise ValueError(f"the input must be at least {min_size}x{min_size}; received input_shape={input_shape!r}")
    if input_shape[-1] is None:
        raise ValueError(f"the number of input channels must be known; received input_shape={input_shape!r}")
    if require_flatten and None in input_shape:
        raise ValueError(f"with include_top=True every input dimension must be known (the top flattens it); "
                         f"received input_shape={input_shape!r}")
    return input_shape


def validate_activation(classifier_activation, weights):
    """Check the activation of a classifier head: pretrained weights allow only ``None`` and ``"softmax"``.

    Returns
    -------
    fastconv.activations.Activation

    Raises
    ------
    ValueError
        For another activation with ``weights`` not None, or an unknown name.

    Examples
    --------
    >>> from fastconv.applications.imagenet_utils import validate_activation
    >>> validate_activation("softmax", "imagenet").name
    'softmax'
    """
    activation = activations.get(classifier_activation)
    if weights is not None and activation.name not in ("softmax", "linear"):
        raise ValueError(f"with pretrained weights classifier_activation must be None or 'softmax'; received "
                         f"classifier_activation={classifier_activation!r}")
    return activation
