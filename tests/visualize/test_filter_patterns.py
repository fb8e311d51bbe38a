"""Filter patterns: gradient ascent in input space makes each filter respond far more than to the starting noise,
is reproducible, does not depend on batching or layout, and writes a grid; bad requests get clear errors."""
import numpy as np
import pytest
from PIL import Image

import fastconv
from fastconv import visualize
from fastconv.layers import Add, Conv2D, Dense, Flatten, Input, MaxPooling2D


def _random_convnet(data_format=None):
    """Three 3x3 ReLU convolutions and a pooling on 24x24 RGB, Keras's initialisation (zero biases)."""
    cf = data_format == "channels_first"
    fastconv.utils.set_random_seed(1)
    kw = dict(activation="relu", data_format=data_format)
    return fastconv.Sequential([
        Input((3, 24, 24) if cf else (24, 24, 3)),
        Conv2D(8, 3, name="c1", **kw), MaxPooling2D(2, name="p1", data_format=data_format),
        Conv2D(8, 3, name="c2", **kw), Conv2D(8, 3, name="c3", **kw),
    ], name="random_convnet")


def _mean_responses(model, layer_name, images):
    """Each image's mean activation of "its" filter: image k for filter k (channels_last layer output)."""
    out = fastconv.Model(model.input, model.get_layer(layer_name).output).predict(images, verbose=0)
    return np.array([out[k, :, :, k].mean() for k in range(len(images))], dtype=np.float64)


def _ratios(model, layer_name, **kwargs):
    patterns, starts = visualize.filter_patterns(model, layer_name, seed=0, return_start=True, **kwargs)
    return (_mean_responses(model, layer_name, visualize.pattern_to_input(patterns)),
            _mean_responses(model, layer_name, starts))


def test_ascent_makes_each_filter_respond_at_least_five_times_more_than_to_the_start():
    model = _random_convnet()
    dead = total = 0
    for layer_name in ("c1", "p1", "c2", "c3"):
        after, before = _ratios(model, layer_name)
        total += len(after)
        for k, (a, b) in enumerate(zip(after, before)):
            if a == 0 and b == 0:           # zero even on mid-grey noise: no gradient to follow
                dead += 1
                continue
            assert a >= 5 * b, f"filter {k} of layer {layer_name!r}: {a:.4g} on its pattern, {b:.4g} on the start"
    assert dead <= total // 8, f"{dead} of {total} filters never responded"


def test_ascent_raises_the_response_of_every_filter_of_a_trained_model(square_model):
    """Trained filters with large biases respond to noise already; the ascent still raises every one of them
    (within the value range, the room above the start is what the weights leave: a filter whose bias already
    saturates on noise has little, so the bound per filter is only "raised", and most must at least double)."""
    model = square_model[0]
    for layer_name in ("conv1", "pool1", "conv2"):
        after, before = _ratios(model, layer_name)
        assert (before > 0).all()
        assert (after > before).all(), (layer_name, after / before)
        assert np.median(after / before) >= 2


def test_patterns_are_reproducible_and_do_not_depend_on_batching(rng):
    model = _random_convnet()
    together = visualize.filter_patterns(model, "c2", [1, 4, 6], seed=3, steps=10)
    assert together.shape == (3, 24, 24, 3) and together.dtype == np.uint8
    alone = visualize.filter_pattern(model, "c2", 4, seed=3, steps=10)
    assert np.abs(alone.astype(int) - together[1]).max() <= 1
    np.testing.assert_array_equal(visualize.filter_pattern(model, "c2", 4, seed=3, steps=10), alone)
    assert not np.array_equal(visualize.filter_pattern(model, "c2", 4, seed=4, steps=10), alone)
    assert len(visualize.filter_patterns(model, "c1", steps=2)) == 8         # every filter by default


def test_channels_first_gives_the_same_patterns():
    last, first = _random_convnet(), _random_convnet("channels_first")
    first.set_weights(last.get_weights())
    a = visualize.filter_patterns(last, "c3", [0, 2, 5], seed=0, steps=15)
    b = visualize.filter_patterns(first, "c3", [0, 2, 5], seed=0, steps=15)
    assert b.shape == (3, 24, 24, 3)                                         # returned channels last
    assert np.abs(a.astype(int) - b).max() <= 1
    back = visualize.pattern_to_input(b, data_format="channels_first")
    assert back.shape == (3, 3, 24, 24) and back.dtype == np.float32


def test_graph_models_any_input_size_and_value_range():
    inputs = Input((None, None, 1), name="image")
    stem = Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    branch = Conv2D(4, 3, padding="same", activation="relu", name="branch")(stem)
    model = fastconv.Model(inputs, Add(name="add")([stem, branch]))
    pattern = visualize.filter_pattern(model, "add", 2, size=(20, 30), seed=0)
    assert pattern.shape == (20, 30, 1)
    patterns, starts = visualize.filter_patterns(model, "add", [2], size=20, seed=0, value_range=(0, 255),
                                                 return_start=True)
    assert starts.min() >= 0 and starts.max() <= 20.0 + 1e-4                 # faint noise: grey levels 0..20
    response = fastconv.Model(model.input, model.get_layer("add").output)
    after = response.predict(visualize.pattern_to_input(patterns, (0, 255)), verbose=0)[0, :, :, 2].mean()
    assert after >= 5 * response.predict(starts, verbose=0)[0, :, :, 2].mean()


def test_plot_filters_writes_a_grid_and_blanks_dead_filters(tmp_path):
    model = _random_convnet()
    bias = model.get_layer("c3").bias
    bias.assign(np.where(np.arange(8) == 1, -1e3, bias.value))                 # filter 1 can never fire
    path = visualize.plot_filters(model, "c3", n=6, path=tmp_path / "sub" / "filters.png", images_per_row=4,
                                  steps=10)
    assert path == str(tmp_path / "sub" / "filters.png")
    with Image.open(path) as picture:
        picture.load()
        # 6 tiles of 24 px upscaled 3x to 72, 4 per row, 2 white pixels around each
        assert picture.size == (4 * 74 + 2, 2 * 74 + 2) and picture.mode == "RGB"
        grid = np.asarray(picture)
    dead_tile = grid[2:74, 76:148]                                             # row 0, column 1
    assert (dead_tile == 0).all()
    live_tile = grid[2:74, 2:74]
    assert live_tile.min() == 0 and live_tile.max() == 255                     # stretched to the full range
    assert (grid[76:, 2 * 74 + 2:] == 255).all()                               # the missing tiles are blank


def test_bad_requests_get_clear_errors():
    model = _random_convnet()
    with pytest.raises(ValueError, match=r"layer_name must be one of the layers of model 'random_convnet': "
                                         r"\['c1', 'p1', 'c2', 'c3'\]; received layer_name='c4'"):
        visualize.filter_pattern(model, "c4", 0)
    with pytest.raises(ValueError, match=r"filter_index must be an int in \[0, 8\) for layer 'c2' with 8 filters; "
                                         r"received filter_index=8"):
        visualize.filter_pattern(model, "c2", 8)
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError, match="filter_index must be an int"):
            visualize.filter_pattern(model, "c2", bad)
    with pytest.raises(ValueError, match=r"size must match the input of model 'random_convnet', which takes "
                                         r"images of shape \(24, 24, 3\); received size=32"):
        visualize.filter_pattern(model, "c2", 0, size=32)
    with pytest.raises(ValueError, match="steps must be a positive int; received steps=0"):
        visualize.filter_pattern(model, "c2", 0, steps=0)
    with pytest.raises(ValueError, match="step_size must be a positive number; received step_size=-1"):
        visualize.filter_pattern(model, "c2", 0, step_size=-1)
    with pytest.raises(ValueError, match="seed must be a non-negative int or None; received seed=-3"):
        visualize.filter_pattern(model, "c2", 0, seed=-3)
    with pytest.raises(ValueError, match=r"value_range must be two finite numbers with low < high; received "
                                         r"value_range=\(1, 0\)"):
        visualize.filter_pattern(model, "c2", 0, value_range=(1, 0))
    head = fastconv.Sequential([Input((6, 6, 1)), Conv2D(2, 3, name="conv"), Flatten(name="flat"),
                                Dense(2, name="dense")])
    with pytest.raises(ValueError, match=r"layer 'dense' has output shape \(None, 2\); layers with spatial "
                                         r"outputs: \['conv'\]"):
        visualize.filter_pattern(head, "dense", 0)
    a, b = Input((6, 6, 1)), Input((6, 6, 1))
    two = fastconv.Model([a, b], Add(name="sum")([Conv2D(2, 3, name="ca")(a), Conv2D(2, 3, name="cb")(b)]))
    with pytest.raises(ValueError, match="one image input"):
        visualize.filter_pattern(two, "sum", 0)
    with pytest.raises(ValueError, match="pattern must be a uint8"):
        visualize.pattern_to_input(np.zeros((4, 4, 3)))
