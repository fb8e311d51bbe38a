"""Grad-CAM: it points where the evidence is, it equals a PyTorch autograd reference on the same weights, both
layouts agree, the class-score gradients match finite differences, and bad requests get clear errors."""
import numpy as np
import pytest

import fastconv
from fastconv import visualize
from fastconv.layers import (Activation, Add, Conv2D, Dense, Flatten, GlobalAveragePooling2D, Input, MaxPooling2D,
                             Softmax)


def test_heatmap_peaks_in_the_quadrant_that_holds_the_evidence(square_model, squares):
    model, x, y, corners = square_model
    SIDE = squares.side
    positives, boxes = x[y == 1], corners[y == 1]
    cam = visualize.grad_cam(model, positives, class_index=1)
    assert cam.shape == (len(positives), 16, 16) and cam.dtype == np.float32      # conv2's resolution
    assert cam.min() >= 0 and np.allclose(cam.max(axis=(1, 2)), 1)
    rows, cols = np.unravel_index(cam.reshape(len(cam), -1).argmax(axis=1), cam.shape[1:])
    in_quadrant = (rows < 8) & (cols < 8)
    assert in_quadrant.mean() >= 0.9, f"only {in_quadrant.mean():.2%} of the heatmaps peak in the top-left quadrant"
    # finer: the peak falls on the square itself (conv2 sees the image at half resolution), give or take a cell
    on_square = ((rows >= boxes[:, 0] // 2 - 1) & (rows <= (boxes[:, 0] + SIDE) // 2)
                 & (cols >= boxes[:, 1] // 2 - 1) & (cols <= (boxes[:, 1] + SIDE) // 2))
    assert on_square.mean() >= 0.9
    # the default layer is the last convolution, the default class the top prediction (1 for these)
    np.testing.assert_array_equal(visualize.grad_cam(model, positives[:5]), cam[:5])
    assert visualize.grad_cam(model, positives[0]).shape == (16, 16)                # one image, no batch axis
    np.testing.assert_array_equal(visualize.grad_cam(model, positives[0]), cam[0])


def _torch_square_net(torch, model, head="max"):
    """The square convnet in PyTorch with the same weights; returns (net up to conv2, the rest)."""
    nn = torch.nn
    w = {v.path: torch.from_numpy(v.numpy().astype(np.float64)) for v in model.weights}
    conv1, conv2 = nn.Conv2d(1, 4, 3, padding=1).double(), nn.Conv2d(4, 8, 3, padding=1).double()
    dense = nn.Linear(w["head/kernel"].shape[0], 2).double()
    with torch.no_grad():
        for module, name in ((conv1, "conv1"), (conv2, "conv2")):
            module.weight.copy_(w[f"{name}/kernel"].permute(3, 2, 0, 1))       # HWIO -> OIHW
            module.bias.copy_(w[f"{name}/bias"])
        dense.weight.copy_(w["head/kernel"].T)
        dense.bias.copy_(w["head/bias"])
    features = nn.Sequential(conv1, nn.ReLU(), nn.MaxPool2d(2), conv2, nn.ReLU())

    def tail(a):
        if head == "max":
            return dense(a.amax(dim=(2, 3)))
        # pool, then flatten in NHWC order, as Keras (and fastconv) do
        return dense(torch.nn.functional.max_pool2d(a, 2).permute(0, 2, 3, 1).flatten(1))
    return features, tail


def _torch_grad_cam(torch, features, head, x_nhwc, classes, probabilities=False):
    x = torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).astype(np.float64))
    a = features(x)
    a.retain_grad()
    logits = head(a)
    out = torch.softmax(logits, dim=1) if probabilities else logits
    out[torch.arange(len(classes)), torch.from_numpy(classes)].sum().backward()
    weights = a.grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * a).sum(dim=1)).detach().numpy()
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


@pytest.mark.parametrize("score", ["logit", "output"])
def test_sequential_grad_cam_matches_pytorch_autograd(torch, square_model, score):
    model, x, y, _ = square_model
    batch = x[:24]
    features, tail = _torch_square_net(torch, model)
    for classes in (np.zeros(24, dtype=np.int64), np.ones(24, dtype=np.int64)):
        ours = visualize.grad_cam(model, batch, class_index=classes, score=score)
        reference = _torch_grad_cam(torch, features, tail, batch, classes, probabilities=score == "output")
        np.testing.assert_allclose(ours, reference, atol=2e-4)
    scores, chosen = visualize.class_scores(model, batch, score=score)
    probabilities = model.predict(batch, verbose=0)
    np.testing.assert_array_equal(chosen, probabilities.argmax(axis=1))
    if score == "output":
        np.testing.assert_allclose(scores, probabilities[np.arange(24), chosen], rtol=1e-5)
    else:                                   # the logits, from the pooled features and the head's weights
        pooled = fastconv.Model(model.input, model.get_layer("global_pool").output).predict(batch, verbose=0)
        kernel, bias = model.get_layer("head").get_weights()
        np.testing.assert_allclose(scores, (pooled @ kernel + bias)[np.arange(24), chosen], rtol=1e-5, atol=1e-6)


def test_flatten_head_grad_cam_matches_pytorch_autograd(torch, rng, squares):
    """The MNIST convnet's kind of head (Flatten, then Dense), on random weights and both classes."""
    model = squares.convnet("flat", head="flatten")
    x = rng.random((6, squares.size, squares.size, 1)).astype(np.float32)
    features, tail = _torch_square_net(torch, model, head="flatten")
    for classes in (np.zeros(6, dtype=np.int64), np.array([0, 1, 0, 1, 1, 0])):
        np.testing.assert_allclose(visualize.grad_cam(model, x, class_index=classes),
                                   _torch_grad_cam(torch, features, tail, x, classes), atol=2e-4)


def _residual(data_format=None):
    cf = data_format == "channels_first"
    inputs = Input((3, 12, 12) if cf else (12, 12, 3), name="image")
    kw = dict(padding="same", data_format=data_format)
    stem = Conv2D(6, 3, activation="relu", name="stem", **kw)(inputs)
    branch = Conv2D(6, 3, activation="relu", name="branch_a", **kw)(stem)
    branch = Conv2D(6, 3, name="branch_b", **kw)(branch)
    merged = Activation("relu", name="merged")(Add(name="add")([stem, branch]))
    pooled = MaxPooling2D(2, name="pool", data_format=data_format)(merged)
    logits = Dense(3, name="logits")(GlobalAveragePooling2D(name="gap", data_format=data_format)(pooled))
    return fastconv.Model(inputs, Softmax(name="probabilities")(logits), name="residual")


def _torch_residual(torch, model):
    nn = torch.nn
    convs = {}
    for name in ("stem", "branch_a", "branch_b"):
        kernel, bias = model.get_layer(name).get_weights()
        conv = nn.Conv2d(kernel.shape[2], kernel.shape[3], 3, padding=1).double()
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).astype(np.float64)))
            conv.bias.copy_(torch.from_numpy(bias.astype(np.float64)))
        convs[name] = conv
    kernel, bias = (torch.from_numpy(w.astype(np.float64)) for w in model.get_layer("logits").get_weights())
    return convs, kernel, bias


def test_graph_model_grad_cam_matches_pytorch_autograd(torch, rng):
    """A residual graph whose head is a separate Softmax layer; Grad-CAM at the Add and at the default layer."""
    model = _residual()
    for variable in model.weights:                          # make every channel matter
        variable.assign(rng.normal(0, 0.4, variable.shape))
    x = rng.random((5, 12, 12, 3)).astype(np.float32)
    convs, kernel, bias = _torch_residual(torch, model)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64))
    stem = torch.relu(convs["stem"](xt))
    branch_b = convs["branch_b"](torch.relu(convs["branch_a"](stem)))
    added = stem + branch_b
    for t in (branch_b, added):
        t.retain_grad()
    logits = torch.nn.functional.max_pool2d(torch.relu(added), 2).mean(dim=(2, 3)) @ kernel + bias
    classes = logits.argmax(dim=1)
    logits[torch.arange(5), classes].sum().backward()

    def cam_of(a):
        cam = torch.relu((a.grad.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)).detach().numpy()
        peak = cam.max(axis=(1, 2), keepdims=True)
        return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)

    np.testing.assert_allclose(visualize.grad_cam(model, x, layer_name="add"), cam_of(added), atol=2e-4)
    np.testing.assert_allclose(visualize.grad_cam(model, x), cam_of(branch_b), atol=2e-4)     # last conv
    _, ours = visualize.class_scores(model, x)
    np.testing.assert_array_equal(ours, classes.numpy())


def test_channels_first_equals_channels_last(rng, squares):
    last, first = _residual(), _residual("channels_first")
    for variable in last.weights:
        variable.assign(rng.normal(0, 0.4, variable.shape))
    first.set_weights(last.get_weights())                  # kernels are HWIO in both layouts
    x = rng.random((4, 12, 12, 3)).astype(np.float32)
    for layer_name in ("stem", "add", "pool", None):
        np.testing.assert_allclose(visualize.grad_cam(first, x.transpose(0, 3, 1, 2), layer_name=layer_name),
                                   visualize.grad_cam(last, x, layer_name=layer_name), atol=1e-5)
    sequential_last = squares.convnet("a", head="flatten")
    sequential_first = squares.convnet("b", head="flatten", data_format="channels_first")
    sequential_first.set_weights(sequential_last.get_weights())
    images = rng.random((3, squares.size, squares.size, 1)).astype(np.float32)
    np.testing.assert_allclose(visualize.grad_cam(sequential_first, images.transpose(0, 3, 1, 2), class_index=0),
                               visualize.grad_cam(sequential_last, images, class_index=0), atol=1e-5)


def _numeric_gradient(fn, x, rng, samples=12, eps=1e-6):
    result = []
    for flat in rng.choice(x.size, size=samples, replace=False):
        idx = np.unravel_index(flat, x.shape)
        saved = x[idx]
        x[idx] = saved + eps
        plus = fn(x)
        x[idx] = saved - eps
        minus = fn(x)
        x[idx] = saved
        result.append((idx, (plus - minus) / (2 * eps)))
    return result


def _float64_pair(head_units, activation, rng):
    """A float64 convnet ending in Dense(head_units, activation) and its logits twin (same weights, no
    activation): an independent way to compute the class logits."""
    def build(act, name):
        return fastconv.Sequential([
            Input((10, 10, 2), dtype="float64"),
            Conv2D(3, 3, activation="tanh", name="conv", dtype="float64"),
            MaxPooling2D(2, name="pool", dtype="float64"),
            Flatten(name="flatten", dtype="float64"),
            Dense(head_units, activation=act, name="head", dtype="float64"),
        ], name=name)
    model, logits = build(activation, "model"), build(None, "logits")
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.5, variable.shape))
    logits.set_weights(model.get_weights())
    return model, logits


@pytest.mark.parametrize("units, activation", [(3, "softmax"), (1, "sigmoid"), (3, None)])
def test_class_score_gradients_match_finite_differences(rng, units, activation):
    model, logits = _float64_pair(units, activation, rng)
    x = rng.random((2, 10, 10, 2))
    for class_index in ([0, 2] if units == 3 else [1, 0]):
        classes = np.array([class_index, class_index])
        scores, chosen, gradient = visualize.score_gradients(model, x, class_index=class_index)
        assert gradient.shape == x.shape and gradient.dtype == np.float64
        np.testing.assert_array_equal(chosen, classes)
        if units == 1:                                     # one unit: class 1 is the logit, class 0 its opposite
            sign = 1.0 if class_index == 1 else -1.0
            score_of = lambda v: sign * float(logits(v)[:, 0].sum())  # noqa: E731
            np.testing.assert_allclose(scores, sign * logits(x)[:, 0], rtol=1e-12)
        else:
            score_of = lambda v: float(logits(v)[:, class_index].sum())  # noqa: E731
            np.testing.assert_allclose(scores, logits(x)[:, class_index], rtol=1e-12)
        for idx, numeric in _numeric_gradient(score_of, x, rng):   # both samples' scores summed
            np.testing.assert_allclose(gradient[idx], numeric, rtol=1e-5, atol=1e-8)


def test_output_score_gradients_match_finite_differences(rng):
    """score="output": the softmax probability's gradient, and 1 - p for class 0 of a sigmoid."""
    for units, activation in ((3, "softmax"), (1, "sigmoid")):
        model, _ = _float64_pair(units, activation, rng)
        x = rng.random((1, 10, 10, 2))
        for class_index in (0, 1):
            scores, _, gradient = visualize.score_gradients(model, x, class_index=class_index, score="output")
            p = model(x)[0]
            expected = p[class_index] if units == 3 else (p[0] if class_index == 1 else 1 - p[0])
            np.testing.assert_allclose(scores[0], expected, rtol=1e-12)

            def score_of(v):
                q = model(v)[0]
                return float(q[class_index] if units == 3 else (q[0] if class_index == 1 else 1 - q[0]))
            for idx, numeric in _numeric_gradient(score_of, x, rng, samples=8):
                np.testing.assert_allclose(gradient[idx], numeric, rtol=1e-5, atol=1e-9)


def test_score_gradients_with_respect_to_a_layer_match_the_tail_model(rng):
    model, logits = _float64_pair(3, "softmax", rng)
    x = rng.random((2, 10, 10, 2))
    _, _, gradient = visualize.score_gradients(model, x, class_index=1, wrt="pool")
    tail_input = Input((4, 4, 3), dtype="float64")
    tail = fastconv.Model(tail_input, logits.get_layer("head")(logits.get_layer("flatten")(tail_input)))
    pooled = fastconv.Model(model.input, model.get_layer("pool").output)(x)
    np.testing.assert_allclose(gradient, tail.gradients(pooled, np.tile([0.0, 1.0, 0.0], (2, 1))), rtol=1e-12)


def test_heatmap_is_zero_without_positive_evidence(rng):
    model, _ = _float64_pair(3, "softmax", rng)
    model.get_layer("head").set_weights([np.zeros((48, 3)), np.zeros(3)])
    cam = visualize.grad_cam(model, rng.random((2, 10, 10, 2)))
    assert cam.shape == (2, 8, 8) and not np.isnan(cam).any() and (cam == 0).all()


def test_bad_requests_get_clear_errors(square_model):
    model, x, _, _ = square_model
    with pytest.raises(ValueError, match=r"layer_name must be one of the layers of model 'squares': \['conv1', "
                                         r"'pool1', 'conv2', 'global_pool', 'head'\]; received "
                                         r"layer_name='conv3'"):
        visualize.grad_cam(model, x[:2], layer_name="conv3")
    with pytest.raises(ValueError, match=r"class_index must be an int in \[0, 2\).*received class_index=2"):
        visualize.grad_cam(model, x[:2], class_index=2)
    with pytest.raises(ValueError, match=r"class_index must be an int in \[0, 2\).*received class_index=-1"):
        visualize.grad_cam(model, x[:2], class_index=-1)
    with pytest.raises(ValueError, match=r"class_index must be.*for a batch of 2"):
        visualize.grad_cam(model, x[:2], class_index=[0, 1, 1])
    with pytest.raises(ValueError, match=r"class_index must be"):
        visualize.grad_cam(model, x[:2], class_index=True)
    with pytest.raises(ValueError, match=r"spatial \(4-D\) output for Grad-CAM; layer 'global_pool' has output "
                                         r"shape \(None, 8\); layers with spatial outputs: \['conv1', 'pool1', "
                                         r"'conv2'\]"):
        visualize.grad_cam(model, x[:2], layer_name="global_pool")
    with pytest.raises(ValueError, match=r"score must be one of \['logit', 'output'\]; received score='proba'"):
        visualize.grad_cam(model, x[:2], score="proba")
    with pytest.raises(ValueError, match=r"x must have shape \(None, 32, 32, 1\).*received x with shape "
                                         r"\(2, 28, 28, 1\)"):
        visualize.grad_cam(model, np.zeros((2, 28, 28, 1), dtype=np.float32))
    with pytest.raises(TypeError, match="fastconv Model or Sequential; received model of type str"):
        visualize.grad_cam("model.fcm", x[:2])
    with pytest.raises(ValueError, match=r"read before layer 'head'"):
        visualize.score_gradients(model, x[:2], wrt="head")
    features = fastconv.Model(model.input, model.get_layer("conv2").output)
    with pytest.raises(ValueError, match=r"one output of shape \(batch, classes\)"):
        visualize.grad_cam(features, x[:2])
    no_conv = fastconv.Sequential([Input((4, 4, 1)), MaxPooling2D(2, name="p"), Flatten(), Dense(2)])
    with pytest.raises(ValueError, match=r"no convolution layer.*pass layer_name \(layers with spatial outputs: "
                                         r"\['p'\]\)"):
        visualize.grad_cam(no_conv, np.zeros((1, 4, 4, 1), dtype=np.float32))
    assert visualize.grad_cam(no_conv, np.ones((1, 4, 4, 1), dtype=np.float32), layer_name="p").shape == (1, 2, 2)
