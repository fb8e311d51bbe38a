"""Validated call signatures, remembered: the functional API's fast path for calls it has seen before.

A layer calls the functional API with arrays of the same shapes and dtypes, and the same options, every step.
Checking them (option values, shapes, dtypes, sizes) is a pure function of that signature: the same signature
always passes, with the same problem and compute dtype, or always fails. Validating it anew took about 15 of a
small convolution's 48 us (nearly all of it Python bytecode). So each conv function validates a signature once
and remembers what it derived; later calls with that signature look it up.

Only exact ``numpy.ndarray`` arguments (not subclasses, not lists) and plain option values
(:func:`fastconv._problem._plain`) form a signature; any other call is validated every time. What depends on the
values, or on more than the signature, is never remembered: an ``out=`` buffer's checks, finiteness, thread
counts and the planning (which tests and tuning scripts patch at run time).
"""
import numpy as np

from fastconv._problem import _plain

# Signatures remembered per function (all forgotten when full: a training loop uses a few dozen).
REMEMBERED_CALLS = 512


def signature(arrays, options):
    """The memo key of a call: the shape and dtype of each array (or None), the option values and their types;
    None where an argument is neither an exact ndarray nor None, or an option value is not plain."""
    parts = []
    for a in arrays:
        if a is None:
            parts.append(None)
        elif type(a) is np.ndarray:
            parts.append((a.shape, a.dtype))
        else:
            return None
    if not all(map(_plain, options)):
        return None
    return tuple(parts), options, tuple(map(type, options))


class CallMemo:
    """What one function derived from each signature it validated (at most REMEMBERED_CALLS of them)."""

    def __init__(self):
        self._table = {}

    def get(self, key):
        return None if key is None else self._table.get(key)

    def put(self, key, value):
        if key is None:
            return
        if len(self._table) >= REMEMBERED_CALLS:
            self._table.clear()
        self._table[key] = value

    def clear(self):
        self._table.clear()

    def __len__(self):
        return len(self._table)
