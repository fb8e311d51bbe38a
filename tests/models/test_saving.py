"""model.save / fastconv.load_model: exact round trip, optimizer state, atomic writes, no unpickling."""
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import fastconv
from fastconv import callbacks, optimizers
from fastconv.layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D
from fastconv.models import saving


def make_model():
    model = fastconv.Sequential([
        Input((8, 8, 2)), Conv2D(4, 3, padding="same", activation="relu", name="conv"), MaxPooling2D(2),
        Conv2D(6, (2, 3), strides=(1, 2), data_format="channels_last", kernel_initializer="he_uniform"),
        Flatten(), Dropout(0.25, seed=1), Dense(5, activation="relu"), Dense(3, activation="softmax")], name="m")
    model.compile(optimizer=optimizers.Adam(learning_rate=0.01, amsgrad=True),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture
def data(rng):
    x = rng.standard_normal((40, 8, 8, 2)).astype(np.float32)
    return x, rng.integers(0, 3, 40)


def test_round_trip_is_exact_and_training_resumes_identically(tmp_path, data):
    x, y = data
    model = make_model()
    model.layers[2].trainable = False
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=0)
    path = tmp_path / "model.fcm"
    model.save(path)
    loaded = fastconv.load_model(path)

    assert loaded.get_config() == model.get_config()
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert loaded.layers[2].trainable is False and loaded.layers[0].trainable is True
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    state, loaded_state = model.optimizer.get_state(), loaded.optimizer.get_state()
    assert loaded_state["iterations"] == state["iterations"] == 10
    assert loaded_state["slots"].keys() == state["slots"].keys()
    for slot in state["slots"]:
        assert loaded_state["slots"][slot].keys() == state["slots"][slot].keys()
        for key, value in state["slots"][slot].items():
            np.testing.assert_array_equal(value, loaded_state["slots"][slot][key])
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))

    # Training continues the same way (the Dropout layer is seeded, its generator restarts: reset the original's).
    model.layers[4].set_generator(np.random.default_rng(5))
    loaded.layers[4].set_generator(np.random.default_rng(5))
    h1 = model.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=4).history
    h2 = loaded.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=4).history
    assert h1 == h2
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_file_is_a_zip_of_json_and_npy_that_numpy_opens_without_pickle(tmp_path, data):
    model = make_model()
    model.fit(*data, epochs=1, verbose=0)
    path = tmp_path / "model.fcm"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        config = json.loads(zf.read("config.json"))
    assert "config.json" in names and "weights/conv/kernel.npy" in names
    assert any(n.startswith("optimizer/velocity_hat/") for n in names)
    assert config["format"] == "fastconv.model" and config["compile"]["loss"]["class_name"] == \
        "SparseCategoricalCrossentropy"
    with np.load(path, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["weights/conv/kernel"], model.get_layer("conv").get_weights()[0])


def test_load_never_unpickles(tmp_path):
    model = make_model()
    path = tmp_path / "evil.fcm"
    model.save(path)
    # Replace a weight by a pickled object array: loading must refuse it rather than unpickle.
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array([{"boom": 1}], dtype=object), allow_pickle=True)
    members["weights/conv/kernel.npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    with pytest.raises(ValueError, match="allow_pickle"):
        fastconv.load_model(path)

    (tmp_path / "pickle.fcm").write_bytes(pickle.dumps(model.get_config()))
    with pytest.raises(ValueError, match="not a fastconv model file.*never unpickles"):
        fastconv.load_model(tmp_path / "pickle.fcm")


def test_config_cannot_name_arbitrary_classes(tmp_path):
    model = make_model()
    path = tmp_path / "m.fcm"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(members["config.json"])
    config["model"]["config"]["layers"][1]["class_name"] = "os.system"
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    with pytest.raises(ValueError, match=r"class_name must be one of .*received class_name='os.system'"):
        fastconv.load_model(path)


def test_save_is_atomic(tmp_path, monkeypatch, data):
    model = make_model()
    path = tmp_path / "model.fcm"
    model.save(path)
    original = path.read_bytes()
    model.fit(*data, epochs=1, verbose=0)

    calls = {"n": 0}
    real_write_array = np.lib.format.write_array

    def crash_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash mid-write")
        return real_write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == original                          # the old file is untouched
    assert os.listdir(tmp_path) == ["model.fcm"]                  # and no temporary file is left behind
    monkeypatch.undo()
    model.save(path)
    np.testing.assert_array_equal(fastconv.load_model(path).get_weights()[0], model.get_weights()[0])


def test_save_weights_and_load_weights(tmp_path, data):
    model = make_model()
    model.fit(*data, epochs=1, verbose=0)
    model.save_weights(tmp_path / "w.fcw")
    other = make_model()
    other.load_weights(tmp_path / "w.fcw")
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="weights only"):
        fastconv.load_model(tmp_path / "w.fcw")
    smaller = fastconv.Sequential([Input((8, 8, 2)), Conv2D(4, 3)])
    with pytest.raises(ValueError, match="has 2 weights but the file holds 8"):
        smaller.load_weights(tmp_path / "w.fcw")


def test_load_model_without_compile_and_uncompiled_models(tmp_path):
    model = fastconv.Sequential([Input((3,)), Dense(2)])
    model.save(tmp_path / "plain.fcm")
    loaded = fastconv.load_model(tmp_path / "plain.fcm")
    assert not loaded.compiled and loaded.input_shape == (None, 3)
    compiled = make_model()
    compiled.save(tmp_path / "c.fcm")
    assert not fastconv.load_model(tmp_path / "c.fcm", compile=False).compiled


def test_overwrite_false_and_unbuilt(tmp_path):
    model = make_model()
    model.save(tmp_path / "m.fcm")
    with pytest.raises(FileExistsError, match="overwrite=False"):
        model.save(tmp_path / "m.fcm", overwrite=False)
    with pytest.raises(ValueError, match="must be built"):
        fastconv.Sequential([Dense(2)]).save(tmp_path / "x.fcm")


def test_model_checkpoint_saves_best_atomically(tmp_path, data, monkeypatch):
    x, y = data
    model = make_model()
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(saving.os, "replace", lambda a, b: (replaced.append((a, b)), real_replace(a, b)))
    values = iter([0.5, 0.4, 0.6, 0.3])

    class FakeMetric(callbacks.Callback):                         # a deterministic monitored value
        def on_epoch_end(self, epoch, logs=None):
            logs["val_score"] = next(values)

    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "best-{epoch:02d}.fcm"), monitor="val_score",
                                           mode="min", save_best_only=True)
    model.fit(x, y, epochs=4, verbose=0, callbacks=[FakeMetric(), checkpoint])
    assert sorted(os.listdir(tmp_path)) == ["best-01.fcm", "best-02.fcm", "best-04.fcm"]
    assert all(os.path.dirname(tmp) == str(tmp_path) for tmp, _ in replaced)   # temp file in the same folder
    assert checkpoint.best == 0.3
    every = callbacks.ModelCheckpoint(tmp_path / "last.fcw", save_weights_only=True)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[every])
    other = make_model()
    other.load_weights(tmp_path / "last.fcw")
    np.testing.assert_array_equal(other.get_weights()[0], model.get_weights()[0])


def test_early_stopping_restores_best_weights(data):
    x, y = data
    model = make_model()
    values = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.2])
    snapshots = []

    class Score(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = next(values)
            snapshots.append(self.model.get_weights())

    stop = callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    history = model.fit(x, y, epochs=6, verbose=0, callbacks=[Score(), stop])
    assert len(history.history["loss"]) == 4 and stop.stopped_epoch == 3 and stop.best_epoch == 1
    for a, b in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_baseline(data):
    """Keras's rule: epochs that improve but stay below the baseline still use up the patience."""
    for baseline, expected_epochs in ((None, 4), (0.5, 3)):
        values = iter([0.1, 0.2, 0.15, 0.18, 0.19, 0.11])

        class Score(callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs["val_accuracy"] = next(values)

        stop = callbacks.EarlyStopping(monitor="val_accuracy", patience=2, baseline=baseline)
        history = make_model().fit(*data, epochs=6, verbose=0, callbacks=[Score(), stop])
        assert stop.monitor_mode == "max" and len(history.history["loss"]) == expected_epochs


def test_early_stopping_warns_about_a_missing_monitor(data):
    model = make_model()
    with pytest.warns(RuntimeWarning, match="val_loss"):
        model.fit(*data, epochs=1, verbose=0, callbacks=[callbacks.EarlyStopping()])
