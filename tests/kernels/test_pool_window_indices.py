"""max_pool2d's one-byte window positions (index_format="window"): the same winners as the reference's flat
indices, the same gradients, and clear errors for what they cannot hold."""
import numpy as np
import pytest

import fastconv
import reference

# (input shape NHWC, pool, stride, explicit padding ((top, bottom), (left, right)), ceil_mode)
GEOMETRIES = [
    ((2, 9, 11, 5), (2, 2), (2, 2), ((0, 0), (0, 0)), False),      # the common 2x2 / 2
    ((2, 9, 11, 70), (3, 3), (2, 2), ((1, 1), (1, 1)), False),     # overlapping, padded, more than 64 channels
    ((1, 7, 7, 3), (3, 3), (1, 1), ((1, 1), (1, 1)), False),       # stride 1: every cell in up to 9 windows
    ((3, 8, 8, 16), (2, 3), (1, 2), ((0, 0), (1, 1)), False),      # uneven window and strides
    ((1, 5, 6, 4), (5, 5), (1, 1), ((2, 2), (2, 2)), False),       # 25-cell windows, partly padding
    ((2, 7, 7, 8), (2, 2), (2, 2), ((0, 0), (0, 0)), True),        # ceil_mode: last windows cut short
]


def _expected_positions(flat, input_w, pool, stride, padding):
    """Window positions dy * pool_w + dx (padded cells counted) of the reference's flat winners."""
    ho = np.arange(flat.shape[1])[None, :, None, None]
    wo = np.arange(flat.shape[2])[None, None, :, None]
    dy = flat // input_w - (ho * stride[0] - padding[0][0])
    dx = flat % input_w - (wo * stride[1] - padding[1][0])
    return (dy * pool[1] + dx).astype(np.uint8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, pool, stride, padding, ceil_mode", GEOMETRIES)
def test_window_positions_name_the_references_winners(shape, pool, stride, padding, ceil_mode, dtype, rng,
                                                      threads):
    # Few distinct values: many ties (the first in the window wins), and NaNs (they win, a later one takes it).
    x = rng.integers(-3, 3, size=shape).astype(dtype)
    x[rng.random(shape) < 0.03] = np.nan
    opts = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
    expected_out, flat = reference.max_pool2d(x, pool, **opts)
    gy = rng.standard_normal(expected_out.shape).astype(dtype)
    expected_grad = reference.max_pool2d_grad(gy, flat, shape)
    grads = []
    for n in (1, 2):
        fastconv.set_num_threads(n)
        out, positions = fastconv.max_pool2d(x, pool, return_indices=True, index_format="window", **opts)
        assert positions.dtype == np.uint8
        np.testing.assert_array_equal(out, expected_out)
        np.testing.assert_array_equal(positions, _expected_positions(flat, shape[2], pool, stride, padding))
        grads.append(fastconv.max_pool2d_grad(gy, positions, shape, pool_size=pool, index_format="window",
                                              **opts))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(grads[0], expected_grad, rtol=tol, atol=tol)
    np.testing.assert_array_equal(grads[0], grads[1])
    # and the same bits as the flat indices' gradient, which sums in the same order
    flat_grad = fastconv.max_pool2d_grad(gy, flat, shape, pool_size=pool, **opts)
    np.testing.assert_array_equal(grads[0], flat_grad)


def test_the_layer_keeps_window_positions(rng):
    """MaxPooling2D keeps one byte per output cell between its passes (channels_last); its input gradient is the
    reference's. (Its finite-difference checks are in tests/layers.)"""
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    layer = fastconv.layers.MaxPooling2D(2)
    out = layer(x, training=True)
    assert layer._cache[1].dtype == np.uint8
    gy = rng.standard_normal(out.shape).astype(np.float32)
    grad, _ = layer.backward(gy)
    _, flat = reference.max_pool2d(x, 2)
    np.testing.assert_allclose(grad, reference.max_pool2d_grad(gy, flat, x.shape), rtol=1e-6, atol=1e-6)


def test_window_positions_reject_what_they_cannot_hold(rng):
    x = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
    with pytest.raises(ValueError, match='index_format="window" is for data_format="channels_last"'):
        fastconv.max_pool2d(x, 2, return_indices=True, index_format="window", data_format="channels_first")
    big = rng.standard_normal((1, 17, 17, 1)).astype(np.float32)
    with pytest.raises(ValueError, match="at most 256 cells; received a pool window of 289 cells"):
        fastconv.max_pool2d(big, 17, return_indices=True, index_format="window")
    with pytest.raises(ValueError, match="index_format must be \"flat\" or \"window\"; received index_format='byte'"):
        fastconv.max_pool2d(x, 2, return_indices=True, index_format="byte")
    with pytest.raises(TypeError, match="index_format must be the string"):
        fastconv.max_pool2d(x, 2, return_indices=True, index_format=1)

    out, positions = fastconv.max_pool2d(x, 2, return_indices=True, index_format="window")
    with pytest.raises(TypeError, match="indices must be uint8 with index_format=\"window\".*dtype=int64"):
        fastconv.max_pool2d_grad(out, positions.astype(np.int64), x.shape, index_format="window")
    bad = positions.copy()
    bad[0, 1, 2, 1] = 4  # a 2x2 window has positions 0-3
    with pytest.raises(ValueError, match="a cell of its own 2x2 window inside the input.*values up to 4"):
        fastconv.max_pool2d_grad(out, bad, x.shape, index_format="window")
    # a position on a padded cell names nothing inside the input
    _, padded = fastconv.max_pool2d(x, 3, stride=2, padding=((1, 1), (1, 1)), return_indices=True,
                                    index_format="window")
    gy = np.ones(padded.shape, np.float32)
    padded = padded.copy()
    padded[0, 0, 0, 0] = 0  # the top-left window's first cell is padding
    with pytest.raises(ValueError, match="inside the input"):
        fastconv.max_pool2d_grad(gy, padded, x.shape, pool_size=3, stride=2, padding=((1, 1), (1, 1)),
                                 index_format="window")
