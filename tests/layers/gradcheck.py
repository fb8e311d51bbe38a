"""Finite-difference checks of a layer's backward pass (float64).

The objective is ``L(x, weights) = sum(layer(x) * R)`` for a fixed random ``R``, whose gradient with respect to
the output is ``R``; the layer's ``backward(R)`` must match central differences of ``L`` with respect to sampled
entries of the input and of every trainable weight.
"""
import numpy as np


def objective(layer, x, r, reset=None):
    if reset is not None:
        reset()
    return float(np.sum(layer(x, training=True) * r))


def sampled_indices(shape, rng, count):
    size = int(np.prod(shape))
    flat = rng.choice(size, size=min(count, size), replace=False)
    return [np.unravel_index(i, shape) for i in flat]


def check_layer_gradients(layer, x, rng, reset=None, eps=1e-6, rtol=1e-5, atol=1e-7, samples=12):
    """Compare ``layer.backward`` with central differences; returns the analytic (grad_input, weight_grads)."""
    x = np.array(x, dtype=np.float64)
    if reset is not None:
        reset()
    out = layer(x, training=True)
    r = rng.standard_normal(out.shape)
    grad_x, grads = layer.backward(r)
    assert grad_x.shape == x.shape and grad_x.dtype == np.float64
    assert len(grads) == len(layer.trainable_weights)

    for idx in sampled_indices(x.shape, rng, samples):
        saved = x[idx]
        x[idx] = saved + eps
        plus = objective(layer, x, r, reset)
        x[idx] = saved - eps
        minus = objective(layer, x, r, reset)
        x[idx] = saved
        numeric = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(grad_x[idx], numeric, rtol=rtol, atol=atol, err_msg=f"d/dx at {idx}")

    for variable, grad in zip(layer.trainable_weights, grads):
        assert grad.shape == variable.shape
        for idx in sampled_indices(variable.shape, rng, samples):
            saved = variable.value[idx]
            variable.value[idx] = saved + eps
            plus = objective(layer, x, r, reset)
            variable.value[idx] = saved - eps
            minus = objective(layer, x, r, reset)
            variable.value[idx] = saved
            numeric = (plus - minus) / (2 * eps)
            np.testing.assert_allclose(grad[idx], numeric, rtol=rtol, atol=atol,
                                       err_msg=f"d/d{variable.path} at {idx}")
    return grad_x, grads


def spread(rng, shape, gap=0.01):
    """Values with distinct magnitudes at least ``gap`` apart (no max-pool ties, no ReLU kinks within eps)."""
    n = int(np.prod(shape))
    values = (np.arange(n) - n / 2 + 0.5) * gap
    return rng.permutation(values).reshape(shape)
