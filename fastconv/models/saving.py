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
import os
import secrets
import zipfile

import numpy as np

FORMAT = "fastconv.model"
WEIGHTS_FORMAT = "fastconv.weights"
FORMAT_VERSION = 1

__all__ = ["save_model", "load_model", "save_weights", "load_weights", "atomic_write", "atomic_path"]


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


def _read_archive(path, expected_format):
    path = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"filepath is not a fastconv model file (not a zip archive); received filepath={path!r}") \
            from None
    with zf:
        try:
            config = json.loads(zf.read("config.json"))
        except KeyError:
            raise ValueError(f"filepath is not a fastconv model file (no config.json); received filepath={path!r}") \
                from None
        if not isinstance(config, dict) or config.get("format") not in (FORMAT, WEIGHTS_FORMAT):
            raise ValueError(f"filepath is not a fastconv model file; received filepath={path!r}")
        if config.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"filepath was written by a newer fastconv (format version "
                             f"{config.get('format_version')}); received filepath={path!r}")
        if expected_format == FORMAT and config["format"] != FORMAT:
            raise ValueError(f"filepath holds weights only (use model.load_weights); received filepath={path!r}")
        arrays = {}
        for name in config.get("arrays", []):
            with zf.open(name + ".npy") as member:
                arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
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
    """Load a model saved by ``model.save``: the same architecture, weights bit for bit, and (with
    ``compile=True``) the same optimizer, loss, metrics and optimizer state, so training resumes exactly.

    Parameters
    ----------
    filepath : str or os.PathLike
    compile : bool
        Restore the compile settings and optimizer state (when the file has them).

    Returns
    -------
    fastconv.Sequential or fastconv.Model

    Raises
    ------
    ValueError
        If the file is not a fastconv model file or does not match its own architecture.
    """
    from fastconv import losses, metrics, optimizers
    from fastconv.models import serialization

    config, arrays = _read_archive(filepath, FORMAT)
    model_config = config["model"]
    if model_config.get("class_name") not in ("Sequential", "Functional"):
        raise ValueError(f"filepath holds an unknown model class {model_config.get('class_name')!r}; received "
                         f"filepath={os.fspath(filepath)!r}")
    model = serialization.deserialize(model_config)
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
    order = config.get("weights", [])
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
