"""LeakyReLU, PReLU, ELU and the "elu"/"leaky_relu" activations: against Keras 3 (torch autograd through the Keras
layer), finite differences, bad arguments and configs."""
import json

import numpy as np
import pytest

import fastconv
from fastconv import activations, layers
from gradcheck import check_layer_gradients, spread

TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
DTYPES = [np.float32, np.float64]


def away_from_zero(rng, shape, dtype):
    """Normal values, none within 1e-3 of the kink at 0."""
    x = rng.standard_normal(shape)
    x[np.abs(x) < 1e-3] += 1e-2
    return x.astype(dtype)


def noncontiguous(a):
    wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def keras_forward_backward(torch, layer, x, grad_out):
    tx = torch.tensor(x, requires_grad=True)
    ty = layer(tx)
    ty.backward(torch.tensor(grad_out))
    return ty.detach().numpy(), tx.grad.numpy(), [w.value.grad.numpy() for w in layer.trainable_weights]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [
    lambda m, d: m.LeakyReLU(dtype=d), lambda m, d: m.LeakyReLU(negative_slope=0.05, dtype=d),
    lambda m, d: m.ELU(dtype=d), lambda m, d: m.ELU(alpha=0.5, dtype=d),
], ids=["leaky_default", "leaky_0.05", "elu_default", "elu_0.5"])
def test_activation_layers_match_keras(make, dtype, rng, keras, torch):
    name = np.dtype(dtype).name
    ours, theirs = make(layers, name), make(keras.layers, name)
    x = away_from_zero(rng, (3, 4, 5), dtype) * 3
    grad_out = rng.standard_normal(x.shape).astype(dtype)
    y = ours(noncontiguous(x), training=True)
    grad_x, grads = ours.backward(grad_out)
    ky, kgx, _ = keras_forward_backward(torch, theirs, x, grad_out)
    assert y.dtype == grad_x.dtype == dtype and grads == []
    np.testing.assert_allclose(y, ky, **TOL[dtype])
    np.testing.assert_allclose(grad_x, kgx, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, shared_axes", [
    ((3, 5, 4, 2), None), ((3, 5, 4, 2), [1, 2]), ((3, 2, 5, 4), [2, 3]), ((4, 6), None), ((3, 4, 6), 1),
])
def test_prelu_matches_keras(shape, shared_axes, dtype, rng, keras, torch):
    name = np.dtype(dtype).name
    ours = layers.PReLU(shared_axes=shared_axes, dtype=name)
    theirs = keras.layers.PReLU(shared_axes=shared_axes, dtype=name)
    ours.build((None,) + shape[1:])
    theirs.build((None,) + shape[1:])
    assert ours.alpha.shape == tuple(theirs.alpha.shape) and ours.alpha.name == theirs.alpha.name == "alpha"
    ours.set_weights([rng.uniform(-0.5, 0.5, ours.alpha.shape)])
    theirs.set_weights(ours.get_weights())
    x = away_from_zero(rng, shape, dtype)
    grad_out = rng.standard_normal(shape).astype(dtype)
    y = ours(noncontiguous(x), training=True)
    grad_x, (grad_alpha,) = ours.backward(noncontiguous(grad_out))
    ky, kgx, (kga,) = keras_forward_backward(torch, theirs, x, grad_out)
    assert y.dtype == grad_x.dtype == grad_alpha.dtype == dtype
    np.testing.assert_allclose(y, ky, **TOL[dtype])
    np.testing.assert_allclose(grad_x, kgx, **TOL[dtype])
    np.testing.assert_allclose(grad_alpha, kga, rtol=TOL[dtype]["rtol"] * 10, atol=TOL[dtype]["atol"] * 10)


def test_prelu_frozen_gets_no_alpha_gradient(rng):
    prelu = layers.PReLU(alpha_initializer=fastconv.initializers.Constant(0.1))
    x = rng.standard_normal((2, 3))
    prelu(x, training=True)
    prelu.trainable = False
    grad_x, grads = prelu.backward(np.ones((2, 3)))
    assert grads == [] and prelu.backward(np.ones((2, 3)), need_input_grad=False) == (None, [])
    np.testing.assert_allclose(grad_x, np.where(x > 0, 1, np.float32(0.1)))


@pytest.mark.parametrize("name", ["elu", "leaky_relu"])
def test_activation_functions_match_keras(name, rng, keras, torch):
    x = away_from_zero(rng, (4, 7), np.float32) * 4
    ours = activations.get(name)
    expected = getattr(keras.activations, name)(torch.tensor(x)).numpy()            # Keras's defaults
    np.testing.assert_allclose(ours(x), expected, **TOL[np.float32])
    assert ours(x).dtype == np.float32 and activations.serialize(ours) == name
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    getattr(keras.activations, name)(tx).sum().backward()
    np.testing.assert_allclose(ours.backward(np.ones_like(x, np.float64), x.astype(np.float64), ours(x.astype(
        np.float64))), tx.grad.numpy(), **TOL[np.float64])


def test_leaky_relu_activation_slope_and_elu_extremes():
    x = np.array([-1e30, -1000.0, -2.0, 0.0, 2.0, 1e30], dtype=np.float32)
    np.testing.assert_array_equal(activations.leaky_relu(x), np.where(x >= 0, x, np.float32(0.2) * x))
    y = activations.elu(x)
    assert np.isfinite(y).all() and y.dtype == np.float32
    np.testing.assert_allclose(y, [-1, -1, np.expm1(-2), 0, 2, 1e30], rtol=1e-6)
    g = activations.elu.backward(np.ones_like(x), x, y)
    np.testing.assert_allclose(g, [0, 0, np.exp(-2), 1, 1, 1], rtol=1e-6)           # alpha * exp(0) at 0
    dense = layers.Dense(3, activation="elu")
    assert dense.get_config()["activation"] == "elu"


@pytest.mark.parametrize("layer, shape", [
    (lambda: layers.LeakyReLU(negative_slope=0.2, dtype="float64"), (3, 4, 5)),
    (lambda: layers.ELU(alpha=0.7, dtype="float64"), (3, 4, 5)),
    (lambda: layers.PReLU(alpha_initializer="random_normal", dtype="float64"), (3, 4, 2)),
    (lambda: layers.PReLU(alpha_initializer="random_normal", shared_axes=[1], dtype="float64"), (3, 4, 2)),
    (lambda: layers.PReLU(alpha_initializer="random_normal", shared_axes=(1, 2), dtype="float64"), (2, 3, 3, 2)),
], ids=["leaky", "elu", "prelu", "prelu_shared1", "prelu_shared12"])
def test_gradients_against_finite_differences(layer, shape, rng):
    check_layer_gradients(layer(), spread(rng, shape, gap=0.05), rng)


def test_leaky_relu_accepts_the_keras2_alpha_keyword():
    layer = layers.LeakyReLU(alpha=0.1)
    assert layer.negative_slope == 0.1 and layers.LeakyReLU().negative_slope == 0.3
    np.testing.assert_allclose(layer(np.array([[-1.0, 1.0]])), [[-0.1, 1.0]])
    assert layer.name.startswith("leaky_re_lu") and layers.PReLU().name.startswith("p_re_lu")   # Keras's names


@pytest.mark.parametrize("make, error, match", [
    (lambda: layers.LeakyReLU(negative_slope=-0.1), ValueError,
     r"negative_slope must be at least 0.0; received negative_slope=-0.1"),
    (lambda: layers.LeakyReLU(negative_slope=None), TypeError, r"negative_slope must be a float; received "
                                                                r"negative_slope=None"),
    (lambda: layers.LeakyReLU(alpha="a"), TypeError, r"negative_slope must be a float; received negative_slope='a'"),
    (lambda: layers.ELU(alpha=float("nan")), ValueError, r"alpha must be a number; received alpha=nan"),
    (lambda: layers.ELU(alpha=[1.0]), TypeError, r"alpha must be a float; received alpha=\[1.0\]"),
    (lambda: layers.PReLU(shared_axes=0), ValueError, r"shared_axes must be distinct axes of at least 1.*"
                                                      r"received shared_axes=0"),
    (lambda: layers.PReLU(shared_axes=[1, 1]), ValueError, r"received shared_axes=\[1, 1\]"),
    (lambda: layers.PReLU(shared_axes="1"), TypeError, r"shared_axes must be an int or a list of ints; "
                                                       r"received shared_axes='1'"),
    (lambda: layers.PReLU(alpha_initializer="zero"), ValueError, r"alpha_initializer must be one of"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_input_shapes():
    with pytest.raises(ValueError, match=r"shared_axes of layer 'p' must be axes 1 to 2 of its 3-D input; "
                                         r"received shared_axes=\(1, 3\)"):
        layers.PReLU(shared_axes=[3, 1], name="p").build((None, 4, 5))
    with pytest.raises(ValueError, match=r"input of layer 'p' must have at least 2 axes.*\(None,\)"):
        layers.PReLU(name="p").build((None,))
    with pytest.raises(ValueError, match=r"known sizes along its unshared axes.*\(None, None, 5\)"):
        layers.PReLU(name="p").build((None, None, 5))
    layers.PReLU(shared_axes=1).build((None, None, 5))                              # a shared axis may be unknown
    prelu = layers.PReLU(name="p")
    prelu(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"input of layer 'p' must have shape \(None, 3\); received input with "
                                         r"shape \(2, 4\)"):
        prelu(np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("layer", [
    layers.LeakyReLU(negative_slope=0.15, name="lr"), layers.ELU(alpha=0.5, trainable=False),
    layers.PReLU(alpha_initializer=fastconv.initializers.Constant(0.25), shared_axes=[2, 1]),
    layers.PReLU(dtype="float64"),
], ids=lambda layer: type(layer).__name__)
def test_config_round_trip_through_json(layer):
    config = json.loads(json.dumps(layers.serialize(layer)))
    clone = layers.deserialize(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
