"""Losses against plain reference formulas and PyTorch, their gradients, and the fused path on extreme logits."""
import numpy as np
import pytest

from fastconv import losses

EXTREME = np.array([[1e4, -1e4, 0.0], [-88.0, 88.0, 3e4], [1e30, -1e30, 5.0]], dtype=np.float32)


def numeric_grad(f, p, eps=1e-6):
    grad = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        saved = p[idx]
        p[idx] = saved + eps
        plus = f(p)
        p[idx] = saved - eps
        minus = f(p)
        p[idx] = saved
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


# ---- reference formulas (Keras's, in float64) ----------------------------------------------------------------
def ref_bce(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p), axis=-1)


def ref_cce(y, p):
    p = np.clip(p / p.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
    return -np.sum(y * np.log(p), axis=-1)


def ref_bce_logits(y, z):
    # log(1 + exp(z)) - y z, with the log-add-exp done by NumPy
    return np.mean(np.logaddexp(0, z) - y * z, axis=-1)


def ref_cce_logits(y, z):
    lse = np.logaddexp.reduce(z, axis=-1, keepdims=True)
    return -np.sum(y * (z - lse), axis=-1)


def test_bce_on_probabilities(rng):
    y = rng.integers(0, 2, (6, 3)).astype(np.float64)
    p = rng.uniform(0.01, 0.99, (6, 3))
    loss = losses.BinaryCrossentropy()
    np.testing.assert_allclose(losses.binary_crossentropy(y, p), ref_bce(y, p), rtol=1e-12)
    value, grad = loss.value_and_grad(y, p)
    np.testing.assert_allclose(value, ref_bce(y, p).mean(), rtol=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(lambda q: ref_bce(y, q).mean(), p.copy()), rtol=1e-5, atol=1e-9)


def test_cce_on_probabilities(rng):
    y = np.eye(4)[rng.integers(0, 4, 5)]
    p = rng.uniform(0.05, 1.0, (5, 4))
    p /= p.sum(-1, keepdims=True)
    p *= rng.uniform(0.5, 2.0, (5, 1))                # unnormalised: Keras renormalises first
    value, grad = losses.CategoricalCrossentropy().value_and_grad(y, p)
    np.testing.assert_allclose(value, ref_cce(y, p).mean(), rtol=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(lambda q: ref_cce(y, q).mean(), p.copy()), rtol=1e-5, atol=1e-9)
    sparse = losses.SparseCategoricalCrossentropy().value_and_grad(y.argmax(-1), p)
    np.testing.assert_allclose(sparse[0], value, rtol=1e-12)
    np.testing.assert_allclose(sparse[1], grad, rtol=1e-12)


def test_mse(rng):
    y, p = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    value, grad = losses.get("mse").value_and_grad(y, p)
    np.testing.assert_allclose(value, np.mean((y - p) ** 2), rtol=1e-12)
    np.testing.assert_allclose(grad, 2 * (p - y) / y.size, rtol=1e-12)
    np.testing.assert_allclose(losses.mean_squared_error(y, p), np.mean((y - p) ** 2, axis=-1), rtol=1e-12)


def test_from_logits_values_and_gradients(rng):
    z = rng.standard_normal((6, 4)) * 3
    y_bin = rng.integers(0, 2, (6, 4)).astype(np.float64)
    value, grad = losses.BinaryCrossentropy(from_logits=True).value_and_grad(y_bin, z)
    np.testing.assert_allclose(value, ref_bce_logits(y_bin, z).mean(), rtol=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(lambda q: ref_bce_logits(y_bin, q).mean(), z.copy()),
                               rtol=1e-5, atol=1e-9)
    y_cat = np.eye(4)[rng.integers(0, 4, 6)]
    value, grad = losses.CategoricalCrossentropy(from_logits=True).value_and_grad(y_cat, z)
    np.testing.assert_allclose(value, ref_cce_logits(y_cat, z).mean(), rtol=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(lambda q: ref_cce_logits(y_cat, q).mean(), z.copy()),
                               rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_losses_match_torch(dtype, rng, torch):
    z = (rng.standard_normal((8, 5)) * 4).astype(dtype)
    labels = rng.integers(0, 5, 8)
    tz = torch.tensor(z, requires_grad=True)
    torch.nn.functional.cross_entropy(tz, torch.tensor(labels)).backward()
    value, grad = losses.SparseCategoricalCrossentropy().value_and_grad_from_logits(labels, z)
    expected = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(labels)).item()
    tol = dict(rtol=1e-6) if dtype == np.float32 else dict(rtol=1e-12)
    np.testing.assert_allclose(value, expected, **tol)
    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert value.dtype == grad.dtype == dtype

    targets = rng.integers(0, 2, (8, 5)).astype(dtype)
    tz = torch.tensor(z, requires_grad=True)
    torch.nn.functional.binary_cross_entropy_with_logits(tz, torch.tensor(targets)).backward()
    value, grad = losses.BinaryCrossentropy().value_and_grad_from_logits(targets, z)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor(targets)).item()
    np.testing.assert_allclose(value, expected, **tol)
    np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=1e-5, atol=1e-7)

    p = rng.uniform(0.01, 0.99, (8, 5)).astype(dtype)
    value, grad = losses.get("mse").value_and_grad(targets, p)
    tp = torch.tensor(p, requires_grad=True)
    torch.nn.functional.mse_loss(tp, torch.tensor(targets)).backward()
    np.testing.assert_allclose(value, torch.nn.functional.mse_loss(torch.tensor(p), torch.tensor(targets)).item(),
                               **tol)
    np.testing.assert_allclose(grad, tp.grad.numpy(), rtol=1e-5, atol=1e-8)


def test_fused_cross_entropies_are_exact_and_finite_on_extreme_logits():
    labels = np.array([0, 1, 2])
    value, grad = losses.SparseCategoricalCrossentropy().value_and_grad_from_logits(labels, EXTREME)
    per_sample = [0.0, 3e4 - 88.0, 1e30 - 5.0]        # lse - z[label]
    np.testing.assert_allclose(value, np.mean(per_sample), rtol=1e-6)
    assert np.isfinite(value) and np.isfinite(grad).all()
    np.testing.assert_allclose(grad.sum(-1), 0, atol=1e-7)      # softmax - one_hot rows sum to 0

    targets = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 0]], dtype=np.float32)
    value, grad = losses.BinaryCrossentropy().value_and_grad_from_logits(targets, EXTREME)
    assert np.isfinite(value) and np.isfinite(grad).all()
    expected = ref_bce_logits(targets.astype(np.float64), EXTREME.astype(np.float64)).mean()
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    assert value.dtype == np.float32 and grad.dtype == np.float32


def test_probability_path_is_clipped_like_keras():
    """Saturated probabilities give Keras's finite, clipped loss (-log(1e-7)) and no gradient."""
    value, grad = losses.BinaryCrossentropy().value_and_grad(np.array([[1.0]]), np.array([[0.0]]))
    np.testing.assert_allclose(value, -np.log(1e-7), rtol=1e-9)
    assert grad[0, 0] == 0
    value, _ = losses.CategoricalCrossentropy().value_and_grad(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]))
    np.testing.assert_allclose(value, -np.log(1e-7), rtol=1e-9)


def test_target_shapes():
    bce = losses.BinaryCrossentropy()
    assert np.isfinite(bce(np.array([1.0, 0.0]), np.array([[0.7], [0.2]])))       # (N,) with (N, 1)
    with pytest.raises(ValueError, match=r"y must have shape \(None, 10\).*sparse_categorical_crossentropy.*"
                                         r"received y with shape \(4,\)"):
        losses.CategoricalCrossentropy()(np.zeros(4), np.full((4, 10), 0.1))
    scce = losses.SparseCategoricalCrossentropy()
    assert np.isfinite(scce(np.array([[1], [2]]), np.full((2, 3), 1 / 3)))       # (N, 1) labels
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\).*from 0 to 3"):
        scce(np.array([0, 3]), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"one class index per sample.*categorical_crossentropy"):
        scce(np.eye(3)[:2], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="integer class indices"):
        scce(np.array([0.5, 1.0]), np.full((2, 3), 1 / 3))


@pytest.mark.parametrize("name, cls", [("binary_crossentropy", losses.BinaryCrossentropy),
                                       ("categorical_crossentropy", losses.CategoricalCrossentropy),
                                       ("sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy),
                                       ("mse", losses.MeanSquaredError),
                                       ("mean_squared_error", losses.MeanSquaredError),
                                       ("BinaryCrossentropy", losses.BinaryCrossentropy)])
def test_get_by_name(name, cls):
    assert type(losses.get(name)) is cls
    obj = cls()
    assert losses.get(obj) is obj


def test_get_errors():
    with pytest.raises(ValueError, match=r"loss must be one of .*received loss='hinge'"):
        losses.get("hinge")
    with pytest.raises(TypeError, match=r"received loss=3"):
        losses.get(3)
