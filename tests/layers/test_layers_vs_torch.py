"""Layers (forward and backward) against PyTorch's autograd, in float32 and float64."""
import math

import numpy as np
import pytest

from fastconv import layers

TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def same_padding(n, k, s, d=1):
    """Keras's "same" padding (before, after) along one axis."""
    k_eff = d * (k - 1) + 1
    total = max((math.ceil(n / s) - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2


def torch_pad_nchw(torch, x, padding, hw, kernel, stride, dilation=(1, 1), value=0.0):
    if padding == "valid":
        return x
    (top, bottom), (left, right) = (same_padding(n, k, s, d) for n, k, s, d in zip(hw, kernel, stride, dilation))
    return torch.nn.functional.pad(x, (left, right, top, bottom), value=value)


def leaf(torch, array):
    return torch.tensor(array, requires_grad=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [
    dict(filters=8, kernel_size=3),
    dict(filters=8, kernel_size=3, strides=2, padding="same"),
    dict(filters=6, kernel_size=(2, 3), padding="same", dilation_rate=2),
    dict(filters=6, kernel_size=3, groups=3, strides=(2, 1)),
    dict(filters=4, kernel_size=1, use_bias=False),
])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_conv2d_matches_torch(kwargs, data_format, dtype, rng, torch):
    x_nhwc = rng.standard_normal((3, 9, 8, 6)).astype(dtype)
    layer = layers.Conv2D(**kwargs, data_format=data_format, dtype=np.dtype(dtype).name,
                          bias_initializer="random_normal")
    x = x_nhwc if data_format == "channels_last" else np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    out = layer(x, training=True)
    grad_out = rng.standard_normal(out.shape).astype(dtype)
    grad_x, grads = layer.backward(grad_out)

    kernel = layer.kernel.value                                  # HWIO in both layouts (Keras)
    tx = leaf(torch, x_nhwc.transpose(0, 3, 1, 2).copy())
    tw = leaf(torch, kernel.transpose(3, 2, 0, 1).copy())        # OIHW
    tb = leaf(torch, layer.bias.value.copy()) if layer.use_bias else None
    padded = torch_pad_nchw(torch, tx, layer.padding, x_nhwc.shape[1:3], layer.kernel_size, layer.strides,
                            layer.dilation_rate)
    ty = torch.nn.functional.conv2d(padded, tw, tb, stride=layer.strides, dilation=layer.dilation_rate,
                                    groups=layer.groups)
    go = grad_out if data_format == "channels_first" else grad_out.transpose(0, 3, 1, 2)
    ty.backward(torch.tensor(np.ascontiguousarray(go)))

    to_layout = (lambda a: a.transpose(0, 2, 3, 1)) if data_format == "channels_last" else (lambda a: a)
    np.testing.assert_allclose(out, to_layout(ty.detach().numpy()), **TOL[dtype])
    np.testing.assert_allclose(grad_x, to_layout(tx.grad.numpy()), **TOL[dtype])
    np.testing.assert_allclose(grads[0], tw.grad.numpy().transpose(2, 3, 1, 0), **TOL[dtype])
    if layer.use_bias:
        np.testing.assert_allclose(grads[1], tb.grad.numpy(), **TOL[dtype])
    assert out.dtype == grad_x.dtype == grads[0].dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_matches_torch(dtype, rng, torch):
    layer = layers.Dense(7, dtype=np.dtype(dtype).name, bias_initializer="random_normal")
    x = rng.standard_normal((5, 11)).astype(dtype)
    out = layer(x, training=True)
    grad_out = rng.standard_normal(out.shape).astype(dtype)
    grad_x, (grad_kernel, grad_bias) = layer.backward(grad_out)
    tx, tw, tb = leaf(torch, x), leaf(torch, layer.kernel.value.T.copy()), leaf(torch, layer.bias.value.copy())
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.tensor(grad_out))
    np.testing.assert_allclose(out, ty.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), **TOL[dtype])
    np.testing.assert_allclose(grad_kernel, tw.grad.numpy().T, **TOL[dtype])
    np.testing.assert_allclose(grad_bias, tb.grad.numpy(), **TOL[dtype])


@pytest.mark.parametrize("kwargs", [dict(pool_size=2), dict(pool_size=3, strides=2, padding="same"),
                                    dict(pool_size=(3, 2), strides=(1, 2))])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_max_pooling_matches_torch(kwargs, data_format, rng, torch):
    x_nchw = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    layer = layers.MaxPooling2D(**kwargs, data_format=data_format)
    x = x_nchw if data_format == "channels_first" else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    out = layer(x, training=True)
    grad_out = rng.standard_normal(out.shape).astype(np.float32)
    grad_x, _ = layer.backward(grad_out)
    tx = leaf(torch, x_nchw)
    padded = torch_pad_nchw(torch, tx, layer.padding, x_nchw.shape[2:], layer.pool_size, layer.strides,
                            value=-math.inf)
    ty = torch.nn.functional.max_pool2d(padded, layer.pool_size, layer.strides)
    to_nchw = (lambda a: a) if data_format == "channels_first" else (lambda a: a.transpose(0, 3, 1, 2))
    ty.backward(torch.tensor(np.ascontiguousarray(to_nchw(grad_out))))
    np.testing.assert_array_equal(to_nchw(out), ty.detach().numpy())
    np.testing.assert_allclose(to_nchw(grad_x), tx.grad.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softmax"])
def test_activations_match_torch(name, rng, torch):
    x = (rng.standard_normal((4, 6)) * 5).astype(np.float32)
    layer = layers.Activation(name)
    out = layer(x, training=True)
    grad_out = rng.standard_normal(out.shape).astype(np.float32)
    grad_x, _ = layer.backward(grad_out)
    tx = leaf(torch, x)
    fn = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
          "softmax": lambda t: torch.softmax(t, dim=-1)}[name]
    ty = fn(tx)
    ty.backward(torch.tensor(grad_out))
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_flatten_channels_first_matches_keras_order(rng):
    """Keras moves the channels last before flattening, so both layouts feed a Dense the same vector."""
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    last = layers.Flatten()(x)
    first = layers.Flatten(data_format="channels_first")(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(last, first)


def test_mnist_convnet_gradients_match_torch(rng, torch):
    """The whole demo network with the fused softmax + cross-entropy: loss and every weight's gradient."""
    import fastconv
    from fastconv.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D

    model = fastconv.Sequential([
        Input((28, 28, 1)), Conv2D(32, 3, activation="relu"), MaxPooling2D(2), Conv2D(64, 3, activation="relu"),
        MaxPooling2D(2), Conv2D(64, 3, activation="relu"), Flatten(), Dense(64, activation="relu"),
        Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = rng.random((16, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    before = model.get_weights()
    out = model(x, training=True)
    loss, grad = model.loss.value_and_grad_from_logits(y, model.layers[-1].logits)
    collected = []
    for i in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[i]
        backward = layer.backward_from_logits if i == len(model.layers) - 1 else layer.backward
        grad, layer_grads = backward(grad, i > 0)
        collected = layer_grads + collected

    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(576, 64), nn.ReLU(),
                        nn.Linear(64, 10))
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    denses = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for module, (kernel, bias) in zip(convs, zip(before[0:6:2], before[1:6:2])):
            module.weight.copy_(torch.tensor(kernel.transpose(3, 2, 0, 1)))
            module.bias.copy_(torch.tensor(bias))
        # torch flattens NCHW; permute the first Dense's rows from (h, w, c) to (c, h, w) order.
        dense_kernel = before[6].reshape(3, 3, 64, 64).transpose(2, 0, 1, 3).reshape(576, 64)
        denses[0].weight.copy_(torch.tensor(dense_kernel.T))
        denses[0].bias.copy_(torch.tensor(before[7]))
        denses[1].weight.copy_(torch.tensor(before[8].T))
        denses[1].bias.copy_(torch.tensor(before[9]))
    logits = net(torch.tensor(x.transpose(0, 3, 1, 2).copy()))
    torch_loss = nn.functional.cross_entropy(logits, torch.tensor(y))
    torch_loss.backward()
    np.testing.assert_allclose(out, torch.softmax(logits, -1).detach().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-5)
    torch_grads = []
    for module in convs:
        torch_grads += [module.weight.grad.numpy().transpose(2, 3, 1, 0), module.bias.grad.numpy()]
    torch_grads += [denses[0].weight.grad.numpy().T.reshape(64, 3, 3, 64).transpose(1, 2, 0, 3).reshape(576, 64),
                    denses[0].bias.grad.numpy(), denses[1].weight.grad.numpy().T, denses[1].bias.grad.numpy()]
    for mine, theirs in zip(collected, torch_grads):
        np.testing.assert_allclose(mine, theirs, rtol=2e-3, atol=2e-6)
