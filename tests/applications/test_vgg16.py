"""VGG16 against keras.applications.VGG16: the same architecture layer by layer, the same predictions with the
same weights, the same input-shape rules; ImageNet weights fetched through get_file from a local server in the
published Keras HDF5 layout; preprocess_input as Keras computes it."""
import hashlib
import inspect
import re
import socket

import numpy as np
import pytest

import fastconv
from fastconv.applications import VGG16, imagenet_utils, vgg16
from fastconv.formats.download import DownloadError

SMALL = dict(include_top=False, input_shape=(32, 32, 3))
# (VGG16 arguments, the image size to compare predictions at or None). The top is kept small (32x32 input,
# 5 classes) and gives logits, so the comparison sees the Flatten order feeding fc1 undamped by a softmax.
CONFIGS = [
    (dict(include_top=False, input_shape=(32, 32, 3), pooling="avg"), None),
    (dict(include_top=False, input_shape=(40, 33, 3), pooling="max"), None),
    (dict(include_top=False), (37, 64)),                            # free size: (None, None, 3)
    (dict(include_top=True, input_shape=(32, 32, 3), classes=5, classifier_activation=None), (32, 32)),
]


def _base_name(layer):
    """Automatic names carry a process-wide counter (``input_layer_3``): compare them without it."""
    return re.sub(r"_\d+$", "", layer.name)


def _keras_vgg16(keras, **kwargs):
    return keras.applications.VGG16(weights=None, **kwargs)


def _copy_weights(ours, theirs):
    for layer in ours.layers:
        if layer.get_weights():
            theirs.get_layer(layer.name).set_weights(layer.get_weights())


@pytest.mark.parametrize("kwargs, predict_size", CONFIGS, ids=["notop-avg", "notop-max", "notop-free", "top-logits"])
def test_matches_keras_layer_by_layer_and_in_predictions(keras, rng, kwargs, predict_size):
    """Names, classes, output shapes and parameter counts of every layer; then, with Keras's model given our
    weights, the same outputs on preprocessed random images."""
    ours, theirs = VGG16(weights=None, **kwargs), _keras_vgg16(keras, **kwargs)
    assert ours.name == theirs.name == "vgg16"
    assert len(ours.layers) == len(theirs.layers)
    for mine, reference in zip(ours.layers, theirs.layers):
        assert type(mine).__name__ == type(reference).__name__
        assert _base_name(mine) == _base_name(reference)
        assert tuple(mine.output.shape) == tuple(reference.output.shape), mine.name
        assert mine.count_params() == reference.count_params(), mine.name
        assert [w.shape for w in mine.weights] == [tuple(w.shape) for w in reference.weights], mine.name
    assert ours.count_params() == theirs.count_params()
    assert ours.output_shape == tuple(theirs.output_shape)
    if predict_size is None:
        return
    _copy_weights(ours, theirs)
    x = vgg16.preprocess_input(rng.uniform(0, 255, (2,) + predict_size + (3,)).astype(np.float32))
    mine, reference = ours.predict(x, verbose=0), np.asarray(theirs.predict(x, verbose=0))
    assert mine.shape == reference.shape and mine.dtype == np.float32
    assert np.abs(reference).max() > 0
    np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_full_size_top_has_keras_s_shapes():
    """The default 224x224x3 network with the 1000-class top: only a few shapes are checked, since Keras's
    own counts for it are well known (138,357,544 parameters, fc1 reads 7*7*512 features)."""
    model = VGG16(weights=None)
    assert model.input_shape == (None, 224, 224, 3)
    assert model.get_layer("block5_pool").output.shape == (None, 7, 7, 512)
    assert model.get_layer("flatten").output.shape == (None, 25088)
    assert model.get_layer("fc1").get_weights()[0].shape == (25088, 4096)
    assert model.output_shape == (None, 1000)
    assert model.count_params() == 138_357_544


@pytest.mark.parametrize("kwargs, match", [
    (dict(weights="imagenet", input_shape=(32, 32, 3)), "input_shape must be"),
    (dict(weights="imagenet", classes=10), "classes must be 1000"),
    (dict(weights=None, input_shape=(None, None, 3)), "every input dimension"),
    (dict(weights=None, include_top=False, input_shape=(31, 64, 3)), "at least 32x32"),
    (dict(weights="imagenet", include_top=False, input_shape=(64, 64, 4)), "3 channels"),
    (dict(weights=None, include_top=False, input_shape=(64, 64)), "input_shape"),
    (dict(weights=None, include_top=False, input_shape=(64, 0, 3)), "input_shape"),
    (dict(weights=None, include_top=False, pooling="mean"), "pooling"),
    (dict(weights="no/such/file.h5"), "weights"),
    (dict(weights="imagenet", classifier_activation="relu"), "classifier_activation"),
    (dict(weights=None, classes=0), "classes"),
    (dict(weights=None, include_top=False, name=""), "name"),
])
def test_bad_arguments_raise_before_any_download(keras_home, kwargs, match):
    with pytest.raises(ValueError, match=match):
        VGG16(**kwargs)
    assert not keras_home.exists()


def test_keras_raises_for_the_same_arguments(keras):
    """The shape rules are Keras's: the same calls fail there too."""
    for kwargs in (dict(weights="imagenet", input_shape=(32, 32, 3)), dict(weights="imagenet", classes=10),
                   dict(weights=None, input_shape=(None, None, 3)),
                   dict(weights=None, include_top=False, input_shape=(31, 64, 3))):
        with pytest.raises(ValueError):
            keras.applications.VGG16(**kwargs)


def test_input_tensor_not_symbolic_is_a_type_error():
    with pytest.raises(TypeError, match="input_tensor"):
        VGG16(weights=None, include_top=False, input_tensor=np.zeros((1, 32, 32, 3), np.float32))


def test_input_tensor_builds_on_the_given_graph(rng):
    inputs = fastconv.layers.Input((32, 32, 3))
    model = VGG16(weights=None, include_top=False, input_tensor=inputs, pooling="avg")
    assert model.input is inputs
    # A tensor computed from an Input: the model starts at that Input and runs the layers before VGG16's.
    scaled = fastconv.layers.Conv2D(3, 1, name="adapter")(fastconv.layers.Input((32, 32, 5)))
    model = VGG16(weights=None, include_top=False, input_tensor=scaled)
    assert model.layers[1].name == "adapter"
    assert model.predict(rng.standard_normal((1, 32, 32, 5)).astype(np.float32), verbose=0).shape == (1, 1, 1, 512)
    with pytest.raises(ValueError, match="input_shape must match"):
        VGG16(weights=None, include_top=False, input_tensor=inputs, input_shape=(64, 64, 3))


def test_weights_from_a_fastconv_weights_file(tmp_path, rng):
    source = VGG16(weights=None, **SMALL)
    path = tmp_path / "vgg16_weights.fcw"
    source.save_weights(path)
    loaded = VGG16(weights=str(path), **SMALL)
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_table_is_keras_s(keras):
    from keras.src.applications import vgg16 as keras_vgg16

    source = inspect.getsource(keras_vgg16)
    assert vgg16.WEIGHTS[True].origin == keras_vgg16.WEIGHTS_PATH
    assert vgg16.WEIGHTS[False].origin == keras_vgg16.WEIGHTS_PATH_NO_TOP
    for entry in vgg16.WEIGHTS.values():
        assert entry.origin.endswith("/" + entry.fname)
        assert f'"{entry.fname}"' in source and f'file_hash="{entry.file_hash}"' in source


# --- ImageNet weights: Keras's published HDF5 layout, served locally ---------------------------------------------

def write_keras2_h5(path, layers, nested_names=False):
    """A Keras 2 HDF5 weight file, laid out as the published keras-applications files are: the root attribute
    ``layer_names`` lists every layer (weightless ones too), each layer's group has a ``weight_names`` attribute
    and a dataset per weight. ``layers`` is a list of (name, [arrays]). The published VGG16 files name weights
    ``block1_conv1_W_1:0`` / ``block1_conv1_b_1:0`` in the layer's group; ``nested_names`` uses the later
    ``block1_conv1/kernel:0`` naming (a subgroup per layer), which Keras 2 wrote too."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([name.encode() for name, _ in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.0.8"
        for name, arrays in layers:
            group = f.create_group(name)
            if nested_names:
                names = [f"{name}/{kind}:0" for kind in ("kernel", "bias")][: len(arrays)]
            else:
                names = [f"{name}_{kind}_1:0" for kind in ("W", "b")][: len(arrays)]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for weight_name, array in zip(names, arrays):
                group.create_dataset(weight_name, data=array)


def _random_vgg16_layers(rng, include_top=False):
    """(name, [kernel, bias]) for every layer of the published file, weightless ones included; He-scaled so
    the activations stay of order one through thirteen ReLU convolutions."""
    layers, channels = [("input_1", [])], 3
    for block, convolutions, filters in vgg16._BLOCKS:
        for i in range(1, convolutions + 1):
            kernel = rng.standard_normal((3, 3, channels, filters), dtype=np.float32) * np.sqrt(2 / (9 * channels))
            layers.append((f"block{block}_conv{i}", [kernel.astype(np.float32),
                                                     rng.normal(0, 0.1, filters).astype(np.float32)]))
            channels = filters
        layers.append((f"block{block}_pool", []))
    assert not include_top  # the 528 MB top is never generated in a test
    return layers


@pytest.fixture
def served_notop_weights(tmp_path, rng, file_server, keras_home, monkeypatch):
    """A random VGG16 notop weight file in the published layout, served at a local URL that the weights table
    points to (with its md5), and the arrays it holds by layer."""
    layers = _random_vgg16_layers(rng)
    path = tmp_path / "served.h5"
    write_keras2_h5(path, layers)
    body = path.read_bytes()
    published = vgg16.WEIGHTS[False]
    file_server.files["/" + published.fname] = body
    monkeypatch.setitem(vgg16.WEIGHTS, False, vgg16.PublishedWeights(
        published.fname, file_server.url("/" + published.fname), hashlib.md5(body).hexdigest()))
    return path, dict(layers)


def test_imagenet_weights_download_once_and_load(served_notop_weights, file_server, keras_home, keras, rng):
    path, arrays = served_notop_weights
    model = VGG16(weights="imagenet", include_top=False, input_shape=(32, 32, 3), pooling="avg")
    cached = keras_home / "models" / vgg16.WEIGHTS[False].fname
    assert cached.read_bytes() == path.read_bytes()
    assert len(file_server.requests) == 1
    for layer in model.layers:
        if layer.get_weights():
            for mine, stored in zip(layer.get_weights(), arrays[layer.name]):
                np.testing.assert_array_equal(mine, stored)
    # Keras reads the same file into its VGG16: the two agree.
    theirs = keras.applications.VGG16(weights=str(path), include_top=False, input_shape=(32, 32, 3), pooling="avg")
    x = vgg16.preprocess_input(rng.uniform(0, 255, (2, 32, 32, 3)))
    np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(theirs.predict(x, verbose=0)),
                               rtol=1e-4, atol=1e-4 * np.abs(model.predict(x, verbose=0)).max())
    # Any size works with the same cached file, and no second request is made.
    VGG16(weights="imagenet", include_top=False, input_shape=(48, 40, 3))
    assert len(file_server.requests) == 1


def test_weights_from_a_keras2_h5_path_with_nested_names(tmp_path, rng):
    layers = _random_vgg16_layers(rng)
    path = tmp_path / "vgg16_keras2.h5"
    write_keras2_h5(path, layers, nested_names=True)
    model = VGG16(weights=str(path), **SMALL)
    stored = dict(layers)
    np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[0], stored["block5_conv3"][0])
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[1], stored["block1_conv1"][1])


def test_imagenet_weights_with_a_tampered_file_are_refused(file_server, keras_home, monkeypatch):
    published = vgg16.WEIGHTS[False]
    file_server.files["/" + published.fname] = b"not the published weights"
    monkeypatch.setitem(vgg16.WEIGHTS, False, published._replace(origin=file_server.url("/" + published.fname)))
    with pytest.raises(ValueError, match="not saved"):
        VGG16(weights="imagenet", **SMALL)
    assert file_server.requests == ["/" + published.fname]
    assert not (keras_home / "models" / published.fname).exists()


def test_imagenet_weights_offline_name_the_file_and_where_to_put_it(keras_home, monkeypatch):
    published = vgg16.WEIGHTS[True]
    with socket.socket() as s:  # a port nothing listens on: bound, then released
        s.bind(("127.0.0.1", 0))
        origin = f"http://127.0.0.1:{s.getsockname()[1]}/{published.fname}"
    monkeypatch.setitem(vgg16.WEIGHTS, True, published._replace(origin=origin))
    with pytest.raises(DownloadError) as info:
        VGG16(weights="imagenet")
    message = str(info.value)
    assert origin in message
    assert str(keras_home / "models" / published.fname) in message
    assert published.file_hash in message


# --- preprocess_input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, data_format", [((2, 5, 4, 3), "channels_last"), ((5, 4, 3), "channels_last"),
                                                ((2, 3, 5, 4), "channels_first"), ((3, 5, 4), "channels_first"),
                                                ((2, 5, 4, 3), None)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_preprocess_input_matches_keras(keras, rng, shape, data_format, dtype):
    from keras.applications import vgg16 as keras_vgg16

    x = rng.uniform(0, 255, shape).astype(dtype)
    original = x.copy()
    mine = vgg16.preprocess_input(x, data_format=data_format)
    reference = keras_vgg16.preprocess_input(x.copy(), data_format=data_format)  # Keras works in place
    np.testing.assert_array_equal(x, original)   # ours never touches its input
    assert mine.dtype == reference.dtype == (np.float64 if dtype == np.float64 else np.float32)
    np.testing.assert_array_equal(mine, reference)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_imagenet_utils_modes_match_keras(keras, rng, mode, data_format):
    from keras.applications import imagenet_utils as keras_utils

    shape = (2, 4, 5, 3) if data_format == "channels_last" else (2, 3, 4, 5)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    reference = keras_utils.preprocess_input(x.copy(), data_format=data_format, mode=mode)
    mine = imagenet_utils.preprocess_input(x, data_format=data_format, mode=mode)
    assert mine.dtype == np.float32
    np.testing.assert_allclose(mine, reference, rtol=1e-6, atol=1e-6)


def test_preprocess_input_caffe_by_hand():
    x = np.array([[[[10, 20, 30]]]], dtype=np.uint8)
    expected = np.array([30 - 103.939, 20 - 116.779, 10 - 123.68], dtype=np.float32)
    np.testing.assert_array_equal(vgg16.preprocess_input(x)[0, 0, 0], expected)
    first = vgg16.preprocess_input(np.moveaxis(x, -1, 1), data_format="channels_first")
    np.testing.assert_array_equal(first[0, :, 0, 0], expected)


@pytest.mark.parametrize("x, kwargs, error, match", [
    (np.zeros((2, 4, 4, 4)), {}, ValueError, "3 \\(RGB\\) channels"),
    (np.zeros((2, 4, 4, 3)), dict(data_format="channels_first"), ValueError, "channels"),
    (np.zeros((4, 3)), {}, ValueError, "shape"),
    (np.zeros((2, 4, 4, 3)), dict(data_format="NHWC"), ValueError, "data_format"),
    (np.zeros((2, 4, 4, 3)), dict(mode="caffee"), ValueError, "mode"),
    (np.array([[["a", "b", "c"]]]), {}, TypeError, "dtype"),
    (np.zeros((2, 4, 4, 3), dtype=complex), {}, TypeError, "dtype"),
])
def test_preprocess_input_bad_input(x, kwargs, error, match):
    with pytest.raises(error, match=match):
        imagenet_utils.preprocess_input(x, **kwargs)


def test_preprocess_input_promotes_float16_and_accepts_lists():
    assert vgg16.preprocess_input(np.zeros((1, 2, 2, 3), np.float16)).dtype == np.float32
    out = vgg16.preprocess_input([[[0, 0, 0]]])
    assert out.dtype == np.float32 and out.shape == (1, 1, 3)
