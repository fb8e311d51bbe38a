"""The file readers under fuzz: for each, the seeds it starts from, how it is called, and what it may raise.

Imported by the fuzz tests and by their worker process (``_hostile_worker.py``), which must not import pytest.
Each reader is called through fastconv's public entry points, the way a user hands fastconv a file it did not
write; a file that loads is also run once through ``predict``, so a hostile file that produces a model also
gets its layers executed.
"""
import math
import os
from dataclasses import dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
# Inputs larger than this are not predicted on: a hostile file may declare a huge input legitimately.
_MAX_PREDICT_ELEMENTS = 1 << 16


def channels_last_model():
    """The network every Keras and fastconv seed holds, in fastconv."""
    import fastconv
    from fastconv import layers

    return fastconv.Sequential([
        layers.Input((6, 6, 1)), layers.Conv2D(2, 3, name="conv2d"),
        layers.BatchNormalization(name="batch_normalization"), layers.Activation("relu", name="re_lu"),
        layers.MaxPooling2D(2, name="max_pooling2d"), layers.Flatten(name="flatten"), layers.Dense(3, name="dense")],
        name="tiny")


def channels_first_model():
    """The network the PyTorch and safetensors seeds hold (``nn.Sequential`` of Conv2d, BatchNorm2d, ReLU,
    MaxPool2d, Flatten, Linear), in fastconv's NCHW layers."""
    import fastconv
    from fastconv import layers

    return fastconv.Sequential([
        layers.Input((1, 6, 6)), layers.Conv2D(2, 3, data_format="channels_first"),
        layers.BatchNormalization(axis=1, epsilon=1e-5), layers.ReLU(),
        layers.MaxPooling2D(2, data_format="channels_first"), layers.Flatten(), layers.Dense(3)])


def _exercise(model):
    """Run a loaded model once on zeros (when its input is small), so its layers execute. A layer may refuse
    what a forged (but loadable) architecture asks of it with a ValueError; anything else escapes."""
    shapes = [tuple(t.shape) for t in model.inputs]
    if not all(all(isinstance(d, int) for d in s[1:]) for s in shapes):
        return
    if any(math.prod(s[1:]) > _MAX_PREDICT_ELEMENTS for s in shapes):
        return
    xs = [np.zeros((1,) + s[1:], np.float32) for s in shapes]
    try:
        model.predict(xs[0] if len(xs) == 1 else xs, verbose=0)
    except ValueError:
        pass


_models = {}


def _model(builder):
    if builder not in _models:
        _models[builder] = builder()
    return _models[builder]


def _load_weights(builder):
    def load(path):
        _model(builder).load_weights(path)
    return load


def _load_model(path):
    import fastconv

    _exercise(fastconv.load_model(path))


def _load_keras_archive(path):
    import fastconv

    _exercise(fastconv.load_model(path))
    _model(channels_last_model).load_weights(path)


def _load_torch(path):
    from fastconv.formats.torch_zip import read_state_dict

    read_state_dict(path)
    _model(channels_first_model).load_weights(path)


def _load_safetensors(path):
    from fastconv.formats.safetensors import read_safetensors

    read_safetensors(path)
    _model(channels_first_model).load_weights(path)


def _load_onnx(path):
    import fastconv

    _exercise(fastconv.load_onnx(path))


def _load_image(path):
    from fastconv.preprocessing import _pillow
    from fastconv.visualize.images import read_image

    read_image(path)
    read_image(path, mode="L")
    _pillow.load_image(path, "rgb", (8, 8), "bilinear")


@dataclass(frozen=True)
class Reader:
    """One reader: ``load(path)`` returns on a clean load and may raise only ``allowed`` (with a message that
    names the file); ``needs`` is the optional dependency it is skipped without."""
    name: str
    seeds: tuple
    load: object
    allowed: tuple
    suffix: str
    needs: str = None


READERS = {r.name: r for r in [
    Reader("keras_h5_legacy_weights", ("fastconv_legacy.h5",), _load_weights(channels_last_model), (ValueError,),
           ".h5", "h5py"),
    Reader("keras_h5_legacy_model", ("keras_legacy_model.h5",), _load_model, (ValueError,), ".h5", "h5py"),
    Reader("keras3_weights_h5", ("keras_weights.weights.h5", "fastconv_keras3.weights.h5"),
           _load_weights(channels_last_model), (ValueError,), ".weights.h5", "h5py"),
    Reader("keras_archive", ("keras_model.keras",), _load_keras_archive, (ValueError,), ".keras", "h5py"),
    Reader("torch_zip", ("torch_state_dict.pt", "torch_checkpoint.pt"), _load_torch, (ValueError,), ".pt"),
    Reader("safetensors", ("torch_weights.safetensors",), _load_safetensors, (ValueError,), ".safetensors"),
    Reader("onnx", ("tiny.onnx",), _load_onnx, (ValueError,), ".onnx", "onnx"),
    Reader("fastconv_model", ("fastconv_model.fcm",), _load_model, (ValueError,), ".fcm"),
    Reader("fastconv_weights", ("fastconv_weights.fcw",), _load_weights(channels_last_model), (ValueError,), ".fcw"),
    # PNG seeds end in .bin: the repository ignores *.png, and Pillow tells formats by content anyway
    Reader("image", ("image_rgb.png.bin", "image_gray.png.bin", "image_rgba.png.bin", "image_palette.png.bin",
                     "image.jpg", "image_progressive.jpg", "image.gif", "image.bmp", "image.tiff", "image.webp"),
           _load_image, (OSError,), ".img", "PIL"),
]}


# --- readers that break the promises on purpose: the harness must catch each (test_hostile_crafted.py) -------
def _careless_unpickler(path):
    import pickle

    with open(path, "rb") as f:
        pickle.load(f)  # exactly what a reader must never do


def _aborts(path):
    os.abort()


def _hangs(path):
    import time

    time.sleep(3600)


def _writes_beside(path):
    with open(path + ".cache", "w") as f:
        f.write("x")


def _raises(error):
    def load(path):
        raise error
    return load


SELF_TEST_READERS = {r.name: r for r in [
    Reader("selftest_unpickles", (), _careless_unpickler, (ValueError, Exception), ".pkl"),
    Reader("selftest_aborts", (), _aborts, (ValueError,), ".bin"),
    Reader("selftest_hangs", (), _hangs, (ValueError,), ".bin"),
    Reader("selftest_writes", (), _writes_beside, (ValueError,), ".bin"),
    Reader("selftest_type_error", (), _raises(TypeError("fuzzcase-selftest_type_error.bin")), (ValueError,), ".bin"),
    Reader("selftest_nameless_error", (), _raises(ValueError("bad file")), (ValueError,), ".bin"),
]}


def reader_for(seed_name):
    """The reader whose seeds include ``seed_name``."""
    for reader in READERS.values():
        if seed_name in reader.seeds:
            return reader
    raise KeyError(seed_name)
