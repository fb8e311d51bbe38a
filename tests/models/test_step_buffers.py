"""Inside a model's training step, Conv2D outputs and max-pool input gradients overwrite the arrays the same layer
produced in the previous step when nothing else holds them (no fresh, page-faulting allocation); an array anyone
still holds is never overwritten, results are identical to fresh arrays, and fit lets the arrays go."""
import numpy as np

import fastconv
from fastconv import layers as L
from fastconv.layers.base import Layer


class KeepInputs(Layer):
    """Identity that keeps a reference to every input it sees (as a user's custom layer might)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, x, training=False):
        self.seen.append(x)
        self._cache = ()
        return x

    def backward(self, grad_output, need_input_grad=True):
        return grad_output, []


def _model(extra=()):
    fastconv.utils.set_random_seed(1)
    model = fastconv.Sequential([L.Input((14, 14, 3)), L.Conv2D(8, 3, activation="relu"), *extra,
                                 L.MaxPooling2D(2), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(2),
                                 L.Flatten(), L.Dense(3, activation="softmax")])
    model.compile(optimizer=fastconv.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((8, 14, 14, 3)).astype(np.float32), rng.integers(0, 3, 8)


def test_reused_arrays_give_the_results_of_fresh_ones(monkeypatch):
    x, y = _data()
    reusing = _model()
    losses = [reusing.train_on_batch(x, y) for _ in range(4)]
    conv = reusing.layers[0]
    assert "output" in conv.__dict__.get("_recycle", {})  # the mechanism is on
    monkeypatch.setattr(Layer, "_recycled", lambda self, role, shape, dtype: None)
    fresh = _model()
    assert [fresh.train_on_batch(x, y) for _ in range(4)] == losses
    for a, b in zip(reusing.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_an_array_someone_holds_is_never_overwritten():
    x, y = _data()
    keeper = KeepInputs()
    model = _model([keeper])
    for _ in range(3):
        model.train_on_batch(x, y)
    kept = [a.copy() for a in keeper.seen]
    model.train_on_batch(x * 2, y)
    for before, a in zip(kept, keeper.seen):
        np.testing.assert_array_equal(a, before)
    assert len({id(a) for a in keeper.seen}) == len(keeper.seen)  # each step wrote a new array


def test_fit_lets_the_reused_arrays_go():
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert all("_recycle" not in layer.__dict__ for layer in model.layers)
