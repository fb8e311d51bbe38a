"""AveragePooling2D, GlobalAveragePooling2D and GlobalMaxPooling2D: against Keras 3 (forward, and the input
gradient by torch autograd through the Keras layer), the NumPy reference, finite differences, configs, errors."""
import json
import math

import numpy as np
import pytest

from fastconv import layers
from gradcheck import check_layer_gradients, spread
import reference as ref

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
DTYPES = [np.float32, np.float64]
DF = ["channels_last", "channels_first"]


def keras_forward_backward(torch, layer, x, grad_out):
    tx = torch.tensor(x, requires_grad=True)
    ty = layer(tx)
    ty.backward(torch.tensor(grad_out))
    return ty.detach().numpy(), tx.grad.numpy()


def ours_forward_backward(layer, x, grad_out):
    out = layer(x, training=True)
    grad_x, weight_grads = layer.backward(grad_out)
    assert weight_grads == []
    return out, grad_x


def in_layout(shape_nhwc, data_format):
    n, h, w, c = shape_nhwc
    return shape_nhwc if data_format == "channels_last" else (n, c, h, w)


def same_pads(n, k, s):
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def keras_on_torch_is_tensorflow(hw, pool, strides, padding):
    """Keras 3's torch backend pads an asymmetric "same" by replicating the edge and then counts those cells;
    that equals TensorFlow's rule (padding left out of the divisor) only when every axis is padded symmetrically,
    or when a window that reaches into the replicated cells holds exactly one real cell along that axis."""
    if padding == "valid":
        return True
    pads = [same_pads(n, k, s) for n, k, s in zip(hw, pool, strides)]
    if all(a == b for a, b in pads):
        return True
    return all(a == 0 and b <= 1 and (math.ceil(n / s) - 1) * s == n - 1 for (a, b), n, s in zip(pads, hw, strides))


# (H, W, pool_size, strides, padding)
AVG_CASES = [
    (8, 8, 2, None, "valid"),
    (9, 7, 2, None, "valid"),
    (9, 9, 3, 2, "valid"),
    (8, 9, (2, 3), (1, 2), "valid"),
    (9, 7, 2, None, "same"),          # (0, 1) padding, the last window holds one real cell
    (9, 9, 3, 2, "same"),             # symmetric (1, 1)
    (7, 8, 3, 1, "same"),             # symmetric (1, 1)
    (7, 6, 2, 1, "same"),             # (0, 1) padding, stride 1
    (8, 8, 3, 2, "same"),             # (0, 1) padding, last window holds two real cells: Keras-on-torch differs
    (6, 7, 4, 1, "same"),             # (1, 2) padding: Keras-on-torch differs
]


def avg_id(case):
    return "-".join(str(v) for v in case).replace(" ", "")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("case", AVG_CASES, ids=avg_id)
def test_average_pooling_matches_keras(keras, torch, rng, case, data_format, dtype):
    h, w, pool, strides, padding = case
    name = np.dtype(dtype).name
    ours = layers.AveragePooling2D(pool, strides, padding, data_format, dtype=name)
    theirs = keras.layers.AveragePooling2D(pool, strides, padding, data_format, dtype=name)
    x = rng.standard_normal(in_layout((2, h, w, 3), data_format)).astype(dtype)
    out = ours(x)
    assert out.shape == tuple(theirs.compute_output_shape(x.shape)) and out.dtype == dtype
    grad_out = rng.standard_normal(out.shape).astype(dtype)
    out, grad_x = ours_forward_backward(ours, x, grad_out)
    assert grad_x.shape == x.shape and grad_x.dtype == dtype

    pool2, strides2 = ref.pair(pool), ref.pair(strides if strides is not None else pool)
    # TensorFlow's rule, from the independent NumPy reference
    np.testing.assert_allclose(out, ref.avg_pool2d(x, pool2, strides2, padding, False, False, data_format),
                               **TOL[dtype])
    np.testing.assert_allclose(grad_x, ref.avg_pool2d_grad(grad_out, x.shape, pool2, strides2, padding, False,
                                                           False, data_format), **TOL[dtype])
    if not keras_on_torch_is_tensorflow((h, w), pool2, strides2, padding):
        return  # Keras-on-torch departs from TensorFlow here (see the next test); the reference above decides
    ky, kgx = keras_forward_backward(torch, theirs, x, grad_out)
    np.testing.assert_allclose(out, ky, **TOL[dtype])
    np.testing.assert_allclose(grad_x, kgx, **TOL[dtype])


def test_keras_on_torch_asymmetric_same(keras, torch, rng):
    # 3x3 / 2 "same" on 8x8 pads (0, 1): the last window holds two real cells. TensorFlow (and fastconv) average
    # those two; Keras 3 on torch (3.15) replicates the last row/column and averages three cells.
    x = rng.standard_normal((1, 8, 8, 2))
    assert not keras_on_torch_is_tensorflow((8, 8), (3, 3), (2, 2), "same")
    tf_rule = ref.avg_pool2d(x, 3, 2, "same", False, False, "channels_last")
    ours = layers.AveragePooling2D(3, 2, "same", dtype="float64")(x)
    np.testing.assert_allclose(ours, tf_rule, rtol=1e-13, atol=1e-13)
    replicated = torch.nn.functional.pad(torch.tensor(x.transpose(0, 3, 1, 2)), (0, 1, 0, 1), mode="replicate")
    replicate_rule = torch.nn.functional.avg_pool2d(replicated, 3, 2).numpy().transpose(0, 2, 3, 1)
    assert np.abs(replicate_rule - tf_rule).max() > 1e-3
    theirs = keras.layers.AveragePooling2D(3, 2, "same", dtype="float64")(torch.tensor(x)).numpy()
    assert np.allclose(theirs, replicate_rule, rtol=1e-12) or np.allclose(theirs, tf_rule, rtol=1e-12)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("data_format", DF)
@pytest.mark.parametrize("kind", ["GlobalAveragePooling2D", "GlobalMaxPooling2D"])
def test_global_pooling_matches_keras(keras, torch, rng, kind, data_format, dtype, keepdims):
    name = np.dtype(dtype).name
    ours = getattr(layers, kind)(data_format=data_format, keepdims=keepdims, dtype=name)
    theirs = getattr(keras.layers, kind)(data_format=data_format, keepdims=keepdims, dtype=name)
    for shape in [(2, 5, 6, 70), (3, 7, 7, 4), (1, 1, 1, 3)]:
        x = rng.standard_normal(in_layout(shape, data_format)).astype(dtype)
        grad_out = rng.standard_normal(tuple(theirs.compute_output_shape(x.shape))).astype(dtype)
        out, grad_x = ours_forward_backward(ours, x, grad_out)
        assert out.shape == grad_out.shape and out.dtype == dtype and grad_x.dtype == dtype
        ky, kgx = keras_forward_backward(torch, theirs, x, grad_out)
        # Keras 3's torch mean computes in float32 even for float64 input (result_type(float64, "float32") is
        # float32 there), so its global average is only float32-accurate; the reference checks ours tightly.
        keras_tol = TOL[np.float32] if kind == "GlobalAveragePooling2D" else TOL[dtype]
        np.testing.assert_allclose(out, ky, **keras_tol)
        np.testing.assert_allclose(grad_x, kgx, **keras_tol)
        ours.built = False  # the next shape builds afresh
        if kind == "GlobalAveragePooling2D":
            exp = ref.global_avg_pool2d(x, data_format)
            exp_grad = ref.global_avg_pool2d_grad(grad_out.reshape(exp.shape), x.shape, data_format)
        else:
            exp, idx = ref.global_max_pool2d(x, data_format)
            exp_grad = ref.global_max_pool2d_grad(grad_out.reshape(exp.shape), idx, x.shape, data_format)
        np.testing.assert_allclose(out.reshape(exp.shape), exp, **TOL[dtype])
        np.testing.assert_allclose(grad_x, exp_grad, **TOL[dtype])


@pytest.mark.parametrize("data_format", DF)
def test_layer_gradients(rng, data_format):
    x = spread(rng, in_layout((2, 7, 6, 3), data_format))
    for layer in [layers.AveragePooling2D(2, data_format=data_format, dtype="float64"),
                  layers.AveragePooling2D(3, 2, "same", data_format, dtype="float64"),
                  layers.AveragePooling2D((2, 3), (1, 2), "same", data_format, dtype="float64"),
                  layers.GlobalAveragePooling2D(data_format, dtype="float64"),
                  layers.GlobalAveragePooling2D(data_format, keepdims=True, dtype="float64"),
                  layers.GlobalMaxPooling2D(data_format, dtype="float64"),
                  layers.GlobalMaxPooling2D(data_format, keepdims=True, dtype="float64")]:
        grad_x, grads = check_layer_gradients(layer, x, rng)
        assert grads == []


@pytest.mark.parametrize("data_format", DF)
def test_output_shapes_and_unknown_sizes(data_format):
    shape = in_layout((None, 7, 9, 5), data_format)
    avg = layers.AveragePooling2D(2, padding="same", data_format=data_format)
    avg.build(shape)
    assert avg.output_shape == in_layout((None, 4, 5, 5), data_format)
    avg = layers.AvgPool2D(3, 2, data_format=data_format)
    avg.build(in_layout((None, None, 9, 5), data_format))
    assert avg.output_shape == in_layout((None, None, 4, 5), data_format)
    for cls in (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D):
        g = cls(data_format=data_format)
        g.build(in_layout((None, None, None, 5), data_format))
        assert g.output_shape == (None, 5)
        g = cls(data_format=data_format, keepdims=True)
        g.build(shape)
        assert g.output_shape == in_layout((None, 1, 1, 5), data_format)


def test_state_is_kept_only_in_training(rng):
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    for layer in [layers.AveragePooling2D(), layers.GlobalAveragePooling2D(), layers.GlobalMaxPooling2D()]:
        layer(x)
        with pytest.raises(RuntimeError, match="training=True"):
            layer.backward(np.zeros(layer.compute_output_shape(x.shape), np.float32))
        out = layer(x, training=True)
        assert layer.backward(np.zeros_like(out), need_input_grad=False) == (None, [])
        grad_x, _ = layer.backward(np.ones_like(out))
        assert grad_x.dtype == np.float32 and grad_x.shape == x.shape


def test_uint8_input_is_cast_to_the_layer_dtype():
    x = np.full((1, 4, 4, 2), 200, np.uint8)
    for layer in [layers.AveragePooling2D(), layers.GlobalAveragePooling2D(), layers.GlobalMaxPooling2D()]:
        out = layer(x)
        assert out.dtype == np.float32 and (out == 200).all()


@pytest.mark.parametrize("layer, keras_name", [
    (layers.AveragePooling2D((2, 3), (1, 2), "same", "channels_first", name="avg", trainable=False),
     "AveragePooling2D"),
    (layers.AvgPool2D(3), "AveragePooling2D"),
    (layers.GlobalAveragePooling2D("channels_first", keepdims=True, dtype="float64"), "GlobalAveragePooling2D"),
    (layers.GlobalAvgPool2D(), "GlobalAveragePooling2D"),
    (layers.GlobalMaxPooling2D(keepdims=True), "GlobalMaxPooling2D"),
    (layers.GlobalMaxPool2D("channels_first"), "GlobalMaxPooling2D"),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_config_round_trip(layer, keras_name, rng):
    config = json.loads(json.dumps(layers.serialize(layer)))
    assert config["class_name"] == keras_name
    copy = layers.deserialize(config)
    assert type(copy) is type(layer) and copy.get_config() == layer.get_config()
    for alias in {"AveragePooling2D": "AvgPool2D", "GlobalAveragePooling2D": "GlobalAvgPool2D",
                  "GlobalMaxPooling2D": "GlobalMaxPool2D"}[keras_name], keras_name:
        again = layers.deserialize({"class_name": alias, "config": config["config"]})
        assert type(again) is type(layer) and again.get_config() == layer.get_config()
    x = rng.standard_normal(in_layout((2, 6, 8, 3), layer.data_format))
    np.testing.assert_array_equal(copy(x), layer(x))


def test_configs_carry_the_keras_arguments(keras):
    ours = layers.AveragePooling2D((2, 3), (1, 2), "same", "channels_first").get_config()
    theirs = keras.layers.AveragePooling2D((2, 3), (1, 2), "same", "channels_first").get_config()
    for key in ("pool_size", "strides", "padding", "data_format"):
        assert tuple(ours[key]) == tuple(theirs[key]) if key in ("pool_size", "strides") else ours[key] == theirs[key]
    for kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        ours = getattr(layers, kind)("channels_first", keepdims=True).get_config()
        theirs = getattr(keras.layers, kind)("channels_first", keepdims=True).get_config()
        assert ours["data_format"] == theirs["data_format"] and ours["keepdims"] == theirs["keepdims"]


@pytest.mark.parametrize("make, exc, match", [
    (lambda: layers.AveragePooling2D(0), ValueError, "pool_size.*0"),
    (lambda: layers.AveragePooling2D(2.5), TypeError, "pool_size.*2.5"),
    (lambda: layers.AveragePooling2D(2, strides=(1, 2, 3)), ValueError, r"strides.*\(1, 2, 3\)"),
    (lambda: layers.AveragePooling2D(2, padding="full"), ValueError, "padding.*'full'"),
    (lambda: layers.AveragePooling2D(2, data_format="NCHW"), ValueError, "data_format.*'NCHW'"),
    (lambda: layers.AveragePooling2D(2, count_include_pad=True), TypeError, "count_include_pad"),
    (lambda: layers.GlobalAveragePooling2D(data_format="nhwc"), ValueError, "data_format.*'nhwc'"),
    (lambda: layers.GlobalMaxPooling2D(keepdims="yes"), TypeError, "keepdims.*'yes'"),
    (lambda: layers.GlobalMaxPooling2D(keepdims=1), TypeError, "keepdims.*1"),
])
def test_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("layer, shape, match", [
    (layers.AveragePooling2D(2), (None, 6, 6), r"4-D.*\(None, 6, 6\)"),
    (layers.AveragePooling2D(3), (None, 2, 6, 1), r"pool_size=\(3, 3\).*\(None, 2, 6, 1\)"),
    (layers.GlobalAveragePooling2D(), (None, 6, 6, 1, 1), r"4-D.*\(None, 6, 6, 1, 1\)"),
    (layers.GlobalMaxPooling2D(data_format="channels_first"), (None, 3, 0, 4), r"\(None, 3, 0, 4\)"),
])
def test_bad_input_shapes(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer.build(shape)
