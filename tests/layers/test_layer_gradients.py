"""Every layer's backward pass against central finite differences, in float64."""
import numpy as np
import pytest

from fastconv import layers
from gradcheck import check_layer_gradients, spread

F64 = "float64"


@pytest.mark.parametrize("kwargs, shape", [
    (dict(filters=4, kernel_size=3), (2, 7, 6, 3)),
    (dict(filters=4, kernel_size=(3, 2), strides=2, padding="same", activation="tanh"), (2, 7, 6, 3)),
    (dict(filters=6, kernel_size=3, dilation_rate=2, padding="same", activation="sigmoid"), (1, 8, 8, 2)),
    (dict(filters=4, kernel_size=3, groups=2, use_bias=False), (2, 6, 6, 4)),
    (dict(filters=5, kernel_size=2, strides=(1, 2), activation="relu"), (2, 6, 7, 3)),
    (dict(filters=4, kernel_size=3, padding="same", data_format="channels_first", activation="softmax"),
     (2, 3, 6, 5)),
    (dict(filters=4, kernel_size=(1, 3), strides=2, data_format="channels_first", groups=2), (2, 4, 5, 7)),
])
def test_conv2d_gradients(kwargs, shape, rng):
    layer = layers.Conv2D(**kwargs, dtype=F64, bias_initializer="random_normal")
    check_layer_gradients(layer, rng.standard_normal(shape), rng)


@pytest.mark.parametrize("kwargs, shape", [
    (dict(units=5), (4, 7)),
    (dict(units=3, activation="relu"), (4, 6)),
    (dict(units=4, activation="softmax"), (3, 5)),
    (dict(units=2, activation="sigmoid", use_bias=False), (2, 3, 4)),   # Dense on the last axis of 3-D input
])
def test_dense_gradients(kwargs, shape, rng):
    layer = layers.Dense(**kwargs, dtype=F64, bias_initializer="random_normal")
    check_layer_gradients(layer, rng.standard_normal(shape), rng)


@pytest.mark.parametrize("kwargs, shape", [
    (dict(pool_size=2), (2, 6, 6, 3)),
    (dict(pool_size=3, strides=2, padding="same"), (2, 7, 5, 2)),
    (dict(pool_size=(2, 3), strides=1), (1, 5, 6, 2)),
    (dict(pool_size=2, padding="same", data_format="channels_first"), (2, 3, 5, 5)),
])
def test_max_pooling_gradients(kwargs, shape, rng):
    layer = layers.MaxPooling2D(**kwargs, dtype=F64)
    check_layer_gradients(layer, spread(rng, shape), rng)


@pytest.mark.parametrize("data_format, shape", [("channels_last", (2, 3, 4, 5)), ("channels_first", (2, 3, 4, 5)),
                                                ("channels_last", (3, 4))])
def test_flatten_gradients(data_format, shape, rng):
    check_layer_gradients(layers.Flatten(data_format=data_format, dtype=F64), rng.standard_normal(shape), rng)


def test_dropout_gradients(rng):
    layer = layers.Dropout(0.4, dtype=F64)

    def same_mask():
        layer.set_generator(np.random.default_rng(7))

    grad_x, _ = check_layer_gradients(layer, rng.standard_normal((4, 10)), rng, reset=same_mask)
    assert (grad_x == 0).any()


@pytest.mark.parametrize("layer", [
    layers.Activation("relu", dtype=F64), layers.Activation("tanh", dtype=F64),
    layers.Activation("sigmoid", dtype=F64), layers.Activation("softmax", dtype=F64),
    layers.Activation("linear", dtype=F64), layers.ReLU(dtype=F64),
    layers.ReLU(max_value=0.5, negative_slope=0.1, threshold=-0.2, dtype=F64),
    layers.Softmax(dtype=F64), layers.Softmax(axis=1, dtype=F64),
], ids=lambda layer: f"{type(layer).__name__}-{getattr(layer.activation, 'name', '')}")
def test_activation_layer_gradients(layer, rng):
    check_layer_gradients(layer, spread(rng, (3, 4, 5), gap=0.05), rng)


def test_frozen_layer_returns_no_weight_gradients(rng):
    layer = layers.Conv2D(3, 3, dtype=F64, trainable=False)
    x = rng.standard_normal((2, 5, 5, 2))
    out = layer(x, training=True)
    grad_x, grads = layer.backward(np.ones_like(out))
    assert grads == [] and layer.trainable_weights == [] and len(layer.non_trainable_weights) == 2
    assert grad_x.shape == x.shape


def test_need_input_grad_false_skips_input_gradient(rng):
    layer = layers.Dense(3, dtype=F64)
    out = layer(rng.standard_normal((2, 4)), training=True)
    grad_x, grads = layer.backward(np.ones_like(out), need_input_grad=False)
    assert grad_x is None and len(grads) == 2


def test_backward_without_training_forward_is_an_error(rng):
    layer = layers.Dense(3)
    layer(np.ones((2, 4), dtype=np.float32))
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((2, 3), dtype=np.float32))
