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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("kernel, stride, dilation, padding", [
    ((3, 3), 1, 1, "valid"),     # across taps
    ((3, 3), 1, 1, "same"),      # per-tap tiles, padding reached
    ((3, 2), 2, 1, "same"),      # strided, uneven kernel
    ((3, 3), 1, 2, "valid"),     # dilated
])
def test_weight_gradient_with_many_channel_blocks(kernel, stride, dilation, padding, groups, dtype, rng, threads):
    """With more than two blocks of output-channel lanes per group (150 channels: 3 blocks of 64 float32 lanes,
    5 of 32 float64 ones, the last one partial) each tile's inputs are gathered into a packed buffer first,
    then read by every block; 7 input channels leave a partial tile of rows. The reference's result, bit for bit
    the same on 1 and 2 threads."""
    c, k = 7 * groups, 150 * groups
    x = rng.standard_normal((2, 9, 10, c)).astype(dtype)
    weight_shape = kernel + (7, k)
    opts = dict(stride=stride, dilation=dilation, padding=padding, groups=groups)
    gy = rng.standard_normal(fastconv.conv2d(x, np.zeros(weight_shape, dtype), **opts).shape).astype(dtype)
    results = []
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        results.append(fastconv.conv2d_grad_weight(gy, x, weight_shape, algorithm="direct", **opts))
    expected = reference.conv2d_grad_weight(gy, x, weight_shape, **opts)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(results[0], expected, rtol=tol, atol=tol)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kernel, k, opts", [
    ((3, 10, 12, 3), (3, 3), 32, {}),                          # 2 gradient tiles: segments over the rows
    ((2, 9, 11, 1), (3, 3), 16, dict(stride=2)),               # one tile
    ((2, 8, 8, 4), (3, 3), 64, dict(padding="same")),          # per-tap tiles, padding reached
    ((2, 9, 9, 6), (3, 3), 16, dict(groups=2, dilation=2)),
])
def test_weight_gradient_in_row_segments(shape, kernel, k, opts, dtype, rng):
    """A small gradient over many chunks of output rows is summed in 16 segments of rows, in parallel, into
    partial gradients added in order. With one-row chunks every case here takes that path: the reference's
    result, and bit for bit the same on 1 and 2 threads (the segments follow the shape only)."""
    from fastconv import _layout
    from fastconv._kernels import conv_direct
    from fastconv._problem import conv_problem

    groups = opts.get("groups", 1)
    weight_shape = kernel + (shape[3] // groups, k)
    problem = conv_problem(shape, weight_shape, stride=opts.get("stride", 1), padding=opts.get("padding", "valid"),
                           dilation=opts.get("dilation", 1), groups=groups, channels_last=True)
    x = rng.standard_normal(shape).astype(dtype)
    gy = rng.standard_normal(problem.output_shape).astype(dtype)
    lanes = conv_direct.tile_shape(np.dtype(dtype).itemsize, k // groups)[1]
    padded = _layout.pad_channel_blocks(gy, groups, lanes)
    results = []
    for threads in (1, 2):
        got = np.zeros(weight_shape, dtype)
        conv_direct.grad_weight_nhwc_tiled(padded, x, got, problem.geometry, 1, threads)
        results.append(got)
    expected = reference.conv2d_grad_weight(gy, x, weight_shape, **opts)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(results[0], expected, rtol=tol, atol=tol)
    np.testing.assert_array_equal(results[0], results[1])


def test_weight_gradient_in_row_segments_through_the_api(rng, threads):
    """The same path at the sizes that take it by themselves (a 64x64 RGB batch: 2 gradient tiles, 17 chunks)."""
    x = rng.standard_normal((8, 64, 64, 3)).astype(np.float32)
    gy = rng.standard_normal((8, 62, 62, 32)).astype(np.float32)
    expected = reference.conv2d_grad_weight(gy.astype(np.float64), x.astype(np.float64), (3, 3, 3, 32))
    got = []
    for n in (1, 2):
        fastconv.set_num_threads(n)
        got.append(fastconv.conv2d_grad_weight(gy, x, (3, 3, 3, 32)))
    # float32 sums of 30752 products: bounded by a multiple of eps times the sum of their magnitudes
    magnitude = reference.conv2d_grad_weight(np.abs(gy).astype(np.float64), np.abs(x).astype(np.float64),
                                             (3, 3, 3, 32))
    assert np.all(np.abs(got[0] - expected) <= 1e-5 * magnitude)
    np.testing.assert_array_equal(got[0], got[1])


def test_weight_gradient_chunks_follow_the_l2_cache(tmp_path):
    """Chunks take half a core's L2 as sysfs reports it, between 256 KiB and 512 KiB, 256 KiB when sysfs says
    nothing; weight gradients over twice the L2 (2 MiB when unknown) take chunks twice that."""
    from fastconv import _planning

    def cache_dir(*entries):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        for i, (level, kind, size) in enumerate(entries):
            d = root / f"index{i}"
            d.mkdir(parents=True)
            (d / "level").write_text(f"{level}\n")
            (d / "type").write_text(f"{kind}\n")
            (d / "size").write_text(f"{size}\n")
        return str(root)

    xeon = cache_dir((1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "2048K"), (3, "Unified", "260M"))
    (tmp_path / "0" / "a_uevent").write_text("")  # sysfs keeps other files beside the index directories
    assert _planning._l2_cache_bytes(xeon) == 2 << 20
    assert _planning._grad_weight_chunk_bytes(2 << 20) == 512 << 10
    assert _planning._grad_weight_chunk_bytes(512 << 10) == 256 << 10
    assert _planning._grad_weight_chunk_bytes(1 << 20) == 512 << 10
    assert _planning._grad_weight_chunk_bytes(32 << 20) == 512 << 10
    assert _planning._large_weight_bytes(1 << 20) == 2 << 20
    assert _planning._large_weight_bytes(None) == 2 << 20
    assert _planning._l2_cache_bytes(str(tmp_path / "missing")) is None
    assert _planning._grad_weight_chunk_bytes(None) == 256 << 10
    assert _planning._l2_cache_bytes(cache_dir((2, "Unified", "lots"))) is None


def test_weight_gradient_chunks_are_equal(monkeypatch):
    """The output rows are cut into chunks of equal size (within one row): the last chunk is not a sliver that
    runs with most tiles' set-up for little work. 28 rows of which at most 9 fit: 4 chunks of 7, not 9 + 9 + 9 + 1."""
    from fastconv import _planning
    from fastconv._problem import conv_problem

    problem = conv_problem((1, 30, 30, 64), (3, 3, 64, 64), stride=1, padding="valid", dilation=1, groups=1,
                           channels_last=True)
    row_bytes = 4 * (28 * 64 + 30 * 64)
    monkeypatch.setattr(_planning, "LARGE_WEIGHT_BYTES", 1 << 40)
    monkeypatch.setattr(_planning, "GRAD_WEIGHT_CHUNK_BYTES", 9 * row_bytes + 1)
    assert _planning.grad_weight_chunk_rows(problem, 4) == 7
    monkeypatch.setattr(_planning, "GRAD_WEIGHT_CHUNK_BYTES", 14 * row_bytes)
    assert _planning.grad_weight_chunk_rows(problem, 4) == 14
    monkeypatch.setattr(_planning, "GRAD_WEIGHT_CHUNK_BYTES", 100 * row_bytes)
    assert _planning.grad_weight_chunk_rows(problem, 4) == 28
    monkeypatch.setattr(_planning, "GRAD_WEIGHT_CHUNK_BYTES", 1)
    assert _planning.grad_weight_chunk_rows(problem, 4) == 1


def test_weight_gradient_bits_do_not_depend_on_the_chunk_size(rng, monkeypatch):
    """Each chunk resumes every sum where the previous one stored it, in the same order: any chunk size (the
    L2-sized choice varies between machines) gives the same bits."""
    from fastconv import _planning

    x = rng.standard_normal((2, 12, 12, 40)).astype(np.float32)
    gy = rng.standard_normal((2, 12, 12, 64)).astype(np.float32)
    got = []
    for chunk in (1 << 12, 1 << 15, 1 << 22):
        monkeypatch.setattr(_planning, "GRAD_WEIGHT_CHUNK_BYTES", chunk)
        got.append(fastconv.conv2d_grad_weight(gy, x, (3, 3, 40, 64), padding="same", algorithm="direct"))
    for g in got[1:]:
        np.testing.assert_array_equal(got[0], g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kernel", [
    ((2, 10, 10, 24), (3, 3)),   # 216 gradient rows: a misaligned output gradient is copied into panels
    ((3, 10, 12, 8), (5, 5)),    # 200 rows across taps: also in row segments (few tiles, many chunks)
    ((2, 9, 9, 6), (3, 3)),      # 54 rows: read in place wherever it lies
])
@pytest.mark.parametrize("chunk_rows", [1, 3])
def test_weight_gradient_of_an_output_gradient_off_a_cache_line(shape, kernel, chunk_rows, dtype, rng):
    """One block of lanes of output gradient, 8 or 16 bytes past a 64-byte boundary (where NumPy puts large
    arrays), read in place or through aligned panels: bit for bit the aligned operand's result, on 1 and 2
    threads, and the reference's."""
    from fastconv._kernels import conv_direct
    from fastconv._problem import conv_problem

    k = conv_direct.tile_shape(np.dtype(dtype).itemsize, 1)[1]  # one block of lanes exactly: no padded copy
    weight_shape = kernel + (shape[3], k)
    problem = conv_problem(shape, weight_shape, stride=1, padding="valid", dilation=1, groups=1, channels_last=True)
    x = rng.standard_normal(shape).astype(dtype)
    gy = rng.standard_normal(problem.output_shape).astype(dtype)
    results = []
    for offset in (0, 8, 16):
        raw = np.empty(gy.nbytes + 128, dtype=np.uint8)
        start = -raw.ctypes.data % 64 + offset
        placed = raw[start:start + gy.nbytes].view(dtype).reshape(gy.shape)
        placed[...] = gy
        for threads in (1, 2):
            got = np.zeros(weight_shape, dtype)
            conv_direct.grad_weight_nhwc_tiled(placed, x, got, problem.geometry, chunk_rows, threads)
            results.append(got)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(results[0], reference.conv2d_grad_weight(gy, x, weight_shape), rtol=tol, atol=tol)
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


@pytest.mark.parametrize("dtype, channels", [(np.float32, 8), (np.float32, 264), (np.float64, 8), (np.float64, 130)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_many_lane_blocks_read_narrow_pixels_in_place_and_gather_wide_ones(dtype, channels, padding, rng):
    # 160 output channels are more than two blocks of lanes at every instruction set; pixels of at least
    # PACK_X_MIN_PIXEL_BYTES (264 float32, 130 float64 channels) are gathered into the tile's panel first.
    x = rng.standard_normal((2, 6, 7, channels)).astype(dtype)
    weight_shape = (3, 3, channels, 160)
    out_shape = fastconv.conv2d(x, np.zeros(weight_shape, dtype), padding=padding).shape
    gy = rng.standard_normal(out_shape).astype(dtype)
    got = fastconv.conv2d_grad_weight(gy, x, weight_shape, padding=padding, algorithm="direct")
    expected = reference.conv2d_grad_weight(gy, x, weight_shape, padding=padding)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
