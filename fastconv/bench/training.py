"""End-to-end training steps (issue 3, "End-to-end"): one step = forward, backward and SGD update on one batch.

Each model is written once, as a small declarative spec, and built from it in both frameworks:
- fastconv: ``fastconv.Sequential`` of ``fastconv.layers``, ``compile(optimizer=fastconv.optimizers.SGD(...))``,
  one step = ``model.train_on_batch(x, y)`` (the fused softmax/sigmoid + cross-entropy path);
- PyTorch: ``torch.nn.Sequential`` whose last ``Linear`` gives logits to ``CrossEntropyLoss`` /
  ``BCEWithLogitsLoss`` (what a PyTorch user writes), ``torch.optim.SGD``, in NCHW or channels_last.
Both start from the same weights (drawn here, Glorot-uniform kernels and zero biases as Keras does) and train on
the same batch, so their first losses agree; only the dropout masks differ. PyTorch is imported inside the
functions that need it: this module imports without it.
"""
from dataclasses import dataclass

import numpy as np

import fastconv
from fastconv.layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D

LEARNING_RATE = 0.01


@dataclass(frozen=True)
class TrainingModel:
    """A model of the end-to-end suite.

    ``layers`` holds ``("conv", filters)`` (3x3, valid, relu), ``("pool",)`` (2x2 max-pool), ``("flatten",)``,
    ``("dropout", rate)`` and ``("dense", units, activation)`` with activation "relu", "softmax" or "sigmoid"
    (the last two only at the end, where they fuse with the loss).
    """
    name: str
    batch: int
    input_shape: tuple  # (H, W, C)
    layers: tuple
    loss: str  # "sparse_categorical_crossentropy" or "binary_crossentropy"


TRAINING_MODELS = [
    TrainingModel("mnist_convnet", 64, (28, 28, 1),
                  (("conv", 32), ("pool",), ("conv", 64), ("pool",), ("conv", 64), ("flatten",),
                   ("dense", 64, "relu"), ("dense", 10, "softmax")),
                  "sparse_categorical_crossentropy"),
    TrainingModel("small_convnet", 32, (150, 150, 3),
                  (("conv", 32), ("pool",), ("conv", 64), ("pool",), ("conv", 128), ("pool",), ("conv", 128),
                   ("pool",), ("flatten",), ("dropout", 0.5), ("dense", 512, "relu"), ("dense", 1, "sigmoid")),
                  "binary_crossentropy"),
]

QUICK_TRAINING_MODELS = ["mnist_convnet"]


def _shapes(model):
    """Weight shapes in fastconv's order and layouts (HWIO kernels, (in, out) dense), and the (H, W, C) entering
    the first dense layer (where the two frameworks' flatten orders differ)."""
    h, w, c = model.input_shape
    shapes, flat_hwc, features = [], None, None
    for layer in model.layers:
        kind = layer[0]
        if kind == "conv":
            shapes += [(3, 3, c, layer[1]), (layer[1],)]
            h, w, c = h - 2, w - 2, layer[1]
        elif kind == "pool":
            h, w = h // 2, w // 2
        elif kind == "flatten":
            flat_hwc, features = (h, w, c), h * w * c
        elif kind == "dense":
            shapes += [(features, layer[1]), (layer[1],)]
            features = layer[1]
    return shapes, flat_hwc


def initial_weights(model, seed=0):
    """Glorot-uniform kernels and zero biases, float32, in fastconv's layouts (``Sequential.set_weights`` order)."""
    rng = np.random.default_rng(seed)
    weights = []
    for shape in _shapes(model)[0]:
        if len(shape) == 1:
            weights.append(np.zeros(shape, np.float32))
            continue
        receptive = int(np.prod(shape[:-2]))
        limit = np.sqrt(6.0 / (receptive * (shape[-2] + shape[-1])))
        weights.append(rng.uniform(-limit, limit, shape).astype(np.float32))
    return weights


def batch_data(model, seed=0):
    """One batch: images in [0, 1) as (N, H, W, C) float32, and labels (int64 classes, or (N, 1) float32 0/1)."""
    rng = np.random.default_rng(seed)
    x = rng.random((model.batch,) + tuple(model.input_shape), dtype=np.float32)
    if model.loss == "binary_crossentropy":
        y = rng.integers(0, 2, (model.batch, 1)).astype(np.float32)
    else:
        y = rng.integers(0, model.layers[-1][1], model.batch).astype(np.int64)
    return x, y


def fastconv_model(model, seed=0):
    """The model as a compiled ``fastconv.Sequential`` (channels_last) with :func:`initial_weights`."""
    layers = [Input(model.input_shape)]
    for i, layer in enumerate(model.layers):
        kind = layer[0]
        if kind == "conv":
            layers.append(Conv2D(layer[1], 3, activation="relu"))
        elif kind == "pool":
            layers.append(MaxPooling2D(2))
        elif kind == "flatten":
            layers.append(Flatten())
        elif kind == "dropout":
            layers.append(Dropout(layer[1], seed=seed + i))
        else:
            layers.append(Dense(layer[1], activation=layer[2]))
    net = fastconv.Sequential(layers, name=model.name)
    net.set_weights(initial_weights(model, seed))
    net.compile(optimizer=fastconv.optimizers.SGD(learning_rate=LEARNING_RATE), loss=model.loss)
    return net


def fastconv_step(model, seed=0):
    """A callable running one training step of the fastconv model on one fixed batch; it returns the loss."""
    net = fastconv_model(model, seed)
    x, y = batch_data(model, seed)
    return lambda: net.train_on_batch(x, y)


def torch_model(model, seed=0):
    """The model as a ``torch.nn.Sequential`` (NCHW logical layout, logits out) with :func:`initial_weights`."""
    import torch
    from torch import nn

    weights = iter(initial_weights(model, seed))
    _, (fh, fw, fc) = _shapes(model)

    def load(module, kernel, bias):
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            module.bias.copy_(torch.from_numpy(bias))
        return module

    modules, channels, features = [], model.input_shape[2], None
    for layer in model.layers:
        kind = layer[0]
        if kind == "conv":
            kernel = next(weights).transpose(3, 2, 0, 1)  # HWIO -> OIHW
            modules += [load(nn.Conv2d(channels, layer[1], 3), kernel, next(weights)), nn.ReLU()]
            channels = layer[1]
        elif kind == "pool":
            modules.append(nn.MaxPool2d(2))
        elif kind == "flatten":
            modules.append(nn.Flatten())
        elif kind == "dropout":
            modules.append(nn.Dropout(layer[1]))
        else:
            kernel = next(weights)
            if features is None:  # the first dense: fastconv flattens (h, w, c), PyTorch (c, h, w)
                kernel = kernel.reshape(fh, fw, fc, -1).transpose(2, 0, 1, 3).reshape(fh * fw * fc, -1)
            features = kernel.shape[1]
            modules.append(load(nn.Linear(kernel.shape[0], features), kernel.T, next(weights)))
            if layer[2] == "relu":
                modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def torch_step(model, channels_last, threads, seed=0):
    """A callable running one PyTorch training step (zero_grad, forward, loss, backward, SGD step) on the same
    batch as :func:`fastconv_step`; it returns the loss tensor."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = torch_model(model, seed).train()
    x, y = batch_data(model, seed)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)
    else:
        xt = xt.contiguous()
    yt = torch.from_numpy(y)
    loss_fn = nn.BCEWithLogitsLoss() if model.loss == "binary_crossentropy" else nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(xt), yt)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step
