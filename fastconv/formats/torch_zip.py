"""PyTorch ``state_dict`` files (``torch.save(model.state_dict(), path)``) read without PyTorch, and without ever
running pickle code.

Since PyTorch 1.6 ``torch.save`` writes a zip archive: ``<archive>/data.pkl`` (a pickle of the state dict in which
every tensor is a call ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and every storage a
*persistent id* ``("storage", torch.FloatStorage, key, location, numel)``), the raw bytes of each storage in
``<archive>/data/<key>``, and ``<archive>/byteorder`` (``little`` or ``big``).

The pickle is read by a restricted unpickler: every global it names is looked up in a short whitelist that maps
``collections.OrderedDict``, the tensor and parameter rebuild functions and the typed storage classes onto
fastconv's own harmless stand-ins; anything else (``os.system``, ``builtins.exec``, a model class from a full
``torch.save(model)``) is refused with a ``ValueError`` naming it, before anything runs. The opcodes are scanned
before unpickling (globals named by ``GLOBAL``/``INST``, the copyreg extension registry, memo indices), so a
hand-made pickle cannot reach a global indirectly or make the unpickler allocate without bound either. Archive
members are read into memory, never extracted, and their names are never used as paths.
"""
import io
import math
import os
import pickle
import pickletools
import re
import zipfile

import numpy as np

__all__ = ["read_state_dict"]

# typed storage class -> (element type as a little-endian NumPy code, item size); bfloat16 is read as uint16
_STORAGE_TYPES = {
    "FloatStorage": ("<f4", 4), "DoubleStorage": ("<f8", 8), "HalfStorage": ("<f2", 2),
    "BFloat16Storage": ("bf16", 2), "LongStorage": ("<i8", 8), "IntStorage": ("<i4", 4),
    "ShortStorage": ("<i2", 2), "CharStorage": ("i1", 1), "ByteStorage": ("u1", 1), "BoolStorage": ("bool", 1),
}
# the rebuild functions PyTorch pickles -> the method of _RestrictedUnpickler that stands in for each
_REBUILDERS = {
    ("torch._utils", "_rebuild_tensor_v2"): "rebuild_tensor",
    ("torch._utils", "_rebuild_parameter"): "rebuild_parameter",
    ("torch._utils", "_rebuild_parameter_with_state"): "rebuild_parameter",
}
_ALLOWED_NAMES = frozenset([("collections", "OrderedDict"), *_REBUILDERS,
                            *(("torch", name) for name in _STORAGE_TYPES)])
_RESAVE = "re-save it with torch.save(model.state_dict(), path)"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # pickled 0x1950a86a20f9469cfc6c
_STORAGE_KEY = re.compile(r"[0-9A-Za-z_]{1,64}\Z")
_DRIVE = re.compile(r"[A-Za-z]:")
_MAX_NDIM = 32
# A tensor larger than its storage is a stride-0 broadcast; cap what such a tensor may expand to.
_MAX_BROADCAST_BYTES = 1 << 28
# Tensors may share storages (tied weights, views), but a pickle can rebuild one storage any number of times:
# all tensors together may hold this many times the bytes of the storages read, plus one broadcast's worth.
_MAX_EXPANSION = 4


class _Invalid(ValueError):
    """A ValueError of our own, already worded for the user (it passes the catch-all that wraps the others)."""


class _StorageType:
    """Stands for ``torch.FloatStorage`` & co. in a pickle: a name and an element type, never callable."""

    __slots__ = ("name", "code", "itemsize")

    def __init__(self, name, code, itemsize):
        self.name = name
        self.code = code
        self.itemsize = itemsize

    def __setstate__(self, state):
        raise TypeError("a storage type takes no state")


class _Storage:
    """A storage read from ``<archive>/data/<key>``: a 1-D NumPy array of ``numel`` elements."""

    __slots__ = ("key", "array")

    def __init__(self, key, array):
        self.key = key
        self.array = array

    def __setstate__(self, state):
        raise TypeError("a storage takes no state")


class _Tensor:
    """What a rebuilt tensor becomes while unpickling: a NumPy array in a wrapper only our code creates, so that
    nothing else in the pickle can pass for a tensor."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __setstate__(self, state):
        raise TypeError("a tensor takes no state")


class _OrderedDict(dict):
    """``collections.OrderedDict`` as a plain dict (insertion-ordered); the state PyTorch attaches to a state dict
    (its ``_metadata`` of module versions) is dropped."""

    def __setstate__(self, state):
        pass


class _StandIn:
    """A whitelisted global as the pickle sees it: callable, but not a class (NEWOBJ refuses it) and without
    state to set (BUILD fails), so a pickle can neither instantiate nor alter fastconv's own code through it."""

    __slots__ = ("_function", "_name")

    def __init__(self, function, name):
        self._function = function
        self._name = name

    def __call__(self, *args, **kwargs):
        return self._function(*args, **kwargs)

    def __setstate__(self, state):
        raise TypeError(f"{self._name} takes no state")


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _message(reason, path):
    return f"{reason}; received path={path!r}"


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` with only the whitelisted globals, resolving storages from the open archive."""

    def __init__(self, data, path, archive, prefix, byteorder):
        super().__init__(io.BytesIO(data))
        self._path = path
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._raw = {}  # storage key -> bytes (a storage may be viewed with several element types)
        self._storages = {}  # (key, code) -> _Storage
        self._tensor_bytes = 0  # what the rebuilt tensors hold so far
        self._globals = _allowed_globals(self)

    def _fail(self, reason):
        return _Invalid(_message(reason, self._path))

    def find_class(self, module, name):
        found = self._globals.get((module, name))
        if found is None:
            raise self._fail(_refusal(module, name))
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise self._fail(f"data.pkl holds a persistent id that is not a storage record: {pid!r:.200}")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise self._fail(f"storage record {pid!r:.200} does not name a typed storage class")
        if not isinstance(key, str) or not _STORAGE_KEY.match(key):
            raise self._fail(f"storage record names an invalid storage key {key!r:.80}")
        if not isinstance(location, str) or not _int(numel) or numel < 0:
            raise self._fail(f"storage record {pid!r:.200} has an invalid location or element count")
        cached = self._storages.get((key, storage_type.code))
        if cached is not None:
            if cached.array.size != numel:
                raise self._fail(f"storage {key!r} is recorded with both {cached.array.size} and {numel} elements")
            return cached
        raw = self._raw.get(key)
        if raw is None:
            raw = _read_member(self._archive, f"{self._prefix}/data/{key}", self._path)
            self._raw[key] = raw
        itemsize = storage_type.itemsize
        if len(raw) != numel * itemsize:
            raise self._fail(f"storage {key!r} ({storage_type.name}) should hold {numel} elements "
                             f"({numel * itemsize} bytes) but its member holds {len(raw)} bytes")
        storage = _Storage(key, _decode(raw, storage_type.code, self._byteorder))
        self._storages[(key, storage_type.code)] = storage
        return storage

    # --- the stand-ins for torch._utils' rebuild functions -------------------------------------------------
    def rebuild_tensor(self, storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
        if not isinstance(storage, _Storage):
            raise self._fail(f"_rebuild_tensor_v2 was given {type(storage).__name__} instead of a storage")
        if not _int(storage_offset) or storage_offset < 0:
            raise self._fail(f"tensor has an invalid storage offset {storage_offset!r:.80}")
        if (not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)) or len(size) != len(stride)
                or len(size) > _MAX_NDIM or not all(_int(v) and v >= 0 for v in (*size, *stride))):
            raise self._fail(f"tensor has an invalid size {size!r:.120} or stride {stride!r:.120}")
        base = storage.array
        count = math.prod(size)
        if count == 0:
            return _Tensor(np.empty(size, dtype=base.dtype))
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= base.size:
            raise self._fail(f"tensor of size {tuple(size)}, stride {tuple(stride)} and offset {storage_offset} "
                             f"does not fit in storage {storage.key!r} of {base.size} elements")
        if count > base.size and count * base.itemsize > _MAX_BROADCAST_BYTES:
            raise self._fail(f"tensor of size {tuple(size)} would expand storage {storage.key!r} of {base.size} "
                             f"elements past {_MAX_BROADCAST_BYTES} bytes")
        self._tensor_bytes += count * base.itemsize
        stored = sum(len(raw) for raw in self._raw.values())
        if self._tensor_bytes > _MAX_EXPANSION * stored + _MAX_BROADCAST_BYTES:
            raise self._fail(f"the tensors rebuilt so far hold {self._tensor_bytes} bytes, more than "
                             f"{_MAX_EXPANSION} times the {stored} bytes of storage the file holds (plus "
                             f"{_MAX_BROADCAST_BYTES}): the pickle rebuilds its storages over and over")
        # bounds checked above, so the strided view stays inside the storage; the copy owns its data
        view = np.lib.stride_tricks.as_strided(base[storage_offset:], shape=tuple(size),
                                               strides=tuple(s * base.itemsize for s in stride), writeable=False)
        return _Tensor(np.array(view, order="C", copy=True))

    def rebuild_parameter(self, data, requires_grad=True, backward_hooks=None, state=None):
        if not isinstance(data, _Tensor):
            raise self._fail(f"_rebuild_parameter was given {type(data).__name__} instead of a tensor")
        return data


def _allowed_globals(unpickler):
    """The whitelist: each allowed (module, name) mapped onto fastconv's stand-in for it."""
    allowed = {("collections", "OrderedDict"): _StandIn(_OrderedDict, "collections.OrderedDict")}
    allowed.update({key: _StandIn(getattr(unpickler, method), ".".join(key)) for key, method in _REBUILDERS.items()})
    allowed.update({("torch", name): _StorageType(name, *spec) for name, spec in _STORAGE_TYPES.items()})
    return allowed


def _refusal(module, name):
    what = f"{module}.{name}"
    if (module == "torch" and name.endswith("Storage")) or (module, name) == ("torch._utils", "_rebuild_tensor_v3"):
        return (f"data.pkl names the global {what}: a tensor of a dtype fastconv does not read (only float64, "
                f"float32, float16, bfloat16, int64, int32, int16, int8, uint8 and bool are)")
    return (f"refused to load the global {what} named by data.pkl: a state dict file may only hold tensors "
            f"(a full model or arbitrary objects would need their code run); {_RESAVE}")


def _decode(raw, code, byteorder):
    """The storage bytes as a native-order 1-D array (bfloat16 widened to float32, bool checked to 0/1)."""
    swap = ">" if byteorder == "big" else "<"
    if code == "bool":
        return np.frombuffer(raw, dtype=np.uint8) != 0
    if code == "bf16":
        bits = np.frombuffer(raw, dtype=swap + "u2").astype(np.uint32)
        return (bits << 16).view(np.float32)
    dtype = np.dtype(code if code[0] not in "<>" else swap + code[1:])
    array = np.frombuffer(raw, dtype=dtype)  # read-only, but every tensor is copied out of it
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def _read_member(archive, name, path):
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise _Invalid(_message(f"the archive has no member {name!r}", path)) from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise _Invalid(_message(f"member {name!r} is compressed; torch.save stores every member uncompressed",
                                path))
    return archive.read(info)


def _check_names(names, path):
    if len(set(names)) != len(names):
        raise _Invalid(_message("the archive holds two members with the same name", path))
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or "\\" in name or ".." in parts or _DRIVE.match(name):
            raise _Invalid(_message(f"the archive holds a member with an unsafe name {name!r}", path))


def _archive_prefix(names, path):
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
        found = "no" if not pickles else f"{len(pickles)}"
        raise _Invalid(_message(f"the archive has {found} <archive>/data.pkl members, so it is not a file written "
                                f"by torch.save", path))
    prefix = pickles[0][:-len("/data.pkl")]
    if f"{prefix}/constants.pkl" in names or any(n.startswith(f"{prefix}/code/") for n in names):
        raise _Invalid(_message(f"the file is a TorchScript archive (torch.jit.save), whose code fastconv does not "
                                f"run; {_RESAVE}", path))
    return prefix


def _scan(data, path):
    """Check the opcodes before unpickling: whitelisted GLOBAL/INST names only, no extension registry, memo
    indices that a real pickler of this many bytes could have written."""
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("GLOBAL", "INST"):
            module, _, name = arg.partition(" ")
            if (module, name) not in _ALLOWED_NAMES:
                raise _Invalid(_message(_refusal(module, name), path))
        elif opcode.name in ("EXT1", "EXT2", "EXT4"):
            raise _Invalid(_message(f"refused the {opcode.name} opcode of data.pkl: it reaches globals through "
                                    f"the copyreg extension registry; {_RESAVE}", path))
        elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) < len(data):
            raise _Invalid(_message(f"data.pkl uses an impossible memo index {arg}", path))


def _state_dict_of(obj, path):
    """The dict of tensors: the object itself, or the one dict of tensors it holds (``{"state_dict": {...}}``,
    ``{"model": {...}, "optimizer": {...}, "epoch": 3}``)."""
    if not isinstance(obj, dict):
        raise _Invalid(_message(f"the file holds a {type(obj).__name__}, not a state dict; {_RESAVE}", path))
    if not obj or any(isinstance(v, _Tensor) for v in obj.values()):
        return obj
    nested = {k: v for k, v in obj.items() if isinstance(v, dict) and any(isinstance(t, _Tensor) for t in v.values())}
    if len(nested) > 1:
        preferred = [k for k in ("state_dict", "model_state_dict", "model") if k in nested]
        if not preferred:
            raise _Invalid(_message(f"the file holds several dicts of tensors ({sorted(map(repr, nested))}); save "
                                    f"the one you want with torch.save(model.state_dict(), path)", path))
        nested = {preferred[0]: nested[preferred[0]]}
    if not nested:
        raise _Invalid(_message(f"the file holds a dict without tensors (keys {list(obj)[:10]!r})", path))
    return next(iter(nested.values()))


def _read(f, path):
    head = f.read(len(_LEGACY_MAGIC))
    f.seek(0)
    if not zipfile.is_zipfile(f):
        if head == _LEGACY_MAGIC:
            raise _Invalid(_message(f"the file is in PyTorch's legacy (pre-1.6) format, a bare pickle fastconv "
                                    f"never unpickles; {_RESAVE} in a current PyTorch", path))
        if head[:1] == b"\x80":
            raise _Invalid(_message(f"the file is a bare pickle, which fastconv never unpickles; {_RESAVE}", path))
        raise _Invalid(_message("the file is not a zip archive written by torch.save (or it is truncated)", path))
    f.seek(0)
    with zipfile.ZipFile(f) as archive:
        names = archive.namelist()
        _check_names(names, path)
        prefix = _archive_prefix(names, path)
        byteorder = "little"  # what PyTorch assumes for files without the record
        if f"{prefix}/byteorder" in names:
            byteorder = _read_member(archive, f"{prefix}/byteorder", path).decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise _Invalid(_message(f"the archive's byteorder record is {byteorder[:20]!r}, neither 'little' "
                                        f"nor 'big'", path))
        data = _read_member(archive, f"{prefix}/data.pkl", path)
        _scan(data, path)
        obj = _RestrictedUnpickler(data, path, archive, prefix, byteorder).load()
    tensors = {}
    for key, value in _state_dict_of(obj, path).items():
        if not isinstance(value, _Tensor):
            continue  # an int, a float, a string ... stored beside the tensors: not a weight
        if not isinstance(key, str):
            raise _Invalid(_message(f"the state dict has a tensor under the non-string key {key!r:.80}", path))
        tensors[key] = value.array
    return tensors


def read_state_dict(path):
    """Read a PyTorch state dict saved with ``torch.save(model.state_dict(), path)``, without PyTorch.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pt``/``.pth`` file in PyTorch's zip format (the default since PyTorch 1.6). A checkpoint that nests
        the state dict one level down (``{"state_dict": {...}}``, ``{"model": {...}, "optimizer": ..., "epoch":
        3}``) is accepted: the one dict of tensors is used (``state_dict``, ``model_state_dict`` or ``model`` if
        there are several).

    Returns
    -------
    dict of str to numpy.ndarray
        In the file's order (``model.state_dict()``'s: modules in registration order, each module's parameters
        then buffers). Each array is a C-contiguous, native-order copy with the tensor's dtype (float64, float32,
        float16, int64, int32, int16, int8, uint8, bool) except bfloat16, which becomes float32 (exactly). Views
        sharing one storage, offsets and non-contiguous strides come out as the tensors they were. Buffers such
        as BatchNorm's ``num_batches_tracked`` are kept; values that are not tensors (ints, floats, strings
        stored in a checkpoint) are skipped.

    Raises
    ------
    TypeError
        If ``path`` is not a str or path-like.
    FileNotFoundError, IsADirectoryError, PermissionError
        If the file cannot be opened.
    ValueError
        Naming the file, for anything else: a global outside the whitelist (the error names it), a legacy
        (pre-1.6) or TorchScript file (re-save with ``torch.save(model.state_dict(), path)``), a truncated or
        corrupted archive, a missing member, an unsafe member name, a tensor that does not fit its storage, a
        tensor dtype fastconv does not read.

    Examples
    --------
    >>> import os, tempfile, zipfile
    >>> from fastconv.formats.torch_zip import read_state_dict
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "evil.pt")
    ...     with zipfile.ZipFile(path, "w") as archive:
    ...         archive.writestr("evil/data.pkl", b"cposix\\nsystem\\n(S'echo hi'\\ntR.")
    ...     read_state_dict(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: refused to load the global posix.system named by data.pkl: ...
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; received path of type {type(path).__name__}")
    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            return _read(f, path)
        except _Invalid as exc:
            raise ValueError(str(exc)) from None
        except Exception as exc:  # zipfile, zlib, struct, pickle, unicode, memory ... errors of a damaged file
            raise ValueError(_message(f"the file is damaged or not a PyTorch state dict file "
                                      f"({type(exc).__name__}: {str(exc)[:200]})", path)) from exc
