"""Normalisation of layer constructor arguments, done once, up front (Keras's ``standardize_*`` helpers).

Each helper returns the canonical value or raises ``ValueError`` (bad value) / ``TypeError`` (bad type) with a
message that names the argument and ends with the value received.
"""
import operator

import numpy as np

DATA_FORMATS = ("channels_last", "channels_first")


def integer(value, name, minimum=None):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int; received {name}={value!r}")
    try:
        result = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; received {name}={value!r}") from None
    if minimum is not None and result < minimum:
        raise ValueError(f"{name} must be at least {minimum}; received {name}={value!r}")
    return result


def int_tuple(value, n, name, minimum=1):
    """An int or a tuple of ``n`` ints, each at least ``minimum``, as a tuple of ``n`` ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"{name} must be an int or a tuple of {n} ints; received {name}={value!r}")
        try:
            result = tuple(integer(v, name) for v in value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a tuple of {n} ints; received {name}={value!r}") from None
    else:
        try:
            result = (integer(value, name),) * n
        except TypeError:
            raise TypeError(f"{name} must be an int or a tuple of {n} ints; received {name}={value!r}") from None
    if min(result) < minimum:
        raise ValueError(f"{name} must hold ints of at least {minimum}; received {name}={value!r}")
    return result


def padding(value):
    """Keras's padding values: "valid" or "same" (any case)."""
    if isinstance(value, str) and value.lower() in ("valid", "same"):
        return value.lower()
    raise ValueError(f'padding must be "valid" or "same"; received padding={value!r}')


def data_format(value):
    """None means "channels_last" (Keras's default image_data_format)."""
    if value is None:
        return "channels_last"
    if isinstance(value, str) and value.lower() in DATA_FORMATS:
        return value.lower()
    raise ValueError(f'data_format must be "channels_last", "channels_first" or None; '
                     f'received data_format={value!r}')


def rate(value, name="rate"):
    """A float in [0, 1)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a float in [0, 1); received {name}={value!r}")
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be a float in [0, 1); received {name}={value!r}")
    return float(value)


def shape(value, name="shape"):
    """A shape without the batch axis: a tuple of positive ints (None allowed for an unknown size)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of ints (without the batch axis); received {name}={value!r}")
    result = []
    for v in value:
        if v is None:
            result.append(None)
            continue
        try:
            result.append(integer(v, name, minimum=1))
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a tuple of positive ints (without the batch axis); "
                             f"received {name}={tuple(value)!r}") from None
    return tuple(result)


def dtype(value):
    if value is None:
        return np.dtype("float32")
    try:
        result = np.dtype(value)
    except TypeError:
        raise TypeError(f'dtype must be "float32" or "float64"; received dtype={value!r}') from None
    if result not in (np.dtype("float32"), np.dtype("float64")):
        raise ValueError(f'dtype must be "float32" or "float64"; received dtype={value!r}')
    return result


def real(value, name, minimum=None, maximum=None):
    """A real number (not a bool) as a float, within [minimum, maximum] when given; NaN is rejected."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a float; received {name}={value!r}")
    if (minimum is not None and not value >= minimum) or (maximum is not None and not value <= maximum) \
            or value != value:
        bounds = {(True, True): f"in [{minimum}, {maximum}]", (True, False): f"at least {minimum}",
                  (False, True): f"at most {maximum}", (False, False): "a number"}
        raise ValueError(f"{name} must be {bounds[minimum is not None, maximum is not None]}; "
                         f"received {name}={value!r}")
    return float(value)


def boolean(value, name):
    """A bool (NumPy's included); anything else is a TypeError."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; received {name}={value!r}")
    return bool(value)
