"""ImageDataGenerator.flow: batches, epochs, shuffling, seeds, subsets and argument errors."""
import math

import numpy as np
import pytest

from fastconv.preprocessing import ImageDataGenerator, NumpyArrayIterator


@pytest.fixture
def data(rng):
    x = rng.integers(0, 256, (100, 6, 6, 1), dtype=np.uint8)
    y = np.arange(100)
    return x, y


def take(it, count):
    return [next(it) for _ in range(count)]


def test_batches_per_epoch_and_sizes(data):
    x, y = data
    it = ImageDataGenerator().flow(x, y, batch_size=32, seed=0)
    assert isinstance(it, NumpyArrayIterator)
    assert len(it) == math.ceil(100 / 32) == 4
    batches = take(it, 8)                                            # two epochs
    assert [len(b[0]) for b in batches] == [32, 32, 32, 4] * 2
    for xb, yb in batches:
        assert xb.dtype == np.float32 and xb.shape[1:] == (6, 6, 1)
        np.testing.assert_array_equal(xb, x[yb].astype(np.float32))   # no augmentation: the samples themselves
    for epoch in (batches[:4], batches[4:]):
        assert sorted(np.concatenate([yb for _, yb in epoch]).tolist()) == list(range(100))


def test_iteration_is_endless_and_a_for_loop_works(data):
    x, y = data
    it = ImageDataGenerator().flow(x, y, batch_size=50)
    count = 0
    for xb, yb in it:
        count += 1
        if count == 7:
            break
    assert count == 7 and iter(it) is it


def test_shuffle_false_keeps_order(data):
    x, y = data
    it = ImageDataGenerator().flow(x, y, batch_size=30, shuffle=False)
    labels = np.concatenate([yb for _, yb in take(it, 8)])
    np.testing.assert_array_equal(labels, np.concatenate([y, y]))


def test_shuffle_reshuffles_every_epoch(data):
    x, y = data
    it = ImageDataGenerator().flow(x, y, batch_size=100, seed=3)
    orders = [yb for _, yb in take(it, 3)]
    assert not np.array_equal(orders[0], y)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])


def test_seed_makes_batches_reproducible(data):
    x, y = data
    gen = ImageDataGenerator(rotation_range=20, width_shift_range=0.2, zoom_range=0.2, horizontal_flip=True)
    a = take(gen.flow(x, y, batch_size=16, seed=11), 10)
    b = take(gen.flow(x, y, batch_size=16, seed=11), 10)
    c = take(gen.flow(x, y, batch_size=16, seed=12), 10)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_unseeded_iterators_differ(data):
    x, y = data
    gen = ImageDataGenerator(rotation_range=20)
    xa, _ = next(gen.flow(x, y, shuffle=False))
    xb, _ = next(gen.flow(x, y, shuffle=False))
    assert not np.array_equal(xa, xb)


def test_indexing_matches_next(data):
    x, y = data
    gen = ImageDataGenerator(rotation_range=30, horizontal_flip=True)
    it = gen.flow(x, y, batch_size=32, seed=5)
    by_index = [it[i] for i in (2, 0, 3, 1, -1)]
    by_next = take(gen.flow(x, y, batch_size=32, seed=5), 4)
    for (xa, ya), (xb, yb) in zip(by_index, [by_next[i] for i in (2, 0, 3, 1, 3)]):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(IndexError, match=r"received index=4"):
        it[4]


def test_on_epoch_end_and_reset(data):
    x, y = data
    it = ImageDataGenerator().flow(x, y, batch_size=10, seed=2)
    first = it[0][1]
    it.on_epoch_end()
    assert it.epoch == 1 and not np.array_equal(it[0][1], first)
    next(it)
    next(it)
    it.reset()
    np.testing.assert_array_equal(next(it)[1], it[0][1])


def test_without_labels_yields_images_only(data):
    x, _ = data
    xb = next(ImageDataGenerator().flow(x, batch_size=8))
    assert isinstance(xb, np.ndarray) and xb.shape == (8, 6, 6, 1)


def test_labels_keep_their_type_and_shape(data):
    x, y = data
    onehot = np.eye(10, dtype=np.float32)[y % 10]
    xb, yb = next(ImageDataGenerator().flow(x, onehot, batch_size=8, shuffle=False))
    np.testing.assert_array_equal(yb, onehot[:8])


def test_channels_first(rng):
    x = rng.random((10, 3, 5, 7)).astype(np.float32)
    gen = ImageDataGenerator(horizontal_flip=True, rotation_range=10, data_format="channels_first")
    xb, _ = next(gen.flow(x, np.zeros(10), batch_size=10, seed=0))
    assert xb.shape == (10, 3, 5, 7)


def test_validation_split_subsets(rng):
    x = rng.random((50, 4, 4, 1)).astype(np.float32)
    y = np.arange(50) % 5
    gen = ImageDataGenerator(validation_split=0.2)
    val = gen.flow(x, y, batch_size=100, shuffle=False, subset="validation")
    train = gen.flow(x, y, batch_size=100, shuffle=False, subset="training")
    assert val.n == 10 and train.n == 40
    np.testing.assert_array_equal(next(val)[0], x[:10])
    np.testing.assert_array_equal(next(train)[0], x[10:])


def test_class_split_check_catches_sorted_labels(rng):
    x = rng.random((50, 4, 4, 1))
    y = np.repeat(np.arange(5), 10)                                  # sorted by label
    gen = ImageDataGenerator(validation_split=0.2)
    with pytest.raises(ValueError, match=r"shuffle them first.*validation_split=0.2"):
        gen.flow(x, y, subset="training")
    assert gen.flow(x, y, subset="training", ignore_class_split=True).n == 40


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"batch_size": 0}, ValueError, r"batch_size=0"),
    ({"batch_size": 2.5}, TypeError, r"batch_size=2.5"),
    ({"shuffle": "yes"}, TypeError, r"shuffle='yes'"),
    ({"seed": -1}, ValueError, r"seed=-1"),
    ({"seed": 1.5}, TypeError, r"seed=1.5"),
    ({"subset": "test"}, ValueError, r"subset='test'"),
    ({"subset": "training"}, ValueError, r"validation_split > 0; received validation_split=0.0"),
])
def test_flow_argument_errors(data, kwargs, error, pattern):
    x, y = data
    with pytest.raises(error, match=pattern):
        ImageDataGenerator().flow(x, y, **kwargs)


def test_flow_data_errors(data):
    x, y = data
    gen = ImageDataGenerator()
    with pytest.raises(ValueError, match=r"add a channel axis.*received x with shape \(100, 6, 6\)"):
        gen.flow(x[..., 0], y)
    with pytest.raises(ValueError, match=r"same length; received x with shape \(100, 6, 6, 1\) and y with shape "
                                         r"\(99,\)"):
        gen.flow(x, y[:99])
    with pytest.raises(ValueError, match=r"no images; received x with shape \(0, 6, 6, 1\)"):
        gen.flow(x[:0])
    with pytest.raises(TypeError, match=r"dtype <U1"):
        gen.flow(np.full((2, 2, 2, 1), "a"))
    with pytest.warns(UserWarning, match=r"1, 3 or 4 expected"):
        gen.flow(np.zeros((4, 5, 5, 7)))
