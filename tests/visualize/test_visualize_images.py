"""The picture helpers: jet against matplotlib's, bilinear resizing against Pillow's, grids, heatmap overlays,
and image files that decode with Pillow at the size written."""
import numpy as np
import pytest
from PIL import Image

from fastconv import visualize
from fastconv.visualize.images import apply_colormap, as_display, image_grid, resize, to_uint8


def test_jet_runs_from_dark_blue_through_green_to_dark_red():
    colours = apply_colormap(np.array([0.0, 0.125, 0.375, 0.5, 0.625, 0.875, 1.0]), "jet").tolist()
    assert colours == [[0, 0, 128], [0, 0, 255], [0, 255, 255], [128, 255, 128], [255, 255, 0], [255, 0, 0],
                       [128, 0, 0]]
    np.testing.assert_array_equal(apply_colormap(np.array([-1.0, 2.0])), apply_colormap(np.array([0.0, 1.0])))


def test_jet_is_close_to_matplotlibs():
    matplotlib = pytest.importorskip("matplotlib")
    t = np.linspace(0, 1, 101)
    theirs = matplotlib.colormaps["jet"](t)[:, :3] * 255
    assert np.abs(apply_colormap(t, "jet").astype(float) - theirs).max() <= 0.15 * 255    # MATLAB-style jet
    grey = apply_colormap(t, "gray")
    assert (grey[:, 0] == grey[:, 1]).all() and (np.diff(grey[:, 0].astype(int)) >= 0).all()
    hot = apply_colormap(t, "hot").astype(int)
    assert (np.diff(hot, axis=0) >= 0).all() and hot[0].tolist() == [0, 0, 0] and hot[-1].tolist() == [255] * 3


def test_bilinear_resize_matches_pillow_when_enlarging(rng):
    small = rng.random((5, 7)).astype(np.float32)
    for size in ((20, 28), (13, 9), (5, 7)):
        ours = resize(small, size)
        theirs = np.asarray(Image.fromarray(small, mode="F").resize(size[::-1], Image.Resampling.BILINEAR))
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    colour = rng.random((3, 4, 3))
    np.testing.assert_allclose(resize(colour, (6, 8))[..., 1], resize(colour[..., 1], (6, 8)))
    nearest = resize(np.arange(6).reshape(2, 3), (4, 6), "nearest")
    assert nearest.tolist()[0] == [0, 0, 1, 1, 2, 2] and nearest.dtype == np.arange(1).dtype


def test_image_grid_places_tiles_row_by_row():
    tiles = np.stack([np.full((2, 3), 10 * (i + 1), dtype=np.uint8) for i in range(5)])
    grid = image_grid(tiles, images_per_row=2, padding=1, pad_value=255)
    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1)
    assert (grid[1:3, 1:4] == 10).all() and (grid[1:3, 5:8] == 20).all() and (grid[7:9, 1:4] == 50).all()
    assert (grid[7:9, 5:8] == 255).all() and (grid[0] == 255).all()
    assert image_grid(tiles[:, :, :, None].repeat(3, axis=3), images_per_row=9, padding=0).shape == (2, 15, 3)


def test_overlay_blends_the_coloured_heatmap_at_the_images_size(rng):
    image = rng.integers(0, 256, (40, 60, 3)).astype(np.uint8)
    heatmap = rng.random((5, 6))
    np.testing.assert_array_equal(visualize.overlay_heatmap(image, heatmap, alpha=0.0), image)
    full = visualize.overlay_heatmap(image, heatmap, alpha=1.0)
    np.testing.assert_array_equal(full, apply_colormap(resize(heatmap, (40, 60))))
    half = visualize.overlay_heatmap(image, heatmap, alpha=0.5)
    assert half.shape == (40, 60, 3) and half.dtype == np.uint8
    assert np.abs(half.astype(float) - (image.astype(float) + full) / 2).max() <= 1
    grey = visualize.overlay_heatmap(np.zeros((8, 8), dtype=np.float32), np.ones((2, 2)), alpha=1.0)
    assert grey.shape == (8, 8, 3) and (grey == [128, 0, 0]).all()
    # float images outside [0, 1] (0..255, mean-subtracted ...) are stretched for display
    np.testing.assert_allclose(as_display(np.array([[-2.0, 2.0]]))[0, :, 0], [0.0, 1.0])


def test_bad_pictures_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"colormap must be one of \['jet', 'hot', 'gray', 'grey'\]; received "
                                         r"colormap='viridis'"):
        apply_colormap(np.zeros(3), "viridis")
    with pytest.raises(ValueError, match=r"heatmap must hold values in \[0, 1\]; received values in \[0, 2\]"):
        visualize.overlay_heatmap(np.zeros((4, 4)), np.array([[0.0, 2.0]]))
    with pytest.raises(ValueError, match=r"heatmap must be 2-D"):
        visualize.overlay_heatmap(np.zeros((4, 4)), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]; received alpha=1.5"):
        visualize.overlay_heatmap(np.zeros((4, 4)), np.zeros((2, 2)), alpha=1.5)
    with pytest.raises(ValueError, match=r"image must be \(rows, cols\) or \(rows, cols, channels\) with 1, 3 or 4 "
                                         r"channels; received image with shape \(4, 4, 2\)"):
        visualize.overlay_heatmap(np.zeros((4, 4, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"float values must lie in \[0, 1\]; received values in \[0, 255\] "
                                         r"\(divide 0..255 images by 255\)"):
        to_uint8(np.array([0.0, 255.0]))
    with pytest.raises(ValueError, match="integer values must lie in 0..255"):
        to_uint8(np.array([0, 256]))
    with pytest.raises(ValueError, match="must not contain NaN"):
        to_uint8(np.array([np.nan]))
    with pytest.raises(TypeError, match="must hold real numbers"):
        to_uint8(np.array(["a"]))
    with pytest.raises(ValueError, match=r"size must be \(rows, cols\), two positive ints; received size=\(0, 3\)"):
        resize(np.zeros((2, 2)), (0, 3))
    with pytest.raises(ValueError, match=r"path must end with an image extension Pillow can write"):
        visualize.save_image(tmp_path / "picture.txt", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="the directory of path must exist"):
        visualize.save_image(tmp_path / "missing" / "picture.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="JPEG has no alpha channel"):
        visualize.save_image(tmp_path / "picture.jpg", np.zeros((4, 4, 4)))
    with pytest.raises(TypeError, match="path must be a str or os.PathLike; received path of type int"):
        visualize.save_image(3, np.zeros((4, 4)))
    with pytest.raises(OSError, match="cannot read image file .*nothing.png"):
        visualize.read_image(tmp_path / "nothing.png")
    (tmp_path / "fake.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match="cannot read image file .*fake.png"):
        visualize.read_image(tmp_path / "fake.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.png"]     # no partial files left behind


def test_saved_images_decode_at_the_size_written(tmp_path, rng):
    cases = {"grey.png": (rng.random((9, 13)), "L"), "column.png": (rng.random((9, 13, 1)), "L"),
             "rgb.png": (rng.integers(0, 256, (9, 13, 3)).astype(np.uint8), "RGB"),
             "rgba.png": (rng.integers(0, 256, (9, 13, 4)).astype(np.uint8), "RGBA"),
             "mask.png": (rng.random((9, 13)) > 0.5, "L"), "photo.jpg": (rng.random((9, 13, 3)), "RGB")}
    for name, (array, mode) in cases.items():
        path = visualize.save_image(tmp_path / name, array)
        with Image.open(path) as picture:
            picture.load()
            assert picture.size == (13, 9) and picture.mode == mode
            if not name.endswith(".jpg"):
                np.testing.assert_array_equal(np.asarray(picture).reshape(np.shape(array)), to_uint8(array))
    np.testing.assert_array_equal(visualize.read_image(tmp_path / "rgb.png"), cases["rgb.png"][0])
    assert visualize.read_image(tmp_path / "rgb.png", "L").shape == (9, 13)
