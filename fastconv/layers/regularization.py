"""Regularization layers."""
import numpy as np

from fastconv import utils
from fastconv.layers import _arguments as args
from fastconv.layers.base import Layer

__all__ = ["Dropout"]


class Dropout(Layer):
    """Dropout, Keras's ``Dropout``: in training, each input is zeroed with probability ``rate`` and the rest
    are scaled by ``1 / (1 - rate)``; at inference it is the identity.

    Parameters
    ----------
    rate : float
        In [0, 1).
    seed : int, optional
        Seeds this layer's own generator (so its masks do not depend on anything else). Without a seed, the
        masks come from ``fit(..., seed=...)`` when given, else from fastconv's global generator.
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Dropout
    >>> drop = Dropout(0.5, seed=0)
    >>> x = np.ones((1, 8), dtype=np.float32)
    >>> bool((drop(x) == x).all()), sorted(set(drop(x, training=True).ravel().tolist()))
    (True, [0.0, 2.0])
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = args.rate(rate)
        self.seed = utils.check_seed(seed)
        self._generator = None if self.seed is None else np.random.default_rng(self.seed)

    def set_generator(self, generator):
        """Draw the masks from ``generator`` from now on (``fit`` uses it to make its seed cover dropout)."""
        self._generator = generator

    def call(self, x, training=False):
        if not training or self.rate == 0:
            self._cache = (None, None) if self._keep_state(training) else None
            return x
        if self._generator is None:
            self._generator = utils.generator()
        keep = self._generator.random(x.shape, dtype=x.dtype) >= x.dtype.type(self.rate)
        keep_prob = x.dtype.type(1 - self.rate)
        self._cache = (keep, keep_prob)
        out = x / keep_prob            # Keras: where(keep, x / keep_prob, 0)
        out *= keep
        return out

    def backward(self, grad_output, need_input_grad=True):
        keep, keep_prob = self._cached()
        if not need_input_grad:
            return None, []
        if keep is None:
            return grad_output, []
        grad = grad_output / keep_prob
        grad *= keep
        return grad, []

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
