"""max_pool2d_grad has a write-once path for windows that do not overlap (stride == pool size) and a scatter
path otherwise; both must equal the reference, including input cells that no window covers."""
import numpy as np
import pytest

import fastconv
import reference

CASES = [
    # (H, W, pool, stride, padding, ceil_mode): uncovered last rows/cols, padding, partial ceil windows
    (7, 9, 2, 2, "valid", False),
    (7, 9, 2, 2, "valid", True),
    (8, 7, 3, 3, 1, False),
    (5, 11, (2, 3), (2, 3), ((1, 0), (0, 2)), True),
    (9, 9, 3, 2, "same", False),          # overlapping: scatter path
    (6, 6, 2, 1, "valid", False),         # overlapping: scatter path
]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("h, w, pool, stride, padding, ceil_mode", CASES)
def test_backward_paths_match_reference(h, w, pool, stride, padding, ceil_mode, data_format, rng):
    shape = (2, h, w, 5) if data_format == "channels_last" else (2, 5, h, w)
    kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode, data_format=data_format)
    for _ in range(3):  # fresh np.empty buffers each time: uncovered cells must be written as zeros
        x = rng.standard_normal(shape)
        out, idx = fastconv.max_pool2d(x, pool, return_indices=True, **kw)
        gy = rng.standard_normal(out.shape)
        got = fastconv.max_pool2d_grad(gy, idx, x.shape, pool_size=pool, **kw)
        expected = reference.max_pool2d_grad(gy, idx, x.shape, data_format=data_format)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
