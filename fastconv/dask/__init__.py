"""Batch inference and feature extraction with Dask: a fastconv model over a dask array of images, on any Dask
scheduler (threads, processes, or a ``distributed`` cluster of one machine or many).

The model travels once: it is saved to bytes in fastconv's own format (configuration and ``.npy`` weights, read
back without unpickling) and becomes a single key of the graph (or, with ``client=``, a future scattered to every
worker), on which every chunk's task depends. Each worker process rebuilds it on first use and keeps it, so a
chunk costs one ``model.predict`` and no deserialisation. Inside each task fastconv's thread count follows the
worker's (see :func:`task_threads`).

Needs ``dask[array]`` (and ``distributed`` for a cluster, ``zarr`` for Zarr stores); ``import fastconv`` does not
import any of them.

>>> import numpy as np, pytest, fastconv
>>> da = pytest.importorskip("dask.array")
>>> from fastconv.layers import Input, Conv2D, Flatten, Dense
>>> import fastconv.dask
>>> model = fastconv.Sequential([Input((8, 8, 1)), Conv2D(2, 3), Flatten(), Dense(3, activation="softmax")])
>>> images = da.zeros((100, 8, 8, 1), chunks=(25, 8, 8, 1), dtype="float32")
>>> probabilities = fastconv.dask.predict(model, images)   # lazy: nothing has run yet
>>> probabilities.shape, probabilities.numblocks
((100, 3), (4, 1))
>>> bool(np.allclose(probabilities.compute(), model.predict(images.compute(), verbose=0)))
True
"""
import math
import os

import numpy as np

from fastconv.dask import _payload
from fastconv.dask._workers import check_threads, task_threads

__all__ = ["predict", "extract_features", "task_threads"]

_STORE_FORMATS = ("zarr", "npy")


def _dask_array():
    try:
        import dask.array as da
    except ImportError as exc:
        raise ImportError("fastconv.dask needs dask: pip install 'dask[array]' (and distributed for a cluster)") \
            from exc
    return da


def _check_model(model, name):
    from fastconv.models.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"{name} must be a fastconv model (fastconv.Sequential or fastconv.Model); received {name} "
                        f"of type {type(model).__name__}")
    if model._graph is None:
        raise ValueError(f"{name} must be built (start it with an Input(shape) or call build(input_shape)); "
                         f"received the unbuilt model {model.name!r}")
    if model.multi_input or not model._graph.single_output:
        raise ValueError(f"{name} must have one input and one output; received model {model.name!r} with "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be a positive int; received batch_size={batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; received batch_size={batch_size!r}")
    return int(batch_size)


def _check_images(images, model, name):
    """``images`` as a dask array with one chunk along every axis but the batch axis."""
    da = _dask_array()
    if not isinstance(images, da.Array):
        raise TypeError(f"{name} must be a dask array (dask.array.from_array, from_zarr, from_npy_stack ...) "
                        f"chunked along the batch axis; received {name} of type {type(images).__name__}")
    if images.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers; received {name} with dtype {images.dtype}")
    expected = tuple(model.input_shape)
    if images.ndim != len(expected):
        raise ValueError(f"{name} must have {len(expected)} axes to fit model {model.name!r}'s input "
                         f"{expected}; received {name} with shape {images.shape}")
    for axis in range(1, images.ndim):
        size = images.shape[axis]
        if isinstance(size, float) and math.isnan(size):
            raise ValueError(f"{name} must have known sizes on every axis but the batch axis; received {name} "
                             f"with shape {images.shape}")
        if expected[axis] is not None and size != expected[axis]:
            raise ValueError(f"{name} must have shape {expected} (batch axis first) to fit model "
                             f"{model.name!r}; received {name} with shape {images.shape}")
    if any(len(chunks) > 1 for chunks in images.chunks[1:]):
        # A model needs whole images: chunks may split the batch axis only.
        images = images.rechunk({axis: -1 for axis in range(1, images.ndim)})
    return images


def _output_tail(model, images):
    """Per-sample output shape (one forward pass on a zero image when the model's output shape has free axes)."""
    tail = tuple(model.output_shape[1:])
    if any(size is None for size in tail):
        probe = np.zeros((1,) + tuple(int(s) for s in images.shape[1:]), dtype=images.dtype)
        tail = model.predict(probe, verbose=0).shape[1:]
    return tuple(int(s) for s in tail)


def _model_reference(model, client):
    """``(reference, digest)``: the model's bytes as one graph key (a Delayed) or as a future on every worker."""
    data = _payload.model_to_bytes(model)
    digest = _payload.content_digest(data)
    if client is None:
        import dask

        return dask.delayed(data, name=f"fastconv-model-{digest}", pure=True), digest
    from distributed import Client

    if not isinstance(client, Client):
        raise TypeError(f"client must be a distributed.Client or None; received client of type "
                        f"{type(client).__name__}")
    return client.scatter(data, broadcast=True, hash=True), digest


def _predict_block(block, data, digest, batch_size, num_threads):
    model = _payload.cached_model(digest, data)
    with task_threads(num_threads):
        return model.predict(block, batch_size=batch_size, verbose=0)


def predict(model, images, batch_size=32, *, num_threads=None, client=None):
    """Lazily predict a dask array of images with a fastconv model, one task per chunk.

    Parameters
    ----------
    model : fastconv.Sequential or fastconv.Model
        Built, with one input and one output.
    images : dask.array.Array
        ``(N, ...)`` matching the model's input (``(N, H, W, C)`` for a channels-last convnet), any real dtype
        (cast per chunk to the model's, so uint8 images travel at one byte per pixel). Chunk it along the batch
        axis (a few hundred to a few thousand images per chunk); chunks along other axes are merged.
    batch_size : int
        Images per forward pass inside a chunk (bounds each worker's activation memory).
    num_threads : int, optional
        fastconv threads per task; by default the rule of :func:`task_threads` (a distributed worker's
        ``nthreads``, 1 per task under the threaded or processes scheduler).
    client : distributed.Client, optional
        Scatter the model to all of this client's workers now (``broadcast=True``) and let the graph refer to
        that future; best for large models. Without it the model's bytes are one key of the graph, which runs
        on any scheduler (a distributed cluster too, which then ships that key to each worker once).

    Returns
    -------
    dask.array.Array
        ``(N, ...)`` model outputs in the model's dtype, chunked like ``images`` along the batch axis. Nothing
        runs until it is computed or stored.

    Raises
    ------
    TypeError
        ``model`` not a fastconv model, ``images`` not a dask array of numbers, a bad ``batch_size`` or
        ``client`` type.
    ValueError
        An unbuilt or multi-input/output model, ``images`` of the wrong shape, ``batch_size < 1``.
    """
    da = _dask_array()
    from dask.base import tokenize

    _check_model(model, "model")
    images = _check_images(images, model, "images")
    batch_size = _check_batch_size(batch_size)
    num_threads = check_threads(num_threads)
    tail = _output_tail(model, images)
    dtype = np.dtype(model.output_dtype)
    reference, digest = _model_reference(model, client)
    out_ndim = 1 + len(tail)
    extra = {}
    if out_ndim < images.ndim:
        extra["drop_axis"] = list(range(out_ndim, images.ndim))
    elif out_ndim > images.ndim:
        extra["new_axis"] = list(range(images.ndim, out_ndim))
    return da.map_blocks(
        _predict_block, images, reference, digest, batch_size, num_threads,
        chunks=(images.chunks[0],) + tuple((size,) for size in tail), dtype=dtype,
        meta=np.empty((0,) * out_ndim, dtype=dtype),
        name="fastconv-predict-" + tokenize(digest, images.name, batch_size, num_threads), **extra)


def _check_store_format(store_format):
    if store_format not in _STORE_FORMATS:
        raise ValueError(f"store_format must be one of {', '.join(repr(f) for f in _STORE_FORMATS)}; received "
                         f"store_format={store_format!r}")
    return store_format


def _regular_batch_chunks(features):
    """Known, regular batch chunks (all equal but a smaller last one), as Zarr and .npy stacks need."""
    chunks = features.chunks[0]
    if any(isinstance(c, float) and math.isnan(c) for c in chunks):
        raise ValueError("images must have known chunk sizes along the batch axis to be stored; call "
                         "images.compute_chunk_sizes() first; received images with chunks "
                         f"{features.chunks[0]}")
    regular = all(c == chunks[0] for c in chunks[:-1]) and chunks[-1] <= chunks[0]
    return features if regular else features.rechunk({0: max(chunks)})


def _npy_stack_reader(dirname, features):
    """A lazy dask array over the ``<i>.npy`` files ``dask.array.to_npy_stack`` wrote (read with
    ``allow_pickle=False``; dask's own ``from_npy_stack`` unpickles the stack's ``info`` file)."""
    import dask
    da = _dask_array()

    def load(path):
        return np.load(path, mmap_mode="r", allow_pickle=False)

    parts = []
    for i, rows in enumerate(features.chunks[0]):
        path = os.path.join(dirname, f"{i}.npy")
        parts.append(da.from_delayed(dask.delayed(load, pure=True)(path), shape=(rows,) + features.shape[1:],
                                     dtype=features.dtype))
    return da.concatenate(parts, axis=0) if parts else features[:0]


def extract_features(conv_base, images, batch_size=32, *, store=None, store_format="zarr", component=None,
                     overwrite=False, compute=True, num_threads=None, client=None):
    """Run a (frozen) convolutional base over a whole dataset once, and write the features to a store from the
    workers, without gathering them on the client.

    Parameters
    ----------
    conv_base : fastconv.Sequential or fastconv.Model
        Built, one input and one output (for example ``fastconv.applications.VGG16(include_top=False, ...)``).
        It runs in inference mode (dropout off, batch normalisation on its moving statistics).
    images : dask.array.Array
        As for :func:`predict`.
    batch_size : int
    store : str, os.PathLike, Zarr store or zarr.Array, optional
        Where to write. None returns the lazy features instead. With ``store_format="zarr"``, anything
        ``dask.array.to_zarr`` accepts (a path, an ``fsspec`` URL such as ``"s3://bucket/features.zarr"``, a Zarr
        store or array); with ``"npy"``, a directory (``dask.array.to_npy_stack``: one ``<i>.npy`` per chunk).
        Each worker writes its own chunks, so on a multi-machine cluster the store must be reachable from every
        worker (object storage or a shared file system).
    store_format : {"zarr", "npy"}
    component : str, optional
        The array's path inside a Zarr group.
    overwrite : bool
        Replace an existing store (a path that exists raises ``FileExistsError`` otherwise).
    compute : bool
        Write now (True), or return a ``dask.delayed.Delayed`` that writes when computed (Zarr only).
    num_threads, client
        As for :func:`predict`.

    Returns
    -------
    dask.array.Array or dask.delayed.Delayed
        Without ``store``: the lazy features ``(N, ...)``. With it: a lazy array reading the written store back
        (``compute=True``) or the Delayed that writes it (``compute=False``).

    Raises
    ------
    TypeError, ValueError
        As for :func:`predict`; a bad ``store_format``; ``compute=False`` with ``"npy"``; unknown chunk sizes.
    FileExistsError
        If ``store`` is an existing path and ``overwrite`` is False.

    Examples
    --------
    >>> import numpy as np, pytest, fastconv, fastconv.dask
    >>> da = pytest.importorskip("dask.array")
    >>> from fastconv.layers import Input, Conv2D, MaxPooling2D
    >>> base = fastconv.Sequential([Input((8, 8, 1)), Conv2D(4, 3, activation="relu"), MaxPooling2D(2)])
    >>> images = da.ones((64, 8, 8, 1), chunks=(16, 8, 8, 1), dtype="float32")
    >>> fastconv.dask.extract_features(base, images).shape          # store=None: lazy features
    (64, 3, 3, 4)
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> written = fastconv.dask.extract_features(base, images, store=os.path.join(folder, "f"), store_format="npy")
    >>> sorted(os.listdir(os.path.join(folder, "f")))[:2], written.shape
    (['0.npy', '1.npy'], (64, 3, 3, 4))
    """
    _check_model(conv_base, "conv_base")
    features = predict(conv_base, images, batch_size, num_threads=num_threads, client=client)
    if store is None:
        return features
    da = _dask_array()
    store_format = _check_store_format(store_format)
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"overwrite must be a bool; received overwrite={overwrite!r}")
    if not isinstance(compute, (bool, np.bool_)):
        raise TypeError(f"compute must be a bool; received compute={compute!r}")
    features = _regular_batch_chunks(features)
    is_path = isinstance(store, (str, os.PathLike))
    if is_path and "://" not in os.fspath(store) and os.path.exists(os.fspath(store)) and not overwrite:
        raise FileExistsError(f"store exists and overwrite=False; received store={os.fspath(store)!r}")
    if store_format == "npy":
        if not is_path:
            raise TypeError(f"store must be a directory path with store_format='npy'; received store of type "
                            f"{type(store).__name__}")
        if component is not None:
            raise ValueError(f"component only applies to Zarr stores; received component={component!r} with "
                             f"store_format='npy'")
        if not compute:
            raise ValueError("store_format='npy' writes at once (dask.array.to_npy_stack has no delayed mode); "
                             "received compute=False")
        dirname = os.fspath(store)
        if overwrite and os.path.isdir(dirname):
            _clear_npy_stack(dirname)
        da.to_npy_stack(dirname, features, axis=0)
        return _npy_stack_reader(dirname, features)
    try:
        import zarr  # noqa: F401  (a clear message before dask's own)
    except ImportError as exc:
        raise ImportError("store_format='zarr' needs zarr: pip install zarr") from exc
    target = os.fspath(store) if is_path else store
    written = da.to_zarr(features, target, component=component, overwrite=bool(overwrite), compute=bool(compute))
    if not compute:
        return written
    return da.from_zarr(target, component=component)


def _clear_npy_stack(dirname):
    """Remove a previous stack's files (only the ``info`` file and ``<i>.npy`` files ``to_npy_stack`` writes)."""
    for entry in os.listdir(dirname):
        stem, ext = os.path.splitext(entry)
        if entry == "info" or (ext == ".npy" and stem.isdigit()):
            path = os.path.join(dirname, entry)
            if os.path.isfile(path) and not os.path.islink(path):
                os.unlink(path)
