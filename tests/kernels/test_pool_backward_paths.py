"""max_pool2d_grad gathers each input cell's gradient from the windows that contain it (any geometry) and falls back
to a scatter when some index lies outside its own window; both must equal the reference exactly, including input
cells that no window covers, sums over overlapping windows, and every channel count's vector tail."""
import numpy as np
import pytest

import fastconv
import reference

CASES = [
    # (H, W, pool, stride, padding, ceil_mode)
    (7, 9, 2, 2, "valid", False),          # last row and column in no window
    (7, 9, 2, 2, "valid", True),           # partial windows at the far edges
    (8, 7, 3, 3, 1, False),
    (5, 11, (2, 3), (2, 3), ((1, 0), (0, 2)), True),
    (9, 9, 3, 2, "same", False),           # overlapping windows: a cell may win up to 4 of them
    (6, 6, 2, 1, "valid", False),
    (10, 10, 2, 3, "valid", False),        # stride > pool: cells between windows
    (12, 5, (5, 1), (1, 2), "valid", False),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [1, 5, 17, 64])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("h, w, pool, stride, padding, ceil_mode", CASES)
def test_gather_matches_reference(h, w, pool, stride, padding, ceil_mode, data_format, channels, dtype, rng):
    shape = (2, h, w, channels) if data_format == "channels_last" else (2, channels, h, w)
    kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode, data_format=data_format)
    for _ in range(2):  # fresh np.empty buffers each time: uncovered cells must be written as zeros
        # Few distinct values: many ties, so one cell often wins several overlapping windows.
        x = rng.integers(0, 3, shape).astype(dtype)
        out, idx = fastconv.max_pool2d(x, pool, return_indices=True, **kw)
        gy = rng.standard_normal(out.shape).astype(dtype)
        got = fastconv.max_pool2d_grad(gy, idx, x.shape, pool_size=pool, **kw)
        expected = reference.max_pool2d_grad(gy, idx, x.shape, data_format=data_format)
        assert got.dtype == dtype
        if dtype == np.float64:  # the reference sums in the same order, in float64: equal to the bit
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_nan_winners_take_their_gradient(data_format, rng):
    x = rng.standard_normal((1, 6, 6, 3)).astype(np.float32)
    x[0, 1, 1, 0] = x[0, 4, 5, 2] = np.nan
    if data_format == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    kw = dict(stride=1, padding="same", data_format=data_format)
    out, idx = fastconv.max_pool2d(x, 3, return_indices=True, **kw)
    gy = rng.standard_normal(out.shape).astype(np.float32)
    got = fastconv.max_pool2d_grad(gy, idx, x.shape, pool_size=3, **kw)
    expected = reference.max_pool2d_grad(gy, idx, x.shape, data_format=data_format)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_indices_outside_their_window_are_scattered(data_format, rng):
    """Indices that max_pool2d would not give (here: every window pointing at one far cell, and a shuffle) still
    get the scatter's meaning, as in PyTorch's max_unpool."""
    shape = (2, 8, 8, 3) if data_format == "channels_last" else (2, 3, 8, 8)
    x = rng.standard_normal(shape)
    out, idx = fastconv.max_pool2d(x, 2, return_indices=True, data_format=data_format)
    gy = rng.standard_normal(out.shape)
    for foreign in (np.full_like(idx, 63), rng.permutation(idx.reshape(-1)).reshape(idx.shape)):
        got = fastconv.max_pool2d_grad(gy, foreign, x.shape, pool_size=2, data_format=data_format)
        expected = reference.max_pool2d_grad(gy, foreign, x.shape, data_format=data_format)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_out_of_range_indices_are_refused_not_scattered(rng):
    x = rng.standard_normal((1, 4, 4, 2))
    out, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    idx[0, 1, 1, 1] = 16
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 16\)"):
        fastconv.max_pool2d_grad(np.ones_like(out), idx, x.shape, pool_size=2)
