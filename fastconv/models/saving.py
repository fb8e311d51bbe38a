"""Saving and loading models in a format that never unpickles.

A fastconv model file is a zip archive (the container ``.npz`` files use) holding

- ``config.json``: the format tag and version, the model's architecture (its layer configs), its compile
  settings (optimizer, loss, metrics), the optimizer's step count, and the list of arrays stored below;
- ``weights/<layer>/<weight>.npy``: every weight, in the ``.npy`` format, bit-exact;
- ``optimizer/<slot>/<layer>/<weight>.npy``: the optimizer's per-weight state (Adam's moments ...).

Loading reads the JSON with :mod:`json` and each array with ``numpy.lib.format.read_array(...,
allow_pickle=False)``, and only fastconv's own layer, loss, metric and optimizer classes can be named by a config:
opening a model file can never run code. The archive also opens with ``numpy.load(path, allow_pickle=False)``.

Files are written atomically: into a temporary file in the target's directory, flushed to disk, then moved over
the target with ``os.replace``; an interrupted save leaves any previous file untouched.
"""
import contextlib
import json
import math
import os
import secrets
import zipfile

import numpy as np

FORMAT = "fastconv.model"
WEIGHTS_FORMAT = "fastconv.weights"
FORMAT_VERSION = 1

__all__ = ["save_model", "load_model", "save_weights", "load_weights", "atomic_write", "atomic_path",
           "file_errors", "weight_budget_for"]


@contextlib.contextmanager
def atomic_path(path):
    """Yield the name of a new, empty temporary file next to ``path``; when the block succeeds, flush it to disk
    and move it onto ``path``, otherwise remove it. ``path`` is therefore either its old self or complete.

    For writers that need a file name (h5py); :func:`atomic_write` is the same for a binary file object. The
    file gets the usual permissions (0o666 less the umask), like one opened with ``open(path, "wb")``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    while True:
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path, write):
    """Call ``write(binary_file)`` on a temporary file next to ``path``, then move it onto ``path`` (see
    :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)


def _write_archive(path, config, arrays, overwrite):
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"filepath exists and overwrite=False; received filepath={path!r}")
    config = dict(config, arrays=sorted(arrays))

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("config.json", json.dumps(config, indent=1, allow_nan=False))
            for name in sorted(arrays):
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)

    atomic_write(path, write)


# What a reader may let through as they are: the file is missing or unreadable, or an optional dependency is.
_PASS_THROUGH = (FileNotFoundError, IsADirectoryError, PermissionError, ImportError)
_MAX_CONFIG_BYTES = 64 << 20


@contextlib.contextmanager
def file_errors(description):
    """Turn any error that a file's *content* provokes into a ValueError whose message names the file.

    A hostile or damaged file reaches code far from the reader (layer constructors, zipfile, NumPy, h5py), whose
    errors are TypeError, KeyError, RecursionError, ...; for the caller they all mean "this file is invalid".
    ``description`` names the file as the messages do (``"filepath='...'"``); ValueErrors that already contain it
    pass unchanged, others get it as a prefix.
    """
    try:
        yield
    except _PASS_THROUGH:
        raise
    except ValueError as exc:
        if description in str(exc):
            raise
        raise ValueError(f"{description}: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"{description} is damaged or invalid ({type(exc).__name__}: {str(exc)[:300]})") from exc


def weight_budget_for(stored_bytes):
    """What a model rebuilt from a file may allocate for its weights when the file holds ``stored_bytes`` of
    weight data: room for the file's dtype to be half the model's, plus 1 MiB."""
    return 2 * stored_bytes + (1 << 20)


def _read_npy(zf, info, description):
    """One ``.npy`` member, after checking that its header declares exactly the bytes the member holds (so a
    forged shape cannot make the reader allocate more than the archive declares) and no Python objects."""
    with zf.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"member {info.filename!r} is a .npy array of format version {version}, which "
                             f"fastconv does not write; received {description}")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(member)
        if dtype.hasobject:
            raise ValueError(f"member {info.filename!r} holds Python objects, which fastconv never unpickles "
                             f"(allow_pickle=False); received {description}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - member.tell():
            raise ValueError(f"member {info.filename!r} declares a {dtype} array of shape {shape} ({nbytes} bytes) "
                             f"but holds {info.file_size - member.tell()} bytes of data; received {description}")
    with zf.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _read_archive(path, expected_format):
    path = os.fspath(path)
    description = f"filepath={path!r}"
    with file_errors(description):
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ValueError(f"filepath is not a fastconv model file (not a zip archive); received "
                             f"{description}") from None
        with zf:
            try:
                info = zf.getinfo("config.json")
            except KeyError:
                raise ValueError(f"filepath is not a fastconv model file (no config.json); received "
                                 f"{description}") from None
            if info.file_size > _MAX_CONFIG_BYTES:
                raise ValueError(f"filepath's config.json declares {info.file_size} bytes, more than the "
                                 f"{_MAX_CONFIG_BYTES} allowed; received {description}")
            config = json.loads(zf.read(info))
            if not isinstance(config, dict) or config.get("format") not in (FORMAT, WEIGHTS_FORMAT):
                raise ValueError(f"filepath is not a fastconv model file; received {description}")
            version = config.get("format_version", 0)
            if not isinstance(version, int) or isinstance(version, bool):
                raise ValueError(f"filepath has an invalid format version {version!r:.80}; received {description}")
            if version > FORMAT_VERSION:
                raise ValueError(f"filepath was written by a newer fastconv (format version {version}); received "
                                 f"{description}")
            if expected_format == FORMAT and config["format"] != FORMAT:
                raise ValueError(f"filepath holds weights only (use model.load_weights); received {description}")
            names = config.get("arrays", [])
            if (not isinstance(names, list) or not all(isinstance(name, str) for name in names)
                    or len(set(names)) != len(names)):
                raise ValueError(f"filepath's config.json lists its arrays as {names!r:.200}; received {description}")
            arrays = {}
            for name in names:
                try:
                    member = zf.getinfo(name + ".npy")
                except KeyError:
                    raise ValueError(f"filepath lists array {name!r} but has no member {name + '.npy'!r}; "
                                     f"received {description}") from None
                arrays[name] = _read_npy(zf, member, description)
    return config, arrays


def _weight_arrays(model):
    arrays = {}
    for w in model.weights:
        key = f"weights/{w.path}"
        if key in arrays:
            raise ValueError(f"model {model.name!r} holds two weights named {w.path!r} (two nested layers share a "
                             f"name); rename one of the layers before saving")
        arrays[key] = w.value
    return arrays


def _weight_order(model):
    return [w.path for w in model.weights]


def _assign_weights(model, arrays, path):
    for w in model.weights:
        key = f"weights/{w.path}"
        if key not in arrays:
            raise ValueError(f"filepath has no value for weight {w.path!r}; received filepath={os.fspath(path)!r}")
        value = arrays[key]
        if value.shape != w.shape:
            raise ValueError(f"weight {w.path!r} has shape {w.shape} but the file holds shape {value.shape}; "
                             f"received filepath={os.fspath(path)!r}")
        w.assign(value)


def save_model(model, filepath, overwrite=True, include_optimizer=True):
    """Save architecture, weights, compile settings and optimizer state to one file (see the module notes)."""
    from fastconv import __version__
    from fastconv.models import serialization

    if not model.built:
        raise ValueError(f"model {model.name!r} must be built before it is saved: give it an Input or call it on "
                         f"data first")
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "fastconv_version": __version__,
              "model": serialization.serialize(model),
              "compile": model.get_compile_config() if include_optimizer else None,
              "weights": _weight_order(model)}
    arrays = _weight_arrays(model)
    if include_optimizer and model.optimizer is not None:
        state = model.optimizer.get_state()
        config["optimizer_iterations"] = state["iterations"]
        for slot, table in state["slots"].items():
            for var_path, value in table.items():
                arrays[f"optimizer/{slot}/{var_path}"] = value
    _write_archive(filepath, config, arrays, overwrite)


def load_fastconv_model(filepath, compile=True):
    """:func:`load_model` for fastconv's own format (architecture, exact weights, compile settings and
    optimizer state); raises ValueError for a file that is not one or does not match its own architecture."""
    from fastconv import losses, metrics, optimizers
    from fastconv.layers.base import weight_budget
    from fastconv.models import serialization

    config, arrays = _read_archive(filepath, FORMAT)
    with file_errors(f"filepath={os.fspath(filepath)!r}"):  # the config comes from the file: it may be anything
        model_config = config.get("model")
        if not isinstance(model_config, dict) or model_config.get("class_name") not in ("Sequential", "Functional"):
            found = model_config.get("class_name") if isinstance(model_config, dict) else model_config
            raise ValueError(f"filepath holds an unknown model class {found!r:.100}; received "
                             f"filepath={os.fspath(filepath)!r}")
        stored = sum(a.nbytes for name, a in arrays.items() if name.startswith("weights/"))
        with weight_budget(weight_budget_for(stored), f"filepath={os.fspath(filepath)!r}"):
            model = serialization.deserialize(model_config)
        if not model.built:  # model.save refuses unbuilt models: this config was not written by it
            raise ValueError(f"filepath holds a model without an input shape; received "
                             f"filepath={os.fspath(filepath)!r}")
        _assign_weights(model, arrays, filepath)
        compile_config = config.get("compile")
        if compile and compile_config:
            optimizer = optimizers.deserialize(compile_config["optimizer"])

            def rebuild(entry, leaf):
                if isinstance(entry, dict) and "class_name" not in entry:
                    return {k: rebuild(v, leaf) for k, v in entry.items()}
                if isinstance(entry, list):
                    return [rebuild(v, leaf) for v in entry]
                return None if entry is None else leaf(entry)

            model.compile(optimizer=optimizer, loss=rebuild(compile_config["loss"], losses.get),
                          metrics=rebuild(compile_config.get("metrics") or [], metrics.deserialize),
                          loss_weights=compile_config.get("loss_weights"))
            slots = {}
            for name, value in arrays.items():
                if name.startswith("optimizer/"):
                    _, slot, var_path = name.split("/", 2)
                    slots.setdefault(slot, {})[var_path] = value
            optimizer.set_state({"iterations": config.get("optimizer_iterations", 0), "slots": slots})
    return model


def save_fastconv_weights(model, filepath, overwrite=True):
    """Save the weights only (same container, no architecture, no optimizer state)."""
    from fastconv import __version__

    if not model.built:
        raise ValueError(f"model {model.name!r} must be built before its weights are saved")
    config = {"format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION, "fastconv_version": __version__,
              "weights": _weight_order(model)}
    _write_archive(filepath, config, _weight_arrays(model), overwrite)


def load_fastconv_weights(model, filepath):
    """Load weights saved by :func:`save_fastconv_weights` (or :func:`save_model`) into a built model of the same
    architecture. Weights are matched by position (layer order, then kernel before bias), as Keras does, so the
    layer names may differ; every shape must match."""
    config, arrays = _read_archive(filepath, WEIGHTS_FORMAT)
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built before weights are loaded into it")
    with file_errors(f"filepath={os.fspath(filepath)!r}"):
        _assign_by_position(model, config, arrays, filepath)


def _assign_by_position(model, config, arrays, filepath):
    order = config.get("weights", [])
    if not isinstance(order, list) or not all(isinstance(p, str) and f"weights/{p}" in arrays for p in order):
        raise ValueError(f"the file's list of weights does not match its arrays; received "
                         f"filepath={os.fspath(filepath)!r}")
    variables = model.weights
    if len(order) != len(variables):
        raise ValueError(f"model {model.name!r} has {len(variables)} weights but the file holds {len(order)}; "
                         f"received filepath={os.fspath(filepath)!r}")
    values = [arrays[f"weights/{path}"] for path in order]
    for variable, value, path in zip(variables, values, order):
        if value.shape != variable.shape:
            raise ValueError(f"weight {variable.path!r} has shape {variable.shape} but the file's weight {path!r} "
                             f"has shape {value.shape}; received filepath={os.fspath(filepath)!r}")
    for variable, value in zip(variables, values):
        variable.assign(value)


def load_model(filepath, compile=True):
    """Load a model: a fastconv model file (written by ``model.save``), a Keras 3 ``.keras`` archive or a legacy
    Keras full-model ``.h5`` (Keras 2 or 3), recognised by content.

    A fastconv file restores the architecture, the weights bit for bit and (with ``compile=True``) the optimizer,
    loss, metrics and optimizer state, so training resumes exactly. A Keras file restores the architecture
    (translated into fastconv's layers) and the weights; compile the model yourself.

    Parameters
    ----------
    filepath : str or os.PathLike
    compile : bool
        Restore the compile settings and optimizer state (fastconv files that have them).

    Returns
    -------
    fastconv.Sequential or fastconv.Model

    Raises
    ------
    ValueError
        If the file is not a model file fastconv reads, uses a layer or argument fastconv lacks (named in the
        message), or does not match its own architecture.
    """
    from fastconv.formats import loading

    return loading.load_model(filepath, compile=compile)


def save_weights(model, filepath, overwrite=True):
    """Save the weights only, atomically: ``*.weights.h5`` in Keras 3's layout (Keras's ``load_weights`` reads
    it), ``*.h5`` in Keras's legacy layout, any other name in fastconv's own format."""
    from fastconv.formats import loading

    loading.save_weights(model, filepath, overwrite=overwrite)


def load_weights(model, filepath):
    """Load weights from a fastconv, Keras (legacy ``.h5``, ``.weights.h5``, ``.keras``), PyTorch
    (``torch.save`` of a state_dict) or safetensors file, recognised by content (see
    :mod:`fastconv.formats.loading`)."""
    from fastconv.formats import loading

    loading.load_weights(model, filepath)
