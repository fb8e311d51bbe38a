"""The tiled direct kernels pick their register tile from a group's output channels: at AVX-512, 6 rows x 64 float32
lanes (32 float64) where that pads the channels no further than the narrow 14 x 32 (16) tile, otherwise the
narrow one. Both shapes, in all three operations, against the reference: pixel counts that leave partial tiles,
groups, padding (per-pixel zeros), strides and dilation, merged kernel rows, and the fused ReLU. At a lower
instruction set (FASTCONV_ISA, as CI runs this file again) every case takes that level's one shape."""
import numpy as np
import pytest

import fastconv
from fastconv._kernels import conv_direct, cpu_dispatch
from fastconv.functional import conv2d_relu
import reference

# (N, H, W, C, K, (R, S), stride, padding, dilation, groups)
CASES = [
    (2, 9, 10, 5, 64, (3, 3), 1, "same", 1, 1),     # wide; 180 pixels = 30 tiles of 6; padded taps
    (1, 8, 11, 3, 64, (3, 3), 1, "valid", 1, 1),    # wide; whole kernel rows merged into one tap (few channels)
    (2, 9, 9, 6, 128, (3, 3), 2, "valid", 1, 2),    # wide per group (64 each), strided
    (1, 10, 10, 8, 64, (3, 3), 1, "same", 2, 1),    # wide, dilated
    (1, 7, 9, 7, 96, (3, 3), 1, "same", 1, 1),      # 96 channels: narrow (wide would pad them to 128)
    (1, 6, 7, 15, 72, (2, 2), 1, "valid", 1, 1),    # 72: narrow tail block
    (1, 7, 5, 4, 64, (3, 3), 1, "same", 1, 1),      # wide; 35 pixels: a partial last tile
    (2, 5, 6, 4, 65, (3, 3), 1, 1, 1, 1),           # 65: narrow (3 x 32 lanes; wide would take 2 x 64)
    (1, 6, 6, 9, 32, (3, 3), 1, "same", 1, 1),      # 32 float32 channels: narrow; float64: wide
]


def case_id(c):
    n, h, w, ch, k, (r, s), stride, padding, dilation, groups = c
    return f"N{n}-{h}x{w}-C{ch}K{k}-k{r}x{s}-s{stride}-p{padding}-d{dilation}-g{groups}"


def check_close(got, expected, bound, dtype):
    rel = 2e-5 if dtype == np.float32 else 1e-12
    assert got.dtype == dtype and got.shape == expected.shape
    err = np.abs(got.astype(np.float64) - expected)
    assert np.all(err <= rel * (bound + 1e-6)), f"max |err| {err.max():.3g}"


def to_layout(a, channels_last, weight=False):
    if channels_last:
        return a
    return np.ascontiguousarray(a.transpose((3, 2, 0, 1) if weight else (0, 3, 1, 2)))


def from_layout(a, channels_last, weight=False):
    if channels_last:
        return a
    return a.transpose((2, 3, 1, 0) if weight else (0, 2, 3, 1))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_tile_shape_matches_the_reference(case, dtype, data_format, rng):
    """channels_first runs the same NHWC kernels, the forward pass and the input gradient writing NCHW directly:
    units of pixels that span two images included."""
    n, h, w, c, k, kernel, stride, padding, dilation, groups = case
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    cl = data_format == "channels_last"
    fc_opts = dict(opts, data_format=data_format, algorithm="direct")
    x = rng.standard_normal((n, h, w, c))
    weight = rng.standard_normal(kernel + (c // groups, k))
    bias = rng.standard_normal(k)
    xd, wd, bd = to_layout(x.astype(dtype), cl), to_layout(weight.astype(dtype), cl, True), bias.astype(dtype)

    y = fastconv.conv2d(xd, wd, bd, **fc_opts)
    check_close(from_layout(y, cl), reference.conv2d(x, weight, bias, **opts),
                reference.conv2d(np.abs(x), np.abs(weight), np.abs(bias), **opts), dtype)
    y_relu = conv2d_relu(xd, wd, bd, **fc_opts)
    np.testing.assert_array_equal(y_relu, np.maximum(y, 0))

    gy = rng.standard_normal(from_layout(y, cl).shape)
    gx = fastconv.conv2d_grad_input(to_layout(gy.astype(dtype), cl), wd, xd.shape, **fc_opts)
    check_close(from_layout(gx, cl), reference.conv2d_grad_input(gy, weight, x.shape, **opts),
                reference.conv2d_grad_input(np.abs(gy), np.abs(weight), x.shape, **opts), dtype)
    gw = fastconv.conv2d_grad_weight(to_layout(gy.astype(dtype), cl), xd, wd.shape, **fc_opts)
    check_close(from_layout(gw, cl, True), reference.conv2d_grad_weight(gy, x, weight.shape, **opts),
                reference.conv2d_grad_weight(np.abs(gy), np.abs(x), weight.shape, **opts), dtype)


@pytest.mark.parametrize("itemsize, channels, avx512_shape", [
    (4, 64, (6, 64)), (4, 128, (6, 64)), (4, 33, (6, 64)), (4, 192, (6, 64)),
    (4, 32, (14, 32)), (4, 96, (14, 32)), (4, 65, (14, 32)), (4, 3, (14, 32)),
    (8, 32, (6, 32)), (8, 64, (6, 32)), (8, 16, (14, 16)), (8, 48, (14, 16)),
])
def test_tile_shape_follows_the_channels(itemsize, channels, avx512_shape):
    shape = conv_direct.tile_shape(itemsize, channels)
    level = cpu_dispatch.active_isa_name()
    if level == "avx512":
        assert shape == avx512_shape
    else:  # one shape per lower level: 6 rows x 2 vectors
        vector_bytes = 32 if level == "avx2" else 16
        assert shape == (6, 2 * vector_bytes // itemsize)
