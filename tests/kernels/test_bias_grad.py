"""conv2d_grad_bias sums channels_last grad_output over blocks of rows in parallel: it equals the float64 sum
within float32 rounding, is identical for any thread count, and handles every row count around a block."""
import numpy as np
import pytest

import fastconv


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 255, 3), (1, 1, 256, 5), (2, 3, 43, 17), (4, 37, 37, 64)])
def test_bias_grad_equals_the_float64_sum(shape, dtype, rng):
    g = rng.standard_normal(shape).astype(dtype)
    got = fastconv.conv2d_grad_bias(g)
    assert got.dtype == dtype and got.shape == (shape[3],)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(got, g.astype(np.float64).sum(axis=(0, 1, 2)), rtol=tol, atol=tol)
    nchw = np.ascontiguousarray(g.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(fastconv.conv2d_grad_bias(nchw, data_format="channels_first"), got, rtol=tol, atol=tol)


def test_bias_grad_is_identical_for_any_thread_count(rng):
    g = rng.standard_normal((8, 40, 40, 32)).astype(np.float32)
    try:
        results = []
        for n in (1, 2, 3):
            fastconv.set_num_threads(n)
            results.append(fastconv.conv2d_grad_bias(g))
    finally:
        fastconv.set_num_threads(None)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_bias_grad_of_an_empty_batch_is_zero():
    assert fastconv.conv2d_grad_bias(np.ones((0, 3, 3, 4), np.float32)).tolist() == [0.0] * 4
