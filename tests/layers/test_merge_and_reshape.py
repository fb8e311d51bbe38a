"""Merge layers (Add, Multiply, Concatenate) and reshaping layers (ZeroPadding2D, Reshape, Permute): against Keras 3
(torch autograd through the Keras layer), finite differences, bad inputs and configs."""
import json

import numpy as np
import pytest

from fastconv import layers
from fastconv.layers.symbolic import SymbolicTensor
from gradcheck import check_layer_gradients

TOL = {np.float32: dict(rtol=1e-6, atol=1e-6), np.float64: dict(rtol=1e-13, atol=1e-14)}
DTYPES = [np.float32, np.float64]


def noncontiguous(a):
    wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def keras_multi(torch, layer, xs, grad_out):
    txs = [torch.tensor(x, requires_grad=True) for x in xs]
    ty = layer(txs)
    ty.backward(torch.tensor(grad_out))
    return ty.detach().numpy(), [t.grad.numpy() for t in txs]


def keras_single(torch, layer, x, grad_out):
    tx = torch.tensor(x, requires_grad=True)
    ty = layer(tx)
    ty.backward(torch.tensor(grad_out))
    return ty.detach().numpy(), tx.grad.numpy()


class MultiInputAdapter:
    """Presents a multi-input layer to gradcheck as a one-input layer: the input is one flat vector holding every
    input's values, split (and reshaped) on the way in; the input gradients are flattened back the same way."""

    def __init__(self, layer, shapes):
        self.layer, self.shapes = layer, [tuple(s) for s in shapes]
        self.sizes = [int(np.prod(s)) for s in self.shapes]

    @property
    def trainable_weights(self):
        return self.layer.trainable_weights

    def pack(self, xs):
        return np.concatenate([np.ravel(x) for x in xs])

    def __call__(self, flat, training=False):
        parts = np.split(np.asarray(flat), np.cumsum(self.sizes)[:-1])
        return self.layer([p.reshape(s) for p, s in zip(parts, self.shapes)], training=training)

    def backward(self, grad_output, need_input_grad=True):
        grads, weight_grads = self.layer.backward(grad_output, need_input_grad)
        assert [g.shape for g in grads] == self.shapes
        return self.pack(grads), weight_grads


# --- merge layers ---------------------------------------------------------------------------------------------
MERGE_CASES = [
    ("Add", {}, [(3, 4, 5), (3, 4, 5)]),
    ("Add", {}, [(2, 3, 3, 4), (2, 3, 3, 4), (2, 3, 3, 4)]),
    ("Add", {}, [(3, 1, 5), (3, 4, 1), (3, 4, 5)]),          # Keras broadcasts size-1 non-batch axes
    ("Multiply", {}, [(3, 4, 5), (3, 4, 5)]),
    ("Multiply", {}, [(2, 6), (2, 6), (2, 6), (2, 6)]),
    ("Multiply", {}, [(3, 4, 1), (3, 1, 5)]),
    ("Concatenate", {}, [(2, 3, 3, 4), (2, 3, 3, 1), (2, 3, 3, 2)]),
    ("Concatenate", dict(axis=1), [(2, 4, 3, 3), (2, 2, 3, 3)]),       # channels_first channels
    ("Concatenate", dict(axis=-2), [(3, 2, 5), (3, 4, 5)]),
    ("Concatenate", dict(axis=2), [(3, 5, 2), (3, 5, 1)]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, kwargs, shapes", MERGE_CASES)
def test_merge_layers_match_keras(cls, kwargs, shapes, dtype, rng, keras, torch):
    name = np.dtype(dtype).name
    ours = getattr(layers, cls)(**kwargs, dtype=name)
    theirs = getattr(keras.layers, cls)(**kwargs, dtype=name)
    xs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    y = ours([noncontiguous(xs[0])] + xs[1:], training=True)
    grad_out = rng.standard_normal(y.shape).astype(dtype)
    grads, weight_grads = ours.backward(grad_out)
    ky, kgrads = keras_multi(torch, theirs, xs, grad_out)
    assert y.dtype == dtype and weight_grads == [] and len(grads) == len(xs)
    assert ours.output_shape == (None,) + ky.shape[1:]
    np.testing.assert_allclose(y, ky, **TOL[dtype])
    for g, k, x in zip(grads, kgrads, xs):
        assert g.shape == x.shape and g.dtype == dtype
        np.testing.assert_allclose(g, k, **TOL[dtype])
    assert ours.backward(grad_out, need_input_grad=False) == (None, [])


def test_add_gives_each_input_its_own_gradient_array(rng):
    add = layers.Add()
    xs = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(3)]
    add(xs, training=True)
    g = rng.standard_normal((2, 3)).astype(np.float32)
    grads, _ = add.backward(g)
    assert len({id(a) for a in grads}) == 3 and not any(np.shares_memory(a, b) for a, b in
                                                        [(grads[0], grads[1]), (grads[1], grads[2])])
    for a in grads:
        np.testing.assert_array_equal(a, g)


def test_multiply_gradient_with_zeros_needs_no_division():
    mul = layers.Multiply(dtype="float64")
    xs = [np.array([[0.0, 2.0]]), np.array([[3.0, 0.0]]), np.array([[5.0, 7.0]])]
    mul(xs, training=True)
    grads, _ = mul.backward(np.ones((1, 2)))
    np.testing.assert_array_equal(grads[0], [[15.0, 0.0]])
    np.testing.assert_array_equal(grads[1], [[0.0, 14.0]])
    np.testing.assert_array_equal(grads[2], [[0.0, 0.0]])


@pytest.mark.parametrize("cls, kwargs, shapes", MERGE_CASES)
def test_merge_gradients_against_finite_differences(cls, kwargs, shapes, rng):
    layer = getattr(layers, cls)(**kwargs, dtype="float64")
    adapter = MultiInputAdapter(layer, shapes)
    x = adapter.pack([rng.standard_normal(s) for s in shapes])
    check_layer_gradients(adapter, x, rng, samples=20)


def test_merge_layers_on_symbolic_tensors():
    a, b = layers.Input((4, 3)), layers.Input((4, 1))
    out = layers.Add()([a, b])
    assert isinstance(out, SymbolicTensor) and out.shape == (None, 4, 3)
    assert layers.Concatenate(axis=1)([a, layers.Input((2, 3))]).shape == (None, 6, 3)
    assert layers.Multiply()([a, a, a]).shape == (None, 4, 3)


@pytest.mark.parametrize("cls, kwargs, shapes, match", [
    ("Add", {}, [(2, 3), (2, 4)], r"inputs of layer 'm' \(Add\) must have equal shapes .*received inputs with "
                                  r"shapes \[\(None, 3\), \(None, 4\)\]"),
    ("Multiply", {}, [(2, 3, 4), (2, 3)], r"inputs of layer 'm' \(Multiply\) must all have the same rank; "
                                          r"received inputs with shapes \[\(None, 3, 4\), \(None, 3\)\]"),
    ("Add", {}, [(1, 3), (4, 3)], r"inputs of layer 'm' \(Add\) must have the same batch size; received inputs "
                                  r"with shapes \[\(1, 3\), \(4, 3\)\]"),
    ("Add", {}, [(2, 3)], r"layer 'm' \(Add\) merges at least 2 inputs; received 1 input\(s\) with shapes "
                          r"\[\(None, 3\)\]"),
    ("Concatenate", {}, [(2, 3, 4), (2, 4, 4)], r"inputs of layer 'm' \(Concatenate\) must have equal sizes along "
                                                r"every axis but axis=-1; received inputs with shapes "
                                                r"\[\(None, 3, 4\), \(None, 4, 4\)\]"),
    ("Concatenate", dict(axis=3), [(2, 3, 4), (2, 3, 4)], r"axis of layer 'm' \(Concatenate\) must be in \[-3, 3\) "
                                                          r"for 3-D inputs; received axis=3"),
    ("Concatenate", {}, [(2, 3), (2, 3, 1)], r"inputs of layer 'm' \(Concatenate\) must all have the same rank"),
    ("Concatenate", {}, [(2, 3), (5, 3)], r"inputs of layer 'm' \(Concatenate\) must have the same batch size"),
])
def test_merge_of_incompatible_shapes_is_refused(cls, kwargs, shapes, match):
    layer = getattr(layers, cls)(**kwargs, name="m")
    with pytest.raises(ValueError, match=match):
        layer([np.zeros(s, np.float32) for s in shapes])


def test_merge_input_checks_after_build():
    add = layers.Add(name="m")
    add([np.zeros((2, 3)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"inputs of layer 'm' must have shapes \[\(None, 3\), \(None, 3\)\]; "
                                         r"received inputs with shapes \[\(2, 3\), \(2, 3\), \(2, 3\)\]"):
        add([np.zeros((2, 3))] * 3)
    with pytest.raises(TypeError, match=r"layer 'm' takes a list of arrays; received ndarray"):
        add(np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"axis must be an int; received axis='1'"):
        layers.Concatenate(axis="1")


# --- reshaping layers ---------------------------------------------------------------------------------------------
RESHAPE_CASES = [
    ("ZeroPadding2D", dict(), (2, 3, 4, 2)),
    ("ZeroPadding2D", dict(padding=2), (2, 3, 4, 2)),
    ("ZeroPadding2D", dict(padding=(1, 3)), (2, 3, 4, 2)),
    ("ZeroPadding2D", dict(padding=((0, 2), (3, 1))), (2, 3, 4, 2)),
    ("ZeroPadding2D", dict(padding=((2, 1), (0, 1)), data_format="channels_first"), (2, 2, 3, 4)),
    ("Reshape", dict(target_shape=(6, 4)), (3, 2, 3, 4)),
    ("Reshape", dict(target_shape=(-1, 2)), (3, 2, 3, 4)),
    ("Reshape", dict(target_shape=(24,)), (3, 2, 3, 4)),
    ("Reshape", dict(target_shape=(2, -1, 3)), (3, 12)),
    ("Permute", dict(dims=(2, 1)), (3, 4, 5)),
    ("Permute", dict(dims=(3, 1, 2)), (2, 3, 4, 5)),                 # NHWC -> NCHW
    ("Permute", dict(dims=(2, 3, 1)), (2, 3, 4, 5)),                 # NCHW -> NHWC
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, kwargs, shape", RESHAPE_CASES)
def test_reshaping_layers_match_keras(cls, kwargs, shape, dtype, rng, keras, torch):
    name = np.dtype(dtype).name
    ours = getattr(layers, cls)(**kwargs, dtype=name)
    theirs = getattr(keras.layers, cls)(**kwargs, dtype=name)
    x = rng.standard_normal(shape).astype(dtype)
    y = ours(noncontiguous(x), training=True)
    grad_out = rng.standard_normal(y.shape).astype(dtype)
    grad_x, weight_grads = ours.backward(noncontiguous(grad_out))
    ky, kgx = keras_single(torch, theirs, x, grad_out)
    assert y.dtype == grad_x.dtype == dtype and weight_grads == [] and y.flags.c_contiguous
    assert ours.output_shape == (None,) + ky.shape[1:] == tuple(theirs.compute_output_shape((None,) + shape[1:]))
    np.testing.assert_array_equal(y, ky)
    np.testing.assert_array_equal(grad_x, kgx)
    assert ours.backward(grad_out, need_input_grad=False) == (None, [])


@pytest.mark.parametrize("cls, kwargs, shape", RESHAPE_CASES[::2])
def test_reshaping_gradients_against_finite_differences(cls, kwargs, shape, rng):
    layer = getattr(layers, cls)(**kwargs, dtype="float64")
    check_layer_gradients(layer, rng.standard_normal(shape), rng)


def test_reshape_with_an_unknown_size_resolves_at_call_time():
    reshape = layers.Reshape((-1, 2))
    reshape.build((None, None, 4))
    assert reshape.output_shape == (None, None, 2)
    out = layers.Reshape((3, -1))(layers.Input((6, 2)))
    assert out.shape == (None, 3, 4)


@pytest.mark.parametrize("make, error, match", [
    (lambda: layers.ZeroPadding2D(-1), ValueError, r"padding must be a non-negative int.*received padding=-1"),
    (lambda: layers.ZeroPadding2D((1, 2, 3)), ValueError, r"received padding=\(1, 2, 3\)"),
    (lambda: layers.ZeroPadding2D(((1, 2), (3,))), ValueError, r"received padding=\(\(1, 2\), \(3,\)\)"),
    (lambda: layers.ZeroPadding2D(1.5), TypeError, r"padding must be a non-negative int.*received padding=1.5"),
    (lambda: layers.ZeroPadding2D(1, data_format="nhwc"), ValueError, r"data_format must be.*received "
                                                                      r"data_format='nhwc'"),
    (lambda: layers.Reshape((-1, -1)), ValueError, r"at most one of them -1.*received target_shape=\(-1, -1\)"),
    (lambda: layers.Reshape((0, 3)), ValueError, r"received target_shape=\(0, 3\)"),
    (lambda: layers.Reshape(()), ValueError, r"received target_shape=\(\)"),
    (lambda: layers.Reshape("3"), TypeError, r"received target_shape='3'"),
    (lambda: layers.Reshape((2.0, 3)), TypeError, r"received target_shape=\(2.0, 3\)"),
    (lambda: layers.Permute((1, 1)), ValueError, r"dims must be a permutation of 1, 2, ..., n.*received dims=\(1, 1\)"),
    (lambda: layers.Permute((0, 1)), ValueError, r"received dims=\(0, 1\)"),
    (lambda: layers.Permute(2), TypeError, r"received dims=2"),
    (lambda: layers.Permute((1.0, 2)), TypeError, r"received dims=\(1.0, 2\)"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_input_shapes():
    with pytest.raises(ValueError, match=r"input of layer 'z' must be 4-D.*received input with shape \(None, 3, 4\)"):
        layers.ZeroPadding2D(name="z")(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"layer 'r' cannot reshape samples of shape \(3, 4\) \(12 values\) to "
                                         r"target_shape=\(5, 2\) \(10 values\)"):
        layers.Reshape((5, 2), name="r")(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"layer 'r' cannot reshape samples of shape \(3, 4\).*target_shape=\(5, -1\)"
                                         r": 12 is not a multiple of 5"):
        layers.Reshape((5, -1), name="r")(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"input of layer 'p' must have 3 axes for dims=\(2, 1\); received input with "
                                         r"shape \(None, 3, 4, 5\)"):
        layers.Permute((2, 1), name="p")(np.zeros((2, 3, 4, 5), np.float32))
    pad = layers.ZeroPadding2D(name="z")
    pad(np.zeros((1, 3, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"input of layer 'z' must have shape \(None, 3, 3, 2\)"):
        pad(np.zeros((1, 4, 3, 2), np.float32))


@pytest.mark.parametrize("layer", [
    layers.Add(name="add_x"), layers.Multiply(trainable=False), layers.Concatenate(axis=1, dtype="float64"),
    layers.ZeroPadding2D(((1, 2), (0, 3)), data_format="channels_first"), layers.ZeroPadding2D(2),
    layers.Reshape((-1, 3)), layers.Permute((3, 1, 2)),
], ids=lambda layer: type(layer).__name__)
def test_config_round_trip_through_json(layer):
    config = json.loads(json.dumps(layers.serialize(layer)))
    clone = layers.deserialize(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
