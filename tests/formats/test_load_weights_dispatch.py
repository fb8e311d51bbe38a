"""model.load_weights picks the PyTorch and safetensors readers by content, whatever the file is called."""
import numpy as np
import pytest

import fastconv
from fastconv import layers


def _pair(torch):
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 2 * 2, 10), nn.ReLU(), nn.Linear(10, 3)).eval()
    model = fastconv.Sequential([layers.Input((10, 10, 2)), layers.Conv2D(4, 3, activation="relu"),
                                 layers.MaxPooling2D(2), layers.Conv2D(6, 3, activation="relu"), layers.Flatten(),
                                 layers.Dense(10, activation="relu"), layers.Dense(3)])
    return net, model


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_load_weights_from_torch_files(torch, tmp_path, fmt):
    net, model = _pair(torch)
    path = tmp_path / "weights.bin"  # a name that says nothing: the content decides
    if fmt == "pt":
        torch.save(net.state_dict(), path)
    else:
        safetensors_torch = pytest.importorskip("safetensors.torch")
        safetensors_torch.save_file(net.state_dict(), str(path))
    model.load_weights(path)
    x = np.random.default_rng(0).standard_normal((3, 2, 10, 10)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x.transpose(0, 2, 3, 1), verbose=0), expected, rtol=1e-4, atol=1e-5)


def test_whole_model_pickle_is_refused_by_load_weights(torch, tmp_path):
    net, model = _pair(torch)
    path = tmp_path / "whole.pt"
    torch.save(net, path)  # pickles the module classes themselves
    with pytest.raises(ValueError, match="state_dict"):
        model.load_weights(path)


def test_onnx_file_given_to_load_weights_points_to_load_onnx(torch, tmp_path):
    pytest.importorskip("onnx")
    net, model = _pair(torch)
    path = tmp_path / "m.onnx"
    torch.onnx.export(net, torch.zeros(1, 2, 10, 10), str(path), dynamo=False)
    with pytest.raises(ValueError, match="load_onnx"):
        model.load_weights(path)
