"""A small Xception-style network (separable convolutions, batch normalisation, a residual add, global average
pooling) built in fastconv and in Keras 3 with the same weights: same predictions, same training steps; and it
learns in fastconv."""
import numpy as np
import pytest

import fastconv
from fastconv import layers as fl


def xception_mini(L, Input, Model, dropout=0.3):
    inputs = Input((24, 24, 3))
    x = L.Conv2D(8, 3, strides=2, use_bias=False, name="stem_conv")(inputs)
    x = L.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = L.Activation("relu", name="stem_relu")(x)
    residual = L.Conv2D(16, 1, strides=2, padding="same", use_bias=False, name="res_conv")(x)
    residual = L.BatchNormalization(momentum=0.9, name="res_bn")(residual)
    x = L.SeparableConv2D(16, 3, padding="same", use_bias=False, name="sep1")(x)
    x = L.BatchNormalization(momentum=0.9, name="sep1_bn")(x)
    x = L.Activation("relu", name="sep1_relu")(x)
    x = L.SeparableConv2D(16, 3, padding="same", use_bias=False, name="sep2")(x)
    x = L.BatchNormalization(momentum=0.9, name="sep2_bn")(x)
    x = L.MaxPooling2D(3, strides=2, padding="same", name="pool")(x)
    x = L.Add(name="add")([x, residual])
    x = L.SeparableConv2D(24, 3, padding="same", depth_multiplier=2, name="sep3")(x)
    x = L.BatchNormalization(momentum=0.9, name="sep3_bn")(x)
    x = L.Activation("relu", name="sep3_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(dropout, name="drop")(x)
    return Model(inputs, L.Dense(3, activation="softmax", name="head")(x))


def _pair(keras, rng, dropout=0.3):
    ours = xception_mini(fl, fl.Input, fastconv.Model, dropout)
    theirs = xception_mini(keras.layers, lambda shape: keras.Input(shape=shape), keras.Model, dropout)
    for layer in ours.layers:
        weights = layer.get_weights()
        if isinstance(layer, fl.BatchNormalization):   # moving statistics away from their initial 0 and 1
            gamma, beta, mean, var = weights
            weights = [gamma * rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                       rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 2.0, var.shape)]
            layer.set_weights(weights)
        if weights:
            theirs.get_layer(layer.name).set_weights(layer.get_weights())
    return ours, theirs


def test_xception_style_network_predicts_like_keras(keras, rng):
    ours, theirs = _pair(keras, rng)
    assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
    x = rng.standard_normal((8, 24, 24, 3)).astype(np.float32)
    difference = np.abs(ours.predict(x, verbose=0) - np.asarray(theirs.predict(x, verbose=0))).max()
    assert difference < 1e-4


def test_xception_style_training_steps_match_keras(keras, rng):
    """Without dropout (its masks are random in each library), three SGD steps: batch statistics in training,
    the moving statistics' update, and every gradient must agree."""
    ours, theirs = _pair(keras, rng, dropout=0.0)
    x = rng.standard_normal((8, 24, 24, 3)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    ours.compile(optimizer=fastconv.optimizers.SGD(learning_rate=0.05), loss="sparse_categorical_crossentropy")
    theirs.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="sparse_categorical_crossentropy")
    for _ in range(3):
        np.testing.assert_allclose(ours.train_on_batch(x, y), float(theirs.train_on_batch(x, y)), rtol=1e-4)
    for layer in (layer for layer in theirs.layers if layer.weights):
        for mine, reference in zip(ours.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_allclose(mine, np.asarray(reference), rtol=1e-3, atol=1e-4, err_msg=layer.name)
    difference = np.abs(ours.predict(x, verbose=0) - np.asarray(theirs.predict(x, verbose=0))).max()
    assert difference < 1e-4


def test_xception_style_network_learns(rng):
    """Three classes told apart by where a bright blob sits; a few epochs take it far above chance (momentum 0.9
    lets the moving statistics, which validation uses, catch up within those few epochs)."""
    n = 192
    labels = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, 24, 24, 3)).astype(np.float32)
    for i, label in enumerate(labels):
        row, col = [(2, 2), (2, 14), (14, 8)][label]
        x[i, row:row + 8, col:col + 8, :] += 2.0
    model = xception_mini(fl, fl.Input, fastconv.Model)
    model.compile(optimizer=fastconv.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x[:144], labels[:144], epochs=10, batch_size=16, verbose=0, seed=0,
                        validation_data=(x[144:], labels[144:]))
    assert history.history["loss"][-1] < history.history["loss"][0] / 2
    assert history.history["val_accuracy"][-1] >= 0.8
