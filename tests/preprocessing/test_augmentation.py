"""ImageDataGenerator's transforms, checked on images where the answer is known."""
import time

import numpy as np
import pytest

from fastconv.preprocessing import ImageDataGenerator


@pytest.fixture
def image(rng):
    return rng.random((8, 8, 3)).astype(np.float32)


def test_horizontal_flip_is_reversed_columns(image):
    gen = ImageDataGenerator()
    np.testing.assert_array_equal(gen.apply_transform(image, {"flip_horizontal": True}), image[:, ::-1])


def test_vertical_flip_is_reversed_rows(image):
    gen = ImageDataGenerator()
    np.testing.assert_array_equal(gen.apply_transform(image, {"flip_vertical": True}), image[::-1])


def test_flips_channels_first(image):
    gen = ImageDataGenerator(data_format="channels_first")
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    np.testing.assert_array_equal(gen.apply_transform(chw, {"flip_horizontal": True}), chw[:, :, ::-1])
    np.testing.assert_array_equal(gen.apply_transform(chw, {"flip_vertical": True}), chw[:, ::-1])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turns_equal_rot90(image, k):
    gen = ImageDataGenerator()
    np.testing.assert_array_equal(gen.apply_transform(image, {"theta": 90 * k}), np.rot90(image, k))
    np.testing.assert_array_equal(gen.apply_transform(image, {"theta": -90 * k}), np.rot90(image, -k))


def test_half_turn_on_a_non_square_image(rng):
    x = rng.random((5, 9, 2)).astype(np.float32)
    np.testing.assert_array_equal(ImageDataGenerator().apply_transform(x, {"theta": 180}), x[::-1, ::-1])


def test_random_flip_gives_one_of_the_two_answers(image):
    gen = ImageDataGenerator(horizontal_flip=True)
    seen = set()
    for seed in range(20):
        out = gen.random_transform(image, seed=seed)
        if np.array_equal(out, image):
            seen.add("same")
        else:
            np.testing.assert_array_equal(out, image[:, ::-1])
            seen.add("flipped")
    assert seen == {"same", "flipped"}


def test_zero_ranges_are_the_identity(image):
    gen = ImageDataGenerator(rotation_range=0, width_shift_range=0.0, height_shift_range=0, shear_range=0.0,
                             zoom_range=[1, 1])
    np.testing.assert_array_equal(gen.random_transform(image, seed=3), image)
    batch = np.stack([image, image * 2])
    xb, _ = next(gen.flow(batch, [0, 1], shuffle=False))
    np.testing.assert_array_equal(xb, batch)
    assert gen.get_random_transform(image.shape, seed=1) == {
        "theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0,
        "flip_horizontal": False, "flip_vertical": False}


def test_pixel_shift_moves_content(image):
    gen = ImageDataGenerator()
    # positive tx samples from the right (Keras): content moves 2 columns to the left
    np.testing.assert_array_equal(gen.apply_transform(image, {"tx": 2})[:, :-2], image[:, 2:])
    np.testing.assert_array_equal(gen.apply_transform(image, {"tx": -3})[:, 3:], image[:, :-3])
    np.testing.assert_array_equal(gen.apply_transform(image, {"ty": 1})[:-1], image[1:])
    np.testing.assert_array_equal(gen.apply_transform(image, {"ty": -2})[2:], image[:-2])


def test_random_pixel_shift_range_moves_by_whole_pixels(image):
    gen = ImageDataGenerator(width_shift_range=[3])                # a list: one of its values, random sign
    for seed in range(6):
        out = gen.random_transform(image, seed=seed)
        assert np.array_equal(out[:, :-3], image[:, 3:]) or np.array_equal(out[:, 3:], image[:, :-3])


def test_fractional_shift_ranges_scale_with_their_own_side():
    gen = ImageDataGenerator(width_shift_range=0.25, height_shift_range=0.1)
    draws = [gen.get_random_transform((40, 8, 1), seed=s) for s in range(200)]
    tx = np.array([d["tx"] for d in draws])
    ty = np.array([d["ty"] for d in draws])
    assert np.abs(tx).max() <= 2.0 and np.abs(tx).max() > 1.5          # 0.25 of width 8
    assert np.abs(ty).max() <= 4.0 and np.abs(ty).max() > 3.0          # 0.1 of height 40


def test_integer_shift_range_draws_whole_pixels():
    gen = ImageDataGenerator(width_shift_range=3, height_shift_range=2.0)
    draws = [gen.get_random_transform((10, 10, 1), seed=s) for s in range(200)]
    assert {d["tx"] for d in draws} == {-2.0, -1.0, 0.0, 1.0, 2.0}
    ty = np.array([d["ty"] for d in draws])                           # float >= 1: pixels, uniform
    assert np.abs(ty).max() <= 2.0 and len(np.unique(ty)) > 100


def test_zoom_and_shear_on_a_linear_ramp():
    """Bilinear interpolation reproduces a linear ramp exactly, so the warped values are known in closed form."""
    rows, cols = np.mgrid[0:9, 0:9].astype(np.float32)
    ramp = np.stack([rows, cols], axis=-1)                           # channel 0 = row index, 1 = column index
    gen = ImageDataGenerator()
    zoomed = gen.apply_transform(ramp, {"zx": 0.5, "zy": 0.75})    # zoom in: sources drawn towards the centre
    np.testing.assert_allclose(zoomed[..., 1], 0.5 * (cols - 4) + 4, atol=1e-5)
    np.testing.assert_allclose(zoomed[..., 0], 0.75 * (rows - 4) + 4, atol=1e-5)
    sheared = gen.apply_transform(ramp, {"shear": 10})             # inside the image: col_src = col - sin * row
    expected_col = (cols - 4) - np.sin(np.deg2rad(10)) * (rows - 4) + 4
    expected_row = np.cos(np.deg2rad(10)) * (rows - 4) + 4
    inside = (expected_col >= 0) & (expected_col <= 8)
    np.testing.assert_allclose(sheared[..., 1][inside], expected_col[inside], atol=1e-5)
    np.testing.assert_allclose(sheared[..., 0], expected_row, atol=1e-5)


@pytest.mark.parametrize("mode, expected_left", [
    ("constant", lambda x: np.full_like(x[:, :2], 7.0)),
    ("nearest", lambda x: np.repeat(x[:, :1], 2, axis=1)),
    ("reflect", lambda x: x[:, 1::-1]),                      # dcba|abcd: column -1 -> 0, -2 -> 1
    ("wrap", lambda x: x[:, -2:]),                           # abcd|abcd: column -1 -> last
])
def test_fill_modes(image, mode, expected_left):
    out = ImageDataGenerator(fill_mode=mode, cval=7.0).apply_transform(image, {"tx": -2})   # content moves right
    np.testing.assert_array_equal(out[:, 2:], image[:, :-2])
    np.testing.assert_array_equal(out[:, :2], expected_left(image))


def test_rescale_applies_after_the_transform():
    x = np.full((2, 4, 4, 1), 255, dtype=np.uint8)
    gen = ImageDataGenerator(rescale=1 / 255, horizontal_flip=True)
    xb = next(gen.flow(x, batch_size=2, seed=0))
    assert xb.dtype == np.float32
    np.testing.assert_allclose(xb, 1.0, rtol=1e-6)
    np.testing.assert_array_equal(ImageDataGenerator(rescale=None).standardize(x), x.astype(np.float32))


def test_random_transform_is_reproducible_with_a_seed(image):
    gen = ImageDataGenerator(rotation_range=30, width_shift_range=0.2, height_shift_range=0.2, shear_range=10,
                             zoom_range=0.2, horizontal_flip=True, fill_mode="reflect")
    a, b = gen.random_transform(image, seed=5), gen.random_transform(image, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, gen.random_transform(image, seed=6))
    assert a.shape == image.shape and a.dtype == np.float32


def test_each_image_of_a_batch_gets_its_own_transform():
    x = np.tile(np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1), (16, 1, 1, 1))
    xb = next(ImageDataGenerator(rotation_range=45).flow(x, batch_size=16, seed=1))
    assert len({xb[i].tobytes() for i in range(16)}) == 16


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"rotation_range": -5}, ValueError, r"rotation_range=-5"),
    ({"rotation_range": "10"}, TypeError, r"rotation_range='10'"),
    ({"width_shift_range": -0.1}, ValueError, r"width_shift_range=-0.1"),
    ({"height_shift_range": -2}, ValueError, r"height_shift_range=-2"),
    ({"width_shift_range": True}, TypeError, r"width_shift_range=True"),
    ({"width_shift_range": [[1, 2]]}, ValueError, r"width_shift_range=\[\[1, 2\]\]"),
    ({"height_shift_range": "lots"}, TypeError, r"height_shift_range='lots'"),
    ({"shear_range": float("nan")}, ValueError, r"shear_range=nan"),
    ({"zoom_range": 1.5}, ValueError, r"zoom_range=1.5"),
    ({"zoom_range": [1.2, 0.8]}, ValueError, r"zoom_range=\[1.2, 0.8\]"),
    ({"zoom_range": [0, 1]}, ValueError, r"zoom_range=\[0, 1\]"),
    ({"zoom_range": [1, 2, 3]}, ValueError, r"zoom_range=\[1, 2, 3\]"),
    ({"horizontal_flip": 1}, TypeError, r"horizontal_flip=1"),
    ({"fill_mode": "mirror"}, ValueError, r"fill_mode='mirror'"),
    ({"cval": None}, TypeError, r"cval=None"),
    ({"rescale": "1/255"}, TypeError, r"rescale='1/255'"),
    ({"data_format": "NCHW"}, ValueError, r"data_format='NCHW'"),
    ({"validation_split": 1.0}, ValueError, r"validation_split=1.0"),
])
def test_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ImageDataGenerator(**kwargs)


def test_bad_images_and_parameters(image):
    gen = ImageDataGenerator()
    with pytest.raises(ValueError, match=r"received x with shape \(2, 8, 8, 3\)"):
        gen.apply_transform(np.stack([image, image]), {})
    with pytest.raises(ValueError, match=r"received img_shape with shape \(8, 8\)"):
        gen.get_random_transform((8, 8))
    with pytest.raises(ValueError, match=r"unknown keys \['rotation'\]"):
        gen.apply_transform(image, {"rotation": 90})
    with pytest.raises(TypeError, match=r"transform_parameters must be a dict"):
        gen.apply_transform(image, [("theta", 90)])
    # Keras's own keys for effects not implemented here are accepted when unset
    np.testing.assert_array_equal(gen.apply_transform(image, {"brightness": None, "channel_shift_intensity": None}),
                                  image)


def test_augmenting_256_images_of_150x150x3_is_fast(rng):
    """Performance sanity check for the cats-vs-dogs recipe: prints the time, asserts nothing about it."""
    x = rng.integers(0, 256, (256, 150, 150, 3), dtype=np.uint8)
    gen = ImageDataGenerator(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
                             zoom_range=0.2, horizontal_flip=True, rescale=1 / 255)
    it = gen.flow(x, np.zeros(256), batch_size=256, seed=0)
    start = time.perf_counter()
    xb, _ = next(it)
    seconds = time.perf_counter() - start
    print(f"\nImageDataGenerator: one batch of 256 augmented 150x150x3 images in {seconds:.3f} s")
    assert xb.shape == x.shape and xb.dtype == np.float32 and 0 <= xb.min() and xb.max() <= 1
