"""The tiled weight gradient takes each register tile's rows from one tap's input channels, or, when no padding is
reached and a group has few channels, from consecutive (tap, channel) rows across taps. Both must equal the
reference for every channel count around the tile height, with groups, strides and dilation."""
import numpy as np
import pytest

import fastconv
import reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [1, 3, 5, 7, 9, 12])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("kernel, stride, dilation, padding", [
    ((3, 3), 1, 1, "valid"),     # across taps
    ((2, 3), 2, 1, "valid"),     # across taps, strided, uneven kernel
    ((3, 3), 1, 2, "valid"),     # across taps, dilated
    ((3, 3), 1, 1, "same"),      # padding reached: per-tap tiles
    ((5, 5), 3, 1, "valid"),     # stride skips the last input columns
])
def test_grad_weight_tiles_match_reference(kernel, stride, dilation, padding, groups, channels, dtype, rng):
    n, h, w, k = 2, 11, 13, 8 * groups
    c = channels * groups
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    weight_shape = kernel + (channels, k)
    opts = dict(stride=stride, dilation=dilation, padding=padding, groups=groups)
    out_shape = fastconv.conv2d(x, np.zeros(weight_shape, dtype), **opts).shape
    gy = rng.standard_normal(out_shape).astype(dtype)
    got = fastconv.conv2d_grad_weight(gy, x, weight_shape, algorithm="direct", **opts)
    expected = reference.conv2d_grad_weight(gy, x, weight_shape, **opts)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_non_finite_operands_give_the_definitions_result(padding, rng):
    """Without padding, "auto" runs the direct kernels whatever the values (no product meets a padded zero); with
    padding a non-finite grad_output sends it to im2col. Either way NaN and infinities land where the zero-padded
    definition puts them."""
    x = rng.standard_normal((2, 9, 9, 3))
    w = rng.standard_normal((3, 3, 3, 8))
    x[0, 0, 0, 1] = np.inf
    x[1, 4, 5, 2] = np.nan
    w[0, 0, 1, 3] = -np.inf
    y = fastconv.conv2d(x, w, padding=padding)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(reference.conv2d(x, w, padding=padding)))
    gy = rng.standard_normal(y.shape)
    gy[0, 0, 0, 5] = np.inf
    gy[1, -1, -1, 2] = np.nan
    got = fastconv.conv2d_grad_weight(gy, x, w.shape, padding=padding)
    expected = reference.conv2d_grad_weight(gy, x, w.shape, padding=padding)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-10)
