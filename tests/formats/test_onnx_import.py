"""fastconv.formats.onnx_import.load_onnx against onnxruntime (the oracle): models exported from PyTorch and
graphs written with onnx.helper, in both data formats; the errors it raises; and that a loaded model trains."""
import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fastconv  # noqa: E402
from fastconv.formats.onnx_import import load_onnx  # noqa: E402

FORMATS = ["channels_first", "channels_last"]


# --- helpers -----------------------------------------------------------------------------------------------
def _export(torch, module, x, dynamic_batch=True):
    """ONNX bytes from the TorchScript exporter (the dynamo one needs onnxscript, which we do not install)."""
    module.eval()
    buffer = io.BytesIO()
    kwargs = {"dynamic_axes": {"x": {0: "batch"}}} if dynamic_batch else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the legacy exporter's deprecation notice
        torch.onnx.export(module, (torch.from_numpy(x),), buffer, input_names=["x"], dynamo=False, **kwargs)
    return buffer.getvalue()


def _ort(data, xs):
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    xs = xs if isinstance(xs, list) else [xs]
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs)})


def _to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if a.ndim == 4 else a


def _to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else a


def _predict(model, xs, data_format):
    xs = xs if isinstance(xs, list) else [xs]
    if data_format == "channels_last":
        xs = [_to_nhwc(x) for x in xs]
    out = model.predict(xs[0] if len(xs) == 1 else xs, verbose=0)
    out = out if isinstance(out, list) else [out]
    return [_to_nchw(o) for o in out] if data_format == "channels_last" else out


def _assert_matches(data, xs, data_format, atol=2e-5):
    """Load ``data`` and check its predictions equal onnxruntime's; returns the model."""
    model = load_onnx(data, data_format=data_format)
    expected = _ort(data, xs)
    got = _predict(model, xs, data_format)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == np.float32
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=atol)
    return model


def _graph_model(nodes, inputs, outputs, initializers=(), opset=17):
    """Serialized ONNX model from onnx.helper pieces. ``inputs``/``outputs``: (name, shape) pairs."""
    graph = helper.make_graph(
        nodes, "test_graph",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture
def make_rng():
    return np.random.default_rng(7)


def _randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _layers_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


# --- (a) models exported from PyTorch ----------------------------------------------------------------------
@pytest.fixture
def mnist_net(torch):
    """Keras's MNIST convnet, in PyTorch: conv-relu-pool twice, flatten, dropout, dense, softmax."""
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(16 * 5 * 5, 10),
                         nn.Softmax(dim=1))


@pytest.mark.parametrize("data_format", FORMATS)
def test_mnist_convnet_matches_onnxruntime(torch, mnist_net, make_rng, data_format):
    x = _randn(make_rng, 3, 1, 28, 28)
    data = _export(torch, mnist_net, x)
    model = _assert_matches(data, x, data_format)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(_to_nhwc(x) if data_format == "channels_last" else x, verbose=0),
                                   mnist_net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-6)
    conv = _layers_of(model, fastconv.layers.Conv2D)[0]
    assert conv.data_format == data_format and conv.kernel.shape == (3, 3, 1, 8)     # HWIO
    np.testing.assert_array_equal(conv.kernel.value, mnist_net[0].weight.detach().numpy().transpose(2, 3, 1, 0))
    dense = _layers_of(model, fastconv.layers.Dense)[0]
    assert dense.kernel.shape == (400, 10)
    expected_input = (None, 28, 28, 1) if data_format == "channels_last" else (None, 1, 28, 28)
    assert model.input_shape == expected_input


def test_fixed_batch_export_takes_any_batch(torch, mnist_net, make_rng):
    """Exported with a fixed batch of 2 (its Reshape/Flatten constants hold 2): the model takes any batch."""
    data = _export(torch, mnist_net, _randn(make_rng, 2, 1, 28, 28), dynamic_batch=False)
    model = load_onnx(data)
    x = _randn(make_rng, 5, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x, verbose=0), mnist_net(torch.from_numpy(x)).numpy(), rtol=1e-4,
                                   atol=1e-6)


@pytest.fixture
def residual_net(torch):
    """BatchNormalization (after an Add, so the exporter cannot fold it into a Conv), a depthwise conv with a
    depth multiplier, Concat, a residual Add, GlobalAveragePool, Gemm and Softmax."""
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 6, 3, padding=1)
            self.depthwise = nn.Conv2d(6, 12, 3, padding=1, groups=6)
            self.pointwise = nn.Conv2d(12, 6, 1)
            self.bn = nn.BatchNorm2d(6)
            self.side = nn.Conv2d(6, 4, 3, stride=2, padding=1)
            self.main = nn.Conv2d(6, 4, 1, stride=2)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            x = F.relu(self.stem(x))
            x = self.bn(x + self.pointwise(F.relu(self.depthwise(x))))
            x = torch.cat([self.side(x), self.main(x)], dim=1)
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
            return torch.softmax(self.fc(x), dim=1)

    torch.manual_seed(1)
    net = Net()
    with torch.no_grad():   # statistics that are not the identity
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.5, 0.5)
    return net


@pytest.mark.parametrize("data_format", FORMATS)
def test_bn_depthwise_concat_residual_gap_gemm(torch, residual_net, make_rng, data_format):
    x = _randn(make_rng, 4, 3, 12, 12)
    model = _assert_matches(_export(torch, residual_net, x), x, data_format)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"BatchNormalization", "DepthwiseConv2D", "Concatenate", "Add", "GlobalAveragePooling2D", "Dense",
            "Softmax"} <= kinds
    depthwise = _layers_of(model, fastconv.layers.DepthwiseConv2D)[0]
    assert depthwise.depth_multiplier == 2 and depthwise.kernel.shape == (3, 3, 6, 2)
    bn = _layers_of(model, fastconv.layers.BatchNormalization)[0]
    assert bn.axis == (1 if data_format == "channels_first" else 3)
    np.testing.assert_array_equal(bn.moving_variance.value, residual_net.bn.running_var.numpy())


@pytest.mark.parametrize("data_format", FORMATS)
def test_activations(torch, make_rng, data_format):
    nn = torch.nn
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.LeakyReLU(0.2), nn.Conv2d(4, 4, 1), nn.PReLU(4),
                        nn.Conv2d(4, 4, 1), nn.PReLU(), nn.Conv2d(4, 3, 1), nn.ReLU6(), nn.Conv2d(3, 3, 1),
                        nn.Tanh(), nn.Conv2d(3, 2, 1), nn.Sigmoid())
    with torch.no_grad():
        net[3].weight.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
        net[0].weight.mul_(4.0)   # enough range for ReLU6 to cap
    x = _randn(make_rng, 2, 2, 7, 6)
    model = _assert_matches(_export(torch, net, x), x, data_format)
    prelu = _layers_of(model, fastconv.layers.PReLU)
    alpha = prelu[0].alpha.value
    assert alpha.shape == ((4, 1, 1) if data_format == "channels_first" else (1, 1, 4))
    np.testing.assert_allclose(alpha.ravel(), [0.1, 0.2, 0.3, 0.4])
    assert prelu[1].alpha.shape == (1, 1, 1)


def _avg_net(torch, *args, **kwargs):
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.AvgPool2d(*args, **kwargs))


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("args, kwargs, size", [
    ((2,), {}, 8),
    ((3, 2, 1), {"count_include_pad": True}, 8),                 # zeros count: ZeroPadding2D + valid
    ((3, 1, 1), {"count_include_pad": False}, 7),                # padding left out: exactly "same"
    ((3, 2, 1), {"count_include_pad": False}, 9),                # odd size: still exactly "same"
    ((2, 2), {"ceil_mode": True, "count_include_pad": False}, 7),  # the overhang is "same"'s extra column
    ((3, 2), {"ceil_mode": True}, 7),                             # ceil_mode changes nothing here
])
def test_average_pool(torch, make_rng, data_format, args, kwargs, size):
    torch.manual_seed(3)
    x = _randn(make_rng, 2, 2, size, size)
    _assert_matches(_export(torch, _avg_net(torch, *args, **kwargs), x), x, data_format)


def test_wrong_declared_shape_warns(torch, make_rng):
    """PyTorch declares (N, 3, 5, 5) here, but no window may start in the far padding: onnxruntime (and the
    operator's definition) give (N, 3, 4, 4). The model follows the definition and says so."""
    x = _randn(make_rng, 2, 2, 7, 7)
    data = _export(torch, _avg_net(torch, 2, 2, padding=1, ceil_mode=True, count_include_pad=True), x)
    with pytest.warns(RuntimeWarning, match=r"AveragePool.*declares shape \(None, 3, 5, 5\).*\(3, 4, 4\)"):
        _assert_matches(data, x, "channels_first")


def test_average_pool_that_cannot_be_expressed_is_refused(torch, make_rng):
    # pads (1, 1) on an even size leave padding out of the divisors with a different alignment than "same"
    x = _randn(make_rng, 1, 2, 8, 8)
    data = _export(torch, _avg_net(torch, 3, 2, 1, count_include_pad=False), x)
    with pytest.raises(ValueError, match=r"AveragePool.*attribute pads.*count_include_pad=0"):
        load_onnx(data)
    # with count_include_pad=1 the padding counts in each divisor but ceil_mode's overhang does not
    data = _export(torch, _avg_net(torch, 2, 2, ceil_mode=True, count_include_pad=True), x[..., :7, :7])
    with pytest.raises(ValueError, match=r"AveragePool.*attribute ceil_mode.*received ceil_mode=1"):
        load_onnx(data)


@pytest.mark.parametrize("data_format", FORMATS)
def test_stride_two_asymmetric_pad_and_conv_paddings(torch, make_rng, data_format):
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, stride=2)             # after an explicit (0, 1, 0, 1) Pad
            self.b = nn.Conv2d(4, 4, 3, padding=1)             # exactly "same"
            self.c = nn.Conv2d(4, 5, 3, stride=2, padding=1)   # symmetric, not "same" for an even size
            self.d = nn.Conv2d(5, 2, 3, padding=(2, 1), dilation=2)

        def forward(self, x):
            return self.d(self.c(self.b(self.a(F.pad(x, (0, 1, 0, 1))))))

    torch.manual_seed(4)
    x = _randn(make_rng, 2, 3, 16, 16)
    model = _assert_matches(_export(torch, Net(), x), x, data_format)
    convs = _layers_of(model, fastconv.layers.Conv2D)
    assert [c.padding for c in convs] == ["valid", "same", "valid", "valid"]
    pads = [layer.padding for layer in _layers_of(model, fastconv.layers.ZeroPadding2D)]
    assert pads == [((0, 1), (0, 1)), ((1, 1), (1, 1)), ((2, 2), (1, 1))]


@pytest.mark.parametrize("data_format", FORMATS)
def test_max_pool_padding(torch, make_rng, data_format):
    """ResNet's stem pool (3, 2, 1) after a ReLU: zero padding is exact there. ceil_mode too."""
    nn = torch.nn
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                        nn.Conv2d(4, 4, 1), nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True),
                        nn.Conv2d(4, 4, 1), nn.MaxPool2d(3, 1, 1))   # no ReLU before, but exactly "same"
    x = _randn(make_rng, 2, 3, 10, 10)
    _assert_matches(_export(torch, net, x), x, data_format)


def test_max_pool_padding_on_signed_input_is_refused(torch, make_rng):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.MaxPool2d(3, 2, 1))
    x = _randn(make_rng, 1, 3, 10, 10)
    with pytest.raises(ValueError, match=r"MaxPool.*attribute pads.*after a Relu"):
        load_onnx(_export(torch, net, x))


# --- (b) graphs written with onnx.helper -------------------------------------------------------------------
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("trans_b, alpha, beta, c_shape", [
    (0, 1.0, 1.0, (5,)), (1, 0.5, 2.0, (1, 5)), (1, 1.0, 1.0, None), (0, 2.0, -1.0, ())])
def test_gemm(make_rng, data_format, trans_b, alpha, beta, c_shape):
    b = _randn(make_rng, 5, 6) if trans_b else _randn(make_rng, 6, 5)
    inits = {"B": b}
    inputs = ["x", "B"]
    if c_shape is not None:
        inits["C"] = _randn(make_rng, *c_shape)
        inputs.append("C")
    node = helper.make_node("Gemm", inputs, ["y"], name="gemm", transB=trans_b, alpha=alpha, beta=beta)
    data = _graph_model([node], [("x", ["N", 6])], [("y", ["N", 5])], inits)
    model = _assert_matches(data, _randn(make_rng, 3, 6), data_format)
    assert model.get_layer("gemm").kernel.shape == (6, 5)


def test_gemm_trans_a_is_refused(make_rng):
    node = helper.make_node("Gemm", ["x", "B"], ["y"], name="gemm_t", transA=1)
    data = _graph_model([node], [("x", [6, 3])], [("y", [3, 5])], {"B": _randn(make_rng, 6, 5)})
    with pytest.raises(ValueError, match=r"'gemm_t' \(op Gemm\).*transA.*received transA=1"):
        load_onnx(data)


@pytest.mark.parametrize("data_format", FORMATS)
def test_matmul_with_bias_add_folds_into_dense(make_rng, data_format):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Add", ["bias", "h"], ["y"], name="bias_add")]
    data = _graph_model(nodes, [("x", ["N", 3, 4])], [("y", ["N", 3, 2])],
                        {"W": _randn(make_rng, 4, 2), "bias": _randn(make_rng, 2)})
    model = _assert_matches(data, _randn(make_rng, 2, 3, 4), data_format)
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Dense"]
    assert model.get_layer("mm").use_bias


@pytest.mark.parametrize("data_format", FORMATS)
def test_conv_bias_add_folds_into_conv(make_rng, data_format):
    """A Conv without B followed by Add of a (1, C, 1, 1) constant: one Conv2D with that bias. The graph is
    given as an onnx.ModelProto."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "b"], ["y"], name="conv_bias")]
    data = _graph_model(nodes, [("x", ["N", 2, 5, 5])], [("y", ["N", 3, 5, 5])],
                        {"w": _randn(make_rng, 3, 2, 3, 3), "b": _randn(make_rng, 1, 3, 1, 1)})
    x = _randn(make_rng, 2, 2, 5, 5)
    expected = _ort(data, x)[0]
    model = load_onnx(onnx.load_model_from_string(data), data_format=data_format)
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Conv2D"]
    assert model.get_layer("conv").padding == "same"
    np.testing.assert_allclose(_predict(model, x, data_format)[0], expected, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("data_format", FORMATS)
def test_reshape_flatten_transpose_and_constant_add(make_rng, data_format):
    """Flatten(axis=2) after a size-1 axis, Reshape with 0 / -1 / a fixed batch, a 4-D Reshape into a Conv
    (Flatten/Reshape order is ONNX's whatever the data_format), Transpose, and a constant added to a tensor
    whose producer cannot take it as a bias."""
    w = _randn(make_rng, 3, 2, 3, 3)
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["r1"], name="to_image"),            # (N, 24) -> (N, 2, 3, 4)
        helper.make_node("Conv", ["r1", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),  # (N, 3, 3, 4)
        helper.make_node("Relu", ["c"], ["c_relu"], name="relu"),
        helper.make_node("Add", ["c_relu", "channel_bias"], ["c_biased"], name="channel_add"),
        helper.make_node("Transpose", ["c_biased"], ["t"], name="swap", perm=[0, 1, 3, 2]),  # (N, 3, 4, 3)
        helper.make_node("Reshape", ["t", "s2"], ["r2"], name="merge"),               # (N, 1, 3, 12) via [0, 1, 3, -1]
        helper.make_node("Flatten", ["r2"], ["f"], name="flat", axis=2),               # (N, 36)
        helper.make_node("Add", ["f", "scalar"], ["f1"], name="scalar_add"),
        helper.make_node("Reshape", ["f1", "s3"], ["y"], name="split"),                # [2, 6, 6] with batch 2
    ]
    inits = {"s1": np.array([-1, 2, 3, 4], np.int64), "w": w, "s2": np.array([0, 1, 3, -1], np.int64),
             "channel_bias": _randn(make_rng, 3, 1, 1), "scalar": np.array(0.5, np.float32),
             "s3": np.array([2, 6, 6], np.int64)}
    data = _graph_model(nodes, [("x", [2, 24])], [("y", [2, 6, 6])], inits)
    model = _assert_matches(data, _randn(make_rng, 2, 24), data_format)
    assert not model.get_layer("channel_add").trainable


@pytest.mark.parametrize("data_format", FORMATS)
def test_pad_conv_attributes_and_softmax_axis(make_rng, data_format):
    """Pad (opset 11 input form, spatial only), auto_pad SAME_UPPER / SAME_LOWER / VALID, dilations, grouped
    conv, a channel softmax on a 4-D tensor, a Concat of 4-D tensors and GlobalMaxPool."""
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="constant"),
        helper.make_node("Conv", ["p", "w1", "b1"], ["c1"], name="upper", auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], name="lower", auto_pad="SAME_LOWER", strides=[2, 1]),
        helper.make_node("Conv", ["c2", "w3"], ["c3"], name="grouped", group=2, dilations=[2, 1],
                         auto_pad="VALID"),
        helper.make_node("Softmax", ["c3"], ["s"], name="channel_softmax", axis=1),
        helper.make_node("Dropout", ["s", "ratio"], ["d"], name="drop"),
        helper.make_node("Concat", ["d", "c3"], ["cat"], name="cat", axis=1),
        helper.make_node("GlobalMaxPool", ["cat"], ["y"], name="gmp"),
    ]
    inits = {"pads": np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64), "w1": _randn(make_rng, 4, 2, 3, 3),
             "b1": _randn(make_rng, 4), "w2": _randn(make_rng, 4, 4, 2, 2), "w3": _randn(make_rng, 6, 2, 3, 3),
             "ratio": np.array(0.25, np.float32)}
    data = _graph_model(nodes, [("x", ["N", 2, 20, 10])], [("y", ["N", 12, 1, 1])], inits, opset=13)
    model = _assert_matches(data, _randn(make_rng, 3, 2, 20, 10), data_format)
    assert model.get_layer("drop").rate == 0.25


def test_old_opset_pad_and_softmax(make_rng):
    """Opset 9: Pad's pads are an attribute; Softmax normalises over every axis from `axis` on."""
    nodes = [helper.make_node("Pad", ["x"], ["p"], name="pad9", pads=[0, 0, 1, 1, 0, 0, 1, 1]),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Softmax", ["f"], ["y"], name="softmax9", axis=1)]
    data = _graph_model(nodes, [("x", ["N", 1, 2, 2])], [("y", ["N", 16])], opset=9)
    _assert_matches(data, _randn(make_rng, 2, 1, 2, 2), "channels_last")
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="softmax9", axis=1)]
    data = _graph_model(nodes, [("x", ["N", 3, 4])], [("y", ["N", 3, 4])], opset=9)
    with pytest.raises(ValueError, match=r"'softmax9' \(op Softmax\).*attribute axis.*received axis=1"):
        load_onnx(data)


def test_shape_computations_are_folded(make_rng):
    """The exporter's ``x.view(x.size(0), -1)``: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="view")]
    inits = {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64), "minus_one": np.array([-1], np.int64)}
    data = _graph_model(nodes, [("x", ["N", 2, 3, 3])], [("y", ["N", 18])], inits)
    for data_format in FORMATS:
        _assert_matches(data, _randn(make_rng, 4, 2, 3, 3), data_format)
    # using the batch size for anything but the batch axis would tie the model to one batch size
    nodes[3] = helper.make_node("Concat", ["minus_one", "n1"], ["target"], axis=0)
    data = _graph_model(nodes, [("x", ["N", 2, 3, 3])], [("y", [18, "N"])], inits)
    with pytest.raises(ValueError, match=r"'view' \(op Reshape\).*batch axis first"):
        load_onnx(data)


# --- (c) errors --------------------------------------------------------------------------------------------
def test_unsupported_op_names_node_and_op(make_rng):
    hidden = 3
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="my_lstm", hidden_size=hidden)]
    inits = {"W": _randn(make_rng, 1, 4 * hidden, 2), "R": _randn(make_rng, 1, 4 * hidden, hidden)}
    data = _graph_model(nodes, [("x", [5, "N", 2])], [("y", [5, 1, "N", hidden])], inits)
    with pytest.raises(ValueError, match=r"node 'my_lstm' \(op LSTM\).*operator LSTM is not supported"):
        load_onnx(data)


@pytest.mark.parametrize("node, message", [
    (helper.make_node("Pad", ["x", "pads"], ["y"], name="reflect", mode="reflect"),
     r"'reflect' \(op Pad\).*attribute mode.*received mode='reflect'"),
    (helper.make_node("MaxPool", ["x"], ["y"], name="dilated", kernel_shape=[2, 2], dilations=[2, 2]),
     r"'dilated' \(op MaxPool\).*attribute dilations.*received dilations=\[2, 2\]"),
    (helper.make_node("LeakyRelu", ["x"], ["y"], name="negative", alpha=-0.5),
     r"'negative' \(op LeakyRelu\).*attribute alpha.*received alpha=-0.5"),
    (helper.make_node("Pad", ["x", "channel_pads"], ["y"], name="channels"),
     r"'channels' \(op Pad\).*attribute pads.*spatial axes"),
    (helper.make_node("Flatten", ["x"], ["y"], name="flatten0", axis=0),
     r"'flatten0' \(op Flatten\).*attribute axis.*received axis=0"),
    (helper.make_node("Concat", ["x", "x"], ["y"], name="batch_concat", axis=0),
     r"'batch_concat' \(op Concat\).*attribute axis.*received axis=0"),
])
def test_unsupported_attribute_names_it(node, message):
    inits = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
             "channel_pads": np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64)}
    used = {k: v for k, v in inits.items() if k in node.input}
    data = _graph_model([node], [("x", ["N", 2, 6, 6])], [("y", ["a", "b", "c", "d"])], used)
    with pytest.raises(ValueError, match=message):
        load_onnx(data)


def test_garbage_and_truncated_files_name_the_file(tmp_path, torch, mnist_net, make_rng):
    data = _export(torch, mnist_net, _randn(make_rng, 1, 1, 28, 28))
    for name, content in [("garbage.onnx", b"this is not an ONNX model\x00\xff" * 5),
                          ("truncated.onnx", data[:len(data) // 2]),
                          ("cut_after_header.onnx", data[:40]),
                          ("empty.onnx", b"")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=rf"{name}.*not a valid ONNX model"):
            load_onnx(path)
        with pytest.raises(ValueError, match=r"not a valid ONNX model"):
            load_onnx(content)
    with pytest.raises(FileNotFoundError):
        load_onnx(tmp_path / "missing.onnx")


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"path_or_bytes must be a path, bytes or an onnx.ModelProto; received "
                                        r"path_or_bytes of type int"):
        load_onnx(3)
    with pytest.raises(ValueError, match=r"data_format must be .*received data_format='NHWC'"):
        load_onnx(b"", data_format="NHWC")


def test_missing_onnx_says_how_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install onnx"):
        load_onnx(b"")


def test_external_data_is_refused(make_rng):
    """A tensor stored in another file would make the loader read a path the model names: refused."""
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    weight = graph.initializer.add()
    weight.name, weight.data_type = "W", TensorProto.FLOAT
    weight.dims.extend([2, 2])
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match=r"tensor 'W' is stored in an external file"):
        load_onnx(model.SerializeToString())


def test_dynamic_image_size_is_refused():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    data = _graph_model([node], [("x", ["N", 3, "H", "W"])], [("y", ["N", 3, "H", "W"])])
    with pytest.raises(ValueError, match=r"graph input 'x' must have fixed sizes.*received axis 2 = 'H'"):
        load_onnx(data)


# --- the loaded model is an ordinary fastconv model ----------------------------------------------------------
@pytest.mark.parametrize("data_format", FORMATS)
def test_loaded_model_trains_saves_and_loads(torch, residual_net, make_rng, tmp_path, data_format):
    x = _randn(make_rng, 8, 3, 12, 12)
    model = load_onnx(_export(torch, residual_net, x), data_format=data_format)
    xs = _to_nhwc(x) if data_format == "channels_last" else x
    y = np.eye(5, dtype=np.float32)[make_rng.integers(0, 5, 8)]
    before = [w.numpy() for w in model.trainable_weights]
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    history = model.fit(xs, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    moved = {w.path: float(np.max(np.abs(b - w.value))) for b, w in zip(before, model.trainable_weights)}
    # A bias right before batch normalisation gets no gradient: zero up to rounding (whether the rounding leaves
    # it exactly unchanged depends on the data), while every other weight moves.
    assert moved.pop("pointwise_Conv/bias") < 1e-6
    assert all(change > 1e-6 for change in moved.values()), moved
    path = tmp_path / "model.fastconv"
    model.save(path)
    again = fastconv.load_model(path)
    np.testing.assert_array_equal(again.predict(xs, verbose=0), model.predict(xs, verbose=0))
