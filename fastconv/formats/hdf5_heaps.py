"""A guard against a libhdf5 hang: global heap collections whose object walk never advances.

Variable-length strings (the attributes Keras 3 and h5py write for ``str`` values) live in HDF5 "global heap
collections". When libhdf5 loads a collection it walks the objects in it, stepping by each object's declared
size; a damaged collection that declares a free-space object of size 0 makes that walk stand still, and libhdf5
(1.14 and 2.0 alike) loops forever inside ``H5Aread`` without giving Python a chance to stop it. So before h5py
opens a file, its bytes are scanned for collections and each is walked by libhdf5's own rule: a walk that does not
advance is refused.

A collection starts with ``GCOL``, version 1 and three zero bytes, then its size (at least 4096 bytes, within the
file); each object is a 2-byte index, 2-byte reference count, 4 reserved bytes and its size, then its data padded
to 8 bytes (index 0 is the free space, whose size covers its header). Sizes are "lengths", 8 bytes unless the
superblock says otherwise.
"""
import mmap
import os
import struct

_SIGNATURE = b"GCOL\x01\x00\x00\x00"
_MIN_COLLECTION = 4096
_SUPERBLOCK = b"\x89HDF\r\n\x1a\n"

__all__ = ["check_global_heaps"]


def _length_size(data):
    """Bytes per "length" field, from the superblock (found at 0, 512, 1024 ...); 8 when it cannot be read."""
    where = 0
    while where + 16 <= len(data):
        if data[where:where + 8] == _SUPERBLOCK:
            version = data[where + 8]
            size = data[where + 14] if version < 2 else data[where + 10]
            return size if size in (2, 4, 8) else 8
        where = 512 if where == 0 else 2 * where
    return 8


def _unpack_length(data, at, size):
    return int.from_bytes(data[at:at + size], "little")


def _walk_stalls(data, start, length_size):
    """Whether libhdf5's walk over the collection at ``start`` would stop advancing (None: not a collection)."""
    header = 8 + length_size
    if start + header > len(data):
        return None
    size = _unpack_length(data, start + 8, length_size)
    end = start + size
    if size < _MIN_COLLECTION or end > len(data):
        return None
    object_header = 8 + length_size
    at = start + header
    while at < end:
        if at + object_header > end:
            return False  # too small for an object: libhdf5 takes the rest as free space
        index = struct.unpack_from("<H", data, at)[0]
        object_size = _unpack_length(data, at + 8, length_size)
        step = object_header + ((object_size + 7) & ~7) if index > 0 else object_size
        if step <= 0:
            return True
        at += step
    return False


def check_global_heaps(source, description):
    """Raise ValueError if the HDF5 bytes of ``source`` (a path, or bytes) hold a global heap collection that
    libhdf5 would walk forever."""
    if isinstance(source, (bytes, bytearray)):
        _check(source, description)
        return
    with open(os.fspath(source), "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _check(data, description)


def _check(data, description):
    length_size = _length_size(data)
    find = data.find  # bytes and mmap search at memchr speed
    at = find(_SIGNATURE)
    while at >= 0:
        if _walk_stalls(data, at, length_size):
            raise ValueError(f"{description} is damaged: the global heap collection at byte {at} declares an "
                             f"empty object, which would make libhdf5 loop forever")
        at = find(_SIGNATURE, at + 1)
