"""The NCHW <-> NHWC conversions (fastconv._layout, a tiled parallel transpose for large arrays) equal NumPy's
transposing copy bit for bit: every element size, shapes that leave partial tiles, non-contiguous inputs (NumPy's
path), the smallest and empty arrays, and writing into a given buffer."""
import numpy as np
import pytest

from fastconv import _layout

SHAPES = [(1, 64, 224, 3), (2, 3, 70, 75), (3, 33, 31, 37), (1, 1, 1, 1), (0, 4, 5, 6), (2, 130, 9, 1)]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.complex64, np.complex128])
@pytest.mark.parametrize("shape", SHAPES)
def test_conversions_equal_numpy(shape, dtype, rng):
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    if dtype in (np.float32, np.float64) and a.size:
        a.flat[::7] = np.nan        # NaN payloads and signed zeros are copied as bits
        a.flat[1::11] = -0.0
    nhwc = _layout.nchw_to_nhwc(a)
    assert nhwc.flags.c_contiguous and nhwc.dtype == a.dtype
    np.testing.assert_array_equal(nhwc.view(np.uint8), np.ascontiguousarray(a.transpose(0, 2, 3, 1)).view(np.uint8))
    nchw = _layout.nhwc_to_nchw(a)
    assert nchw.flags.c_contiguous
    np.testing.assert_array_equal(nchw.view(np.uint8), np.ascontiguousarray(a.transpose(0, 3, 1, 2)).view(np.uint8))


def test_non_contiguous_input_and_out_buffer(rng):
    big = rng.standard_normal((2, 40, 50, 64)).astype(np.float32)
    view = big[:, ::2, 5:45]
    np.testing.assert_array_equal(_layout.nchw_to_nhwc(view), view.transpose(0, 2, 3, 1))
    out = np.full((2, 64, 40, 50), 7.0, dtype=np.float32)
    assert _layout.nhwc_to_nchw(big, out=out) is out
    np.testing.assert_array_equal(out, big.transpose(0, 3, 1, 2))
    small_out = np.empty((1, 2, 3, 4), dtype=np.float32)  # below the size the tiled kernel takes
    small = rng.standard_normal((1, 3, 4, 2)).astype(np.float32)
    _layout.nhwc_to_nchw(small, out=small_out)
    np.testing.assert_array_equal(small_out, small.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int8])
@pytest.mark.parametrize("oihw_shape", [(512, 64, 3, 3), (64, 3, 7, 7), (33, 17, 3, 2), (2, 3, 1, 1), (40, 50, 1, 1)])
def test_weight_conversions_equal_numpy(oihw_shape, dtype, rng):
    oihw = (rng.standard_normal(oihw_shape) * 50).astype(dtype)
    hwio = _layout.oihw_to_hwio(oihw)
    assert hwio.flags.c_contiguous and hwio.dtype == oihw.dtype
    np.testing.assert_array_equal(hwio, oihw.transpose(2, 3, 1, 0))
    back = _layout.hwio_to_oihw(hwio)
    assert back.flags.c_contiguous
    np.testing.assert_array_equal(back, oihw)
    hwoi = np.ascontiguousarray(oihw.transpose(2, 3, 0, 1))
    from_hwoi = _layout.hwoi_to_oihw(hwoi)
    assert from_hwoi.flags.c_contiguous and from_hwoi.dtype == oihw.dtype
    np.testing.assert_array_equal(from_hwoi, oihw)


@pytest.mark.parametrize("unit", [np.uint16, np.uint32, np.uint64])
@pytest.mark.parametrize("shape", [(9, 70, 33), (49, 3, 64), (1, 5, 40), (40, 1, 1), (33, 65, 31), (0, 4, 3)])
def test_swap_outer_equals_numpy(shape, unit, rng):
    """The one-pass (A, B, C) -> (C, B, A) kernel behind the weight conversions, at sizes that leave partial
    tiles on both axes, on every element size it moves."""
    from fastconv._kernels import layout_transpose

    src = rng.integers(0, np.iinfo(unit).max, size=shape, dtype=unit)
    dst = np.zeros(shape[::-1], dtype=unit)
    for threads in (1, 2):
        layout_transpose.swap_outer(src, dst, threads)
        np.testing.assert_array_equal(dst, src.transpose(2, 1, 0))


@pytest.mark.parametrize("unit", [np.uint16, np.uint32, np.uint64])
@pytest.mark.parametrize("shape", [(1, 64, 1024), (2, 33, 47), (3, 16, 16), (1, 3, 700), (2, 70, 17)])
def test_transpose_batched_equals_numpy(shape, unit, rng):
    """The batched (B, M, N) -> (B, N, M) kernel on random bits (4-byte elements go 16 x 16 through the registers at
    AVX-512, the rest of each 32 x 32 tile element by element): rows a multiple of 4 KiB apart, blocks that end
    mid-register on either axis, a 3-row side that no register block covers."""
    from fastconv._kernels import layout_transpose

    src = rng.integers(0, np.iinfo(unit).max, size=shape, dtype=unit)
    dst = np.zeros((shape[0], shape[2], shape[1]), dtype=unit)
    for threads in (1, 2):
        dst[...] = 0
        layout_transpose.transpose_batched(src, dst, threads)
        np.testing.assert_array_equal(dst, src.transpose(0, 2, 1))
