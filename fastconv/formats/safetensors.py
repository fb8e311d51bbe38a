"""The safetensors format (Hugging Face's): tensors without pickle, read and written with NumPy alone.

A file is an 8-byte little-endian length ``n``, a UTF-8 JSON header of ``n`` bytes mapping each tensor's name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data that follows the header, with an
optional ``"__metadata__"`` of strings), then the tensors' bytes, little-endian and C-ordered, covering the data
without gaps or overlaps.

Reading checks all of that (header length, JSON, every field, offsets consistent with shape and dtype, in bounds,
contiguous, and the file's length) before it reads a tensor, and raises ``ValueError`` naming the file otherwise.
"""
import json
import math
import os
import struct
from collections.abc import Mapping

import numpy as np

__all__ = ["read_safetensors", "write_safetensors"]

_MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit
_MAX_NDIM = 32
# safetensors dtype -> little-endian NumPy dtype ("BF16" is read as uint16 and widened to float32)
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "u1"}
_NAMES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
          np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16", np.dtype(np.int8): "I8",
          np.dtype(np.uint64): "U64", np.dtype(np.uint32): "U32", np.dtype(np.uint16): "U16",
          np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}


class _Invalid(ValueError):
    """A ValueError of our own, already worded for the user."""


def _path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; received path of type {type(path).__name__}")
    return os.fspath(path)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        raise _Invalid(f"the header names {duplicated[:5]!r} twice")
    return dict(pairs)


def _refuse_constant(name):
    raise _Invalid(f"the header holds the non-JSON number {name}")


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _entries(header, data_size):
    """[(name, dtype code, shape, begin, end)] in data order, after checking every field and the layout."""
    if not isinstance(header, dict):
        raise _Invalid(f"the header is a JSON {type(header).__name__}, not an object")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise _Invalid(f"tensor {name!r} needs dtype, shape and data_offsets; received {info!r:.200}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPES:
            raise _Invalid(f"tensor {name!r} has dtype {dtype!r:.40}; readable dtypes are {', '.join(_DTYPES)}")
        if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
                or not all(_int(d) and d >= 0 for d in shape)):
            raise _Invalid(f"tensor {name!r} has an invalid shape {shape!r:.200}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise _Invalid(f"tensor {name!r} has invalid data_offsets {offsets!r:.200}")
        nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise _Invalid(f"tensor {name!r} of dtype {dtype} and shape {shape} needs {nbytes} bytes but its "
                           f"data_offsets {offsets} span {offsets[1] - offsets[0]}")
        entries.append((name, dtype, tuple(shape), offsets[0], offsets[1]))
    entries.sort(key=lambda e: (e[3], e[4]))  # data order; stable, so empty tensors keep the header's order
    position, previous = 0, None
    for name, _, _, begin, end in entries:
        if begin < position:
            raise _Invalid(f"tensor {name!r} (bytes {begin} to {end}) overlaps tensor {previous!r}")
        if begin > position:
            raise _Invalid(f"the data has a gap of {begin - position} bytes before tensor {name!r}")
        if end > data_size:
            raise _Invalid(f"tensor {name!r} ends at byte {end} of a data section of {data_size} bytes (the file "
                           f"is truncated or its offsets are wrong)")
        position, previous = end, name
    if position != data_size:
        raise _Invalid(f"the file has {data_size - position} bytes after its last tensor")
    return entries


def _decode(raw, dtype, shape):
    if dtype == "BOOL":
        return (np.frombuffer(raw, dtype=np.uint8) != 0).reshape(shape)
    array = np.frombuffer(raw, dtype=_DTYPES[dtype])
    if dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return (array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))).reshape(shape)


def _read(f, size):
    if size < 8:
        raise _Invalid(f"the file has {size} bytes, fewer than the 8 of its header length")
    (n,) = struct.unpack("<Q", f.read(8))
    if n < 2 or n > _MAX_HEADER_BYTES or 8 + n > size:
        raise _Invalid(f"the header length {n} does not fit a file of {size} bytes (the limit is "
                       f"{_MAX_HEADER_BYTES}): not a safetensors file, or a truncated one")
    text = f.read(n)
    if len(text) != n:
        raise _Invalid("the file ended inside its header")
    header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    start = 8 + n
    arrays = {}
    for name, dtype, shape, begin, end in _entries(header, size - start):
        f.seek(start + begin)
        raw = bytearray(end - begin)  # writable, so NumPy can use it without a copy
        if f.readinto(raw) != end - begin:
            raise _Invalid(f"the file ended inside tensor {name!r}")
        arrays[name] = _decode(raw, dtype, shape)
    return arrays


def read_safetensors(path):
    """Read a ``.safetensors`` file into NumPy arrays.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict of str to numpy.ndarray
        In the order of the tensors' data in the file. Each array is a writable, native-order copy of dtype
        float64, float32, float16, int64, int32, int16, int8, uint64, uint32, uint16, uint8 or bool; BF16 tensors
        become float32 (exactly). ``__metadata__`` is ignored.

    Raises
    ------
    TypeError
        If ``path`` is not a str or path-like.
    FileNotFoundError, IsADirectoryError, PermissionError
        If the file cannot be opened.
    ValueError
        Naming the file, if it is not a valid safetensors file: a header length that does not fit, a header that is
        not UTF-8 JSON or repeats a name, a missing or malformed field, an unknown dtype (FP8 ...), offsets that
        disagree with shape and dtype, overlap, leave gaps or run past the end, a truncated file.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from fastconv.formats.safetensors import read_safetensors, write_safetensors
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "weights.safetensors")
    ...     write_safetensors(path, {"kernel": np.ones((3, 3, 1, 2), np.float32), "bias": np.zeros(2, np.float32)})
    ...     arrays = read_safetensors(path)
    >>> {name: (a.shape, a.dtype.name) for name, a in arrays.items()}
    {'kernel': ((3, 3, 1, 2), 'float32'), 'bias': ((2,), 'float32')}
    """
    path = _path(path)
    with open(path, "rb") as f:
        try:
            return _read(f, os.fstat(f.fileno()).st_size)
        except _Invalid as exc:
            raise ValueError(f"the file is not a valid safetensors file: {exc}; received path={path!r}") from None
        except Exception as exc:  # JSON, UTF-8, memory ... errors of a damaged file
            raise ValueError(f"the file is damaged or not a safetensors file ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); received path={path!r}") from exc


def write_safetensors(path, arrays, metadata=None):
    """Write arrays to a ``.safetensors`` file, atomically (a failed write leaves any previous file as it was).

    Parameters
    ----------
    path : str or os.PathLike
    arrays : mapping of str to array_like
        Names (non-empty, not ``"__metadata__"``) to arrays of dtype float64, float32, float16, int64, int32,
        int16, int8, uint64, uint32, uint16, uint8 or bool.
    metadata : mapping of str to str, optional
        Stored as the header's ``"__metadata__"``.

    Notes
    -----
    The tensors are laid out by decreasing item size, and in the order given within one item size (the reference
    implementation also sorts by item size, so that every tensor is aligned for readers that map the file), so
    :func:`read_safetensors` gives back the given order whenever all arrays have one item size. The header is
    compact JSON padded with spaces to a multiple of 8 bytes, as the reference implementation writes it.

    Raises
    ------
    TypeError
        If ``arrays`` is not a mapping, a name is not a str, a value is not an array of a supported dtype, or
        ``metadata`` is not a mapping of str to str.
    ValueError
        For an empty name or the reserved name ``"__metadata__"``.
    """
    from fastconv.models.saving import atomic_write

    path = _path(path)
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a mapping of names to arrays; received arrays of type "
                        f"{type(arrays).__name__}")
    entries = []
    for name, value in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"arrays must have str names; received the name {name!r:.80}")
        if not name or name == "__metadata__":
            raise ValueError(f"array names must be non-empty and not '__metadata__'; received the name {name!r}")
        try:
            array = np.asarray(value)
        except Exception as exc:
            raise TypeError(f"arrays[{name!r}] must be an array; received {type(value).__name__}") from exc
        code = _NAMES.get(array.dtype.newbyteorder("="))
        if code is None:
            raise TypeError(f"arrays[{name!r}] has dtype {array.dtype}, which safetensors cannot hold here; use one "
                            f"of {', '.join(str(d) for d in _NAMES)}")
        # astype, not ascontiguousarray, which would turn a 0-d array into shape (1,)
        entries.append((name, code, array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)))
    if metadata is not None and (not isinstance(metadata, Mapping)
                                 or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError(f"metadata must be a mapping of str to str; received metadata={metadata!r:.200}")
    entries.sort(key=lambda entry: -entry[2].itemsize)
    header = {"__metadata__": dict(metadata)} if metadata is not None else {}
    offset = 0
    for name, code, array in entries:
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)

    def write(f):
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, array in entries:
            f.write(array.reshape(-1).view(np.uint8).data)

    atomic_write(path, write)
