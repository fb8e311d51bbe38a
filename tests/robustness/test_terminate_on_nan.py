"""A NaN or infinite loss stops training at that batch with Keras's message, instead of training on NaN weights.

``TerminateOnNaN`` follows Keras 3: it looks at the loss logged after each batch, prints ``Batch N: Invalid loss,
terminating training`` and sets ``model.stop_training`` (the epoch still ends, so ``on_epoch_end`` hooks run);
with ``raise_error=True`` it raises a RuntimeError at once. Keras itself is the oracle for the batch at which
training stops and the message.
"""
import numpy as np
import pytest

import fastconv
from fastconv import layers
from fastconv.callbacks import Callback, TerminateOnNaN


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.batches, self.epochs_ended, self.train_ended = [], [], False

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(batch)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_ended.append(epoch)

    def on_train_end(self, logs=None):
        self.train_ended = True


def model(loss="sparse_categorical_crossentropy", units=3, activation="softmax"):
    fastconv.utils.set_random_seed(0)
    m = fastconv.Sequential([layers.Input((6, 6, 1)), layers.Conv2D(2, 3, activation="relu"), layers.Flatten(),
                             layers.Dense(units, activation=activation)])
    m.compile(optimizer="sgd", loss=loss)
    return m


def poisoned_data(rng, bad_batch=2, batch_size=4, n=24):
    x = rng.standard_normal((n, 6, 6, 1)).astype(np.float32)
    x[bad_batch * batch_size + 1, 2, 2, 0] = np.nan  # one NaN pixel in one sample of batch 2
    return x, rng.integers(0, 3, n)


def test_nan_loss_stops_at_that_batch_with_keras_message(rng, capsys):
    x, y = poisoned_data(rng)
    record = Recorder()
    history = model().fit(x, y, batch_size=4, epochs=5, shuffle=False, verbose=0, callbacks=[TerminateOnNaN(), record])
    assert "Batch 2: Invalid loss, terminating training" in capsys.readouterr().out
    assert record.batches == [0, 1, 2]          # stopped at the batch, not at the end of the epoch
    assert record.epochs_ended == [0] and record.train_ended
    assert len(history.history["loss"]) == 1 and np.isnan(history.history["loss"][0])


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_infinite_loss_stops_too(rng, capsys):
    x = rng.standard_normal((16, 6, 6, 1)).astype(np.float32)
    y = np.full((16, 1), 1e30, np.float32)
    y[:4] = 0.0  # batch 0 is finite; batch 1's squared error overflows float32 to inf
    record = Recorder()
    m = model(loss="mse", units=1, activation=None)
    m.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[TerminateOnNaN(), record])
    assert "Batch 1: Invalid loss, terminating training" in capsys.readouterr().out
    assert record.batches == [0, 1]


def test_raise_error_stops_before_any_later_hook(rng):
    x, y = poisoned_data(rng)
    record = Recorder()
    with pytest.raises(RuntimeError, match=r"NaN or Inf loss encountered at batch 2\. Loss value: nan"):
        model().fit(x, y, batch_size=4, epochs=5, shuffle=False, verbose=0,
                    callbacks=[TerminateOnNaN(raise_error=True), record])
    assert record.batches == [0, 1]  # TerminateOnNaN, first in the list, raised inside batch 2's hooks
    assert not record.epochs_ended and not record.train_ended


def test_without_it_training_runs_on_with_nan_weights(rng):
    """What the callback prevents: every later batch, and every later epoch, trains on NaN."""
    x, y = poisoned_data(rng)
    m = model()
    history = m.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 2
    assert all(np.isnan(w).all() for w in m.get_weights())


def test_finite_training_is_untouched(rng, capsys):
    x = rng.standard_normal((24, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    a, b = model(), model()
    a.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[TerminateOnNaN()])
    b.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert "Invalid loss" not in capsys.readouterr().out
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_raise_error_must_be_a_bool():
    with pytest.raises(TypeError, match=r"raise_error must be a bool; received raise_error='yes'"):
        TerminateOnNaN(raise_error="yes")


def test_keras_stops_at_the_same_batch_with_the_same_message(keras, rng, capsys):
    x, y = poisoned_data(rng)
    reference = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3, activation="relu"),
                                  keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    reference.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    batches = []
    count = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    reference.fit(x, y, batch_size=4, epochs=5, shuffle=False, verbose=0,
                  callbacks=[keras.callbacks.TerminateOnNaN(), count])
    keras_output = capsys.readouterr().out

    record = Recorder()
    model().fit(x, y, batch_size=4, epochs=5, shuffle=False, verbose=0, callbacks=[TerminateOnNaN(), record])
    assert capsys.readouterr().out.strip() == keras_output.strip() == "Batch 2: Invalid loss, terminating training"
    assert record.batches == batches
