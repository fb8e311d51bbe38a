"""Inference applies a plain ReLU in place on the logits a layer computed itself (no second array), and only
there: results equal the training-mode forward, and nobody else's array is touched."""
import numpy as np

import fastconv
from fastconv import layers as L


def test_inference_relu_in_place_changes_no_result_and_no_input():
    fastconv.utils.set_random_seed(0)
    model = fastconv.Sequential([L.Input((9, 9, 2)), L.Activation("relu"), L.Conv2D(3, 3, activation="relu"),
                                 L.Flatten(), L.Dense(4, activation="relu")])
    x = np.random.default_rng(0).standard_normal((5, 9, 9, 2)).astype(np.float32)
    before = x.copy()
    inference = model.predict(x, verbose=0)
    np.testing.assert_array_equal(x, before)  # the Activation layer's logits are the caller's array
    training = model(x, training=True)
    np.testing.assert_array_equal(inference, training)
    conv = model.layers[1]
    np.testing.assert_array_equal(conv.logits >= 0, conv.logits == np.maximum(conv.logits, 0))
    assert (conv.logits < 0).any()  # training mode still keeps the true pre-activation values
