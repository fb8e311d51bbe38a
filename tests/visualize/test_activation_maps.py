"""Intermediate activations: shapes and values equal each layer's output, one grid per layer written as PNGs of
the expected size, dead channels blank, and errors that list the valid layer names."""
import numpy as np
import pytest
from PIL import Image

import fastconv
from fastconv import visualize
from fastconv.layers import Activation, Add, Conv2D, Dense, Flatten, Input, MaxPooling2D


def _graph_model(data_format=None):
    cf = data_format == "channels_first"
    inputs = Input((3, 12, 12) if cf else (12, 12, 3), name="image")
    kw = dict(padding="same", data_format=data_format)
    stem = Conv2D(5, 3, activation="relu", name="stem", **kw)(inputs)
    branch = Conv2D(5, 3, name="branch", **kw)(stem)
    merged = Activation("relu", name="relu")(Add(name="add")([stem, branch]))
    pooled = MaxPooling2D(2, name="pool", data_format=data_format)(merged)
    out = Dense(2, name="dense")(Flatten(name="flat", data_format=data_format)(pooled))
    fastconv.utils.set_random_seed(0)
    return fastconv.Model(inputs, out, name="graph")


def test_activation_shapes_and_values_equal_each_layers_output(rng, square_model):
    for model, x in ((square_model[0], square_model[1][:3]),
                     (_graph_model(), rng.random((3, 12, 12, 3)).astype(np.float32))):
        values = visualize.activations(model, x)
        names = [layer.name for layer in model.layers if not isinstance(layer, fastconv.layers.InputLayer)]
        assert list(values) == names
        for name, value in values.items():
            expected = fastconv.Model(model.input, model.get_layer(name).output).predict(x, verbose=0)
            assert value.shape == (3,) + tuple(model.get_layer(name).output.shape[1:]) == expected.shape
            np.testing.assert_array_equal(value, expected)
        assert list(visualize.activations(model, x, [names[1], names[0]])) == [names[1], names[0]]
        one = visualize.activations(model, x, names[0])
        assert list(one) == [names[0]] and one[names[0]].shape[0] == 3


def test_activation_grid_tiles_normalised_channels_and_blanks_dead_ones(rng):
    activation = rng.random((5, 7, 20)).astype(np.float32) * 10
    activation[:, :, 3] = 0.0                                     # dead
    activation[:, :, 4] = 2.5                                     # constant: no information either
    grid = visualize.activation_grid(activation, images_per_row=8, scale=2)
    assert grid.shape == (3 * (10 + 1) + 1, 8 * (14 + 1) + 1) and grid.dtype == np.uint8
    tile = lambda k: grid[1 + (k // 8) * 11:1 + (k // 8) * 11 + 10, 1 + (k % 8) * 15:1 + (k % 8) * 15 + 14]  # noqa
    assert (tile(3) == 0).all() and (tile(4) == 0).all()
    # each live tile is standardised on its own: a channel scaled by 100 looks the same
    scaled = activation.copy()
    scaled[:, :, 0] *= 100
    np.testing.assert_array_equal(visualize.activation_grid(scaled, images_per_row=8, scale=2), grid)
    assert abs(float(tile(0).mean()) - 128) < 12
    np.testing.assert_array_equal(tile(0)[::2, ::2], tile(0)[1::2, 1::2])   # 2x nearest-neighbour upscaling
    first = visualize.activation_grid(activation.transpose(2, 0, 1), images_per_row=8, scale=2,
                                      data_format="channels_first")
    np.testing.assert_array_equal(first, grid)
    assert visualize.activation_grid(activation).shape == (2 * (35 + 1) + 1, 16 * (49 + 1) + 1)   # scale 7


def test_plot_activations_writes_one_png_per_spatial_layer(tmp_path, rng):
    model = _graph_model()
    image = rng.random((12, 12, 3)).astype(np.float32)
    paths = visualize.plot_activations(model, image, path=tmp_path / "maps", images_per_row=4, scale=3)
    names = ["stem", "branch", "add", "relu", "pool"]
    assert [p.rsplit("/", 1)[-1] for p in paths] == [f"activations_{i:02d}_{n}.png" for i, n in enumerate(names)]
    for path, name in zip(paths, names):
        rows = model.get_layer(name).output.shape[1] * 3
        with Image.open(path) as picture:
            picture.load()
            # 5 channels, 4 per row: 2 rows of tiles
            assert picture.size == (4 * (rows + 1) + 1, 2 * (rows + 1) + 1) and picture.mode == "L"
    # channels_first: the same pictures
    first = _graph_model("channels_first")
    first.set_weights(model.get_weights())
    paths_first = visualize.plot_activations(first, image.transpose(2, 0, 1)[None], ["pool", "stem"],
                                             path=tmp_path / "first", images_per_row=4, scale=3)
    for ours, theirs in zip(paths_first, [paths[4], paths[0]]):
        with Image.open(ours) as a, Image.open(theirs) as b:
            assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1


def test_bad_layer_names_and_inputs(tmp_path, square_model):
    model, x = square_model[0], square_model[1]
    with pytest.raises(ValueError, match=r"layer_names must be one of the layers of model 'squares': \['conv1', "
                                         r"'pool1', 'conv2', 'global_pool', 'head'\]; received "
                                         r"layer_names='conv9'"):
        visualize.activations(model, x[:2], ["conv1", "conv9"])
    with pytest.raises(TypeError, match="layer_names must be a layer name or a non-empty list"):
        visualize.activations(model, x[:2], [])
    with pytest.raises(ValueError, match=r"layer 'head' has output shape \(None, 2\), which is not an image batch; "
                                         r"layers with spatial outputs: \['conv1', 'pool1', 'conv2'\]"):
        visualize.plot_activations(model, x[0], ["conv1", "head"], path=tmp_path)
    with pytest.raises(ValueError, match="image must be one sample; received a batch of 2"):
        visualize.plot_activations(model, x[:2], path=tmp_path)
    with pytest.raises(ValueError, match=r"image must have shape \(None, 32, 32, 1\)"):
        visualize.plot_activations(model, np.zeros((28, 28, 1)), path=tmp_path)
    with pytest.raises(TypeError, match="received model of type NoneType"):
        visualize.activations(None, x[:2])
    with pytest.raises(ValueError, match=r"activation must be one sample's 3-D real array"):
        visualize.activation_grid(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="scale must be a positive int or None; received scale=0"):
        visualize.activation_grid(np.zeros((4, 4, 3)), scale=0)
    assert list(tmp_path.iterdir()) == []                            # nothing written on bad input
