"""Accuracy metrics and Keras's rule for picking one from "accuracy"."""
import numpy as np
import pytest

from fastconv import metrics


@pytest.mark.parametrize("y_true, y_pred, kind", [
    (np.zeros((4, 1)), np.zeros((4, 1)), metrics.BinaryAccuracy),
    (np.zeros(4), np.zeros((4, 1)), metrics.BinaryAccuracy),
    (np.zeros(4), np.zeros((4, 10)), metrics.SparseCategoricalAccuracy),
    (np.zeros((4, 1)), np.zeros((4, 10)), metrics.SparseCategoricalAccuracy),
    (np.zeros((4, 10)), np.zeros((4, 10)), metrics.CategoricalAccuracy),
])
@pytest.mark.parametrize("name", ["accuracy", "acc"])
def test_accuracy_is_picked_as_keras_does(y_true, y_pred, kind, name):
    metric = metrics.get(name, y_true=y_true, y_pred=y_pred)
    assert type(metric) is kind and metric.name == name


def test_accuracy_values_accumulate_over_batches():
    binary = metrics.BinaryAccuracy()
    binary.update_state(np.array([[1.0], [0.0]]), np.array([[0.7], [0.6]]))
    binary.update_state(np.array([1.0, 1.0]), np.array([[0.9], [0.2]]))
    assert binary.result() == np.float32(0.5)
    categorical = metrics.CategoricalAccuracy()
    categorical.update_state(np.eye(3), np.array([[0.8, 0.1, 0.1], [0.3, 0.4, 0.3], [0.5, 0.1, 0.4]]))
    np.testing.assert_allclose(categorical.result(), 2 / 3, rtol=1e-6)
    sparse = metrics.SparseCategoricalAccuracy()
    sparse.update_state(np.array([[0], [1], [2]]), np.array([[0.8, 0.1, 0.1], [0.3, 0.4, 0.3], [0.5, 0.1, 0.4]]))
    np.testing.assert_allclose(sparse.result(), 2 / 3, rtol=1e-6)
    sparse.reset_state()
    assert sparse.result() == 0


def test_fit_reports_the_right_accuracy(rng):
    import fastconv
    from fastconv.layers import Dense, Input

    x = rng.standard_normal((30, 4)).astype(np.float32)
    for loss, y, units, expected in (("binary_crossentropy", (x[:, 0] > 0).astype(np.float32), 1,
                                      metrics.BinaryAccuracy),
                                     ("sparse_categorical_crossentropy", rng.integers(0, 3, 30), 3,
                                      metrics.SparseCategoricalAccuracy),
                                     ("categorical_crossentropy", np.eye(3)[rng.integers(0, 3, 30)], 3,
                                      metrics.CategoricalAccuracy)):
        model = fastconv.Sequential([Input((4,)), Dense(units, activation="sigmoid" if units == 1 else "softmax")])
        model.compile("sgd", loss, ["accuracy"])
        model.fit(x, y, epochs=1, verbose=0)
        assert type(model._metrics[0]) is expected
        out = model.predict(x, verbose=0)
        manual = expected()
        manual.update_state(y, out)
        np.testing.assert_allclose(model.evaluate(x, y, verbose=0)[1], manual.result(), rtol=1e-6)
