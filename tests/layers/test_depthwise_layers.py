"""DepthwiseConv2D and SeparableConv2D against Keras 3 with the same weights (forward, and gradients with respect to
the input and every weight through torch autograd on the Keras layer), finite differences, configs, bad
arguments."""
import json

import numpy as np
import pytest

from fastconv import layers
from gradcheck import check_layer_gradients

TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
DTYPES = [np.float32, np.float64]

DEPTHWISE = [
    dict(kernel_size=3),
    dict(kernel_size=3, strides=2, padding="same", depth_multiplier=2, activation="relu"),
    dict(kernel_size=(3, 2), padding="same", dilation_rate=2, depth_multiplier=3),
    dict(kernel_size=5, strides=(2, 1), padding="same", use_bias=False),
    dict(kernel_size=1, depth_multiplier=2, activation="tanh"),
]
SEPARABLE = [
    dict(filters=8, kernel_size=3),
    dict(filters=5, kernel_size=3, strides=2, padding="same", depth_multiplier=2, activation="relu"),
    dict(filters=6, kernel_size=(3, 2), padding="same", dilation_rate=2),
    dict(filters=4, kernel_size=5, strides=(1, 2), padding="same", depth_multiplier=3, use_bias=False),
]


def kwargs_id(kwargs):
    return "-".join(f"{k}={v}" for k, v in kwargs.items()).replace(" ", "")


def keras_forward_backward(torch, layer, x, grad_out):
    tx = torch.tensor(x, requires_grad=True)
    ty = layer(tx)
    ty.backward(torch.tensor(grad_out))
    return ty.detach().numpy(), tx.grad.numpy(), [w.value.grad.numpy() for w in layer.trainable_weights]


def random_weights(layer, rng):
    """Weights away from their initial values (a non-zero bias)."""
    layer.set_weights([rng.standard_normal(w.shape) * 0.5 for w in layer.weights])


def compare_with_keras(cls, kwargs, data_format, dtype, rng, keras, torch):
    name = np.dtype(dtype).name
    ours = getattr(layers, cls)(**kwargs, data_format=data_format, dtype=name)
    theirs = getattr(keras.layers, cls)(**kwargs, data_format=data_format, dtype=name)
    shape = (2, 9, 8, 6) if data_format == "channels_last" else (2, 6, 9, 8)
    x = rng.standard_normal(shape).astype(dtype)
    out = ours(x, training=True)
    theirs.build(x.shape)
    assert [(w.name, tuple(w.shape)) for w in theirs.weights] == [(w.name, w.shape) for w in ours.weights]
    random_weights(ours, rng)
    theirs.set_weights(ours.get_weights())
    out = ours(x, training=True)
    grad_out = rng.standard_normal(out.shape).astype(dtype)
    grad_x, grads = ours.backward(grad_out)
    ky, kgx, kgrads = keras_forward_backward(torch, theirs, x, grad_out)
    assert out.dtype == grad_x.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert ours.count_params() == theirs.count_params()
    assert out.shape == tuple(theirs.compute_output_shape(x.shape))
    np.testing.assert_allclose(out, ky, **TOL[dtype])
    np.testing.assert_allclose(grad_x, kgx, **TOL[dtype])
    assert len(grads) == len(kgrads) == len(ours.trainable_weights)
    for variable, g, kg in zip(ours.trainable_weights, grads, kgrads):
        np.testing.assert_allclose(g, kg, **TOL[dtype], err_msg=variable.path)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kwargs", DEPTHWISE, ids=kwargs_id)
def test_depthwise_conv2d_matches_keras(kwargs, data_format, dtype, rng, keras, torch):
    compare_with_keras("DepthwiseConv2D", kwargs, data_format, dtype, rng, keras, torch)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kwargs", SEPARABLE, ids=kwargs_id)
def test_separable_conv2d_matches_keras(kwargs, data_format, dtype, rng, keras, torch):
    compare_with_keras("SeparableConv2D", kwargs, data_format, dtype, rng, keras, torch)


def test_weight_names_shapes_and_order_match_keras(keras):
    for ours, theirs, shape in [
        (layers.DepthwiseConv2D(3, depth_multiplier=2), keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
         (None, 8, 8, 4)),
        (layers.SeparableConv2D(5, 3, depth_multiplier=2, data_format="channels_first"),
         keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, data_format="channels_first"), (None, 4, 8, 8)),
        (layers.SeparableConv2D(5, 3, use_bias=False), keras.layers.SeparableConv2D(5, 3, use_bias=False),
         (None, 8, 8, 4)),
    ]:
        ours.build(shape)
        theirs.build(shape)
        assert [(w.name, w.shape) for w in ours.weights] == [(w.name, tuple(w.shape)) for w in theirs.weights]
        assert [w.path.split("/", 1)[1] for w in ours.weights] == [w.path.split("/", 1)[1] for w in theirs.weights]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("make", [
    lambda df: layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, data_format=df,
                                      activation="tanh", bias_initializer="random_normal", dtype="float64"),
    lambda df: layers.DepthwiseConv2D((2, 3), dilation_rate=(1, 2), data_format=df, dtype="float64"),
    lambda df: layers.SeparableConv2D(4, 3, padding="same", depth_multiplier=2, data_format=df, activation="tanh",
                                      bias_initializer="random_normal", dtype="float64"),
    lambda df: layers.SeparableConv2D(3, (3, 2), strides=(1, 2), data_format=df, dtype="float64"),
], ids=["depthwise_same_s2", "depthwise_dilated", "separable_same", "separable_strided"])
def test_gradients_match_finite_differences(make, data_format, rng):
    layer = make(data_format)
    shape = (2, 7, 8, 3) if data_format == "channels_last" else (2, 3, 7, 8)
    check_layer_gradients(layer, rng.standard_normal(shape), rng)


@pytest.mark.parametrize("layer", [
    layers.DepthwiseConv2D((3, 2), strides=2, padding="same", depth_multiplier=3, data_format="channels_first",
                           dilation_rate=1, activation="relu", use_bias=False, depthwise_initializer="he_normal",
                           bias_initializer="ones", name="dw"),
    layers.SeparableConv2D(7, 3, strides=1, padding="valid", dilation_rate=(2, 1), depth_multiplier=2,
                           activation="softmax", pointwise_initializer="lecun_uniform", name="sep"),
], ids=lambda layer: type(layer).__name__)
def test_config_round_trip_through_json(layer):
    config = json.loads(json.dumps(layers.serialize(layer)))
    clone = layers.deserialize(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


def test_config_keys_match_keras(keras):
    for ours, theirs in [(layers.DepthwiseConv2D(3), keras.layers.DepthwiseConv2D(3)),
                         (layers.SeparableConv2D(4, 3), keras.layers.SeparableConv2D(4, 3))]:
        ignored = {"dtype", "name", "trainable"}
        keras_keys = {k for k in theirs.get_config() if not k.endswith(("regularizer", "constraint"))}
        assert set(ours.get_config()) - ignored == keras_keys - ignored


@pytest.mark.parametrize("cls", ["DepthwiseConv2D", "SeparableConv2D"])
def test_frozen_layer_and_no_input_gradient(cls, rng):
    args = (3,) if cls == "DepthwiseConv2D" else (4, 3)
    layer = getattr(layers, cls)(*args, padding="same")
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    out = layer(x, training=True)
    grad_x, grads = layer.backward(np.ones_like(out), need_input_grad=False)
    assert grad_x is None and len(grads) == len(layer.trainable_weights) == len(layer.weights)
    layer.trainable = False
    out = layer(x, training=True)
    grad_x, grads = layer.backward(np.ones_like(out))
    assert grads == [] and grad_x.shape == x.shape


@pytest.mark.parametrize("make, exc, pattern", [
    (lambda: layers.DepthwiseConv2D(3, depth_multiplier=0), ValueError, r"depth_multiplier.*0"),
    (lambda: layers.DepthwiseConv2D(0), ValueError, r"kernel_size.*0"),
    (lambda: layers.DepthwiseConv2D(3, strides=(1, 2, 3)), ValueError, r"strides.*\(1, 2, 3\)"),
    (lambda: layers.DepthwiseConv2D(3, padding="full"), ValueError, r"padding.*'full'"),
    (lambda: layers.DepthwiseConv2D(3, data_format="NCHW"), ValueError, r"data_format.*'NCHW'"),
    (lambda: layers.DepthwiseConv2D(3, depthwise_initializer="nope"), ValueError, r"depthwise_initializer.*nope"),
    (lambda: layers.SeparableConv2D(0, 3), ValueError, r"filters.*0"),
    (lambda: layers.SeparableConv2D(4, 3, depth_multiplier=1.5), TypeError, r"depth_multiplier.*1\.5"),
    (lambda: layers.SeparableConv2D(4, 3, pointwise_initializer="nope"), ValueError, r"pointwise_initializer.*nope"),
])
def test_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


@pytest.mark.parametrize("layer, shape, pattern", [
    (layers.DepthwiseConv2D(3), (None, 8, 8), r"4-D.*\(None, 8, 8\)"),
    (layers.DepthwiseConv2D(5), (None, 3, 3, 2), r"too small.*\(None, 3, 3, 2\)"),
    (layers.SeparableConv2D(4, 3, data_format="channels_first"), (None, None, 8, 8), r"channel count"),
])
def test_bad_input_shapes(layer, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer.build(shape)
