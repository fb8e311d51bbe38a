"""A model as bytes for the workers of a cluster, and the per-process cache that rebuilds it once.

The bytes are fastconv's own model file (:mod:`fastconv.models.saving`: ``config.json`` and ``.npy`` arrays in a
zip, read back with ``allow_pickle=False``), so what travels between processes is configuration and weights, never
a pickled fastconv object. A process rebuilds a model the first time one of its tasks needs it and keeps it,
keyed by a digest of the archive's contents, for every later task (and every later graph) that sends the same
model.
"""
import collections
import hashlib
import io
import os
import tempfile
import threading
import zipfile

__all__ = ["model_to_bytes", "model_from_bytes", "content_digest", "cached_model", "build_counts"]

_CACHE_SIZE = 4  # models kept per process; a cluster rarely serves more than a couple at a time

_cache = collections.OrderedDict()
_cache_lock = threading.Lock()
_builds = collections.Counter()


def model_to_bytes(model, include_optimizer=False):
    """A built fastconv model as the bytes of a fastconv model file (see :func:`fastconv.models.save_model`).

    Parameters
    ----------
    model : fastconv.Model
    include_optimizer : bool
        Also keep the compile settings and the optimizer state (to resume training after the round trip).

    Returns
    -------
    bytes

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> from fastconv.layers import Input, Dense
    >>> from fastconv.dask._payload import model_to_bytes, model_from_bytes
    >>> model = fastconv.Sequential([Input((3,)), Dense(2)])
    >>> copy = model_from_bytes(model_to_bytes(model))
    >>> all(np.array_equal(a, b) for a, b in zip(model.get_weights(), copy.get_weights()))
    True
    """
    from fastconv.models import saving

    # The saver writes atomically next to a path; a private directory keeps that off every shared folder.
    with tempfile.TemporaryDirectory(prefix="fastconv-") as tmp:
        path = os.path.join(tmp, "model.fcm")
        saving.save_model(model, path, include_optimizer=include_optimizer)
        with open(path, "rb") as f:
            return f.read()


def model_from_bytes(data, compile=False):
    """The model held by :func:`model_to_bytes`'s bytes (read without unpickling).

    Raises
    ------
    TypeError
        If ``data`` is not bytes.
    ValueError
        If ``data`` is not a fastconv model file.
    """
    from fastconv.models import saving

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be the bytes of a fastconv model file; received data of type "
                        f"{type(data).__name__}")
    with tempfile.TemporaryDirectory(prefix="fastconv-") as tmp:
        path = os.path.join(tmp, "model.fcm")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return saving.load_fastconv_model(path, compile=compile)
        except (ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ValueError(f"data does not hold a fastconv model ({exc}); received {len(data)} bytes") from None


def content_digest(data):
    """SHA-256 of the archive's members (names and contents), not of its bytes: the zip records write times,
    so saving the same model twice gives other bytes but the same digest."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in sorted(zf.namelist()):
            digest.update(name.encode("utf-8") + b"\0")
            with zf.open(name) as member:
                for block in iter(lambda: member.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0")
    return digest.hexdigest()


def cached_model(digest, data):
    """This process's copy of the model (``digest`` from :func:`content_digest` of ``data``), built on first use.

    Threads of one process share the copy: inference only reads a model's weights (each forward pass keeps its
    activations to itself), so concurrent ``predict`` calls on it are safe.
    """
    with _cache_lock:
        model = _cache.get(digest)
        if model is not None:
            _cache.move_to_end(digest)
            return model
    model = model_from_bytes(data)  # outside the lock: a large model must not stall the other threads' lookups
    with _cache_lock:
        existing = _cache.get(digest)
        if existing is not None:  # another thread built it meanwhile: keep one copy
            return existing
        _cache[digest] = model
        _builds[digest] += 1
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return model


def build_counts():
    """How many times this process has rebuilt each model, by digest (what the tests check on the workers)."""
    with _cache_lock:
        return dict(_builds)
