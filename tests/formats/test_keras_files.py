"""Keras files of every generation load into fastconv with Keras's predictions, and Keras reads fastconv's.

The oracle is Keras 3 itself (on the torch backend): models are built and saved by Keras in each format it
writes (``.keras``, ``.weights.h5``, legacy ``.h5``), and files in Keras 2's layout are written with h5py
following that layout (attributes as bytes, weight names with ``:0``, Keras 2 configs).
"""
import json
import os

import numpy as np
import pytest

import fastconv
from fastconv import layers

h5py = pytest.importorskip("h5py")

ATOL = 2e-5


def _keras_mnist(keras):
    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(2), L.Conv2D(16, 3, activation="relu"),
        L.Flatten(), L.Dense(16, activation="relu"), L.Dense(10, activation="softmax")])


def _keras_graph(keras):
    L = keras.layers
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    y = L.SeparableConv2D(8, 3, padding="same")(x)
    y = L.BatchNormalization()(y)
    x = L.Add()([x, y])
    z = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    x = L.Concatenate()([x, z])
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)
    x = L.LeakyReLU(negative_slope=0.1)(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.3)(x)
    return keras.Model(inp, L.Dense(4, activation="softmax")(x))


def _keras_nested(keras):
    """The transfer-learning shape: a named convolutional base inside a Sequential classifier."""
    L = keras.layers
    base = keras.Sequential([keras.Input((20, 20, 3)), L.Conv2D(6, 3, activation="relu", name="block1_conv1"),
                             L.MaxPooling2D(2, name="block1_pool"), L.Conv2D(8, 3, name="block2_conv1")],
                            name="conv_base")
    return keras.Sequential([base, L.Flatten(), L.Dense(5, activation="relu"), L.Dense(1, activation="sigmoid")])


BUILDERS = {"mnist": _keras_mnist, "graph": _keras_graph, "nested": _keras_nested}


def _randomise(keras_model, seed=0):
    """Random weights everywhere, BN moving statistics included (positive variances)."""
    rng = np.random.default_rng(seed)
    values = []
    for w in keras_model.weights:
        v = rng.standard_normal(tuple(w.shape)).astype(np.float32) * 0.3
        if "variance" in w.path:
            v = np.abs(v) + 0.5
        values.append(v)
    keras_model.set_weights(values)


def _inputs(keras_model, n=3, seed=1):
    shape = (n,) + tuple(keras_model.input_shape[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(params=sorted(BUILDERS))
def saved(request, keras, tmp_path):
    """A Keras model with random weights, saved in the three formats Keras 3 writes, and its predictions."""
    model = BUILDERS[request.param](keras)
    _randomise(model)
    x = _inputs(model)
    paths = {"keras": tmp_path / "m.keras", "weights": tmp_path / "m.weights.h5", "legacy": tmp_path / "m.h5"}
    model.save(paths["keras"])
    model.save_weights(paths["weights"])
    model.save(paths["legacy"])
    return model, x, model.predict(x, verbose=0), paths


@pytest.mark.parametrize("fmt", ["keras", "legacy"])
def test_load_model_predicts_like_keras(saved, fmt):
    _, x, expected, paths = saved
    model = fastconv.load_model(paths[fmt])
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("fmt", ["keras", "weights", "legacy"])
def test_load_weights_into_a_fresh_copy(saved, fmt):
    _, x, expected, paths = saved
    model = fastconv.load_model(paths["keras"])
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.load_weights(paths[fmt])
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=ATOL, rtol=1e-4)


def test_file_kind_comes_from_content_not_name(saved, tmp_path):
    _, x, expected, paths = saved
    for fmt, path in paths.items():
        disguised = tmp_path / f"{fmt}.bin"
        disguised.write_bytes(path.read_bytes())
        paths[fmt] = disguised
    model = fastconv.load_model(paths["keras"])
    model.load_weights(paths["weights"])
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=ATOL, rtol=1e-4)
    np.testing.assert_allclose(fastconv.load_model(paths["legacy"]).predict(x, verbose=0), expected, atol=ATOL,
                               rtol=1e-4)


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5"])
def test_keras_reads_weights_fastconv_saved(saved, tmp_path, keras, suffix):
    keras_model, x, _, paths = saved
    model = fastconv.load_model(paths["keras"])
    rng = np.random.default_rng(7)
    model.set_weights([w + 0.01 * rng.standard_normal(w.shape).astype(w.dtype) for w in model.get_weights()])
    ours = model.predict(x, verbose=0)
    path = tmp_path / f"fastconv{suffix}"
    model.save_weights(path)
    clone = keras.models.clone_model(keras_model)
    clone.load_weights(path)
    np.testing.assert_allclose(clone.predict(x, verbose=0), ours, atol=ATOL, rtol=1e-4)


def test_keras3_weights_match_by_class_order_when_names_differ(keras, tmp_path):
    """Keras 3's own rule: a file loads into the same architecture whatever its layer names."""
    keras_model = _keras_mnist(keras)
    _randomise(keras_model)
    x = _inputs(keras_model)
    expected = keras_model.predict(x, verbose=0)
    paths = {"keras": tmp_path / "m.keras", "weights": tmp_path / "m.weights.h5", "legacy": tmp_path / "m.h5"}
    keras_model.save(paths["keras"])
    keras_model.save_weights(paths["weights"])
    keras_model.save(paths["legacy"])
    model = fastconv.Sequential([layers.Input((28, 28, 1)), layers.Conv2D(8, 3, activation="relu", name="a"),
                                 layers.MaxPooling2D(2), layers.Conv2D(16, 3, activation="relu", name="b"),
                                 layers.MaxPooling2D(2), layers.Conv2D(16, 3, activation="relu", name="c"),
                                 layers.Flatten(), layers.Dense(16, activation="relu", name="d"),
                                 layers.Dense(10, activation="softmax", name="e")])
    for fmt in ("weights", "legacy", "keras"):
        model.set_weights([np.zeros_like(w) for w in model.get_weights()])
        model.load_weights(paths[fmt])
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=ATOL, rtol=1e-4)


def test_vgg16_in_every_keras_format(keras, tmp_path):
    keras_model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    x = _inputs(keras_model, n=2)
    expected = keras_model.predict(x, verbose=0)
    keras_model.save(tmp_path / "vgg.keras")
    keras_model.save(tmp_path / "vgg.h5")
    keras_model.save_weights(tmp_path / "vgg.weights.h5")
    for name in ("vgg.keras", "vgg.h5"):
        model = fastconv.load_model(tmp_path / name)
        assert [l.name for l in model.layers] == [l.name for l in keras_model.layers]
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-4, rtol=1e-4)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.load_weights(tmp_path / "vgg.weights.h5")
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-4, rtol=1e-4)


# ---- Keras 2's layout, written with h5py as Keras 2 wrote it ------------------------------------------------
def _fastconv_mnist(names=None):
    names = names or ["conv2d_1", "max_pooling2d_1", "conv2d_2", "flatten_1", "dense_1"]
    return fastconv.Sequential([
        layers.Input((12, 12, 1)), layers.Conv2D(4, 3, activation="relu", name=names[0]),
        layers.MaxPooling2D(2, name=names[1]), layers.Conv2D(6, 3, activation="relu", name=names[2]),
        layers.Flatten(name=names[3]), layers.Dense(3, activation="softmax", name=names[4])])


def _write_keras2_weights(group, model, chunk_layer_names=False):
    """Keras 2's save_weights layout: bytes attributes, ``name/kernel:0`` weight names, empty groups for layers
    without weights, and the input layer listed first."""
    names = [b"input_1"] + [l.name.encode() for l in model.layers]
    if chunk_layer_names:  # Keras splits attributes over 64 KiB into numbered chunks
        group.attrs["layer_names0"] = np.array(names[:3])
        group.attrs["layer_names1"] = np.array(names[3:])
    else:
        group.attrs["layer_names"] = np.array(names)
    group.attrs["backend"] = b"tensorflow"
    group.attrs["keras_version"] = b"2.4.0"
    group.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S")
    for layer in model.layers:
        g = group.create_group(layer.name)
        weight_names = [f"{layer.name}/{w.name}:0".encode() for w in layer.weights]
        g.attrs["weight_names"] = np.array(weight_names, dtype="S")
        for name, w in zip(weight_names, layer.weights):
            g.create_dataset(name.decode(), data=w.value)


@pytest.mark.parametrize("chunked", [False, True])
def test_keras2_weight_file(tmp_path, chunked):
    source = _fastconv_mnist()
    path = tmp_path / "keras2.h5"
    with h5py.File(path, "w") as f:
        _write_keras2_weights(f, source, chunk_layer_names=chunked)
    x = np.random.default_rng(0).standard_normal((2, 12, 12, 1)).astype(np.float32)
    for target in (_fastconv_mnist(), _fastconv_mnist(["a", "b", "c", "d", "e"])):  # by name, then by order
        target.load_weights(path)
        np.testing.assert_array_equal(target.predict(x, verbose=0), source.predict(x, verbose=0))


KERAS2_SEQUENTIAL_CONFIG = {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": [
    {"class_name": "Conv2D", "config": {
        "name": "conv2d_1", "trainable": True, "batch_input_shape": [None, 12, 12, 1], "dtype": "float32",
        "filters": 4, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid", "data_format": "channels_last",
        "dilation_rate": [1, 1], "activation": "relu", "use_bias": True,
        "kernel_initializer": {"class_name": "VarianceScaling",
                               "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None}},
        "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": None,
        "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None}},
    {"class_name": "MaxPooling2D", "config": {"name": "max_pooling2d_1", "trainable": True, "pool_size": [2, 2],
                                              "padding": "valid", "strides": [2, 2], "data_format": "channels_last"}},
    {"class_name": "Conv2D", "config": {
        "name": "conv2d_2", "trainable": True, "filters": 6, "kernel_size": [3, 3], "strides": [1, 1],
        "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1], "activation": "relu",
        "use_bias": True}},
    {"class_name": "Flatten", "config": {"name": "flatten_1", "trainable": True, "data_format": "channels_last"}},
    {"class_name": "Dense", "config": {"name": "dense_1", "trainable": True, "units": 3, "activation": "softmax",
                                       "use_bias": True}}]}}


def test_keras2_full_model_file(tmp_path):
    source = _fastconv_mnist()
    path = tmp_path / "keras2_model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(KERAS2_SEQUENTIAL_CONFIG).encode()
        f.attrs["keras_version"] = b"2.4.0"
        _write_keras2_weights(f.create_group("model_weights"), source)
    model = fastconv.load_model(path)
    assert [l.name for l in model.layers] == [l.name for l in source.layers]
    x = np.random.default_rng(0).standard_normal((2, 12, 12, 1)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), source.predict(x, verbose=0))


def test_keras2_functional_config_with_list_inbound_nodes(tmp_path):
    inp = layers.Input((6, 6, 2), name="input_1")
    a = layers.Conv2D(3, 3, padding="same", name="conv_a")(inp)
    b = layers.Conv2D(3, 1, name="conv_b")(inp)
    out = layers.Dense(2, name="dense_1")(layers.Flatten(name="flatten_1")(layers.Add(name="add_1")([a, b])))
    source = fastconv.Model(inp, out)

    def entry(layer_config, name, inbound):
        return dict(layer_config, name=name, inbound_nodes=[[[r, 0, 0, {}] for r in inbound]] if inbound else [])

    config = {"class_name": "Model", "config": {"name": "model_1", "layers": [
        {"class_name": "InputLayer", "name": "input_1", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 6, 6, 2], "dtype": "float32", "sparse": False, "name": "input_1"}},
        entry({"class_name": "Conv2D", "config": {"name": "conv_a", "filters": 3, "kernel_size": [3, 3],
                                                   "padding": "same"}}, "conv_a", ["input_1"]),
        entry({"class_name": "Conv2D", "config": {"name": "conv_b", "filters": 3, "kernel_size": [1, 1]}},
              "conv_b", ["input_1"]),
        entry({"class_name": "Add", "config": {"name": "add_1"}}, "add_1", ["conv_a", "conv_b"]),
        entry({"class_name": "Flatten", "config": {"name": "flatten_1"}}, "flatten_1", ["add_1"]),
        entry({"class_name": "Dense", "config": {"name": "dense_1", "units": 2}}, "dense_1", ["flatten_1"])],
        "input_layers": [["input_1", 0, 0]], "output_layers": [["dense_1", 0, 0]]}}
    path = tmp_path / "functional.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)  # str this time: both kinds of attribute occur
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [l.name for l in source.layers]
        for layer in source.layers:
            lg = g.create_group(layer.name)
            lg.attrs["weight_names"] = [f"{layer.name}/{w.name}:0" for w in layer.weights]
            for w in layer.weights:
                lg.create_dataset(f"{layer.name}/{w.name}:0", data=w.value)
    model = fastconv.load_model(path)
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), source.predict(x, verbose=0))


# ---- mismatches, damage and hostile archives ---------------------------------------------------------------
def test_shape_mismatch_names_layer_and_both_shapes_and_assigns_nothing(tmp_path):
    source = _fastconv_mnist()
    path = tmp_path / "w.weights.h5"
    source.save_weights(path)
    target = fastconv.Sequential([
        layers.Input((12, 12, 1)), layers.Conv2D(4, 3, activation="relu", name="conv2d_1"),
        layers.MaxPooling2D(2), layers.Conv2D(5, 3, activation="relu", name="conv2d_2"),
        layers.Flatten(), layers.Dense(3, name="dense_1")])
    before = target.get_weights()
    with pytest.raises(ValueError, match=r"conv2d_2.*\(3, 3, 4, 5\).*\(3, 3, 4, 6\)"):
        target.load_weights(path)
    for old, new in zip(before, target.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_layer_count_mismatch_lists_both_sides(tmp_path):
    source = _fastconv_mnist()
    path = tmp_path / "w.h5"
    source.save_weights(path)
    target = fastconv.Sequential([layers.Input((12, 12, 1)), layers.Conv2D(4, 3, name="x"), layers.Flatten(),
                                  layers.Dense(3, name="y")])
    with pytest.raises(ValueError, match=r"2 layers with weights \(x, y\).*3 \(conv2d_1, conv2d_2, dense_1\)"):
        target.load_weights(path)


def test_truncated_and_corrupted_hdf5(tmp_path):
    source = _fastconv_mnist()
    good = tmp_path / "w.weights.h5"
    source.save_weights(good)
    data = good.read_bytes()
    target = _fastconv_mnist()
    cases = {"truncated": data[: len(data) // 2], "header_only": data[:64]}
    rng = np.random.default_rng(0)
    for k in range(8):
        flipped = bytearray(data)
        for position in rng.integers(0, len(data), 16):
            flipped[position] ^= 0xFF
        cases[f"flipped{k}"] = bytes(flipped)
    for name, blob in cases.items():
        path = tmp_path / f"{name}.weights.h5"
        path.write_bytes(blob)
        try:
            target.load_weights(path)
        except ValueError as exc:
            assert "filepath=" in str(exc), name
        # a flip that lands in unused bytes may leave the file readable: then it must still load correctly


def test_non_numeric_dataset_is_refused(tmp_path):
    path = tmp_path / "strings.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"dense_1"]
        g = f.create_group("dense_1")
        g.attrs["weight_names"] = [b"dense_1/kernel:0"]
        g.create_dataset("dense_1/kernel:0", data=np.array([b"payload"]))
    model = fastconv.Sequential([layers.Input((3,)), layers.Dense(2, name="dense_1")])
    with pytest.raises(ValueError, match="not numbers"):
        model.load_weights(path)


def test_keras_archive_damage_and_traversal_names(tmp_path, saved):
    import zipfile

    _, x, expected, paths = saved
    good = paths["keras"]
    with zipfile.ZipFile(good) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    # An archive whose extra members try to escape: fastconv reads members by exact name, never extracts.
    hostile = tmp_path / "hostile.keras"
    with zipfile.ZipFile(hostile, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("../../escaped.txt", b"x")
        zf.writestr("/tmp/absolute_escape.txt", b"x")
    listing = set(os.listdir(tmp_path))
    model = fastconv.load_model(hostile)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=ATOL, rtol=1e-4)
    assert set(os.listdir(tmp_path)) == listing
    assert not os.path.exists(tmp_path.parent.parent / "escaped.txt")

    missing = tmp_path / "no_weights.keras"
    with zipfile.ZipFile(missing, "w") as zf:
        zf.writestr("config.json", members["config.json"])
        zf.writestr("model.weights.h5x", b"")
    with pytest.raises(ValueError, match="filepath="):
        fastconv.load_model(missing)

    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="filepath="):
        fastconv.load_model(truncated)

    bad_json = tmp_path / "bad_json.keras"
    with zipfile.ZipFile(bad_json, "w") as zf:
        zf.writestr("config.json", b"{not json")
        zf.writestr("model.weights.h5", members["model.weights.h5"])
    with pytest.raises(ValueError, match="not valid JSON"):
        fastconv.load_model(bad_json)


def test_unsupported_layer_and_argument_are_named(keras, tmp_path):
    L = keras.layers
    with_rescaling = keras.Sequential([keras.Input((4, 4, 1)), L.Rescaling(0.5), L.Flatten(), L.Dense(2)])
    with_rescaling.save(tmp_path / "r.keras")
    with pytest.raises(ValueError, match="no layer class 'Rescaling'"):
        fastconv.load_model(tmp_path / "r.keras")
    grouped = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4, 4, 2], "name": "in"}},
        {"class_name": "Conv2D", "config": {"name": "c", "filters": 2, "kernel_size": 3, "lora_rank": 4}}]}}
    path = tmp_path / "lora.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(grouped)
        f.create_group("model_weights").attrs["layer_names"] = []
    with pytest.raises(ValueError, match=r"Conv2D 'c'.*lora_rank=4"):
        fastconv.load_model(path)


def test_regularizers_are_dropped_with_a_warning(keras, tmp_path):
    L = keras.layers
    model = keras.Sequential([keras.Input((5,)), L.Dense(3, kernel_regularizer="l2")])
    model.save(tmp_path / "reg.keras")
    with pytest.warns(UserWarning, match="kernel_regularizer is ignored"):
        loaded = fastconv.load_model(tmp_path / "reg.keras")
    x = np.ones((1, 5), np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_weights_only_file_given_to_load_model(tmp_path):
    path = tmp_path / "only.weights.h5"
    _fastconv_mnist().save_weights(path)
    with pytest.raises(ValueError, match="holds weights only"):
        fastconv.load_model(path)


def test_unknown_file_is_refused_by_content(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("just text, whatever the name says")
    with pytest.raises(ValueError, match="not a format fastconv reads"):
        _fastconv_mnist().load_weights(path)


def test_save_weights_is_atomic_and_respects_overwrite(tmp_path, monkeypatch):
    from fastconv.formats import keras_h5

    model = _fastconv_mnist()
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    original = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=False"):
        model.save_weights(path, overwrite=False)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_h5.np, "asarray", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save_weights(path)
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["w.weights.h5"]
