"""Metrics: stateful running averages over an epoch, as in Keras.

``compile(metrics=["accuracy"])`` picks the accuracy the way Keras does, from the shapes of the first batch: a
single output unit means binary accuracy (threshold 0.5), targets with fewer axes than the output (or one label
column against several outputs) mean sparse categorical accuracy, anything else categorical accuracy. The
metric keeps the name it was asked for (``"accuracy"`` or ``"acc"``), which is its key in ``History.history``.

Examples
--------
>>> import numpy as np
>>> from fastconv import metrics
>>> m = metrics.get("accuracy", y_true=np.array([0, 2]), y_pred=np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]]))
>>> type(m).__name__, m.name
('SparseCategoricalAccuracy', 'accuracy')
>>> m.update_state(np.array([0, 2]), np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]]))
>>> float(m.result())
0.5
"""
import numpy as np

__all__ = ["Metric", "Mean", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
           "MeanSquaredError", "get"]


class Metric:
    """Base class: ``update_state(y_true, y_pred)`` per batch, ``result()``, ``reset_state()``."""

    default_name = None

    def __init__(self, name=None):
        self.name = name or self.default_name
        self.reset_state()

    def reset_state(self):
        raise NotImplementedError

    def update_state(self, y_true, y_pred):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


class Mean(Metric):
    """Weighted running mean of values (a model tracks its loss with one, weighted by batch size)."""

    default_name = "mean"

    def reset_state(self):
        self.total = 0.0
        self.count = 0.0

    def update_state(self, values, sample_weight=None):
        values = np.asarray(values, dtype=np.float64)
        if sample_weight is None:
            self.total += float(values.sum())
            self.count += values.size
        else:
            self.total += float(values.sum()) * float(sample_weight)
            self.count += float(sample_weight)

    def result(self):
        return np.float32(self.total / self.count) if self.count else np.float32(0.0)


class _MeanOfSamples(Mean):
    """The mean over samples of a per-sample value."""

    def update_state(self, y_true, y_pred):
        super().update_state(self._values(np.asarray(y_true), np.asarray(y_pred)))

    def _values(self, y_true, y_pred):
        raise NotImplementedError


def _align(y_true, y_pred):
    if y_true.ndim == y_pred.ndim - 1:
        y_true = y_true.reshape(y_pred.shape[:-1] + (1,))
    return y_true


class BinaryAccuracy(_MeanOfSamples):
    """Fraction of ``(y_pred > threshold) == y_true``."""

    default_name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        self.threshold = float(threshold)
        super().__init__(name)

    def _values(self, y_true, y_pred):
        y_true = _align(y_true, y_pred)
        return ((y_pred > self.threshold) == (y_true > 0.5)).astype(np.float64)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


class CategoricalAccuracy(_MeanOfSamples):
    """Fraction of samples whose largest prediction is at the one-hot target's position."""

    default_name = "categorical_accuracy"

    def _values(self, y_true, y_pred):
        return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float64)


class SparseCategoricalAccuracy(_MeanOfSamples):
    """Fraction of samples whose largest prediction is at the integer label."""

    default_name = "sparse_categorical_accuracy"

    def _values(self, y_true, y_pred):
        labels = y_true.reshape(y_pred.shape[:-1])
        return (labels == np.argmax(y_pred, axis=-1)).astype(np.float64)


class MeanSquaredError(_MeanOfSamples):
    default_name = "mean_squared_error"

    def _values(self, y_true, y_pred):
        y_true = _align(y_true, y_pred) if y_pred.shape[-1] == 1 else y_true
        return np.mean((y_pred - y_true) ** 2, axis=-1)


_NAMES = {"binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
          "sparse_categorical_accuracy": SparseCategoricalAccuracy, "mean_squared_error": MeanSquaredError,
          "mse": MeanSquaredError}
_CLASSES = {c.__name__: c for c in (BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy,
                                    MeanSquaredError)}


def _accuracy_for(y_true_shape, y_pred_shape):
    """Keras's choice of accuracy for ``"accuracy"`` / ``"acc"``, from the shapes of one batch."""
    is_binary = y_pred_shape[-1] == 1
    is_sparse = len(y_true_shape) < len(y_pred_shape) or (y_true_shape[-1:] == (1,) and y_pred_shape[-1] > 1)
    if is_binary:
        return BinaryAccuracy
    return SparseCategoricalAccuracy if is_sparse else CategoricalAccuracy


def get(identifier, y_true=None, y_pred=None):
    """A new :class:`Metric` from a name or a Metric object (returned as is).

    ``"accuracy"`` and ``"acc"`` need one batch of targets and predictions (``y_true``, ``y_pred``: arrays or
    shapes) to pick the kind of accuracy.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else.
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        if identifier.lower() in ("accuracy", "acc"):
            if y_true is None or y_pred is None:
                raise ValueError(f"metric {identifier!r} needs a batch of targets and predictions to choose its kind")
            shape = lambda a: tuple(a) if isinstance(a, tuple) else np.shape(a)  # noqa: E731
            return _accuracy_for(shape(y_true), shape(y_pred))(name=identifier)
        cls = _NAMES.get(identifier.lower()) or _CLASSES.get(identifier)
        if cls is None:
            names = ", ".join(repr(n) for n in ("accuracy", "acc", *_NAMES))
            raise ValueError(f"metrics must hold names among {names} or fastconv.metrics.Metric objects; "
                             f"received metric={identifier!r}")
        return cls(name=identifier)
    raise TypeError(f"metrics must hold names or fastconv.metrics.Metric objects; received metric={identifier!r}")


def validate(identifier):
    """Check a metric identifier at compile time (before any data is seen)."""
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        return identifier
    get(identifier)
    return identifier


def serialize(identifier):
    """A JSON-ready form of a compile-time metric identifier."""
    if isinstance(identifier, str):
        return identifier
    return {"class_name": type(identifier).__name__, "config": identifier.get_config()}


def deserialize(config):
    if isinstance(config, str):
        return config
    if isinstance(config, dict) and config.get("class_name") in _CLASSES:
        return _CLASSES[config["class_name"]](**config.get("config", {}))
    raise ValueError(f"unknown metric in saved config; received {config!r}")
