"""Loss functions, with their gradients, Keras's names and Keras's semantics.

Each loss is a :class:`Loss` object. ``loss(y_true, y_pred)`` is the scalar a model reports (the per-sample losses
averaged over the batch, Keras's ``"sum_over_batch_size"`` reduction) and :meth:`Loss.value_and_grad` also returns
its gradient with respect to ``y_pred``; the module-level functions (``binary_crossentropy`` ...) return the
per-sample losses, as in Keras.

Probabilities and the fused path
--------------------------------
On probabilities (``from_logits=False``, the default) the cross-entropies follow Keras: predictions are clipped
to ``[1e-7, 1 - 1e-7]`` (categorical ones first renormalised to sum to 1), so a saturated sigmoid or softmax gives a
large but finite loss and no gradient. A model whose last layer ends in ``sigmoid`` (binary cross-entropy) or
``softmax`` (categorical and sparse categorical cross-entropy) does better: it hands this module the layer's
logits instead (:meth:`Loss.value_and_grad_from_logits`) and the loss is computed as ``softplus``/``log-sum-exp``
of the logits, the way TensorFlow-backed Keras does when it can see the logits. The value is then exact and
finite for any finite logits (1e4 included) and the gradient is the familiar ``probabilities - targets``.

Examples
--------
>>> import numpy as np
>>> from fastconv import losses
>>> bce = losses.get("binary_crossentropy")
>>> float(bce(np.array([[1.0], [0.0]]), np.array([[0.9], [0.1]])))   # -log(0.9)
0.10536051565782628
>>> logits = np.array([[1e4, -1e4]], dtype=np.float32)
>>> value, grad = losses.get("sparse_categorical_crossentropy").value_and_grad_from_logits(np.array([1]), logits)
>>> float(value), grad
(20000.0, array([[ 1., -1.]], dtype=float32))
"""
import numpy as np

from fastconv import activations

__all__ = [
    "Loss", "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "MeanSquaredError",
    "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy", "mean_squared_error",
    "get", "serialize", "EPSILON",
]

EPSILON = 1e-7  # keras.config.epsilon()


def _float(array):
    a = np.asarray(array)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)


class Loss:
    """Base class. Subclasses implement :meth:`_elementwise` (per-position loss and its gradient).

    Parameters
    ----------
    from_logits : bool
        ``y_pred`` are logits rather than probabilities (cross-entropies only).
    name : str, optional
    """

    #: the activation whose logits this loss can take directly (the fused path), or None
    fused_activation = None
    default_name = None

    def __init__(self, from_logits=False, name=None):
        if not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"from_logits must be a bool; received from_logits={from_logits!r}")
        self.from_logits = bool(from_logits)
        self.name = name or self.default_name

    # -- shapes --------------------------------------------------------------------------------------------
    def target_shape(self, output_shape):
        """The ``y`` shape (batch included) this loss expects for model outputs of ``output_shape``."""
        return tuple(output_shape)

    def check_targets(self, y_shape, output_shape):
        """Raise ValueError if targets of ``y_shape`` cannot go with outputs of ``output_shape``."""
        expected = self.target_shape(output_shape)
        y_shape = tuple(y_shape)
        fits = len(y_shape) == len(expected) and all(e is None or e == s for e, s in zip(expected[1:], y_shape[1:]))
        # Keras also takes (N,) targets for (N, 1) outputs.
        squeezed = len(expected) == 2 and expected[-1] == 1 and len(y_shape) == 1
        if not (fits or squeezed):
            hint = ""
            if self.name == "categorical_crossentropy" and len(y_shape) == len(expected) - 1:
                hint = " (integer class labels go with loss='sparse_categorical_crossentropy')"
            shown = "(" + ", ".join("None" if d is None else str(d) for d in expected) + ")"
            raise ValueError(f"y must have shape {shown} to match the model's output for loss {self.name!r}{hint}; "
                             f"received y with shape {y_shape}")

    def validate_targets(self, y, output_shape):
        """Check a whole target array before training (shape here; the sparse loss also checks the labels)."""
        self.check_targets(np.shape(y), output_shape)

    def _prepare(self, y_true, y_pred):
        y_pred = _float(y_pred)
        y_true = np.asarray(y_true)
        if y_true.ndim == y_pred.ndim - 1 and y_pred.shape[-1] == 1:
            y_true = y_true.reshape(y_pred.shape)
        self.check_targets(y_true.shape, (None,) + y_pred.shape[1:])
        return y_true.astype(y_pred.dtype, copy=False), y_pred

    # -- values and gradients ------------------------------------------------------------------------------
    def call(self, y_true, y_pred):
        """Per-sample losses, shape ``y_pred.shape[:-1]``."""
        y_true, y_pred = self._prepare(y_true, y_pred)
        loss, _ = (self._from_logits if self.from_logits else self._elementwise)(y_true, y_pred, False)
        return loss

    def __call__(self, y_true, y_pred):
        return self.value_and_grad(y_true, y_pred, need_grad=False)[0]

    def value_and_grad(self, y_true, y_pred, need_grad=True):
        """``(mean loss, d mean loss / d y_pred)`` (the gradient is None when ``need_grad`` is False)."""
        y_true, y_pred = self._prepare(y_true, y_pred)
        fn = self._from_logits if self.from_logits else self._elementwise
        return self._reduce(*fn(y_true, y_pred, need_grad))

    def value_and_grad_from_logits(self, y_true, logits, need_grad=True):
        """As :meth:`value_and_grad`, for ``y_pred = fused_activation(logits)``, with the gradient taken with
        respect to the logits. Finite for any finite logits."""
        if self.fused_activation is None:
            raise TypeError(f"loss {self.name!r} has no fused logits form")
        y_true, logits = self._prepare(y_true, logits)
        return self._reduce(*self._from_logits(y_true, logits, need_grad))

    @staticmethod
    def _reduce(per_sample, grad):
        count = max(1, per_sample.size)
        value = np.add.reduce(per_sample.ravel(), dtype=per_sample.dtype) / per_sample.dtype.type(count)
        if grad is not None:
            grad = grad / grad.dtype.type(count)
        return per_sample.dtype.type(value), grad

    def _elementwise(self, y_true, y_pred, need_grad):
        raise NotImplementedError

    def _from_logits(self, y_true, logits, need_grad):
        raise NotImplementedError

    def get_config(self):
        return {"from_logits": self.from_logits, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


def _clip(p):
    eps = p.dtype.type(EPSILON)
    clipped = np.clip(p, eps, 1 - eps)
    inside = (p > eps) & (p < 1 - eps)
    return clipped, inside


def _log_softmax(z):
    shifted = z - np.max(z, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


class BinaryCrossentropy(Loss):
    """``-mean(y log p + (1 - y) log(1 - p))`` over the last axis; fuses with a final sigmoid."""

    fused_activation = "sigmoid"
    default_name = "binary_crossentropy"

    def _elementwise(self, y, p, need_grad):
        pc, inside = _clip(p)
        loss = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc), axis=-1)
        grad = None
        if need_grad:
            grad = np.where(inside, (pc - y) / (pc * (1 - pc)), p.dtype.type(0)) / p.dtype.type(p.shape[-1])
        return loss, grad

    def _from_logits(self, y, z, need_grad):
        # max(z, 0) - z y + log(1 + exp(-|z|)): exact, and finite for every finite z.
        loss = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))), axis=-1)
        grad = (activations.sigmoid(z) - y) / z.dtype.type(z.shape[-1]) if need_grad else None
        return loss, grad


class CategoricalCrossentropy(Loss):
    """``-sum(y log p)`` over the last axis (one-hot or soft targets); fuses with a final softmax."""

    fused_activation = "softmax"
    default_name = "categorical_crossentropy"

    def _elementwise(self, y, p, need_grad):
        total = np.sum(p, axis=-1, keepdims=True)
        q = p / total
        qc, inside = _clip(q)
        loss = -np.sum(y * np.log(qc), axis=-1)
        grad = None
        if need_grad:
            g = np.where(inside, -y / qc, p.dtype.type(0))             # d loss / d q
            grad = (g - np.sum(g * q, axis=-1, keepdims=True)) / total   # through q = p / sum(p)
        return loss, grad

    def _from_logits(self, y, z, need_grad):
        log_p = _log_softmax(z)
        loss = -np.sum(y * log_p, axis=-1)
        grad = None
        if need_grad:
            grad = np.exp(log_p) * np.sum(y, axis=-1, keepdims=True) - y
        return loss, grad


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer class labels, shape ``(N,)`` or ``(N, 1)``."""

    default_name = "sparse_categorical_crossentropy"

    def target_shape(self, output_shape):
        return tuple(output_shape[:-1])

    def check_targets(self, y_shape, output_shape):
        y_shape = tuple(y_shape)
        if len(y_shape) == len(output_shape) and y_shape[-1:] == (1,):
            y_shape = y_shape[:-1]
        expected = self.target_shape(output_shape)
        if len(y_shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], y_shape[1:])):
            shown = "(" + ", ".join("None" if d is None else str(d) for d in expected) + ")"
            hint = (" (one-hot targets go with loss='categorical_crossentropy')"
                    if len(y_shape) == len(output_shape) else "")
            raise ValueError(f"y must hold one class index per sample, shape {shown}, for loss {self.name!r}{hint}; "
                             f"received y with shape {tuple(y_shape)}")

    def validate_targets(self, y, output_shape):
        labels = np.asarray(y)
        self.check_targets(labels.shape, output_shape)
        self._labels(labels, output_shape[-1])

    def _prepare(self, y_true, y_pred):
        y_pred = _float(y_pred)
        labels = np.asarray(y_true)
        self.check_targets(labels.shape, (None,) + y_pred.shape[1:])
        labels = self._labels(labels.reshape(y_pred.shape[:-1]), y_pred.shape[-1])
        one_hot = (labels[..., None] == np.arange(y_pred.shape[-1])).astype(y_pred.dtype)
        return one_hot, y_pred

    def _labels(self, labels, n_classes):
        """Integer class indices in [0, n_classes), or an error naming y."""
        if labels.dtype.kind == "f":
            if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
                raise ValueError(f"y must hold integer class indices for loss {self.name!r}; received non-integer "
                                 f"values such as {labels[labels != np.round(labels)][:1]}")
            labels = labels.astype(np.int64)
        elif labels.dtype.kind not in "iub":
            raise TypeError(f"y must hold integer class indices for loss {self.name!r}; received y with dtype "
                            f"{labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"y must hold class indices in [0, {n_classes}) for loss {self.name!r}; received "
                             f"labels from {labels.min()} to {labels.max()}")
        return labels


class MeanSquaredError(Loss):
    """``mean((y - y_pred) ** 2)`` over the last axis."""

    default_name = "mean_squared_error"

    def __init__(self, name=None):
        super().__init__(False, name)

    def _elementwise(self, y, p, need_grad):
        diff = p - y
        loss = np.mean(diff * diff, axis=-1)
        grad = diff * p.dtype.type(2 / p.shape[-1]) if need_grad else None
        return loss, grad

    def get_config(self):
        return {"name": self.name}


def binary_crossentropy(y_true, y_pred, from_logits=False):
    """Per-sample binary cross-entropy (mean over the last axis)."""
    return BinaryCrossentropy(from_logits).call(y_true, y_pred)


def categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Per-sample categorical cross-entropy."""
    return CategoricalCrossentropy(from_logits).call(y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    """Per-sample categorical cross-entropy with integer labels."""
    return SparseCategoricalCrossentropy(from_logits).call(y_true, y_pred)


def mean_squared_error(y_true, y_pred):
    """Per-sample mean squared error."""
    return MeanSquaredError().call(y_true, y_pred)


_CLASSES = {c.__name__: c for c in (BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy,
                                    MeanSquaredError)}
_NAMES = {
    "binary_crossentropy": BinaryCrossentropy, "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy, "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
}
_FUNCTIONS = {binary_crossentropy: BinaryCrossentropy, categorical_crossentropy: CategoricalCrossentropy,
              sparse_categorical_crossentropy: SparseCategoricalCrossentropy, mean_squared_error: MeanSquaredError}


def get(identifier):
    """A :class:`Loss` from a name (``"binary_crossentropy"``, ``"mse"`` ...), a class name, one of this
    module's functions, a ``{"class_name", "config"}`` dict or a Loss object.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else.

    Examples
    --------
    >>> from fastconv import losses
    >>> losses.get("mse")
    MeanSquaredError(from_logits=False)
    >>> losses.get("crossentropy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: loss must be one of 'binary_crossentropy', ... or a fastconv.losses.Loss; received loss='crossentropy'
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        cls = _NAMES.get(identifier.lower()) or _CLASSES.get(identifier)
        if cls is None:
            names = ", ".join(repr(n) for n in _NAMES)
            raise ValueError(f"loss must be one of {names} or a fastconv.losses.Loss; received loss={identifier!r}")
        return cls()
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return _CLASSES[identifier["class_name"]].from_config(identifier.get("config", {}))
    if callable(identifier) and identifier in _FUNCTIONS:
        return _FUNCTIONS[identifier]()
    raise TypeError(f"loss must be a name or a fastconv.losses.Loss; received loss={identifier!r}")


def serialize(loss):
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
