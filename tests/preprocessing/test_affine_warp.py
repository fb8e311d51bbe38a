"""fastconv.preprocessing.affine: the batched warp against scipy.ndimage and Keras's matrix construction."""
import numpy as np
import pytest
from scipy import ndimage

from fastconv.preprocessing.affine import affine_matrices, warp_affine

# scipy's names for the same boundary rules: its plain "wrap" and "constant" treat the edges differently.
SCIPY_MODES = {"nearest": "nearest", "reflect": "reflect", "wrap": "grid-wrap", "constant": "grid-constant"}


def scipy_warp(x, matrices, mode, cval):
    """Independent reference: scipy's order-1 affine_transform, one image and channel at a time."""
    out = np.empty(x.shape, dtype=np.float64)
    for i in range(x.shape[0]):
        for c in range(x.shape[-1]):
            out[i, :, :, c] = ndimage.affine_transform(x[i, :, :, c].astype(np.float64), matrices[i, :, :2],
                                                       matrices[i, :, 2], order=1, mode=SCIPY_MODES[mode],
                                                       cval=cval)
    return out


def keras_matrix(theta, tx, ty, shear, zx, zy, size):
    """Keras's apply_affine_transform matrix for a square image: built in (x, y), then axes swapped."""
    t, s = np.deg2rad(theta), np.deg2rad(shear)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    m = rotation @ shift @ shearing @ zoom
    o = size / 2 - 0.5
    m = np.array([[1, 0, o], [0, 1, o], [0, 0, 1]]) @ m @ np.array([[1, 0, -o], [0, 1, -o], [0, 0, 1]])
    m[:, [0, 1]] = m[:, [1, 0]]
    m[[0, 1]] = m[[1, 0]]
    return m[:2]


def random_matrices(rng, n, rows, cols):
    return affine_matrices(rows, cols, theta=rng.uniform(-60, 60, n), tx=rng.uniform(-4, 4, n),
                           ty=rng.uniform(-4, 4, n), shear=rng.uniform(-30, 30, n), zx=rng.uniform(0.6, 1.4, n),
                           zy=rng.uniform(0.6, 1.4, n), flip_horizontal=rng.random(n) < 0.5,
                           flip_vertical=rng.random(n) < 0.5)


def test_matrices_match_keras_construction(rng):
    for _ in range(20):
        theta, tx, ty, shear = rng.uniform(-90, 90), rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(-40, 40)
        zx, zy = rng.uniform(0.5, 1.5, 2)
        ours = affine_matrices(9, 9, theta=theta, tx=tx, ty=ty, shear=shear, zx=zx, zy=zy)[0]
        np.testing.assert_allclose(ours, keras_matrix(theta, tx, ty, shear, zx, zy, 9), atol=1e-12)


@pytest.mark.parametrize("mode", ["nearest", "reflect", "wrap", "constant"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_warp_matches_scipy(rng, mode, dtype):
    x = rng.standard_normal((5, 11, 9, 3)).astype(dtype)
    m = random_matrices(rng, 5, 11, 9)
    got = warp_affine(x, m, fill_mode=mode, cval=-2.5)
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(got, scipy_warp(x, m, mode, -2.5), atol=1e-4)


def test_far_outside_coordinates_follow_fill_mode(rng):
    x = rng.random((1, 6, 7, 2))
    m = affine_matrices(6, 7, tx=23.5, ty=-17.25, zx=3.0)        # samples land several image-widths away
    for mode in ("nearest", "reflect", "wrap", "constant"):
        np.testing.assert_allclose(warp_affine(x, m, fill_mode=mode, cval=0.75), scipy_warp(x, m, mode, 0.75),
                                   atol=1e-12)


def test_batch_is_independent_per_image(rng):
    x = rng.random((7, 10, 10, 2)).astype(np.float32)
    m = random_matrices(rng, 7, 10, 10)
    whole = warp_affine(x, m)
    for i in range(7):
        np.testing.assert_array_equal(whole[i], warp_affine(x[i:i + 1], m[i])[0])


def test_chunking_does_not_change_results(rng, monkeypatch):
    from fastconv.preprocessing import affine

    x = rng.random((9, 12, 12, 3)).astype(np.float32)
    m = random_matrices(rng, 9, 12, 12)
    whole = warp_affine(x, m, fill_mode="constant")
    monkeypatch.setattr(affine, "_CHUNK_PIXELS", 300)             # two images per chunk
    np.testing.assert_array_equal(warp_affine(x, m, fill_mode="constant"), whole)


def test_whole_pixel_transforms_are_exact(rng):
    x = rng.random((3, 8, 8, 3)).astype(np.float32)
    for k in (1, 2, 3):
        np.testing.assert_array_equal(warp_affine(x, affine_matrices(8, 8, theta=90 * k)), np.rot90(x, k, (1, 2)))
    np.testing.assert_array_equal(warp_affine(x, affine_matrices(8, 8, flip_horizontal=True)), x[:, :, ::-1])
    np.testing.assert_array_equal(warp_affine(x, affine_matrices(8, 8, flip_vertical=True)), x[:, ::-1])
    np.testing.assert_array_equal(warp_affine(x, affine_matrices(8, 8)), x)


def test_channels_first_is_the_transposed_channels_last(rng):
    x = rng.random((4, 9, 7, 3)).astype(np.float32)
    m = random_matrices(rng, 4, 9, 7)
    got = warp_affine(x.transpose(0, 3, 1, 2), m, fill_mode="reflect", data_format="channels_first")
    np.testing.assert_array_equal(got, warp_affine(x, m, fill_mode="reflect").transpose(0, 3, 1, 2))


def test_integer_input_becomes_float32(rng):
    x = rng.integers(0, 256, (2, 5, 5, 1), dtype=np.uint8)
    got = warp_affine(x, affine_matrices(5, 5, flip_horizontal=True))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x[:, :, ::-1].astype(np.float32))


def test_warp_argument_errors(rng):
    x = rng.random((2, 4, 4, 1))
    m = affine_matrices(4, 4)
    with pytest.raises(ValueError, match=r"fill_mode=.*'mirror'"):
        warp_affine(x, m, fill_mode="mirror")
    with pytest.raises(ValueError, match=r"received data_format='NHWC'"):
        warp_affine(x, m, data_format="NHWC")
    with pytest.raises(ValueError, match=r"received x with shape \(4, 4, 1\)"):
        warp_affine(x[0], m)
    with pytest.raises(ValueError, match=r"received matrices with shape \(3, 2, 3\)"):
        warp_affine(x, np.zeros((3, 2, 3)))

