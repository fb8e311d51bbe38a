"""Grad-CAM (Selvaraju et al., 2017): where in the image the evidence for a class lies, as the model sees it.

Take a convolution layer's output ``A`` (channels ``A_c``), the gradient of the class score with respect to it,
weigh each channel by the spatial mean of its gradient, and keep the positive part of the weighted sum:
``relu(sum_c mean(d score / d A_c) * A_c)``, scaled so that its maximum is 1.

The class score is the class's logit (the input of the final softmax or sigmoid) by default, as in the paper; its
gradient does not vanish when the model is confident, as the softmax probability's does. Keras's classic example
differentiates the softmax output instead: ``score="output"`` does that.

>>> import numpy as np, fastconv
>>> from fastconv.layers import Input, Conv2D, Flatten, Dense
>>> model = fastconv.Sequential([Input((8, 8, 1)), Conv2D(4, 3, activation="relu", name="conv"),
...                              Flatten(), Dense(3, activation="softmax")])
>>> heatmap = grad_cam(model, np.random.default_rng(0).random((8, 8, 1)))
>>> heatmap.shape, bool(0 <= heatmap.min() and heatmap.max() <= 1)
((6, 6), True)
"""
import numpy as np

from fastconv.visualize import _graph

__all__ = ["grad_cam", "score_gradients", "class_scores"]

SCORES = ("logit", "output")


class _Head:
    """Where a class score is read: ``tensor`` and how to turn its values into per-class scores.

    kind "dense": ``tensor`` is the input of a final Dense with softmax/sigmoid, scores are its logits
    ``tensor @ kernel + bias``; "logits": ``tensor`` is the input of a final softmax/sigmoid layer; "output": the
    model's output itself.
    """

    def __init__(self, model, score):
        from fastconv.layers.base import format_shape
        from fastconv.layers.core import Activation, Dense, Softmax

        if score not in SCORES:
            raise ValueError(f"score must be one of {list(SCORES)}; received score={score!r}")
        outputs = model.outputs
        if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[1] is None:
            raise ValueError(f"class scores need a model with one output of shape (batch, classes); model "
                             f"{model.name!r} has outputs {[format_shape(t.shape) for t in outputs]}")
        output = outputs[0]
        layer = output.layer
        self.activation = getattr(getattr(layer, "activation", None), "name", None)
        self.units = output.shape[1]
        self.num_classes = 2 if self.units == 1 else self.units
        self.kind, self.tensor = "output", output
        if score == "logit" and self.activation in ("softmax", "sigmoid"):
            if isinstance(layer, Dense):
                self.kind, self.tensor = "dense", output.node.inputs[0]
                self.kernel = layer.kernel.value.astype(np.float64)
                self.bias = layer.bias.value.astype(np.float64) if layer.use_bias else 0.0
            elif isinstance(layer, (Activation, Softmax)):
                self.kind, self.tensor = "logits", output.node.inputs[0]
        self.score = score

    def raw(self, values):
        """The head's per-unit values: logits, or the output itself."""
        values = np.asarray(values, dtype=np.float64)
        return values @ self.kernel + self.bias if self.kind == "dense" else values

    def top(self, raw):
        if self.units > 1:
            return raw.argmax(axis=1)
        threshold = 0.5 if self.kind == "output" and self.activation == "sigmoid" else 0.0
        return (raw[:, 0] > threshold).astype(np.int64)

    def scores_and_seed(self, values, classes):
        """The score of ``classes[i]`` for each sample, and d(sum of the scores)/d(head tensor values)."""
        raw = self.raw(values)
        n = len(raw)
        if self.units > 1:
            units, signs = classes, np.ones(n)
        else:
            # One unit: class 1 is the unit's score, class 0 its opposite (1 - p for a sigmoid probability).
            units, signs = np.zeros(n, dtype=np.int64), np.where(classes == 1, 1.0, -1.0)
        scores = raw[np.arange(n), units] * signs
        if self.units == 1 and self.kind == "output" and self.activation == "sigmoid":
            scores = np.where(classes == 1, scores, 1.0 + scores)
        d_raw = np.zeros_like(raw)
        d_raw[np.arange(n), units] = signs
        seed = d_raw @ self.kernel.T if self.kind == "dense" else d_raw
        return scores, seed.astype(values.dtype)


def _classes(class_index, head, n, model):
    k = head.num_classes
    message = (f"class_index must be an int in [0, {k}) (model {model.name!r} has {k} classes), one per sample, "
               f"or None for the top prediction")
    if class_index is None:
        return None
    if isinstance(class_index, (int, np.integer)) and not isinstance(class_index, (bool, np.bool_)):
        if not 0 <= class_index < k:
            raise ValueError(f"{message}; received class_index={class_index!r}")
        return np.full(n, int(class_index), dtype=np.int64)
    array = np.asarray(class_index)
    if array.ndim != 1 or array.dtype.kind not in "iu" or len(array) != n:
        raise ValueError(f"{message}; received class_index={class_index!r} for a batch of {n}")
    if array.size and (array.min() < 0 or array.max() >= k):
        raise ValueError(f"{message}; received class_index={class_index!r}")
    return array.astype(np.int64)


def _batch(model, x):
    if len(model.inputs) == 1:
        return _graph.image_batch(model, x)
    return x, False


def _score_gradients(model, x, class_index, wrt, score):
    """Scores, classes, and per ``wrt`` tensor its gradient and its values, from one forward/backward pass."""
    head = _Head(model, score)
    for tensor in wrt:
        if not _graph.feeds(tensor, head.tensor):
            raise ValueError(f"the class score ({score}) of model {model.name!r} is read before layer "
                             f"{tensor.layer.name!r}, so it has no gradient with respect to that layer's output; "
                             f'received layer {tensor.layer.name!r} (score="output" reads the output itself)')
    batch, single = _batch(model, x)
    view = _graph.submodel(model, [head.tensor] + list(wrt), "class_score")
    found = {}

    def seeds(outputs):
        values = outputs[0]
        n = len(values)
        classes = _classes(class_index, head, n, model)
        if classes is None:
            classes = head.top(head.raw(values))
        found["scores"], seed = head.scores_and_seed(values, classes)
        found["classes"] = classes
        return [seed] + [None] * len(wrt)

    outputs, grads = view.gradients(batch, seeds, wrt=list(wrt), return_outputs=True)
    return found["scores"], found["classes"], grads, outputs[1:], single


def score_gradients(model, x, class_index=None, wrt="inputs", score="logit"):
    """The gradient of a class score with respect to the model's input or a layer's output (a saliency map when
    ``wrt="inputs"``).

    Parameters
    ----------
    model : fastconv.Model or fastconv.Sequential
        With one output of shape (batch, classes); one unit (a sigmoid) counts as two classes, 0 and 1.
    x : array or list of arrays
        A batch (one sample without its batch axis is accepted for a single-input model).
    class_index : int, array of ints, or None
        The class for every sample, one per sample, or None for each sample's top prediction.
    wrt : "inputs" or str
        The model's (single) input, or a layer name.
    score : {"logit", "output"}
        The class's logit (the input of a final softmax/sigmoid), or the model's output.

    Returns
    -------
    scores : ndarray of float64, shape (batch,)
    classes : ndarray of int64, shape (batch,)
    gradient : ndarray
        Shaped like ``x`` (or the layer's output), float32 for a float32 model.

    Raises
    ------
    ValueError
        For an unknown layer (the message lists the valid ones) or a class index out of range.
    """
    model = _graph.check_model(model, "score_gradients")
    if isinstance(wrt, str) and wrt in ("input", "inputs"):
        if len(model.inputs) != 1:
            raise ValueError(f'wrt="inputs" needs a model with one input; model {model.name!r} has '
                             f"{len(model.inputs)}")
        tensor = model.inputs[0]
    else:
        tensor = _graph.layer_tensor(model, wrt, "wrt")
    scores, classes, grads, _, single = _score_gradients(model, x, class_index, [tensor], score)
    gradient = grads[0]
    return scores, classes, (gradient[0] if single else gradient)


def class_scores(model, x, class_index=None, score="logit"):
    """The class scores :func:`grad_cam` differentiates, from one forward pass: ``(scores, classes)``."""
    model = _graph.check_model(model, "class_scores")
    head = _Head(model, score)
    batch, _ = _batch(model, x)
    values = _graph.submodel(model, head.tensor, "class_score").predict(batch, verbose=0)
    classes = _classes(class_index, head, len(values), model)
    if classes is None:
        classes = head.top(head.raw(values))
    return head.scores_and_seed(values, classes)[0], classes


def _default_layer(model, head_tensor):
    candidates = [name for name in _graph.conv_layer_names(model)
                  if _graph.feeds(_graph.layer_tensor(model, name), head_tensor)]
    if not candidates:
        raise ValueError(f"model {model.name!r} has no convolution layer with a spatial output feeding its output; "
                         f"pass layer_name (layers with spatial outputs: {_graph.spatial_layer_names(model)})")
    return candidates[-1]


def grad_cam(model, x, class_index=None, layer_name=None, score="logit"):
    """Grad-CAM heatmaps: where the evidence for a class lies, at the resolution of a convolution layer.

    Parameters
    ----------
    model : fastconv.Model or fastconv.Sequential
        Sequential or graph, channels_last or channels_first, with one output of shape (batch, classes).
    x : array
        A batch, or one image without the batch axis.
    class_index : int, array of ints, or None
        The class to explain for every sample, one per sample, or None for each sample's top prediction. A
        one-unit sigmoid output has classes 0 and 1.
    layer_name : str, optional
        A layer with a spatial output; by default the last convolution layer that feeds the output.
    score : {"logit", "output"}
        Differentiate the class's logit (default; the input of a final softmax or sigmoid) or the model's output
        (Keras's classic example: the softmax probability). A model whose last layer is not a Dense, Activation
        or Softmax layer with a softmax or sigmoid is read at its output either way.

    Returns
    -------
    ndarray of float32, shape (batch, rows, cols), or (rows, cols) for one image
        In [0, 1]: each map divided by its maximum; all zeros where no location adds evidence for the class.

    Raises
    ------
    ValueError
        For an unknown layer (the message lists the valid ones), a layer without spatial output, a class index out
        of range, or a model whose output is not (batch, classes).
    """
    from fastconv.layers.base import format_shape

    model = _graph.check_model(model, "grad_cam")
    head = _Head(model, score)
    if layer_name is None:
        layer_name = _default_layer(model, head.tensor)
    tensor = _graph.layer_tensor(model, layer_name)
    if not _graph.is_spatial(tensor):
        raise ValueError(f"layer_name must name a layer with a spatial (4-D) output for Grad-CAM; layer "
                         f"{layer_name!r} has output shape {format_shape(tensor.shape)}; layers with spatial "
                         f"outputs: {_graph.spatial_layer_names(model)}")
    _, _, grads, values, single = _score_gradients(model, x, class_index, [tensor], score)
    gradient, activation = grads[0].astype(np.float64), np.asarray(values[0], dtype=np.float64)
    if _graph.data_format(model, tensor) == "channels_first":
        gradient, activation = np.moveaxis(gradient, 1, -1), np.moveaxis(activation, 1, -1)
    weights = gradient.mean(axis=(1, 2))                              # (batch, channels)
    cam = np.maximum(np.einsum("nhwc,nc->nhw", activation, weights), 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    cam = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0).astype(np.float32)
    return cam[0] if single else cam
