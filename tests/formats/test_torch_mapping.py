"""fastconv.formats.torch_mapping: PyTorch models' weights in equivalent fastconv models.

Each oracle test builds a small model in torch, saves ``torch.save(m.state_dict(), path)`` (or
``safetensors.torch.save_file``), then reads, assigns and predicts in a subprocess that checks torch was never
imported, and compares the predictions with torch's (NCHW input permuted to NHWC for channels_last models).
The builders below are what the subprocess imports from this file: they must not import torch.
"""
import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv.formats.torch_mapping import assign_torch_state_dict
from fastconv.layers import (BatchNormalization, Conv2D, Dense, DepthwiseConv2D, Dropout, Flatten, Input, Layer,
                             MaxPooling2D, PReLU, ReLU, SeparableConv2D)


# --- fastconv models (imported by the subprocess) ----------------------------------------------------------
def mnist_layers(data_format, flatten_format=None):
    return [Conv2D(32, 3, activation="relu", data_format=data_format), MaxPooling2D(2, data_format=data_format),
            Conv2D(64, 3, activation="relu", data_format=data_format), MaxPooling2D(2, data_format=data_format),
            Conv2D(64, 3, activation="relu", data_format=data_format), Flatten(data_format=flatten_format),
            Dense(64, activation="relu"), Dense(10)]


def mnist_channels_last():
    return fastconv.Sequential([Input((28, 28, 1))] + mnist_layers("channels_last"))


def mnist_channels_first_moving_flatten():
    # Flatten(data_format="channels_first") moves channels last: (H, W, C) order, as in channels_last
    return fastconv.Sequential([Input((1, 28, 28))] + mnist_layers("channels_first", "channels_first"))


def mnist_channels_first_plain_flatten():
    # a channels_last Flatten on NCHW data flattens in (C, H, W) order, PyTorch's own: no permutation
    return fastconv.Sequential([Input((1, 28, 28))] + mnist_layers("channels_first", "channels_last"))


def mnist_nested():
    layers = mnist_layers("channels_last")
    base = fastconv.Sequential([Input((28, 28, 1))] + layers[:5], name="base")
    inputs = Input((28, 28, 1))
    x = Flatten()(base(inputs))
    outputs = Dense(10)(Dense(64, activation="relu")(x))
    return fastconv.Model(inputs, outputs)


def mixed(data_format):
    """Conv + BN + ReLU, depthwise conv + BN + per-channel PReLU, separable conv + single-slope PReLU, pooling,
    Flatten + BatchNorm1d + Dropout + Dense."""
    cl = data_format == "channels_last"
    axis = -1 if cl else 1
    spatial = [1, 2] if cl else [2, 3]
    return fastconv.Sequential([
        Input((8, 8, 3) if cl else (3, 8, 8)),
        Conv2D(8, 3, padding="same", data_format=data_format),
        BatchNormalization(axis=axis, epsilon=1e-5),
        ReLU(),
        DepthwiseConv2D(3, padding="same", depth_multiplier=2, data_format=data_format),
        BatchNormalization(axis=axis, epsilon=1e-5),
        PReLU(shared_axes=spatial),
        SeparableConv2D(12, 3, padding="same", data_format=data_format),
        PReLU(shared_axes=[1, 2, 3]),
        MaxPooling2D(2, data_format=data_format),
        Flatten(data_format=data_format),
        BatchNormalization(epsilon=1e-5),
        Dropout(0.5),
        Dense(5),
    ])


def mixed_channels_last():
    return mixed("channels_last")


def mixed_channels_first():
    return mixed("channels_first")


# --- torch models ------------------------------------------------------------------------------------------
def torch_mnist(torch):
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(576, 64), nn.ReLU(),
                         nn.Linear(64, 10)).eval()


def torch_mixed(torch):
    nn = torch.nn
    torch.manual_seed(1)
    model = nn.Sequential(collections.OrderedDict([
        ("stem", nn.Conv2d(3, 8, 3, padding=1)), ("stem_bn", nn.BatchNorm2d(8)), ("stem_relu", nn.ReLU()),
        ("dw", nn.Conv2d(8, 16, 3, padding=1, groups=8)), ("dw_bn", nn.BatchNorm2d(16)), ("dw_act", nn.PReLU(16)),
        ("sep_dw", nn.Conv2d(16, 16, 3, padding=1, groups=16)), ("sep_pw", nn.Conv2d(16, 12, 1)),
        ("sep_act", nn.PReLU()), ("pool", nn.MaxPool2d(2)), ("flatten", nn.Flatten()),
        ("feature_bn", nn.BatchNorm1d(192)), ("drop", nn.Dropout(0.5)), ("head", nn.Linear(192, 5)),
    ]))
    with torch.no_grad():  # statistics and slopes far from their defaults, so a wrong mapping shows
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.num_batches_tracked.fill_(7)
            if isinstance(module, nn.PReLU):
                module.weight.uniform_(-0.5, 0.5)
    return model.eval()


def torch_predict(torch, model, x_nchw):
    with torch.no_grad():
        return model(torch.from_numpy(x_nchw)).numpy()


# --- the torch-free subprocess -----------------------------------------------------------------------------
SCRIPT = r"""
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("mapping_builders", sys.argv[1])
builders = importlib.util.module_from_spec(spec)
spec.loader.exec_module(builders)
from fastconv.formats.safetensors import read_safetensors
from fastconv.formats.torch_mapping import assign_torch_state_dict
from fastconv.formats.torch_zip import read_state_dict
for job in json.loads(sys.argv[2]):
    state = (read_state_dict if job["reader"] == "torch_zip" else read_safetensors)(job["path"])
    model = getattr(builders, job["builder"])()
    assign_torch_state_dict(model, state, source=job["path"], key_order=job["key_order"])
    np.save(job["out"], model.predict(np.load(job["x"]), verbose=0))
assert "torch" not in sys.modules, "reading, assigning or predicting imported torch"
print("torch was never imported")
"""


def predict_without_torch(tmp_path, path, x_nchw, builders, reader="torch_zip", key_order="given"):
    """{builder: predictions} from a subprocess that reads ``path`` and checks torch stays out of it."""
    jobs = []
    for builder, channels_first in builders.items():
        x_path = tmp_path / f"{builder}_x.npy"
        np.save(x_path, x_nchw if channels_first else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)))
        jobs.append({"builder": builder, "reader": reader, "path": str(path), "key_order": key_order,
                     "x": str(x_path), "out": str(tmp_path / f"{builder}_y.npy")})
    result = subprocess.run([sys.executable, "-c", SCRIPT, os.path.abspath(__file__), json.dumps(jobs)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch was never imported" in result.stdout
    return {job["builder"]: np.load(job["out"]) for job in jobs}


def test_mnist_convnet_in_every_layout(torch, tmp_path, rng):
    model = torch_mnist(torch)
    path = tmp_path / "mnist.pt"
    torch.save(model.state_dict(), path)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    expected = torch_predict(torch, model, x)
    builders = {"mnist_channels_last": False, "mnist_channels_first_moving_flatten": True,
                "mnist_channels_first_plain_flatten": True, "mnist_nested": False}
    for builder, y in predict_without_torch(tmp_path, path, x, builders).items():
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5, err_msg=builder)


def test_batchnorm_depthwise_separable_prelu(torch, tmp_path, rng):
    model = torch_mixed(torch)
    path = tmp_path / "mixed.pt"
    torch.save(model.state_dict(), path)
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    expected = torch_predict(torch, model, x)
    builders = {"mixed_channels_last": False, "mixed_channels_first": True}
    for builder, y in predict_without_torch(tmp_path, path, x, builders).items():
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5, err_msg=builder)


def test_safetensors_from_torch_map_the_same_way(torch, tmp_path, rng):
    st_torch = pytest.importorskip("safetensors.torch")
    from fastconv.formats.safetensors import read_safetensors

    model = torch_mnist(torch)
    path = tmp_path / "mnist.safetensors"
    st_torch.save_file(model.state_dict(), str(path))  # sorted by dtype and name: 0, 10, 3, 6, 9
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    expected = torch_predict(torch, model, x)
    got = predict_without_torch(tmp_path, path, x, {"mnist_channels_last": False}, reader="safetensors",
                                key_order="natural")
    np.testing.assert_allclose(got["mnist_channels_last"], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="mnist.safetensors"):  # the file's own order is not the modules'
        assign_torch_state_dict(mnist_channels_last(), read_safetensors(path), source=str(path))


def test_torch_state_dict_objects_are_accepted(torch, rng):
    model = torch_mixed(torch)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    fc = mixed_channels_first()
    assign_torch_state_dict(fc, model.state_dict())
    np.testing.assert_allclose(fc.predict(x, verbose=0), torch_predict(torch, model, x), rtol=1e-4, atol=1e-5)


# --- mismatches, without torch -----------------------------------------------------------------------------
def small_model():
    return fastconv.Sequential([Input((6, 6, 2)), Conv2D(3, 3, name="conv"), Flatten(), Dense(4, name="fc")])


def small_state(rng):
    return {"conv.weight": rng.standard_normal((3, 2, 3, 3)), "conv.bias": rng.standard_normal(3),
            "fc.weight": rng.standard_normal((4, 48)), "fc.bias": rng.standard_normal(4)}


def test_conv_and_flatten_dense_conversions_by_hand(rng):
    state = small_state(rng)
    model = small_model()
    assign_torch_state_dict(model, state)
    kernel, bias, dense, dense_bias = model.get_weights()
    np.testing.assert_allclose(kernel, state["conv.weight"].transpose(2, 3, 1, 0), rtol=1e-6)
    np.testing.assert_allclose(bias, state["conv.bias"], rtol=1e-6)
    # fastconv row (h, w, c) is torch column (c, h, w) of the (4, 3*4*4) Linear weight
    torch_rows = state["fc.weight"].T.reshape(3, 4, 4, 4)
    np.testing.assert_allclose(dense, torch_rows.transpose(1, 2, 0, 3).reshape(48, 4), rtol=1e-6)
    np.testing.assert_allclose(dense_bias, state["fc.bias"], rtol=1e-6)


def test_shape_mismatch_names_layer_key_and_shapes_and_assigns_nothing(rng):
    model = small_model()
    before = model.get_weights()
    state = small_state(rng)
    state["fc.weight"] = rng.standard_normal((4, 47))
    with pytest.raises(ValueError, match=r"checkpoint\.pt: fastconv layer 'fc' \(Dense\) weight 'fc/kernel' has "
                                         r"shape \(48, 4\), which needs PyTorch shape \(4, 48\); received PyTorch "
                                         r"entry 'fc\.weight' with shape \(4, 47\)"):
        assign_torch_state_dict(model, state, source="checkpoint.pt")
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)  # the conv layer, which fitted, was not assigned either


def test_count_mismatches(rng):
    state = small_state(rng)
    fewer = {k: v for k, v in state.items() if not k.startswith("fc")}
    with pytest.raises(ValueError, match=r"no entries left for its weights of fastconv layer 'fc' \(Dense\)"):
        assign_torch_state_dict(small_model(), fewer)
    more = dict(state, **{"extra.weight": np.ones((2, 4)), "extra.bias": np.ones(2)})
    with pytest.raises(ValueError, match=r"1 left after fastconv layer 'fc', starting with entry 'extra\.weight' "
                                         r"with shape \(2, 4\)"):
        assign_torch_state_dict(small_model(), more)


def test_module_entries_must_match_the_layer(rng):
    state = small_state(rng)
    no_bias = {k: v for k, v in state.items() if k != "conv.bias"}
    with pytest.raises(ValueError, match=r"layer 'conv' \(Conv2D\) needs a PyTorch module with entries weight, "
                                         r"bias, but the next module 'conv' has 'conv\.weight' \(missing bias\)"):
        assign_torch_state_dict(small_model(), no_bias)
    model = fastconv.Sequential([Input((4,)), BatchNormalization(name="bn")])
    bn = {"bn.weight": np.ones(4), "bn.bias": np.zeros(4), "bn.running_mean": np.zeros(4),
          "bn.running_var": np.ones(4), "bn.num_batches_tracked": np.array(3), "bn.extra": np.ones(4)}
    with pytest.raises(ValueError, match=r"unexpected extra"):
        assign_torch_state_dict(model, bn)
    del bn["bn.extra"]
    assign_torch_state_dict(model, bn)
    integer = dict(small_state(rng), **{"conv.bias": np.arange(3)})
    with pytest.raises(ValueError, match=r"'conv\.bias' for fastconv layer 'conv' must hold floats"):
        assign_torch_state_dict(small_model(), integer)


def test_separable_bias_folding_by_hand(rng):
    model = fastconv.Sequential([Input((5, 5, 2)), SeparableConv2D(3, 3, depth_multiplier=2)])
    dw_w, dw_b = rng.standard_normal((4, 1, 3, 3)), rng.standard_normal(4)
    pw_w, pw_b = rng.standard_normal((3, 4, 1, 1)), rng.standard_normal(3)
    assign_torch_state_dict(model, {"dw.weight": dw_w, "dw.bias": dw_b, "pw.weight": pw_w, "pw.bias": pw_b})
    x = rng.standard_normal((2, 5, 5, 2)).astype(np.float32)
    # reference: the depthwise step with its bias, then the pointwise step, in NumPy
    kernel = dw_w.reshape(2, 2, 3, 3)
    middle = np.zeros((2, 3, 3, 4))
    for i in range(3):
        for j in range(3):
            patch = x[:, i:i + 3, j:j + 3, :]  # (n, 3, 3, c)
            middle[:, i, j, :] = np.einsum("nrsc,cmrs->ncm", patch, kernel).reshape(2, 4)
    middle += dw_b
    expected = middle @ pw_w[:, :, 0, 0].T + pw_b
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)


def test_argument_checks(rng):
    with pytest.raises(TypeError, match="model must be a fastconv model"):
        assign_torch_state_dict(Dense(2), {})
    with pytest.raises(ValueError, match="must be built"):
        assign_torch_state_dict(fastconv.Sequential([Dense(2)]), {})
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        assign_torch_state_dict(small_model(), [np.ones(2)])
    with pytest.raises(ValueError, match="key_order must be"):
        assign_torch_state_dict(small_model(), small_state(rng), key_order="sorted")
    with pytest.raises(TypeError, match="keys must be str"):
        assign_torch_state_dict(small_model(), {1: np.ones(2)})


class Scale(Layer):
    """A layer with a weight that has no PyTorch counterpart here."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", (1,), "ones")
        super().build(input_shape)

    def call(self, x, training=False):
        return x * self.scale.value


def test_layers_without_a_mapping_are_named():
    model = fastconv.Sequential([Input((2,)), Scale(name="scale")])
    with pytest.raises(ValueError, match=r"fastconv layer 'scale' \(Scale\) has weights but no PyTorch mapping"):
        assign_torch_state_dict(model, {"s.weight": np.ones(1)})
