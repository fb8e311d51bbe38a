"""Sequential: structure, summary, compile, fit/evaluate/predict on arrays and generators, freezing, seeds."""
import numpy as np
import pytest

import fastconv
from fastconv import callbacks, losses, metrics, optimizers
from fastconv.layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D


def small_cnn(classes=3, dropout=0.0, name=None):
    return fastconv.Sequential([
        Input((8, 8, 1)), Conv2D(4, 3, activation="relu"), MaxPooling2D(2), Flatten(), Dropout(dropout),
        Dense(classes, activation="softmax" if classes > 1 else "sigmoid")], name=name)


def blobs(rng, n=96, classes=3):
    """Images whose class is which third of the image is bright: learnable in a few epochs."""
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.3, (n, 8, 8, 1)).astype(np.float32)
    for c in range(classes):
        x[y == c, :, c * 8 // classes:(c + 1) * 8 // classes, 0] += 1.5
    return x, y


class BatchList:
    """A minimal data generator: __len__ and __iter__ over a fixed list of batches (re-iterable)."""

    def __init__(self, x, y, batch_size):
        self.batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        self.passes = 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.passes += 1
        return iter(self.batches)


class EndlessFlow:
    """Keras-style endless iterator (like ImageDataGenerator.flow): __len__ = batches per epoch, __next__ forever."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size, self.i = x, y, batch_size, 0
        self.served = 0

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        return self

    def __next__(self):
        start = self.i * self.batch_size
        self.i = (self.i + 1) % len(self)
        self.served += 1
        return self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]


class IndexedBatches:
    """A Keras Sequence / PyDataset-like object: __len__ and __getitem__ only."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        if i >= len(self):
            raise IndexError(i)
        return self.x[i * self.batch_size:(i + 1) * self.batch_size], self.y[i * self.batch_size:(i + 1) *
                                                                              self.batch_size]


# ---- structure -------------------------------------------------------------------------------------------------
def test_layers_get_layer_add_pop():
    model = small_cnn(name="net")
    assert [type(layer).__name__ for layer in model.layers] == ["Conv2D", "MaxPooling2D", "Flatten", "Dropout",
                                                                 "Dense"]
    assert model.built and model.input_shape == (None, 8, 8, 1) and model.output_shape == (None, 3)
    conv = model.layers[0]
    assert model.get_layer(conv.name) is conv and model.get_layer(0) is conv and model.get_layer(index=-1) is \
        model.layers[-1]
    with pytest.raises(ValueError, match=r"name must be one of .*received name='nope'"):
        model.get_layer("nope")
    with pytest.raises(ValueError, match=r"index.*received index=9"):
        model.get_layer(9)
    model.pop()
    assert model.output_shape == (None, 36)                        # now ends with the Dropout
    model.add(Dense(2))
    assert model.output_shape == (None, 2)
    with pytest.raises(ValueError, match="unique"):
        model.add(Dense(2, name=model.layers[-1].name))
    with pytest.raises(ValueError, match="first entry"):
        model.add(Input((3,)))


def test_summary_table():
    model = fastconv.Sequential([Input((28, 28, 1)), Conv2D(32, 3, name="c1"), MaxPooling2D(2, name="p1"),
                                 Flatten(name="f"), Dense(10, name="d", trainable=False)], name="demo")
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert lines[0] == 'Model: "demo"'
    assert "Layer (type)" in lines[2] and "Output Shape" in lines[2] and "Param #" in lines[2]
    assert " c1 (Conv2D)" in text and "(None, 26, 26, 32)" in text and "320" in text
    assert " p1 (MaxPooling2D)" in text and "(None, 13, 13, 32)" in text
    assert "(None, 5408)" in text and "54,090" in text
    assert "Total params: 54,410 (212.54 KB)" in text
    assert "Trainable params: 320 (1.25 KB)" in text
    assert "Non-trainable params: 54,090 (211.29 KB)" in text
    with pytest.raises(ValueError, match="not been built"):
        fastconv.Sequential([Dense(3)]).summary()


def test_model_built_lazily_from_data(rng):
    model = fastconv.Sequential([Dense(4, activation="relu"), Dense(1, activation="sigmoid")])
    assert not model.built
    model.compile("sgd", "binary_crossentropy", ["accuracy"])
    x = rng.standard_normal((20, 5)).astype(np.float32)
    model.fit(x, (x[:, 0] > 0).astype(np.float32), epochs=1, verbose=0)
    assert model.built and model.input_shape == (None, 5) and model._fused == [True]


def test_compile_with_names_and_objects():
    model = small_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert isinstance(model.optimizer, optimizers.Adam) and isinstance(model.loss,
                                                                       losses.SparseCategoricalCrossentropy)
    opt, loss = optimizers.SGD(0.1, momentum=0.9), losses.CategoricalCrossentropy()
    model.compile(optimizer=opt, loss=loss, metrics=[metrics.CategoricalAccuracy()])
    assert model.optimizer is opt and model.loss is loss and model.metrics_names == ["loss", "categorical_accuracy"]
    model.compile(optimizer="rmsprop", loss="mse")
    assert isinstance(model.optimizer, optimizers.RMSprop) and model._fused == [False]


# ---- fit / evaluate / predict -----------------------------------------------------------------------------------
def test_fit_learns_and_history_has_keras_keys(rng):
    x, y = blobs(rng)
    model = small_cnn()
    model.compile(optimizer=optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=6, validation_split=0.25, verbose=0, seed=1)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 6 for v in history.history.values()) and history.epoch == list(range(6))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_accuracy"][-1] >= 0.9
    assert model.history is history
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy >= 0.9 and np.isfinite(loss)
    assert model.evaluate(x, y, verbose=0, return_dict=True).keys() == {"loss", "accuracy"}


def test_validation_split_takes_the_last_samples(rng):
    x, y = blobs(rng, n=40)
    seen = []

    class Spy(callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(batch)

    model = small_cnn()
    model.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(x, y, batch_size=10, epochs=1, validation_split=0.25, shuffle=False, verbose=0,
                        callbacks=[Spy()])
    assert seen == [0, 1, 2]                                       # 30 training samples
    np.testing.assert_allclose(history.history["val_loss"][0], model.evaluate(x[30:], y[30:], verbose=0)[0],
                               rtol=1e-6)


def test_predict_is_batched_and_equals_one_big_forward(rng):
    model = small_cnn()
    x = rng.standard_normal((50, 8, 8, 1)).astype(np.float32)
    batched = model.predict(x, batch_size=7, verbose=0)
    whole = model(x)
    assert batched.shape == (50, 3) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, whole, rtol=1e-6, atol=1e-7)
    assert model.predict(x[:0], verbose=0).shape == (0, 3)


def test_uint8_input_is_float32_end_to_end(rng):
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    x = rng.integers(0, 256, (16, 8, 8, 1)).astype(np.uint8)
    model.fit(x, rng.integers(0, 3, 16), epochs=1, verbose=0)
    assert all(w.dtype == np.float32 for w in model.get_weights())
    assert model.predict(x, verbose=0).dtype == np.float32
    assert all(v.dtype == np.float32 for table in model.optimizer.get_state()["slots"].values()
               for v in table.values())


@pytest.mark.parametrize("make", [BatchList, EndlessFlow, IndexedBatches])
def test_fit_and_evaluate_on_generators(make, rng):
    x, y = blobs(rng, n=48)
    model = small_cnn()
    model.compile(optimizer=optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    data = make(x, y, 16)
    history = model.fit(data, epochs=3, validation_data=make(x, y, 24), verbose=0, seed=0)
    assert len(history.history["loss"]) == 3 and "val_accuracy" in history.history
    if isinstance(data, EndlessFlow):
        assert data.served == 9                                    # exactly len() batches per epoch
    elif isinstance(data, BatchList):
        assert data.passes == 3
    result = model.evaluate(make(x, y, 16), verbose=0)
    assert len(result) == 2
    predictions = model.predict(make(x, y, 16), verbose=0)
    assert predictions.shape == (48, 3)


def test_steps_per_epoch_for_an_endless_generator_without_length(rng):
    x, y = blobs(rng, n=32)
    pulled = []

    def endless():
        while True:
            pulled.append(1)
            yield x[:8], y[:8]

    model = small_cnn()
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(endless(), steps_per_epoch=3, epochs=2, verbose=0)
    assert len(pulled) == 6


def test_one_shot_generator_running_dry_stops_training_with_a_warning(rng):
    x, y = blobs(rng, n=32)
    model = small_cnn()
    model.compile("sgd", "sparse_categorical_crossentropy")
    batches = ((x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8))
    with pytest.warns(RuntimeWarning, match="ran out of data"):
        history = model.fit(batches, epochs=3, verbose=0)
    assert len(history.history["loss"]) == 1


def test_fit_works_with_the_preprocessing_flow_when_available(rng):
    preprocessing = pytest.importorskip("fastconv.preprocessing")
    if not hasattr(preprocessing, "ImageDataGenerator"):
        pytest.skip("fastconv.preprocessing.ImageDataGenerator is not available yet")
    x, y = blobs(rng, n=40)
    flow = preprocessing.ImageDataGenerator(width_shift_range=0.1).flow(x, y, batch_size=16, seed=0)
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(flow, epochs=2, verbose=0)
    assert len(history.history["accuracy"]) == 2


# ---- freezing ----------------------------------------------------------------------------------------------------
def test_frozen_layers_do_not_change_during_fit(rng):
    x, y = blobs(rng)
    model = small_cnn()
    model.layers[0].trainable = False
    model.compile(optimizer=optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    frozen = model.layers[0].get_weights()
    head = model.layers[-1].get_weights()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for before, after in zip(frozen, model.layers[0].get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(head[0], model.layers[-1].get_weights()[0])
    assert all(not path.startswith(model.layers[0].name + "/")
               for table in model.optimizer.get_state()["slots"].values() for path in table)


def test_model_trainable_false_freezes_everything(rng):
    x, y = blobs(rng, n=32)
    model = small_cnn()
    model.trainable = False
    model.compile("sgd", "sparse_categorical_crossentropy")
    before = model.get_weights()
    model.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 4


# ---- the fused loss in a model -------------------------------------------------------------------------------
def test_training_stays_finite_on_extreme_logits():
    model = fastconv.Sequential([Input((2,)), Dense(3, activation="softmax", kernel_initializer="ones")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x = np.array([[1e4, 1e4], [-1e4, 2e4]], dtype=np.float32)
    model.layers[0].set_weights([np.array([[1, -1, 0], [0, 0, 1]], dtype=np.float32), np.zeros(3)])
    y = np.array([[0, 1, 0], [1, 0, 0]], dtype=np.float32)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss) and loss > 1e3                       # exact: no 1e-7 clipping on the fused path
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert np.isfinite(model.evaluate(x, y, verbose=0))

    binary = fastconv.Sequential([Input((1,)), Dense(1, activation="sigmoid", kernel_initializer="ones")])
    binary.compile(optimizer="sgd", loss="binary_crossentropy")
    loss = binary.evaluate(np.array([[500.0], [-500.0]]), np.array([0.0, 1.0]), verbose=0)
    np.testing.assert_allclose(loss, 500.0, rtol=1e-6)


# ---- reproducibility -------------------------------------------------------------------------------------------
def _train_copy(weights, x, y, seed, threads_module, n_threads, generator=False):
    threads_module.set_num_threads(n_threads)
    model = small_cnn(dropout=0.3)
    model.set_weights(weights)
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    data = EndlessFlow(x, y, 16) if generator else x
    history = model.fit(data, None if generator else y, batch_size=16, epochs=2, verbose=0, seed=seed,
                        validation_split=0.0 if generator else 0.2)
    return model.get_weights(), history.history


@pytest.mark.parametrize("generator", [False, True], ids=["arrays", "generator"])
def test_fit_with_a_seed_is_bit_reproducible_across_thread_counts(generator, rng, threads):
    x, y = blobs(rng, n=64)
    weights = small_cnn().get_weights()
    w1, h1 = _train_copy(weights, x, y, 7, threads, 1, generator)
    w2, h2 = _train_copy(weights, x, y, 7, threads, 2, generator)
    w3, _ = _train_copy(weights, x, y, 8, threads, 2, generator)
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert h1 == h2
    assert any(not np.array_equal(a, b) for a, b in zip(w1, w3))    # the seed matters (shuffle and dropout)


def test_fit_builds_reproducibly_with_a_seed(rng):
    x, y = blobs(rng, n=32)
    results = []
    for _ in range(2):
        model = fastconv.Sequential([Conv2D(2, 3, activation="relu"), Flatten(), Dropout(0.2),
                                     Dense(3, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=1, verbose=0, seed=3)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ---- callbacks and verbosity -----------------------------------------------------------------------------------
def test_verbose_zero_is_silent_and_one_prints_a_progress_bar(rng, capsys):
    x, y = blobs(rng, n=32)
    model = small_cnn()
    model.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(x, y, epochs=2, batch_size=8, verbose=1, validation_data=(x, y))
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "4/4 [" in out and "val_accuracy:" in out
    model.evaluate(x, y, verbose=1)
    assert "loss:" in capsys.readouterr().out
    model.fit(x, y, epochs=1, batch_size=8, verbose=2)
    assert "4/4 - " in capsys.readouterr().out


def test_learning_rate_scheduler(rng):
    x, y = blobs(rng, n=32)
    model = small_cnn()
    model.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=3, verbose=0,
                        callbacks=[callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))])
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.05, 0.1 / 3])


def test_train_on_batch_and_test_on_batch(rng):
    x, y = blobs(rng, n=16)
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    loss, acc = model.train_on_batch(x, y)
    assert np.isfinite(loss) and 0 <= acc <= 1 and model.optimizer.iterations == 1
    assert model.test_on_batch(x, y, return_dict=True).keys() == {"loss", "accuracy"}
