"""Batching for fit/evaluate/predict: NumPy arrays, or a data generator, behind one interface.

A *data generator* is anything that is not an array and can be iterated for batches: a Keras-style iterator
such as ``ImageDataGenerator().flow(x, y)`` (endless, with ``__len__`` = batches per epoch), a ``Sequence``-like
object (``__len__`` and ``__getitem__``), a finite iterable re-iterated each epoch (a list of batches, a
DataLoader-like object), or a one-shot Python generator. For ``fit``/``evaluate`` each item is an ``(x, y)``
pair; for ``predict`` it is ``x`` or a tuple starting with ``x``.

Steps per epoch are ``steps_per_epoch`` when given, else ``len(generator)``, else "until it stops". When an
epoch needs more batches than the iterator has, a re-iterable source is started again (``iter(source)``); a
one-shot generator that runs dry ends training with a warning, as in Keras.
"""
import math

import numpy as np


def is_generator(x):
    """True for a data generator, False for array-like data."""
    if isinstance(x, (np.ndarray, list, tuple, int, float)) or x is None:
        return False
    return hasattr(x, "__next__") or hasattr(x, "__iter__") or hasattr(x, "__getitem__") and hasattr(x, "__len__")


def num_samples(array):
    """Rows of an array (of the first array of a list, for models with several inputs)."""
    if isinstance(array, (list, tuple)):
        return num_samples(array[0]) if array else 0
    return array.shape[0] if array.ndim else 0


def _rows(data, rows):
    """``data[rows]`` for an array, or for each array of a list (None entries stay None)."""
    if data is None:
        return None
    if isinstance(data, (list, tuple)):
        return [None if a is None else a[rows] for a in data]
    return data[rows]


class ArrayBatches:
    """Batches of in-memory arrays, optionally reshuffled every epoch.

    Epoch ``e``'s order comes from ``(seed, e)`` alone, not from a generator carried across epochs, so a run
    resumed at ``initial_epoch=k`` shuffles epoch ``k`` exactly as the uninterrupted run did.

    Batches are views when not shuffling and copies of ``batch_size`` rows when shuffling: memory stays bounded by
    one batch beyond the data itself. ``x`` keeps its dtype (uint8 images stay uint8 until the model casts each
    batch to float32).
    """

    def __init__(self, x, y, batch_size, shuffle=False, seed=0):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.exhausted = False

    @property
    def n(self):
        return num_samples(self.x)

    @property
    def steps(self):
        return math.ceil(self.n / self.batch_size)

    def epoch(self, index=0):
        order = np.random.default_rng([self.seed, index]).permutation(self.n) if self.shuffle else None
        for start in range(0, self.n, self.batch_size):
            rows = slice(start, start + self.batch_size) if order is None else order[start:start + self.batch_size]
            yield _rows(self.x, rows), _rows(self.y, rows)


class GeneratorBatches:
    """Batches drawn from a data generator (see the module notes)."""

    def __init__(self, source, steps=None, mode="fit", n_inputs=1, n_outputs=1):
        self.source = source
        self.n_inputs, self.n_outputs = n_inputs, n_outputs
        if steps is None:
            try:
                steps = len(source)
            except TypeError:
                steps = None
        self.steps = steps
        self.mode = mode
        self.exhausted = False
        self._iterator = None
        self._index = 0

    def _reiterable(self):
        return not hasattr(self.source, "__next__") or iter(self.source) is not self.source

    def _restart(self):
        if hasattr(self.source, "__iter__"):
            self._iterator = iter(self.source)
        else:  # a Sequence: __len__ and __getitem__ only
            self._iterator = (self.source[i] for i in range(len(self.source)))

    def _next(self):
        """The next raw item, restarting a re-iterable source once; None when out of data."""
        if self._iterator is None:
            self._restart()
        try:
            return next(self._iterator)
        except StopIteration:
            pass
        if not self._reiterable():
            return None
        self._restart()
        try:
            return next(self._iterator)
        except StopIteration:
            return None

    def epoch(self, index=0):
        """One epoch's batches (``index`` is unused: the generator decides its own order)."""
        produced = 0
        while self.steps is None or produced < self.steps:
            if self.steps is None and produced > 0:
                # Natural end of an epoch for sources without a length.
                try:
                    item = next(self._iterator)
                except StopIteration:
                    self._iterator = None
                    return
            else:
                item = self._next()
                if item is None:
                    self.exhausted = True
                    return
            produced += 1
            yield self._split(item)

    @staticmethod
    def _arrays(value, count):
        """One array, or a list of ``count`` arrays for a model with several inputs (outputs)."""
        if count > 1 and isinstance(value, (list, tuple)):
            return [None if v is None else np.asarray(v) for v in value]
        if count > 1 and isinstance(value, dict):
            return value
        return np.asarray(value)

    def _split(self, item):
        if self.mode == "predict":
            if self.n_inputs > 1:
                if isinstance(item, tuple) and len(item) in (1, 2, 3) and isinstance(item[0], (list, dict)):
                    item = item[0]
                return self._arrays(item, self.n_inputs), None
            if isinstance(item, (tuple, list)) and not isinstance(item, np.ndarray):
                return np.asarray(item[0]), None
            return np.asarray(item), None
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(f"a data generator for fit/evaluate must yield (x, y) pairs; received an item of type "
                             f"{type(item).__name__}")
        if len(item) == 3:
            raise ValueError("sample weights are not supported: the data generator must yield (x, y) pairs; "
                             "received (x, y, sample_weight) triples")
        return self._arrays(item[0], self.n_inputs), self._arrays(item[1], self.n_outputs)
