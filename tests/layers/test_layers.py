"""Layer construction, building, weights, configs, dtypes and argument errors."""
import json
import math

import numpy as np
import pytest

import fastconv
from fastconv import layers


def test_conv2d_builds_an_hwio_kernel_from_the_input_shape():
    conv = layers.Conv2D(16, (3, 5), padding="same")
    assert not conv.built and conv.weights == []
    conv.build((None, 12, 10, 3))
    assert conv.built and conv.kernel.shape == (3, 5, 3, 16) and conv.bias.shape == (16,)
    assert conv.output_shape == (None, 12, 10, 16)
    first = layers.Conv2D(15, (3, 5), data_format="channels_first", groups=3)
    first.build((None, 6, 12, 10))
    assert first.kernel.shape == (3, 5, 2, 15)                    # HWIO whatever the data_format
    assert first.output_shape == (None, 15, 10, 6)


def test_glorot_uniform_kernel_and_zero_bias():
    fastconv.utils.set_random_seed(3)
    conv = layers.Conv2D(64, 3)
    conv.build((None, 28, 28, 32))
    kernel, bias = conv.get_weights()
    limit = math.sqrt(6 / (9 * 32 + 9 * 64))
    assert kernel.dtype == np.float32 and np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.95 * limit                    # really spread over [-limit, limit]
    assert abs(kernel.std() - limit / math.sqrt(3)) < 0.02 * limit
    assert (bias == 0).all()


def test_layer_weights_start_on_a_cache_line():
    # Layers allocate their weights aligned, so a 64-lane kernel is read in place at every call, never copied.
    model = fastconv.Sequential([layers.Input((6, 6, 3)), layers.Conv2D(64, 3), layers.Conv2D(7, 1), layers.Flatten(),
                                 layers.Dense(5)])
    assert all(w.value.ctypes.data % 64 == 0 and w.value.flags.c_contiguous for w in model.weights)
    model.set_weights([np.full(w.shape, 0.5, w.dtype) for w in model.weights])
    assert all(w.value.ctypes.data % 64 == 0 for w in model.weights)


def test_set_random_seed_and_seeded_initializers_reproduce_weights():
    fastconv.utils.set_random_seed(11)
    a = layers.Dense(4)
    a.build((None, 3))
    fastconv.utils.set_random_seed(11)
    b = layers.Dense(4)
    b.build((None, 3))
    np.testing.assert_array_equal(a.get_weights()[0], b.get_weights()[0])
    init = fastconv.initializers.GlorotUniform(seed=5)
    np.testing.assert_array_equal(init((3, 4)), init((3, 4)))    # Keras 3: a seeded initializer repeats


@pytest.mark.parametrize("x_shape, layer, out_shape", [
    ((2, 28, 28, 1), layers.Conv2D(32, 3), (2, 26, 26, 32)),
    ((2, 28, 28, 1), layers.Conv2D(32, 3, strides=2, padding="same"), (2, 14, 14, 32)),
    ((2, 3, 28, 28), layers.Conv2D(8, 5, data_format="channels_first"), (2, 8, 24, 24)),
    ((2, 9, 9, 4), layers.Conv2D(4, 3, dilation_rate=2), (2, 5, 5, 4)),
    ((2, 26, 26, 32), layers.MaxPooling2D(2), (2, 13, 13, 32)),
    ((2, 7, 7, 3), layers.MaxPooling2D(2, padding="same"), (2, 4, 4, 3)),
    ((2, 7, 7, 3), layers.MaxPooling2D(3, strides=1), (2, 5, 5, 3)),
    ((2, 3, 3, 64), layers.Flatten(), (2, 576)),
    ((2, 576), layers.Dense(64), (2, 64)),
    ((2, 5, 7), layers.Dense(3), (2, 5, 3)),
    ((2, 10), layers.Dropout(0.5), (2, 10)),
    ((2, 10), layers.Softmax(), (2, 10)),
])
def test_output_shapes_match_compute_output_shape(x_shape, layer, out_shape):
    y = layer(np.zeros(x_shape, dtype=np.float32))
    assert y.shape == out_shape and y.dtype == np.float32
    assert layer.output_shape == (None,) + out_shape[1:]


def test_input_is_cast_to_the_layer_dtype():
    x = np.full((1, 4, 4, 1), 255, dtype=np.uint8)
    y = layers.Conv2D(2, 3, kernel_initializer="ones")(x)
    assert y.dtype == np.float32 and float(y[0, 0, 0, 0]) == 9 * 255
    y64 = layers.Dense(2, dtype="float64")(np.ones((1, 3), dtype=np.float32))
    assert y64.dtype == np.float64


def test_get_and_set_weights():
    dense = layers.Dense(3)
    dense.build((None, 2))
    kernel = np.arange(6, dtype=np.float64).reshape(2, 3)
    dense.set_weights([kernel, np.ones(3)])
    got = dense.get_weights()
    assert got[0].dtype == np.float32 and (got[0] == kernel).all() and (got[1] == 1).all()
    got[0][...] = -1                                               # copies, not views
    assert (dense.get_weights()[0] == kernel).all()
    with pytest.raises(ValueError, match=r"has 2 weights; received a list of 1"):
        dense.set_weights([kernel])
    with pytest.raises(ValueError, match=r"dense.*/kernel.*\(2, 3\).*\(3, 2\)"):
        dense.set_weights([kernel.T, np.ones(3)])


@pytest.mark.parametrize("layer", [
    layers.Conv2D(8, (3, 2), strides=2, padding="same", dilation_rate=1, groups=1, activation="relu",
                  use_bias=False, kernel_initializer="he_normal", data_format="channels_first", name="c"),
    layers.MaxPooling2D((2, 3), strides=1, padding="same"),
    layers.Dense(4, activation="softmax", kernel_initializer=fastconv.initializers.RandomNormal(stddev=0.1, seed=2)),
    layers.Flatten(data_format="channels_first"), layers.Dropout(0.25, seed=4), layers.Activation("tanh"),
    layers.ReLU(max_value=6.0), layers.Softmax(axis=1), layers.InputLayer((28, 28, 1)),
], ids=lambda layer: type(layer).__name__)
def test_config_round_trip_through_json(layer):
    config = json.loads(json.dumps(layers.serialize(layer)))
    clone = layers.deserialize(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()


def test_trainable_flag_moves_weights_between_lists():
    conv = layers.Conv2D(4, 3)
    conv.build((None, 8, 8, 2))
    assert len(conv.trainable_weights) == 2 and conv.non_trainable_weights == []
    conv.trainable = False
    assert conv.trainable_weights == [] and len(conv.non_trainable_weights) == 2
    assert conv.get_config()["trainable"] is False


def test_dropout_is_identity_at_inference_and_scaled_in_training():
    drop = layers.Dropout(0.25, seed=0)
    x = np.ones((200, 50), dtype=np.float32)
    assert drop(x) is x or (drop(x) == x).all()
    y = drop(x, training=True)
    assert y.dtype == np.float32
    assert set(np.unique(y).tolist()) == {0.0, np.float32(1) / np.float32(0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.02
    again = layers.Dropout(0.25, seed=0)(x, training=True)
    np.testing.assert_array_equal(y, again)                        # a seed fixes the masks


def test_input_and_declared_input_shape():
    inp = layers.Input((28, 28, 1), name="pixels")
    assert inp.shape == (None, 28, 28, 1) and inp.name == "pixels" and inp.layer.output_shape == inp.shape
    model = fastconv.Sequential([layers.Dense(3, input_shape=(5,))])
    assert model.built and model.input_shape == (None, 5)


def test_automatic_names_are_unique_and_snake_case():
    a, b = layers.MaxPooling2D(), layers.MaxPooling2D()
    assert a.name.startswith("max_pooling2d") and a.name != b.name


@pytest.mark.parametrize("make, exc, pattern", [
    (lambda: layers.Conv2D(0, 3), ValueError, r"filters.*received filters=0"),
    (lambda: layers.Conv2D(8, 0), ValueError, r"kernel_size.*received kernel_size=0"),
    (lambda: layers.Conv2D(8, (3, 3, 3)), ValueError, r"kernel_size.*received kernel_size=\(3, 3, 3\)"),
    (lambda: layers.Conv2D(8, 3, padding="sme"), ValueError, r"padding.*received padding='sme'"),
    (lambda: layers.Conv2D(8, 3, data_format="NHWC"), ValueError, r"data_format.*received data_format='NHWC'"),
    (lambda: layers.Conv2D(8, 3, activation="rleu"), ValueError, r"activation.*received activation='rleu'"),
    (lambda: layers.Conv2D(8, 3, kernel_initializer="glorot"), ValueError,
     r"kernel_initializer.*received kernel_initializer='glorot'"),
    (lambda: layers.Conv2D(8, 3, groups=3), ValueError, r"filters must be divisible by groups=3; received filters=8"),
    (lambda: layers.Conv2D(8, 2.5), TypeError, r"kernel_size.*received kernel_size=2.5"),
    (lambda: layers.Dense(-1), ValueError, r"units.*received units=-1"),
    (lambda: layers.Dense(4, activation=np.tanh), TypeError, r"activation.*received activation="),
    (lambda: layers.Dropout(1.5), ValueError, r"rate.*received rate=1.5"),
    (lambda: layers.Dropout("half"), TypeError, r"rate.*received rate='half'"),
    (lambda: layers.MaxPooling2D(2, strides=0), ValueError, r"strides.*received strides=0"),
    (lambda: layers.Activation("swishy"), ValueError, r"activation.*received activation='swishy'"),
    (lambda: layers.Dense(4, foo=1), TypeError, r"unexpected keyword.*'foo': 1"),
    (lambda: layers.Dense(4, name="a/b"), ValueError, r"name.*received name='a/b'"),
    (lambda: layers.Input((28, 0, 1)), ValueError, r"shape.*received shape=\(28, 0, 1\)"),
])
def test_bad_constructor_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_input_shape_mismatch_after_build_names_the_layer():
    dense = layers.Dense(3, name="head")
    dense(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"layer 'head' must have shape \(None, 4\); received input with shape "
                                         r"\(2, 5\)"):
        dense(np.zeros((2, 5), dtype=np.float32))


def test_build_errors():
    with pytest.raises(ValueError, match=r"too small.*received input with shape \(None, 2, 2, 1\)"):
        layers.Conv2D(4, 3).build((None, 2, 2, 1))
    with pytest.raises(ValueError, match=r"divisible by groups=2.*\(None, 8, 8, 3\)"):
        layers.Conv2D(4, 3, groups=2).build((None, 8, 8, 3))
    with pytest.raises(ValueError, match=r"4-D.*\(None, 8\)"):
        layers.MaxPooling2D().build((None, 8))
    with pytest.raises(TypeError, match="real-valued"):
        layers.Dense(2)(np.array([["a", "b"]]))
