"""Conv2D with a plain ReLU lets the tiled kernel apply it as it writes the output (at inference and in a model's
training step); results equal a separate ReLU bit for bit, NaN kept, on every kernel path."""
import numpy as np
import pytest

import fastconv
from fastconv import functional as F
from fastconv import layers as L


@pytest.mark.parametrize("case", [
    dict(shape=(2, 9, 9, 5), kernel=(3, 3, 5, 16), opts=dict(padding="same")),            # tiled direct
    dict(shape=(2, 9, 9, 5), kernel=(3, 3, 5, 2), opts=dict()),                           # plain direct (K < 4)
    dict(shape=(2, 9, 9, 6), kernel=(3, 3, 3, 8), opts=dict(groups=2, stride=2)),         # grouped, strided
    dict(shape=(2, 9, 9, 4), kernel=(3, 3, 1, 8), opts=dict(groups=4)),                   # depthwise
    dict(shape=(2, 9, 9, 5), kernel=(3, 3, 5, 16), opts=dict(algorithm="im2col")),
    dict(shape=(2, 5, 9, 9), kernel=(16, 5, 3, 3), opts=dict(data_format="channels_first")),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_relu_equals_relu_of_conv2d(case, dtype, rng):
    x = rng.standard_normal(case["shape"]).astype(dtype)
    x.flat[7] = np.nan  # NaN stays NaN through the ReLU, as with np.maximum
    w = rng.standard_normal(case["kernel"]).astype(dtype)
    b = rng.standard_normal(w.shape[0] if case["opts"].get("data_format") else w.shape[-1]).astype(dtype)
    expected = np.maximum(F.conv2d(x, w, b, **case["opts"]), dtype(0))
    got = F.conv2d_relu(x, w, b, **case["opts"])
    assert np.isnan(expected).any()
    np.testing.assert_array_equal(got, expected)


def _relu_layers(fused, layer):
    """``layer`` with activation="relu" (fused), or linear and followed by an Activation("relu") layer."""
    if fused:
        return [layer(activation="relu")]
    return [layer(), L.Activation("relu")]


def _model(fused):
    fastconv.utils.set_random_seed(3)
    stack = ([L.Input((12, 12, 3))]
             + _relu_layers(fused, lambda **kw: L.Conv2D(8, 3, **kw))
             + _relu_layers(fused, lambda **kw: L.Conv2D(8, 3, **kw))
             + [L.MaxPooling2D(2), L.Flatten()]
             + _relu_layers(fused, lambda **kw: L.Dense(16, **kw))
             + [L.Dense(4, activation="softmax")])
    model = fastconv.Sequential(stack)
    model.compile(optimizer=fastconv.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def test_training_with_the_relu_in_the_kernel_equals_a_separate_relu(rng):
    x = rng.standard_normal((6, 12, 12, 3)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    fused, separate = _model(True), _model(False)
    for _ in range(3):
        assert fused.train_on_batch(x, y) == separate.train_on_batch(x, y)
    for a, b in zip(fused.get_weights(), separate.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fused.predict(x, verbose=0), separate.predict(x, verbose=0))


def test_a_training_call_outside_a_step_keeps_the_true_logits(rng):
    conv = L.Conv2D(4, 3, activation="relu")
    out = conv(rng.standard_normal((2, 6, 6, 3)).astype(np.float32), training=True)
    assert (conv.logits < 0).any() and (out >= 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "mixed dtypes"])
def test_relu_gradient_equals_numpys_mask_multiply(dtype, layout, rng):
    """activations.relu_grad (the parallel kernel for contiguous arrays, NumPy otherwise) gives grad * (x > 0)
    bit for bit: NaN or infinite gradients where x <= 0 give NaN, a NaN x counts as not positive."""
    from fastconv import activations

    grad = rng.standard_normal((3, 40, 41, 5)).astype(dtype)
    x = rng.standard_normal(grad.shape).astype(dtype)
    grad.flat[::7] = np.nan
    grad.flat[::11] = np.inf
    x.flat[::13] = np.nan
    x.flat[::5] = 0
    if layout == "strided":
        grad, x = grad[:, ::2], x[:, ::2]
    if layout == "mixed dtypes":
        x = x.astype(np.float32 if dtype == np.float64 else np.float64)
    with np.errstate(invalid="ignore"):
        expected = grad * (x > 0)
    got = activations.relu_grad(grad, x)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
