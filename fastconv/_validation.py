"""Argument checking and normalisation for the functional API: the one place where input is validated.

Every check raises before any kernel runs: ValueError for a bad value, TypeError for a bad type, with a message
that names the argument and ends with the value received.
"""
import functools
import math
import operator
import os

import numpy as np

DATA_FORMATS = ("channels_last", "channels_first")
ALGORITHMS = ("auto", "direct", "im2col")
PADDING_HELP = 'padding must be "valid", "same", an int, (ph, pw) or ((top, bottom), (left, right))'
# Largest spatial size, stride, padding or window the kernels accept: their index arithmetic (Py_ssize_t) adds a
# few such numbers together, which stays inside int64 only when each is at most 2**60.
INDEX_LIMIT = 2 ** 60
INT64_MAX = 2 ** 63 - 1


class SizeError(ValueError, MemoryError):
    """An array fastconv would have to allocate does not fit: its size overflows 64 bits, or it is larger than
    this machine's memory. A ValueError (the arguments ask for the impossible) that is also a MemoryError, so
    code written for NumPy's allocation failures still catches it."""


def _int(value, name):
    """operator.index without accepting bools (True is not a size)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int; received {name}={value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; received {name}={value!r}") from None


def _ints(values, name, whole):
    """Each entry as an int; a bad entry is reported with the whole value the user passed."""
    try:
        return tuple(_int(v, name) for v in values)
    except TypeError:
        raise TypeError(f"{name} must hold ints; received {name}={whole!r}") from None


def pair(value, name, minimum=1):
    """An int or a pair of ints, each >= minimum, as a (rows, cols) tuple."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = tuple(value.tolist())
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints; received {name}={value!r}")
        result = _ints(value, name, value)
    else:
        try:
            v = _int(value, name)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints; received {name}={value!r}") from None
        result = (v, v)
    if min(result) < minimum:
        raise ValueError(f"{name} must be at least {minimum}; received {name}={value!r}")
    return result


def padding_spec(padding):
    """'valid', 'same', or explicit ((top, bottom), (left, right)) non-negative ints."""
    if isinstance(padding, str):
        if padding.lower() in ("valid", "same"):
            return padding.lower()
        raise ValueError(f"{PADDING_HELP}; received padding={padding!r}")
    if isinstance(padding, (bool, np.bool_)):
        raise TypeError(f"{PADDING_HELP}; received padding={padding!r}")
    try:
        if isinstance(padding, (tuple, list)):
            if len(padding) != 2:
                raise ValueError(f"{PADDING_HELP}; received padding={padding!r}")
            if all(isinstance(p, (tuple, list)) for p in padding):
                if any(len(p) != 2 for p in padding):
                    raise ValueError(f"{PADDING_HELP}; received padding={padding!r}")
                explicit = tuple(tuple(_int(v, "padding") for v in p) for p in padding)
            else:
                ph, pw = (_int(v, "padding") for v in padding)
                explicit = ((ph, ph), (pw, pw))
        else:
            p = _int(padding, "padding")
            explicit = ((p, p), (p, p))
    except TypeError:
        raise TypeError(f"{PADDING_HELP}; received padding={padding!r}") from None
    if min(explicit[0] + explicit[1]) < 0:
        raise ValueError(f"padding must not be negative; received padding={padding!r}")
    return explicit


def resolve_padding(spec, in_size, effective_kernel, stride):
    """Explicit ((top, bottom), (left, right)) for a padding spec; 'same' as Keras/TensorFlow define it."""
    if spec == "valid":
        return ((0, 0), (0, 0))
    if spec == "same":
        pads = []
        for n, k, s in zip(in_size, effective_kernel, stride):
            total = max((-(-n // s) - 1) * s + k - n, 0)  # (integer ceil: exact for any size)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    return spec


def data_format(value):
    if not isinstance(value, str):
        raise TypeError(f'data_format must be the string "channels_last" or "channels_first"; '
                        f'received data_format={value!r}')
    if value not in DATA_FORMATS:
        raise ValueError(f'data_format must be "channels_last" or "channels_first"; received data_format={value!r}')
    return value == "channels_last"


def algorithm(value):
    if not isinstance(value, str):
        raise TypeError(f'algorithm must be the string "auto", "direct" or "im2col"; received algorithm={value!r}')
    if value not in ALGORITHMS:
        raise ValueError(f'algorithm must be "auto", "direct" or "im2col"; received algorithm={value!r}')
    return value


def index_format(value, channels_last, kernel_cells):
    """max-pool indices: "flat" (int64 h * W + w in the plane) or "window" (uint8 position in the window,
    channels_last and windows of at most 256 cells). Returns True for "window"."""
    if not isinstance(value, str):
        raise TypeError(f'index_format must be the string "flat" or "window"; received index_format={value!r}')
    if value not in ("flat", "window"):
        raise ValueError(f'index_format must be "flat" or "window"; received index_format={value!r}')
    if value == "window" and not channels_last:
        raise ValueError('index_format="window" is for data_format="channels_last" only; received '
                         'data_format="channels_first"')
    if value == "window" and kernel_cells > 256:
        raise ValueError(f'index_format="window" holds positions in uint8, for windows of at most 256 cells; '
                         f'received a pool window of {kernel_cells} cells')
    return value == "window"


def flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; received {name}={value!r}")
    return bool(value)


def compute_dtype_of(array, name):
    """The float dtype an input is computed in: float32/float64 kept, float16 -> float32, int/bool -> float64."""
    dt = array.dtype
    if dt.kind == "f" and dt.itemsize in (4, 8):
        return np.dtype(f"f{dt.itemsize}")  # native byte order: big-endian data (from a file) is converted
    if dt.kind == "f" and dt.itemsize == 2:
        return np.dtype(np.float32)
    if dt.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(
        f"{name} must be a real array of float32, float64, float16, int or bool; received {name} with dtype={dt}"
    )


def array(value, name, ndim):
    """Any array-like as an ndarray of the given ndim (not yet converted to the compute dtype)."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be an array; received {name} of type {type(value).__name__}") from exc
    compute_dtype_of(arr, name)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; received {name} with shape {arr.shape}")
    return arr


def contiguous(arr, dtype):
    """C-contiguous, aligned array of dtype, copying only when needed (views, Fortran order, negative strides)."""
    if arr.dtype != dtype or not arr.flags.c_contiguous:
        allocation(arr.shape, dtype, "a C-contiguous copy of an input",
                   f"an array of shape {arr.shape}, dtype {arr.dtype} and strides {arr.strides}")
    return np.ascontiguousarray(arr, dtype=dtype)


def shape4(value, name):
    """A 4-tuple of non-negative ints, e.g. input_shape."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of 4 ints; received {name}={value!r}")
    if len(value) != 4:
        raise ValueError(f"{name} must be a tuple of 4 ints; received {name}={value!r}")
    dims = _ints(value, name, value)
    if min(dims) < 0:
        raise ValueError(f"{name} must not have negative sizes; received {name}={value!r}")
    return dims


def positive_int(value, name):
    v = _int(value, name)
    if v < 1:
        raise ValueError(f"{name} must be at least 1; received {name}={value!r}")
    return v


def output_buffer(out, shape, dtype, inputs):
    """Check a user's out= array: exact shape and dtype, writable, C-contiguous, no overlap with inputs."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray; received out of type {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)}; received out with shape {out.shape}")
    if out.dtype != dtype:
        raise TypeError(f"out must have dtype {np.dtype(dtype)}; received out with dtype={out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out must be writable; received a read-only out")
    if not out.flags.c_contiguous or not out.flags.aligned:
        raise ValueError(f"out must be C-contiguous and aligned; received out with strides {out.strides}")
    for name, arr in inputs.items():
        if arr is not None and np.may_share_memory(out, arr):
            raise ValueError(f"out must not overlap the input {name}; received an out that shares memory with {name}")
    return out


# ---------------------------------------------------------------------------------------------- sizes that fit


def within_index_limit(value, what, received):
    """Refuse a spatial size, stride, padding or window above INDEX_LIMIT (see there), naming what it is."""
    if value > INDEX_LIMIT:
        raise SizeError(f"{what} is {value}, more than 2**60 = {INDEX_LIMIT}, the largest size the kernels' 64-bit "
                        f"index arithmetic allows; received {received}")


def _format_bytes(n):
    for unit, scale in (("EiB", 2 ** 60), ("PiB", 2 ** 50), ("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


@functools.lru_cache(maxsize=1)
def memory_limit():
    """Bytes of memory this process can have at most: the machine's physical memory, or the cgroup (container)
    limit when that is lower. An array larger than this cannot be allocated and filled."""
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        limit = INT64_MAX
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < limit:
            limit = int(text)
    return limit


def _text(received):
    return received() if callable(received) else received


def allocation(shape, dtype, what, received):
    """Raise SizeError, before anything is allocated, unless an array of this shape and dtype can exist here: its
    byte size (zero-length axes aside) must fit in int64, and the array must fit in memory_limit(). `received`
    describes the call in the messages: a string, or a function returning one (formatted only for an error)."""
    itemsize = np.dtype(dtype).itemsize
    addressed = math.prod(max(int(d), 1) for d in shape) * itemsize
    if addressed > INT64_MAX:
        raise SizeError(f"{what} would have shape {tuple(shape)}: {addressed // itemsize} {np.dtype(dtype)} elements "
                        f"({addressed} bytes), more than a 64-bit size can hold; received {_text(received)}")
    nbytes = math.prod(shape) * itemsize
    limit = memory_limit()
    if nbytes > limit:
        raise SizeError(f"{what} would have shape {tuple(shape)} and need {_format_bytes(nbytes)} as "
                        f"{np.dtype(dtype)}, more than the {_format_bytes(limit)} of memory on this machine; "
                        f"received {_text(received)}")
