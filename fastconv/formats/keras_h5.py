"""Keras's HDF5 weight layouts, read into plain Python structures and written from them.

Two generations share the container:

- **legacy** (Keras 1/2 ``save_weights("x.h5")``, and the ``model_weights`` group of a legacy full-model ``.h5``):
  the group's attribute ``layer_names`` lists the layers in order; each layer's group lists its arrays in
  ``weight_names`` (``"conv2d/kernel:0"``...), in the layer's trainable-then-non-trainable order. Long attribute
  lists are split by Keras into ``layer_names0``, ``layer_names1``...
- **Keras 3** (``save_weights("x.weights.h5")`` and the ``model.weights.h5`` of a ``.keras`` archive): a tree in
  which each object's arrays sit in ``<path>/vars/0``, ``1``... (``vars`` carries the object's ``name``) and a
  model's layers under ``<path>/layers/<key>``, where ``<key>`` is the layer's class name in snake case,
  numbered per class in layer order (``conv2d``, ``conv2d_1``...).

Only numeric datasets are read (never object, string or reference types), and any damage to the file surfaces
as ``ValueError`` naming the file. h5py is an optional dependency, imported on first use.
"""
import contextlib
import io
import os
from dataclasses import dataclass, field

import numpy as np

from fastconv.formats.hdf5_heaps import check_global_heaps

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# HDF5 allows a user block before the superblock; the signature then sits at 512, 1024, 2048 ... bytes.
_SIGNATURE_OFFSETS = (0, 512, 1024, 2048, 4096, 8192)

__all__ = ["is_hdf5", "open_h5", "LegacyLayer", "Keras3Node", "read_legacy", "read_keras3", "write_legacy",
           "write_keras3", "layout_of", "member", "attribute"]


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading or writing Keras HDF5 files needs h5py: pip install h5py "
                          "(or pip install 'fastconv[hdf5]')") from None
    return h5py


def is_hdf5(head):
    """Whether the bytes ``head`` (the file's first 8200 bytes or more) start an HDF5 file."""
    return any(head[k:k + 8] == HDF5_SIGNATURE for k in _SIGNATURE_OFFSETS)


@contextlib.contextmanager
def open_h5(source, description):
    """Open ``source`` (a path, or the bytes of an archive member) read-only; h5py's errors become ValueError."""
    h5py = _h5py()
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    check_global_heaps(source, description)
    try:
        f = h5py.File(handle, "r")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{description} is not a readable HDF5 file ({exc})") from None
    try:
        with f:
            yield f
    except (OSError, KeyError, RuntimeError) as exc:
        # A damaged file can fail on any read, not only when it opens.
        raise ValueError(f"{description} is damaged: {exc}") from None


def _strings(value):
    """An attribute holding names, as a list of str (Keras wrote bytes arrays, str arrays or empty floats)."""
    if value is None:
        return []
    if isinstance(value, (bytes, str)):
        value = [value]
    out = []
    for item in np.asarray(value).ravel().tolist():
        if isinstance(item, bytes):
            item = item.decode("utf-8")
        if not isinstance(item, str):
            raise ValueError(f"expected a list of names; received {value!r}")
        out.append(item)
    return out


def attribute(obj, key, description):
    """``obj.attrs[key]``, or None without it, for the attribute types Keras writes (strings, and arrays of
    strings or numbers). Any other HDF5 type (a variable-length sequence, a compound, a reference ...) is refused
    before it is read: decoding a damaged one can crash libhdf5 itself."""
    h5py = _h5py()
    if key not in obj.attrs:
        return None
    kind = h5py.h5a.open(obj.id, key.encode("utf-8")).get_type().get_class()
    if kind not in (h5py.h5t.STRING, h5py.h5t.INTEGER, h5py.h5t.FLOAT):
        raise ValueError(f"{description}: attribute {key!r} of {obj.name} has an HDF5 type (class {kind}) that "
                         f"Keras never writes")
    return obj.attrs[key]


def _name_list(obj, key, description):
    """``obj.attrs[key]``, or Keras's chunked form ``key0``, ``key1``... of an attribute too long for one header."""
    if key in obj.attrs:
        return _strings(attribute(obj, key, description))
    names, k = [], 0
    while f"{key}{k}" in obj.attrs:
        names.extend(_strings(attribute(obj, f"{key}{k}", description)))
        k += 1
    return names


# Deflate, the strongest filter Keras files could use, expands at most 1032-fold.
_MAX_FILTER_RATIO = 1032


def _has_path(group, key):
    """Whether ``key`` (which may contain ``/``) names a link, without following any link to get there."""
    h5py = _h5py()
    node = group
    for part in [p for p in key.split("/") if p]:
        link = node.get(part, getlink=True)
        if link is None:
            return False
        if not isinstance(link, h5py.HardLink):
            return True  # member() refuses it with the reason
        node = node[part]
    return True


def member(group, key, description):
    """``group[key]`` through hard links only: HDF5 soft and external links (and Keras never writes either) can
    point into other files, which a weight file must never make fastconv open."""
    h5py = _h5py()
    node = group
    for part in [p for p in key.split("/") if p]:
        link = node.get(part, getlink=True)
        if link is None:
            raise ValueError(f"{description}: {node.name} has no member {part!r}")
        if not isinstance(link, h5py.HardLink):
            raise ValueError(f"{description}: {node.name.rstrip('/')}/{part} is an HDF5 {type(link).__name__}; "
                             f"fastconv follows only the file's own (hard) links, never into other files")
        node = node[part]
    return node


def _array(dataset, description):
    """The numbers of a dataset stored inside the file, after checking the declared size against the stored one
    (a forged shape must not make fastconv allocate what the file does not hold)."""
    h5py = _h5py()
    if not isinstance(dataset, h5py.Dataset):
        raise ValueError(f"{description} is not an array")
    if dataset.dtype.kind not in "fiub":
        raise ValueError(f"{description} holds {dataset.dtype} data, not numbers")
    if dataset.is_virtual or dataset.external:
        raise ValueError(f"{description} keeps its data in other files (an HDF5 virtual or external dataset); "
                         f"fastconv reads only data stored inside the file")
    stored = dataset.id.get_storage_size()
    limit = stored if dataset.id.get_create_plist().get_nfilters() == 0 else stored * _MAX_FILTER_RATIO
    if dataset.nbytes > limit:
        raise ValueError(f"{description} declares shape {dataset.shape} ({dataset.nbytes} bytes of "
                         f"{dataset.dtype}) but the file stores {stored} bytes for it")
    return np.asarray(dataset[()])


@dataclass
class LegacyLayer:
    """One layer group of a legacy file: its name, the names of its arrays and the arrays, in file order."""
    name: str
    weight_names: list
    arrays: list


def layout_of(f):
    """``"legacy_model"``, ``"legacy_weights"``, ``"keras3"`` or ``None`` for an open h5py file."""
    h5py = _h5py()
    # links are looked at, never followed, until member() has checked them ("name in group" would follow them)
    weights_link = f.get("model_weights", getlink=True)
    if isinstance(weights_link, h5py.HardLink) and "layer_names" in f["model_weights"].attrs \
            or "model_config" in f.attrs:
        return "legacy_model"
    if "layer_names" in f.attrs or "layer_names0" in f.attrs:
        return "legacy_weights"
    if f.get("layers", getlink=True) is not None or f.get("vars", getlink=True) is not None:
        return "keras3"
    return None


def _once(obj, seen, description):
    """``obj``, the first time it is reached. Keras writes trees; an object reached twice (hard links sharing a
    group or a dataset, or making a cycle) would let a small file expand into endless reading."""
    if obj.id in seen:
        raise ValueError(f"{description}: {obj.name} is reached through several links (a shared object or a "
                         f"cycle), which Keras files never contain")
    seen.add(obj.id)
    return obj


def _unique(names, what, description):
    if len(set(names)) != len(names):
        raise ValueError(f"{description} lists {what} twice: {sorted({n for n in names if names.count(n) > 1})[:5]}")
    return names


def read_legacy(group, description):
    """The :class:`LegacyLayer` list of a legacy group (the file's root, or a full-model file's
    ``model_weights``), in ``layer_names`` order."""
    layers, seen = [], set()
    for name in _unique(_name_list(group, "layer_names", description), "a layer", description):
        if group.get(name, getlink=True) is None:
            raise ValueError(f"{description} lists layer {name!r} in layer_names but has no group for it")
        layer_group = _once(member(group, name, description), seen, description)
        weight_names = _unique(_name_list(layer_group, "weight_names", description),
                               f"a weight of layer {name!r}", description)
        arrays = []
        for weight_name in weight_names:
            if not _has_path(layer_group, weight_name):
                raise ValueError(f"{description}: layer {name!r} lists weight {weight_name!r} but does not hold it")
            dataset = _once(member(layer_group, weight_name, description), seen, description)
            arrays.append(_array(dataset, f"{description}: weight {name}/{weight_name}"))
        layers.append(LegacyLayer(name, weight_names, arrays))
    return layers


@dataclass
class Keras3Node:
    """One object of a Keras 3 weights tree: its ``name`` (from ``vars``), arrays, and child objects by key."""
    name: str = None
    arrays: list = field(default_factory=list)
    children: dict = field(default_factory=dict)


def read_keras3(group, description, depth=0, _seen=None):
    """The :class:`Keras3Node` tree rooted at ``group``."""
    h5py = _h5py()
    if depth > 64:
        raise ValueError(f"{description} nests objects more than 64 deep")
    seen = {group.id} if _seen is None else _seen
    node = Keras3Node()
    for key in group:
        item = _once(member(group, key, description), seen, description)
        if key == "vars":
            if not isinstance(item, h5py.Group):
                raise ValueError(f"{description}: {item.name} is not a group")
            name = attribute(item, "name", description)
            node.name = _strings(name)[0] if name is not None and len(_strings(name)) == 1 else None
            indices = sorted(item.keys(), key=lambda k: int(k) if k.isdigit() else -1)
            if indices != [str(k) for k in range(len(indices))]:
                raise ValueError(f"{description}: {item.name} must hold arrays named 0, 1, ...; received "
                                 f"{sorted(item.keys())}")
            node.arrays = [_array(_once(member(item, k, description), seen, description),
                                  f"{description}: {item.name}/{k}") for k in indices]
        elif isinstance(item, h5py.Group):
            node.children[key] = read_keras3(item, description, depth + 1, seen)
    return node


def write_keras3(path, root):
    """Write a :class:`Keras3Node` tree as a Keras 3 ``.weights.h5`` file, atomically.

    Container nodes (a model's ``layers``) are written as plain groups: a node whose ``arrays`` is ``None``
    gets no ``vars`` group, as Keras writes them.
    """
    from fastconv.models.saving import atomic_path

    h5py = _h5py()

    def write(group, node):
        if node.arrays is not None:
            vars_group = group.create_group("vars")
            if node.name is not None:
                vars_group.attrs["name"] = node.name
            for k, value in enumerate(node.arrays):
                vars_group.create_dataset(str(k), data=np.asarray(value))
        for key, child in node.children.items():
            write(group.create_group(key), child)

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            write(f, root)


def write_legacy(path, layers, attrs=None):
    """Write :class:`LegacyLayer` entries in the legacy layout (the one Keras 2's ``save_weights`` wrote)."""
    from fastconv.models.saving import atomic_path

    h5py = _h5py()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            f.attrs["layer_names"] = np.array([layer.name.encode("utf-8") for layer in layers], dtype="S")
            for layer in layers:
                group = f.create_group(layer.name)
                group.attrs["weight_names"] = np.array([n.encode("utf-8") for n in layer.weight_names], dtype="S")
                for weight_name, value in zip(layer.weight_names, layer.arrays):
                    group.create_dataset(weight_name, data=np.asarray(value))
