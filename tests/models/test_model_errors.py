"""Bad input gets a clear error: it names the argument and ends with what was received."""
import numpy as np
import pytest

import fastconv
from fastconv import metrics
from fastconv.layers import Conv2D, Dense, Flatten, Input


def mnist_like(compile=True, loss="sparse_categorical_crossentropy"):
    model = fastconv.Sequential([Input((28, 28, 1)), Conv2D(4, 3), Flatten(), Dense(10, activation="softmax")],
                                name="digits")
    if compile:
        model.compile("adam", loss, ["accuracy"])
    return model


X = np.zeros((12, 28, 28, 1), dtype=np.float32)
Y = np.zeros(12, dtype=np.int64)


def test_fit_before_compile():
    model = mnist_like(compile=False)
    with pytest.raises(RuntimeError, match=r"model 'digits' must be compiled before fit\(\)"):
        model.fit(X, Y)
    with pytest.raises(RuntimeError, match=r"compiled before evaluate\(\)"):
        model.evaluate(X, Y)
    assert model.predict(X, verbose=0).shape == (12, 10)          # predict needs no compile (as in Keras)


@pytest.mark.parametrize("x, message", [
    (np.zeros((12, 28, 28), dtype=np.float32), r"x must have shape \(None, 28, 28, 1\) to fit the input of model "
                                               r"'digits'; received x with shape \(12, 28, 28\)"),
    (np.zeros((12, 28, 28, 3), dtype=np.float32), r"received x with shape \(12, 28, 28, 3\)"),
    (np.zeros((12, 32, 32, 1), dtype=np.float32), r"received x with shape \(12, 32, 32, 1\)"),
])
def test_data_of_the_wrong_shape(x, message):
    model = mnist_like()
    before = model.get_weights()
    for call in (lambda: model.fit(x, Y, verbose=0), lambda: model.evaluate(x, Y, verbose=0),
                 lambda: model.predict(x, verbose=0)):
        with pytest.raises(ValueError, match=message):
            call()
    for a, b in zip(before, model.get_weights()):                 # nothing was trained
        np.testing.assert_array_equal(a, b)


def test_wrong_shape_from_a_generator_is_caught_per_batch():
    model = mnist_like()
    with pytest.raises(ValueError, match=r"received x with shape \(4, 28, 28\)"):
        model.fit(_Batches(), epochs=1, verbose=0)


class _Batches:
    def __len__(self):
        return 1

    def __iter__(self):
        return iter([(np.zeros((4, 28, 28)), np.zeros(4))])


def test_x_and_y_of_different_lengths():
    model = mnist_like()
    with pytest.raises(ValueError, match=r"x and y must have the same number of samples; received x with 12 samples "
                                         r"and y with 11"):
        model.fit(X, Y[:11], verbose=0)
    with pytest.raises(ValueError, match=r"x_val and y_val must have the same number of samples"):
        model.fit(X, Y, validation_data=(X, Y[:5]), verbose=0)
    with pytest.raises(ValueError, match=r"same number of samples"):
        model.evaluate(X[:3], Y, verbose=0)


def test_targets_that_do_not_fit_the_loss():
    model = mnist_like(loss="categorical_crossentropy")
    with pytest.raises(ValueError, match=r"y must have shape \(None, 10\).*sparse_categorical_crossentropy.*"
                                         r"received y with shape \(12,\)"):
        model.fit(X, Y, verbose=0)
    model = mnist_like()
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\).*received labels from 10 to 10"):
        model.fit(X, np.full(12, 10), verbose=0)
    bad_last = np.r_[np.zeros(11, dtype=int), -1]                  # caught before the first batch trains
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"received labels from -1 to 0"):
        model.fit(X, bad_last, batch_size=4, verbose=0)
    assert model.optimizer.iterations == 0
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"y_val must hold one class index per sample"):
        model.fit(X, Y, validation_data=(X, np.zeros((12, 10))), verbose=0)


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(loss="crossentropy"), ValueError, r"loss must be one of .*received loss='crossentropy'"),
    (dict(loss=None), ValueError, r"loss must be given.*received loss=None"),
    (dict(loss="mse", optimizer="adagrad"), ValueError, r"optimizer must be one of .*received optimizer='adagrad'"),
    (dict(loss="mse", optimizer=0.01), TypeError, r"received optimizer=0.01"),
    (dict(loss="mse", metrics=["precision"]), ValueError, r"metrics must hold names .*received metric='precision'"),
    (dict(loss="mse", metrics=3), TypeError, r"metrics must be a list .*received metrics=3"),
])
def test_unknown_names_at_compile(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        mnist_like(compile=False).compile(**kwargs)


def test_unknown_activation():
    with pytest.raises(ValueError, match=r"activation must be one of .*received activation='softplus'"):
        Dense(3, activation="softplus")


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(batch_size=0), ValueError, r"batch_size must be a positive int; received batch_size=0"),
    (dict(validation_split=1.0), ValueError, r"validation_split must be in \[0, 1\); received validation_split=1.0"),
    (dict(verbose=3), ValueError, r"verbose must be .*received verbose=3"),
    (dict(seed=-1), ValueError, r"seed must be non-negative; received seed=-1"),
    (dict(seed="zero"), TypeError, r"seed must be an int or None; received seed='zero'"),
    (dict(validation_data=X), ValueError, r"validation_data must be a pair"),
    (dict(steps_per_epoch=2), ValueError, r"steps_per_epoch only applies to data generators"),
    (dict(callbacks=[print]), TypeError, r"callbacks must hold fastconv.callbacks.Callback objects"),
])
def test_bad_fit_arguments(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        mnist_like().fit(X, Y, **{"verbose": 0, **kwargs})


def test_generator_misuse():
    model = mnist_like()
    flow = _Batches()
    with pytest.raises(ValueError, match=r"y must not be given when x is a data generator"):
        model.fit(flow, Y, verbose=0)
    with pytest.raises(ValueError, match=r"validation_split is not available with a data generator"):
        model.fit(flow, validation_split=0.2, verbose=0)

    class Triples:
        def __len__(self):
            return 1

        def __iter__(self):
            return iter([(X, Y, np.ones(12))])

    with pytest.raises(ValueError, match="sample weights are not supported"):
        model.fit(Triples(), verbose=0)


def test_missing_y_and_non_numeric_data():
    model = mnist_like()
    with pytest.raises(ValueError, match=r"y must be given when x is an array; received y=None"):
        model.fit(X)
    with pytest.raises(TypeError, match=r"x must hold real numbers"):
        model.predict(np.array([["a"]]), verbose=0)


def test_accuracy_needs_data_to_pick_its_kind():
    with pytest.raises(ValueError, match="needs a batch"):
        metrics.get("accuracy")
