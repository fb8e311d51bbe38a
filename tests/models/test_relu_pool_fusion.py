"""The ReLU -> MaxPooling2D shortcut in backward (fastconv/models/graph.py) gives exactly the unfused gradients.

Where a plain ReLU's output goes only to a max-pool, backward masks the pooled gradient by ``pooled > 0`` and
skips ReLU's own pass over the large array. These tests train and differentiate models with the shortcut on and
off (``graph._relu_pools`` emptied) and require identical results, including the cases it must leave alone.
"""
import numpy as np
import pytest

import fastconv
from fastconv import layers as L


def _sequential(pool_strides=None, activation="relu"):
    fastconv.utils.set_random_seed(0)
    model = fastconv.Sequential([
        L.Input((12, 12, 3)), L.Conv2D(4, 3, activation=activation), L.MaxPooling2D(2),
        L.Conv2D(5, 3, activation=activation), L.MaxPooling2D(2, strides=pool_strides), L.Flatten(),
        L.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def _branching():
    """The first ReLU output feeds the pool and a second branch: the shortcut must not apply to it."""
    fastconv.utils.set_random_seed(0)
    x = L.Input((12, 12, 3))
    h = L.Conv2D(4, 3, activation="relu")(x)
    pooled = L.MaxPooling2D(2)(h)
    side = L.GlobalAveragePooling2D()(h)
    y = L.Conv2D(4, 3, activation="relu")(pooled)
    y = L.MaxPooling2D(2, strides=1)(y)
    y = L.Concatenate()([L.Flatten()(y), side])
    model = fastconv.Model(x, L.Dense(3, activation="softmax")(y))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def _data(with_ties=False):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 12, 12, 3)).astype(np.float32)
    if with_ties:
        x[:, ::2] = 0.0  # many logits exactly 0: ReLU's derivative there is 0 on both paths
    return x, rng.integers(0, 3, 6)


def _train_pair(build, x, y, steps=3):
    fused, plain = build(), build()
    plain._graph._relu_pools = {}
    for _ in range(steps):
        assert fused.train_on_batch(x, y) == plain.train_on_batch(x, y)
    return fused, plain


@pytest.mark.parametrize("pool_strides", [None, 1], ids=["disjoint", "overlapping"])
@pytest.mark.parametrize("with_ties", [False, True])
def test_training_is_identical_with_and_without_the_shortcut(pool_strides, with_ties):
    x, y = _data(with_ties)
    fused, plain = _train_pair(lambda: _sequential(pool_strides), x, y)
    assert len(fused._graph._relu_pools) == 2
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_relu_output_used_twice_is_left_alone():
    x, y = _data()
    fused, plain = _train_pair(_branching, x, y)
    assert len(fused._graph._relu_pools) == 1  # only the second conv's output goes to its pool alone
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_other_activations_are_left_alone():
    assert _sequential(activation="tanh")._graph._relu_pools == {}
    leaky = fastconv.Sequential([L.Input((8, 8, 1)), L.Conv2D(2, 3), L.LeakyReLU(), L.MaxPooling2D(2)])
    assert leaky._graph._relu_pools == {}


def test_gradients_with_respect_to_the_relu_output_are_the_true_ones():
    """``model.gradients(wrt=)`` asking for the ReLU's output gets d/d(output), not the masked logit gradient."""
    model = _sequential()
    x, _ = _data()
    relu_out = model.layers[0].output
    fused = model.gradients(x, lambda y: np.ones_like(y), wrt=[relu_out, model.input])
    model._graph._relu_pools = {}
    plain = model.gradients(x, lambda y: np.ones_like(y), wrt=[relu_out, model.input])
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a, b)
