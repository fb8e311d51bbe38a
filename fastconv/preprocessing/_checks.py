"""Argument checks for fastconv.preprocessing: each names the argument and ends with the value received."""
import numbers
import operator

import numpy as np

DATA_FORMATS = ("channels_last", "channels_first")


def is_bool(value):
    return isinstance(value, (bool, np.bool_))


def real(value, name, minimum=None, below=None):
    """A real number (not a bool), optionally >= minimum and < below."""
    if is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; received {name}={value!r}")
    value = float(value)
    if not np.isfinite(value) or (minimum is not None and value < minimum) or (below is not None and value >= below):
        bounds = [f">= {minimum}" if minimum is not None else "", f"< {below}" if below is not None else ""]
        bounds = " and ".join(b for b in bounds if b) or "finite"
        raise ValueError(f"{name} must be {bounds}; received {name}={value!r}")
    return value


def positive_int(value, name):
    if is_bool(value):
        raise TypeError(f"{name} must be a positive int; received {name}={value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive int; received {name}={value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive int; received {name}={value!r}")
    return value


def flag(value, name):
    if not is_bool(value):
        raise TypeError(f"{name} must be True or False; received {name}={value!r}")
    return bool(value)


def seed(value, name="seed"):
    """None or a non-negative int, as numpy.random.SeedSequence takes it."""
    if value is None:
        return None
    if is_bool(value):
        raise TypeError(f"{name} must be None or a non-negative int; received {name}={value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be None or a non-negative int; received {name}={value!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be None or a non-negative int; received {name}={value!r}")
    return value


def choice(value, name, options):
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(f"{name} must be one of {listed}; received {name}={value!r}")
    return value


def data_format(value):
    return choice(value, "data_format", DATA_FORMATS)


def subset(value, validation_split):
    """None, "training" or "validation"; a subset needs a validation_split."""
    if value is None:
        return None
    choice(value, "subset", ("training", "validation"))
    if validation_split == 0:
        raise ValueError(f"subset={value!r} needs a generator made with validation_split > 0; "
                         f"received validation_split={validation_split!r}")
    return value
