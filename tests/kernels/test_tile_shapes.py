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
    (1, 6, 5, 400, 64, (3, 3), 1, "same", 1, 1),    # input channels in several blocks (sums resumed per block)
    (2, 7, 8, 5, 192, (3, 3), 1, "same", 1, 1),     # wide: 3 blocks summed in the output itself; a partial tile
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


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((1, 30, 30, 3), (7, 7), 2, 3),          # a ResNet stem
    ((2, 11, 9, 4), (3, 3), 1, "same"),
    ((1, 12, 10, 2), (3, 2), (2, 1), ((2, 0), (1, 1))),  # asymmetric padding, rectangular kernel
])
def test_weight_gradient_on_a_padded_copy_of_a_few_channel_input(shape, kernel, stride, padding, data_format, rng):
    """With padding and fewer channels than a tile has rows, "auto" runs the tiled weight gradient on an input
    zero-padded beforehand (no idle tile rows): the same gradient as the reference and as "direct" by name,
    which reads the padding as skipped taps."""
    from fastconv import _planning
    from fastconv._problem import conv_problem

    k = 64
    x = rng.standard_normal(shape)
    w_shape = kernel + (shape[3], k)
    opts = dict(stride=stride, padding=padding)
    problem = conv_problem(shape, w_shape, dilation=1, groups=1, channels_last=True, **opts)
    tile_rows = conv_direct.tile_shape(8, k)[0]
    assert _planning.pads_input_for_grad_weight(problem, tile_rows, 8) == (shape[3] < tile_rows)
    gy = rng.standard_normal(problem.output_shape)
    expected = reference.conv2d_grad_weight(gy, x, w_shape, **opts)
    cl = data_format == "channels_last"
    got = {alg: from_layout(fastconv.conv2d_grad_weight(to_layout(gy, cl), to_layout(x, cl),
                                                        to_layout(np.empty(w_shape), cl, True).shape,
                                                        data_format=data_format, algorithm=alg, **opts), cl, True)
           for alg in ("auto", "direct")}
    bound = np.abs(gy).max() * np.abs(x).max() * np.prod(problem.output_shape[:3])
    for alg, g in got.items():
        check_close(g, expected, bound, np.float64)
    np.testing.assert_allclose(got["auto"], got["direct"], rtol=1e-12, atol=1e-12)


def test_padded_copy_for_the_weight_gradient_stays_small():
    from fastconv import _planning
    from fastconv._problem import conv_problem

    def pads(shape, padding, itemsize=4, channels_last=True):
        problem = conv_problem(shape, (3, 3, shape[3], 64), stride=1, padding=padding, dilation=1, groups=1,
                               channels_last=channels_last)
        return _planning.pads_input_for_grad_weight(problem, 6, itemsize)

    assert pads((8, 64, 64, 3), 1)
    assert not pads((8, 64, 64, 3), 0)      # nothing to pad
    assert not pads((8, 64, 64, 6), 1)      # the tile's rows are full anyway
    assert not pads((256, 224, 224, 3), 1)  # a 157 MB copy: over the workspace cap


def test_few_channel_channels_first_forward_runs_direct_where_vectors_are_wide(rng):
    """channels_first with 3 channels: "auto" takes the direct kernel (NHWC inside, NCHW written by its tiles)
    at AVX2 and AVX-512 and im2col at the 16-byte baseline, where the transposes cost more than they save; with
    more channels (and output channels that fill the tiles' lanes), direct at every level. Both give the
    reference's result."""
    from fastconv import _planning
    from fastconv._problem import conv_problem

    rgb = conv_problem((2, 3, 20, 20), (16, 3, 7, 7), stride=2, padding=3, dilation=1, groups=1,
                       channels_last=False)
    wider = conv_problem((2, 8, 20, 20), (32, 8, 3, 3), stride=1, padding=1, dilation=1, groups=1,
                         channels_last=False)
    baseline = cpu_dispatch.active_isa_name() == "baseline"
    assert _planning.choose_forward(rgb, "auto") == ("im2col" if baseline else "direct")
    assert _planning.choose_forward(wider, "auto") == "direct"
    assert _planning.choose_forward(rgb, "im2col") == "im2col"
    x = rng.standard_normal((2, 3, 20, 20))
    w = rng.standard_normal((16, 3, 7, 7))
    expected = to_layout(reference.conv2d(from_layout(x, False), from_layout(w, False, True), stride=2, padding=3),
                         False)
    for alg in ("auto", "direct", "im2col"):
        got = fastconv.conv2d(x, w, stride=2, padding=3, data_format="channels_first", algorithm=alg)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, k, padding, stride", [
    ((33, 5, 4, 6), 64, "same", 1),     # wide; 33 images: a tile spans two output positions
    ((30, 4, 5, 7), 32, 2, 1),          # narrow at AVX-512; padded by the whole kernel extent
    ((29, 6, 6, 5), 40, ((2, 0), (1, 1)), 2),  # narrow tail block, asymmetric padding, strided
])
def test_tiles_over_the_batch_give_the_row_major_bits(shape, k, padding, stride, dtype, rng, monkeypatch):
    """With tiles over the images at each output position (small padded images in a large batch), every output
    sums the same products in the same order as with row-major tiles: identical bits, and the reference."""
    from fastconv import _planning
    from fastconv._problem import conv_problem

    x = rng.standard_normal(shape)
    weight = rng.standard_normal((3, 3, shape[3], k))
    bias = rng.standard_normal(k)
    opts = dict(stride=stride, padding=padding)
    problem = conv_problem(shape, weight.shape, dilation=1, groups=1, channels_last=True, **opts)
    gy = rng.standard_normal(problem.output_shape)
    xd, wd, bd, gyd = (a.astype(dtype) for a in (x, weight, bias, gy))
    got = {}
    for batch_inner in (False, True):
        monkeypatch.setattr(_planning, "forward_tiles_over_batch", lambda problem, pixels, b=batch_inner: b)
        got[batch_inner] = (fastconv.conv2d(xd, wd, bd, algorithm="direct", **opts),
                            fastconv.conv2d_grad_input(gyd, wd, shape, algorithm="direct", **opts))
    for row_major, over_batch in zip(got[False], got[True]):
        np.testing.assert_array_equal(row_major, over_batch)
    y, gx = got[True]
    check_close(y, reference.conv2d(x, weight, bias, **opts),
                reference.conv2d(np.abs(x), np.abs(weight), np.abs(bias), **opts), dtype)
    check_close(gx, reference.conv2d_grad_input(gy, weight, shape, **opts),
                reference.conv2d_grad_input(np.abs(gy), np.abs(weight), shape, **opts), dtype)


def test_tiles_run_over_the_batch_only_where_padding_is_a_large_share():
    from fastconv import _planning
    from fastconv._problem import conv_problem

    def over_batch(shape, padding, pixels=6):
        problem = conv_problem(shape, (3, 3, shape[3], 64), stride=1, padding=padding, dilation=1, groups=1,
                               channels_last=True)
        return _planning.forward_tiles_over_batch(problem, pixels)

    assert over_batch((64, 11, 11, 64), 2)        # the MNIST convnet's second input gradient: 72% inside
    assert not over_batch((64, 11, 11, 64), 0)    # no padding
    assert not over_batch((64, 56, 56, 64), 1)    # large images: padding a small share
    assert not over_batch((8, 11, 11, 64), 2)     # batch too small to fill tiles


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("channels", [64, 192])
@pytest.mark.parametrize("shape", [(2, 6, 7, 3), (2, 130, 130, 3)], ids=["in-registers", "large"])
def test_bias_starts_the_sums_of_small_and_large_outputs(shape, channels, relu, rng):
    """The first channel block's tiles start at the bias in their registers, except in an output of one block
    of channels over the kernel's 8 MiB limit (here 8.4 MB), which is filled with the bias first; with several
    blocks (192 channels, 25 MB) every tile starts in its registers and sums in the output at a 192-channel
    pixel stride. All match the reference, with the fused ReLU too."""
    x = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal((3, 3, shape[3], channels)).astype(np.float32)
    bias = (10 * rng.standard_normal(channels)).astype(np.float32)
    y = (conv2d_relu if relu else fastconv.conv2d)(x, weight, bias, algorithm="direct")
    x64, w64, b64 = x.astype(np.float64), weight.astype(np.float64), bias.astype(np.float64)
    expected = reference.conv2d(x64, w64, b64)
    check_close(y, np.maximum(expected, 0) if relu else expected,
                reference.conv2d(np.abs(x64), np.abs(w64), np.abs(b64)), np.float32)


def test_forward_units_grow_where_the_weights_leave_the_l2(rng, monkeypatch):
    """Weights over 1 MiB give each thread 4 work items, not 16 (larger units: the weights are read fewer
    times); the unit size never changes the bits."""
    from fastconv import _planning
    from fastconv._problem import conv_problem

    def units(c, k, size, threads=2):
        problem = conv_problem((1, size, size, c), (3, 3, c, k), stride=1, padding=1, dilation=1, groups=1,
                               channels_last=True)
        return _planning.forward_unit_tiles(problem, 6, 64, threads, 4)

    assert units(512, 512, 14) == 33   # vgg_conv5_2 (9.4 MB): 33 tiles x 8 blocks / (4 x 2) -> one unit
    assert units(32, 64, 56) == 16     # 74 KB of weights: 523 tiles / (16 x 2)
    x = rng.standard_normal((1, 9, 9, 160)).astype(np.float32)  # 160 x 640 x 9 x 4 bytes = 3.7 MB
    weight = rng.standard_normal((3, 3, 160, 640)).astype(np.float32)
    got = []
    for few in (4, 16):
        monkeypatch.setattr(_planning, "FEW_ITEMS_PER_THREAD", few)
        got.append(fastconv.conv2d(x, weight, padding="same", algorithm="direct"))
    np.testing.assert_array_equal(got[0], got[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_windows_wholly_below_the_input_read_nothing(dtype, rng):
    """Output rows whose windows start below the input (padding 3, stride 3: the last row's windows start one
    past the input's last row) take no taps, also when the unit before them ended on a row that had some. One
    unit per output row, one thread, so that order is fixed; the rows after x hold NaN, which any read past x
    would carry into the result."""
    from fastconv import _layout, _problem

    big = np.full((1, 6, 13, 3), np.nan, dtype)
    big[:, :2] = rng.standard_normal((1, 2, 13, 3))
    x = big[:, :2]
    assert x.flags.c_contiguous
    weight = rng.standard_normal((2, 4, 3, 64)).astype(dtype)
    problem = _problem.conv_problem(x.shape, weight.shape, stride=3, padding=3, dilation=1, groups=1,
                                    channels_last=True)
    pixels, lanes = conv_direct.tile_shape(np.dtype(dtype).itemsize, 64)
    assert problem.output_shape == (1, 3, 6, 64)
    packed = _layout.pack_direct_weights(weight, 1, lanes)
    out = np.full(problem.output_shape, 7.0, dtype)
    unit_tiles = -(-problem.out_w // pixels)  # one row of tiles per unit where a tile holds 6 pixels
    conv_direct.forward_nhwc_tiled(x, packed.values, None, np.zeros(3, dtype), out, problem.geometry, unit_tiles,
                                   False, False, False, 1, packed.row, packed.copy_per_pass)
    x64, w64 = x.astype(np.float64), weight.astype(np.float64)
    expected = reference.conv2d(x64, w64, None, stride=3, padding=((3, 3), (3, 3)))
    check_close(out, expected, reference.conv2d(np.abs(x64), np.abs(w64), None, stride=3,
                                                padding=((3, 3), (3, 3))), dtype)
    assert np.all(out[:, 2] == 0) and np.all(out[:, 0] == 0)


def placed(a, offset_bytes):
    """A copy of `a` whose data starts `offset_bytes` past a 64-byte boundary."""
    raw = np.empty(a.nbytes + 128, dtype=np.uint8)
    start = -raw.ctypes.data % 64 + offset_bytes
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def run_tiled(x, weights, problem, *, row=0, copy_per_pass=False, check_finite=False, bias=None, relu=False,
              threads=1, unit_tiles=1, oihw=False, all_kblocks=False):
    """The tiled forward kernel called directly: (its output, whether it found every weight it checked finite)."""
    out = np.empty(problem.output_shape, x.dtype)
    finite = conv_direct.forward_nhwc_tiled(x, weights.reshape(-1), bias, np.zeros(x.shape[3], x.dtype), out,
                                            problem.geometry, unit_tiles, relu, False, False, threads, row,
                                            copy_per_pass, check_finite, oihw, all_kblocks)
    return out, finite


def packed_layout(hwio, lanes):
    """HWIO (one group, whole blocks of lanes) in the packed layout: (K / lanes, R, S, C, lanes), 64-byte aligned."""
    r, s, c, k = hwio.shape
    return placed(np.ascontiguousarray(hwio.reshape(r, s, c, k // lanes, lanes).transpose(3, 0, 1, 2, 4)), 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads, unit_tiles", [(1, 1), (2, 3)])
@pytest.mark.parametrize("shape, k_blocks, kernel, stride, padding, dilation, relu", [
    ((2, 9, 10, 5), 2, (3, 3), 1, "valid", 1, False),     # whole kernel rows merged into one tap
    ((1, 7, 8, 40), 2, (3, 3), 1, "same", 1, True),       # padded taps; a partial tile; fused ReLU
    ((2, 11, 11, 16), 2, (2, 2), 2, "valid", 2, False),   # strided, dilated
    ((1, 5, 6, 300), 2, (3, 3), 1, "same", 1, False),     # input channels in two blocks per pass
    ((1, 4, 5, 400), 3, (3, 3), 1, "same", 1, False),     # three passes, the last one shorter
])
def test_hwio_in_place_and_copied_per_pass_give_the_packed_bits(shape, k_blocks, kernel, stride, padding,
                                                                dilation, relu, threads, unit_tiles, dtype, rng,
                                                                monkeypatch):
    """One group of whole blocks of lanes: HWIO is read as it lies, in place (rows K apart, each block its lanes
    of every row) or copied by each pass into a packed buffer of its own, checked for NaN as it is copied or not.
    OIHW (one group, whole blocks) likewise, transposed by each pass. The same sums in the same order as the
    packed layout: the same bits, and the reference's values. Through conv2d: aligned rows of at most 512 bytes
    and 4 blocks are read in place, the rest copied per pass where a block of lanes spans 128 bytes or more,
    else packed."""
    from fastconv import _layout, _problem

    lanes = conv_direct.tile_shape(np.dtype(dtype).itemsize, 64)[1]
    k = k_blocks * lanes
    assert conv_direct.tile_shape(np.dtype(dtype).itemsize, k)[1] == lanes
    x = rng.standard_normal(shape).astype(dtype)
    hwio = rng.standard_normal(kernel + (shape[3], k)).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype)
    problem = _problem.conv_problem(x.shape, hwio.shape, stride=stride, padding=padding, dilation=dilation,
                                    groups=1, channels_last=True)
    kw = dict(bias=bias, relu=relu, threads=threads, unit_tiles=unit_tiles)
    packed, finite = run_tiled(x, packed_layout(hwio, lanes), problem, **kw)
    every_block, _ = run_tiled(x, packed_layout(hwio, lanes), problem, all_kblocks=True, **kw)
    np.testing.assert_array_equal(every_block, packed)
    off_line = placed(hwio, 16)
    for weights, copy_per_pass, check_finite in [(placed(hwio, 0), False, False), (off_line, True, False),
                                                 (off_line, True, True)]:
        for all_kblocks in (False, True):
            got, finite = run_tiled(x, weights, problem, row=k, copy_per_pass=copy_per_pass,
                                    check_finite=check_finite, all_kblocks=all_kblocks, **kw)
            assert finite
            np.testing.assert_array_equal(got, packed)
    oihw = placed(hwio.transpose(3, 2, 0, 1), 16)  # OIHW itself, each pass transposing its block
    for check_finite in (False, True):
        got, finite = run_tiled(x, oihw, problem, copy_per_pass=True, check_finite=check_finite, oihw=True, **kw)
        assert finite
        np.testing.assert_array_equal(got, packed)
    x64, w64 = x.astype(np.float64), hwio.astype(np.float64)
    expected = reference.conv2d(x64, w64, bias.astype(np.float64), stride=stride, padding=padding, dilation=dilation)
    if relu:
        expected = np.maximum(expected, 0)
    bound = reference.conv2d(np.abs(x64), np.abs(w64), np.abs(bias.astype(np.float64)), stride=stride,
                             padding=padding, dilation=dilation)
    check_close(packed, expected, bound, dtype)

    in_place = (k * np.dtype(dtype).itemsize <= _layout.HWIO_IN_PLACE_MAX_ROW_BYTES
                and k // lanes <= _layout.HWIO_IN_PLACE_MAX_BLOCKS)
    per_pass = lanes * np.dtype(dtype).itemsize >= _layout.PER_PASS_MIN_BLOCK_BYTES
    for weights, aligned in [(placed(hwio, 0), True), (off_line, False)]:
        chosen = _layout.pack_direct_weights(weights, 1, lanes)
        if aligned and in_place:
            assert chosen.row == k and not chosen.copy_per_pass and np.shares_memory(chosen.values, weights)
        elif per_pass:
            assert chosen.row == k and chosen.copy_per_pass and np.shares_memory(chosen.values, weights)
        else:  # (blocks of 64 bytes: packed)
            assert chosen.row == 0 and not chosen.copy_per_pass and not np.shares_memory(chosen.values, weights)
    run = conv2d_relu if relu else fastconv.conv2d
    opts = dict(stride=stride, padding=padding, dilation=dilation, algorithm="direct")
    np.testing.assert_array_equal(run(x, placed(hwio, 0), bias, **opts), packed)
    np.testing.assert_array_equal(run(x, off_line, bias, **opts), packed)
    # channels_first: large float32 OIHW kernels go per pass (here any size), the rest packed; the same bits
    monkeypatch.setattr(_layout, "OIHW_PER_PASS_MIN_BYTES", 0)
    chosen = _layout.pack_direct_weights(oihw, 1, lanes, oihw=True)
    per_pass = dtype == np.float32 and cpu_dispatch.active_isa_name() != "baseline"
    assert chosen.oihw == chosen.copy_per_pass == per_pass
    got = run(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), oihw, bias, data_format="channels_first", **opts)
    np.testing.assert_array_equal(got, packed.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("out_nchw, batch_inner", [(False, False), (True, False), (False, True)])
def test_items_of_every_channel_block_give_the_same_bits(out_nchw, batch_inner, dtype, rng):
    """Work items that run every block of output channels of their pixels (one set-up of the input pointers)
    sum each output in the same order as items of one block: the same bits, in both output layouts, over the
    batch or row-major, grouped, with a partial last block per group; and the reference's values."""
    from fastconv import _layout, _problem

    lanes = conv_direct.tile_shape(np.dtype(dtype).itemsize, 64)[1]
    groups, kg = 2, 2 * lanes + 3  # three blocks per group, the last one partial
    x = rng.standard_normal((6, 7, 8, 2 * 5)).astype(dtype)
    weight = rng.standard_normal((3, 3, 5, groups * kg)).astype(dtype)
    bias = rng.standard_normal(groups * kg).astype(dtype)
    problem = _problem.conv_problem(x.shape, weight.shape, stride=1, padding="same", dilation=1, groups=groups,
                                    channels_last=True)
    packed = _layout.pack_direct_weights(weight, groups, lanes)
    outs = []
    for all_kblocks in (False, True):
        n, h, w, k = problem.output_shape
        out = np.full((n, k, h, w) if out_nchw else (n, h, w, k), np.nan, dtype)
        conv_direct.forward_nhwc_tiled(x, packed.values, bias, np.zeros(5, dtype), out, problem.geometry, 3, False,
                                       out_nchw, batch_inner, 2, packed.row, packed.copy_per_pass, False, False,
                                       all_kblocks)
        outs.append(out.transpose(0, 2, 3, 1) if out_nchw else out)
    np.testing.assert_array_equal(outs[1], outs[0])
    x64, w64, b64 = x.astype(np.float64), weight.astype(np.float64), bias.astype(np.float64)
    expected = reference.conv2d(x64, w64, b64, padding="same", groups=groups)
    check_close(outs[1], expected, reference.conv2d(np.abs(x64), np.abs(w64), np.abs(b64), padding="same",
                                                    groups=groups), dtype)


def test_items_take_every_channel_block_where_the_kernel_is_small():
    """forward_all_kblocks: several blocks of lanes per group and a kernel of at most
    ALL_KBLOCKS_MAX_WEIGHT_BYTES; and then units count one item per unit, not one per block."""
    from fastconv import _planning
    from fastconv._problem import conv_problem

    def problem(c, k, size):
        return conv_problem((1, size, size, c), (3, 3, c, k), stride=1, padding=1, dilation=1, groups=1,
                            channels_last=True)

    assert _planning.forward_all_kblocks(problem(32, 64, 56), 16)        # 74 KB, 4 blocks
    assert not _planning.forward_all_kblocks(problem(32, 64, 56), 64)    # one block
    assert not _planning.forward_all_kblocks(problem(512, 512, 14), 16)  # 9.4 MB
    # 523 tiles of 6 pixels: 16 items per thread at 2 threads -> 16 tiles a unit, not 4 (blocks no longer items)
    assert _planning.forward_unit_tiles(problem(32, 64, 56), 6, 16, 2, 4) == 16


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weights_copied_per_pass_are_all_checked(bad, dtype, rng):
    """A NaN or an infinity anywhere among weights copied per pass (HWIO copied, OIHW transposed) is found as they
    are copied: first and last block of lanes, first and last input channel of each pass, first and last tap; two
    threads, many units (the first unit's copies meet every weight once). conv2d with algorithm="auto" then gives im2col's result, whose
    products with padded zeros make NaN (0 * inf), as PyTorch's do."""
    from fastconv import _problem

    lanes = conv_direct.tile_shape(np.dtype(dtype).itemsize, 64)[1]
    k = 2 * lanes
    x = rng.standard_normal((1, 6, 7, 300)).astype(dtype)
    hwio = rng.standard_normal((3, 3, 300, k)).astype(dtype)
    problem = _problem.conv_problem(x.shape, hwio.shape, stride=1, padding="same", dilation=1, groups=1,
                                    channels_last=True)
    kw = dict(row=k, copy_per_pass=True, threads=2, unit_tiles=1)
    oihw_kw = dict(copy_per_pass=True, threads=2, unit_tiles=1, oihw=True)
    assert run_tiled(x, placed(hwio, 16), problem, check_finite=True, **kw)[1]
    assert run_tiled(x, hwio.transpose(3, 2, 0, 1).copy(), problem, check_finite=True, **oihw_kw)[1]
    for where in [(0, 0, 0, 0), (2, 2, 299, k - 1), (1, 0, 149, lanes), (1, 1, 150, lanes - 1), (0, 2, 0, k - 1)]:
        hit = hwio.copy()
        hit[where] = bad
        assert not run_tiled(x, placed(hit, 16), problem, check_finite=True, **kw)[1], where
        assert run_tiled(x, placed(hit, 16), problem, check_finite=False, **kw)[1]  # (counted only when asked)
        hit_oihw = hit.transpose(3, 2, 0, 1).copy()
        assert not run_tiled(x, hit_oihw, problem, check_finite=True, **oihw_kw)[1], where
        assert run_tiled(x, hit_oihw, problem, check_finite=False, **oihw_kw)[1]
        got = fastconv.conv2d(x, placed(hit, 16), padding="same")
        expected = fastconv.conv2d(x, hit, padding="same", algorithm="im2col")
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
        np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(expected), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_few_output_channels_take_im2col_where_the_tile_lanes_would_idle(dtype, rng):
    """"auto" takes im2col where the tiled kernels would fill under 3/4 of their lanes (or the plain direct kernel
    would run) and im2col's GEMMs are not thin: forward with few output channels, input gradient with few input
    channels (a 1-channel image's gradient: 10x faster); direct where the channels fill the lanes, where the other
    side is thin (an RGB stem), for grouped and for 1x1 convolutions. Every choice gives the reference's result."""
    from fastconv import _planning
    from fastconv._problem import conv_problem

    def problem(c, k, groups=1):
        return conv_problem((2, 12, 12, c), (3, 3, c // groups, k), stride=1, padding="same", dilation=1,
                            groups=groups, channels_last=True)

    itemsize = np.dtype(dtype).itemsize
    lanes = conv_direct.tile_shape(itemsize, 4)[1]
    assert _planning.choose_forward(problem(32, 1), "auto", itemsize) == "im2col"
    assert _planning.choose_forward(problem(32, lanes // 2), "auto", itemsize) == "im2col"
    assert _planning.choose_forward(problem(32, 32), "auto", itemsize) == "direct"
    assert _planning.choose_forward(problem(3, 8), "auto", itemsize) == "direct"        # thin GEMM
    assert _planning.choose_forward(problem(32, 8, groups=2), "auto", itemsize) == "direct"
    dense = conv_problem((64, 1, 1, 32), (1, 1, 32, 3), stride=1, padding="valid", dilation=1, groups=1,
                         channels_last=True)  # (a Dense layer: direct, whose bits do not depend on the batch)
    assert _planning.choose_forward(dense, "auto", itemsize) == "direct"
    assert _planning.choose_grad_input(problem(1, 32), "auto", 2, itemsize) == "im2col"
    assert _planning.choose_grad_input(problem(lanes // 4, 64), "auto", 2, itemsize) == "im2col"
    assert _planning.choose_grad_input(problem(32, 64), "auto", 2, itemsize) == "direct"
    assert _planning.choose_grad_input(problem(16, 4), "auto", 2, itemsize) == "direct"  # thin GEMM
    x = rng.standard_normal((2, 12, 12, 32)).astype(dtype)
    w = rng.standard_normal((3, 3, 32, 3)).astype(dtype)
    image = rng.standard_normal((2, 12, 12, 1)).astype(dtype)  # one channel, 16 filters
    filters = rng.standard_normal((3, 3, 1, 16)).astype(dtype)
    go = rng.standard_normal((2, 12, 12, 16)).astype(dtype)
    same = ((1, 1), (1, 1))
    expected = reference.conv2d(x, w, padding=same)
    expected_gi = reference.conv2d_grad_input(go, filters, image.shape, padding=same)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for alg in ("auto", "direct", "im2col"):
        np.testing.assert_allclose(fastconv.conv2d(x, w, padding="same", algorithm=alg), expected, rtol=tol, atol=tol)
        got = fastconv.conv2d_grad_input(go, filters, image.shape, padding="same", algorithm=alg)
        np.testing.assert_allclose(got, expected_gi, rtol=tol, atol=tol)
