"""Small helpers shared by the layer and model floors: the global random state.

fastconv never touches NumPy's legacy global ``np.random`` state for its own randomness. Weight initializers,
dropout masks and shuffling draw from ``numpy.random.Generator`` objects: an explicit seed gives an explicit
generator, and everything unseeded draws from one process-wide generator that :func:`set_random_seed` resets
(the counterpart of ``keras.utils.set_random_seed``).
"""
import contextlib
import random

import numpy as np

__all__ = ["set_random_seed"]

_global_generator = np.random.default_rng()


def set_random_seed(seed):
    """Seed every random draw fastconv makes without an explicit seed (and Python's and NumPy's legacy ones).

    After ``set_random_seed(s)``, building the same model again gives the same initial weights, and unseeded
    ``Dropout`` layers and ``fit(..., seed=None)`` shuffle the same way.

    Parameters
    ----------
    seed : int
        A non-negative int.

    Raises
    ------
    TypeError
        If ``seed`` is not an int.
    ValueError
        If ``seed`` is negative.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.utils.set_random_seed(0)
    >>> a = fastconv.layers.Dense(2); a.build((None, 3))
    >>> fastconv.utils.set_random_seed(0)
    >>> b = fastconv.layers.Dense(2); b.build((None, 3))
    >>> bool((a.get_weights()[0] == b.get_weights()[0]).all())
    True
    """
    global _global_generator
    seed = check_seed(seed)
    _global_generator = np.random.default_rng(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def check_seed(seed, name="seed"):
    """``seed`` as a non-negative int (or None, passed through)."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name} must be an int or None; received {name}={seed!r}")
    if seed < 0:
        raise ValueError(f"{name} must be non-negative; received {name}={seed!r}")
    return int(seed)


def global_generator():
    """The process-wide generator unseeded draws use."""
    return _global_generator


def generator(seed=None):
    """A new generator: from ``seed``, or spawned from the global generator when ``seed`` is None."""
    if seed is None:
        return np.random.default_rng(_global_generator.integers(0, 2**63))
    return np.random.default_rng(seed)


@contextlib.contextmanager
def seeded_global_generator(rng):
    """Temporarily draw every unseeded value from ``rng`` (``None``: leave the global generator alone)."""
    global _global_generator
    if rng is None:
        yield
        return
    saved = _global_generator
    _global_generator = rng
    try:
        yield
    finally:
        _global_generator = saved
