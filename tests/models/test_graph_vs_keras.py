"""Graph models against Keras 3 (on its PyTorch backend): the same architecture built with each library's layers,
the same weights, the same batch; predictions and the weights after training steps must agree."""
import numpy as np
import pytest

import fastconv
from fastconv import layers as fl


def residual_block(L, Input, Model):
    inputs = Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    y = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(x)
    y = L.Conv2D(4, 3, padding="same", name="b")(y)
    z = L.Add(name="add")([x, y])
    z = L.MaxPooling2D(2, name="pool")(L.ReLU(name="relu")(z))
    return Model(inputs, L.Dense(3, activation="softmax", name="head")(L.Flatten(name="flat")(z)))


def inception_block(L, Input, Model):
    inputs = Input((8, 8, 4))
    one = L.Conv2D(3, 1, activation="relu", name="one")(inputs)
    three = L.Conv2D(3, 3, padding="same", activation="relu", name="three")(L.Conv2D(2, 1, name="reduce")(inputs))
    pool = L.Conv2D(2, 1, name="pool_proj")(L.MaxPooling2D(3, strides=1, padding="same", name="pool")(inputs))
    merged = L.Concatenate(axis=-1, name="concat")([one, three, pool])
    return Model(inputs, L.Dense(1, activation="sigmoid", name="head")(L.Flatten(name="flat")(merged)))


def shared_two_inputs(L, Input, Model):
    a, b = Input((6,)), Input((6,))
    shared = L.Dense(5, activation="tanh", name="shared")
    merged = L.Multiply(name="mul")([shared(a), shared(b)])
    return Model([a, b], L.Dense(2, activation="softmax", name="head")(merged))


def build_pair(keras, spec):
    ours = spec(fl, fl.Input, fastconv.Model)
    theirs = spec(keras.layers, lambda shape: keras.Input(shape=shape), keras.Model)
    for layer in theirs.layers:
        if layer.weights:
            layer.set_weights(ours.get_layer(layer.name).get_weights())
    return ours, theirs


CASES = [
    (residual_block, lambda rng: [rng.standard_normal((6, 8, 8, 3))], lambda rng: rng.integers(0, 3, 6),
     "sparse_categorical_crossentropy"),
    (inception_block, lambda rng: [rng.standard_normal((6, 8, 8, 4))], lambda rng: rng.integers(0, 2, (6, 1)),
     "binary_crossentropy"),
    (shared_two_inputs, lambda rng: [rng.standard_normal((6, 6)), rng.standard_normal((6, 6))],
     lambda rng: np.eye(2)[rng.integers(0, 2, 6)], "categorical_crossentropy"),
]


@pytest.mark.parametrize("spec, make_x, make_y, loss", CASES, ids=[c[0].__name__ for c in CASES])
def test_predictions_and_training_steps_match_keras(keras, rng, spec, make_x, make_y, loss):
    ours, theirs = build_pair(keras, spec)
    xs = [x.astype(np.float32) for x in make_x(rng)]
    y = make_y(rng).astype(np.float32)
    x_in = xs if len(xs) > 1 else xs[0]
    np.testing.assert_allclose(ours.predict(x_in, verbose=0), np.asarray(theirs.predict(x_in, verbose=0)),
                               rtol=1e-5, atol=1e-6)
    # A modest rate keeps the probabilities away from saturation, where Keras-on-torch clips them (1e-7) while
    # fastconv's fused loss stays exact: both are right there, but they differ.
    ours.compile(optimizer=fastconv.optimizers.SGD(learning_rate=0.05), loss=loss)
    theirs.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss=loss)
    for _ in range(3):
        ours_loss = ours.train_on_batch(x_in, y)
        theirs_loss = theirs.train_on_batch(x_in, y)
        np.testing.assert_allclose(ours_loss, float(theirs_loss), rtol=1e-4)
    for layer in (layer for layer in theirs.layers if layer.weights):
        for mine, reference in zip(ours.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_allclose(mine, reference, rtol=1e-4, atol=1e-5, err_msg=layer.name)
    np.testing.assert_allclose(ours.predict(x_in, verbose=0), np.asarray(theirs.predict(x_in, verbose=0)),
                               rtol=1e-4, atol=1e-5)
