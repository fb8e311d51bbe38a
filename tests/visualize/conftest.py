"""Fixtures for the visualisation tests: 32x32 images of dim noise, half of them with a bright square in the
top-left quadrant, and a tiny convnet trained on them once per session (a few seconds).

The helpers live here, not in an importable module, so the tests work whether or not tests/visualize is a package.
Everything runs on one kernel thread: these models are tiny, and on a shared, busy machine OpenMP teams spend far
longer waiting for each other than computing (thread counts are tested in tests/kernels).
"""
import contextlib
import types

import numpy as np
import pytest

SIZE, SIDE = 32, 6


def square_images(n, rng):
    """Dim noise in [0, 0.3]; label 1 adds a bright SIDE x SIDE square somewhere inside the top-left quadrant.
    Returns (x float32 (n, 32, 32, 1), y int (n,), the squares' top-left corners (n, 2), -1 without one)."""
    x = rng.uniform(0.0, 0.3, (n, SIZE, SIZE, 1)).astype(np.float32)
    y = rng.integers(0, 2, n)
    corners = np.full((n, 2), -1, dtype=np.int64)
    for i in np.flatnonzero(y):
        top, left = rng.integers(1, SIZE // 2 - SIDE, size=2)
        x[i, top:top + SIDE, left:left + SIDE] = 1.0
        corners[i] = top, left
    return x, y, corners


def square_convnet(name="squares", head="max", data_format=None, dtype=None):
    """conv1 (4 filters) - pool1 - conv2 (8 filters, 16x16) - a head - Dense(2, softmax) "head".

    ``head="max"``: global max pooling ("global_pool"), which learns the task in a few epochs; ``"flatten"``:
    max pooling and Flatten ("pool2", "flatten"), the MNIST convnet's head.
    """
    import fastconv
    from fastconv.layers import Conv2D, Dense, Flatten, GlobalMaxPooling2D, Input, MaxPooling2D

    shape = (SIZE, SIZE, 1) if data_format != "channels_first" else (1, SIZE, SIZE)
    kw = dict(data_format=data_format, dtype=dtype)
    tail = [GlobalMaxPooling2D(name="global_pool", **kw)] if head == "max" else \
        [MaxPooling2D(2, name="pool2", **kw), Flatten(name="flatten", **kw)]
    return fastconv.Sequential([
        Input(shape, dtype=dtype),
        Conv2D(4, 3, padding="same", activation="relu", name="conv1", **kw),
        MaxPooling2D(2, name="pool1", **kw),
        Conv2D(8, 3, padding="same", activation="relu", name="conv2", **kw),
        *tail,
        Dense(2, activation="softmax", name="head", dtype=dtype),
    ], name=name)


@contextlib.contextmanager
def one_kernel_thread():
    import fastconv
    from fastconv import _threads

    previous = _threads._requested_threads
    fastconv.set_num_threads(1)
    try:
        yield
    finally:
        fastconv.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _one_kernel_thread():
    with one_kernel_thread():
        yield


@pytest.fixture(scope="session")
def squares():
    """The data and model helpers: ``size``, ``side``, ``images(n, rng)``, ``convnet(name, head, ...)``."""
    return types.SimpleNamespace(size=SIZE, side=SIDE, images=square_images, convnet=square_convnet)


@pytest.fixture(scope="session")
def square_model():
    """(model, x_test, y_test, corners_test): the trained square convnet and 200 held-out images."""
    import fastconv

    rng = np.random.default_rng(0)
    x, y, _ = square_images(320, rng)
    x_test, y_test, corners = square_images(200, rng)
    fastconv.utils.set_random_seed(0)
    model = square_convnet()
    model.compile(optimizer=fastconv.optimizers.Adam(learning_rate=1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    with one_kernel_thread():
        model.fit(x, y, epochs=5, batch_size=32, verbose=0, seed=0)
        accuracy = float((model.predict(x_test, verbose=0).argmax(axis=1) == y_test).mean())
    assert accuracy >= 0.95, f"the square convnet did not learn its task (held-out accuracy {accuracy:.3f})"
    return model, x_test, y_test, corners
