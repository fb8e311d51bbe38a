"""Reading image files with Pillow, an optional dependency imported only here and only when needed."""
import numpy as np

COLOR_MODES = {"rgb": ("RGB", 3), "rgba": ("RGBA", 4), "grayscale": ("L", 1)}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def require_pillow():
    """The ``PIL.Image`` module, or an ImportError that says what to install."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("reading image files needs Pillow, which is not installed: pip install Pillow") from exc
    return Image


def refuse_bombs(Image, img):
    """Raise ``DecompressionBombError`` for an opened image with more pixels than ``Image.MAX_IMAGE_PIXELS``.
    Pillow only warns between its limit and twice it; a small hostile file must not make us decode (and convert
    to float32) hundreds of millions of pixels."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.size[0] * img.size[1] > limit:
        raise Image.DecompressionBombError(f"the image has {img.size[0]}x{img.size[1]} pixels, more than "
                                           f"PIL.Image.MAX_IMAGE_PIXELS={limit}")


def _resample(Image, interpolation):
    filters = getattr(Image, "Resampling", Image)         # Pillow >= 9.1 has the Resampling enum
    return getattr(filters, interpolation.upper())


def load_image(path, color_mode, target_size, interpolation):
    """One image file as a float32 (rows, cols, channels) array, converted and resized.

    Parameters
    ----------
    path : str
    color_mode : {"rgb", "rgba", "grayscale"}
    target_size : (int, int)
        (rows, cols).
    interpolation : str
        One of ``INTERPOLATIONS``.

    Raises
    ------
    OSError
        When Pillow cannot open or decode the file (missing, truncated, not an image), or when it has more pixels
        than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb); the message names it.
    """
    Image = require_pillow()
    mode, channels = COLOR_MODES[color_mode]
    rows, cols = target_size
    try:
        with Image.open(path) as img:
            refuse_bombs(Image, img)
            img = img.convert(mode)                           # decodes the whole file: corrupt data fails here
            if img.size != (cols, rows):
                img = img.resize((cols, rows), _resample(Image, interpolation))
            array = np.asarray(img, dtype=np.float32)
    except Exception as exc:            # Pillow raises OSError, SyntaxError, ValueError, ... for bad files
        raise OSError(f"cannot read image file {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    return array.reshape(rows, cols, channels)
