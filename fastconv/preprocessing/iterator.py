"""Batch iterators in Keras's style: epochs of shuffled index batches, and the one over in-memory arrays.

Randomness is counter-based: the order of epoch ``e`` comes from ``SeedSequence([seed, 0, e])`` and the
augmentation of batch ``i`` of epoch ``e`` from ``SeedSequence([seed, 1, e, i])``. A seeded iterator therefore
yields the same batches whether it is consumed with ``next()`` or indexed with ``it[i]``, in any order.
"""
import operator
import threading
import warnings

import numpy as np

from fastconv.preprocessing import _checks as check

__all__ = ["Iterator", "NumpyArrayIterator"]


class Iterator:
    """Base class: ``n`` samples served in batches, forever, reshuffled every epoch when ``shuffle``.

    Subclasses implement ``_get_batch(index_array, rng)``.

    Parameters
    ----------
    n : int
        Number of samples.
    batch_size : int
    shuffle : bool
    seed : int, optional

    Attributes
    ----------
    epoch : int
        Epochs completed through ``next()`` or :meth:`on_epoch_end`.
    batch_index : int
        Position of the next batch ``next()`` returns within the epoch.
    total_batches_seen : int
    index_array : ndarray
        The sample order of the current epoch.
    """

    def __init__(self, n, batch_size, shuffle, seed):
        self.n = int(n)
        self.batch_size = check.positive_int(batch_size, "batch_size")
        self.shuffle = check.flag(shuffle, "shuffle")
        self.seed = check.seed(seed)
        self._entropy = np.random.SeedSequence(self.seed).entropy
        self._lock = threading.Lock()
        self.epoch = 0
        self.batch_index = 0
        self.total_batches_seen = 0
        self.index_array = self._order(0)

    def _order(self, epoch):
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self._entropy, 0, epoch]).permutation(self.n)

    def _batch_rng(self, epoch, index):
        return np.random.default_rng([self._entropy, 1, epoch, index])

    def __len__(self):
        """Batches per epoch: ``ceil(n / batch_size)``; the last one may be smaller."""
        return -(-self.n // self.batch_size)

    def __getitem__(self, index):
        """Batch ``index`` of the current epoch (as Keras's ``PyDataset``)."""
        if check.is_bool(index):
            raise TypeError(f"index must be an int; received index={index!r}")
        try:
            position = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int; received index={index!r}") from None
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(f"index must be in [-{len(self)}, {len(self)}); received index={index!r}")
        index = position
        with self._lock:
            epoch = self.epoch
            samples = self.index_array[index * self.batch_size:(index + 1) * self.batch_size]
        return self._get_batch(samples, self._batch_rng(epoch, index))

    def __iter__(self):
        return self

    def __next__(self):
        with self._lock:
            epoch, index = self.epoch, self.batch_index
            samples = self.index_array[index * self.batch_size:(index + 1) * self.batch_size]
            self.batch_index += 1
            self.total_batches_seen += 1
            if self.batch_index >= len(self):
                self._next_epoch()
        return self._get_batch(samples, self._batch_rng(epoch, index))

    def _next_epoch(self):
        self.epoch += 1
        self.batch_index = 0
        self.index_array = self._order(self.epoch)

    def on_epoch_end(self):
        """Start a new epoch (a new order when ``shuffle``); ``next()`` does this by itself after ``len`` batches."""
        with self._lock:
            self._next_epoch()

    def reset(self):
        """Restart the current epoch from its first batch."""
        with self._lock:
            self.batch_index = 0

    def _get_batch(self, index_array, rng):
        raise NotImplementedError


def _split(n, validation_split, subset):
    """Keras's array split: the first ``int(n * validation_split)`` samples are the validation subset."""
    cut = int(n * validation_split)
    return slice(0, cut) if subset == "validation" else slice(cut, n)


class NumpyArrayIterator(Iterator):
    """Batches of augmented images from in-memory arrays (what :meth:`ImageDataGenerator.flow` returns).

    Parameters
    ----------
    x : array_like, shape (n, rows, cols, channels) or (n, channels, rows, cols)
    y : array_like, optional
    image_data_generator : ImageDataGenerator
    batch_size, shuffle, seed, subset, ignore_class_split
        As in :meth:`ImageDataGenerator.flow`.

    Raises
    ------
    ValueError
        For ``x`` that is not 4-D or is empty, ``len(y) != len(x)``, a bad ``subset``, or training and
        validation subsets that hold different classes (labels sorted by class: shuffle them first).
    TypeError
        For non-numeric ``x``.
    """

    def __init__(self, x, y, image_data_generator, batch_size=32, shuffle=True, seed=None, subset=None,
                 ignore_class_split=False):
        gen = image_data_generator
        x = np.asarray(x)
        if x.ndim != 4:
            layout = ("(n, rows, cols, channels)" if gen.data_format == "channels_last"
                      else "(n, channels, rows, cols)")
            hint = "; for grayscale images add a channel axis, e.g. x[..., None]" if x.ndim == 3 else ""
            raise ValueError(f"x must be a 4-D batch of images {layout}{hint}; received x with shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise TypeError(f"x must hold numbers; received x with dtype {x.dtype}")
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 0 or len(y) != len(x):
                raise ValueError(f"x and y must have the same length; received x with shape {x.shape} and y with "
                                 f"shape {y.shape}")
        subset = check.subset(subset, gen.validation_split)
        ignore_class_split = check.flag(ignore_class_split, "ignore_class_split")
        if subset is not None:
            if y is not None and not ignore_class_split:
                part = _split(len(x), gen.validation_split, "validation")
                rest = _split(len(x), gen.validation_split, "training")
                if not np.array_equal(np.unique(y[part]), np.unique(y[rest])):
                    raise ValueError("the training and validation subsets hold different classes; if x and y are "
                                     "sorted by label, shuffle them first (or pass ignore_class_split=True); "
                                     f"received validation_split={gen.validation_split!r}")
            keep = _split(len(x), gen.validation_split, subset)
            x = x[keep]
            y = None if y is None else y[keep]
        if len(x) == 0:
            raise ValueError(f"x holds no images{' in subset ' + repr(subset) if subset else ''}; "
                             f"received x with shape {x.shape}")
        channels = x.shape[gen.channel_axis]
        if channels not in (1, 3, 4):
            warnings.warn(f"data_format={gen.data_format!r} puts channels on axis {gen.channel_axis}, which has "
                          f"{channels} entries in x with shape {x.shape} (1, 3 or 4 expected)", stacklevel=3)
        self.x = x
        self.y = y
        self.image_data_generator = gen
        self.data_format = gen.data_format
        self.subset = subset
        super().__init__(len(x), batch_size, shuffle, seed)

    def _get_batch(self, index_array, rng):
        batch_x = self.image_data_generator._augment(self.x[index_array], rng)   # fancy indexing: a fresh copy
        if self.y is None:
            return batch_x
        return batch_x, self.y[index_array]
