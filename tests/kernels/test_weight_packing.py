"""The packed weight layout of the tiled direct kernels, against an element-by-element reading of its definition:
packed[g, b, r, s, i, l] is the weight from input channel i to output channel b * lanes + l of group g (zero past
the group's last one); with flip_transpose, of the kernel flipped in space with each group's channels swapped.
OIHW weights pack as their HWIO transpose does, and packing counts the non-finite weights it reads."""
import numpy as np
import pytest

from fastconv import _layout


def reference_pack(hwio, groups, lanes, flip_transpose):
    r_size, s_size, cg, k = hwio.shape
    kg = k // groups
    n_in, n_out = (kg, cg) if flip_transpose else (cg, kg)
    n_blocks = -(-n_out // lanes)
    packed = np.zeros((groups, n_blocks, r_size, s_size, n_in, lanes), dtype=hwio.dtype)
    for g in range(groups):
        for b in range(n_blocks):
            for r in range(r_size):
                for s in range(s_size):
                    for i in range(n_in):
                        for lane in range(lanes):
                            o = b * lanes + lane
                            if o >= n_out:
                                continue
                            if flip_transpose:  # input channel i = forward output k, output o = forward input c
                                value = hwio[r_size - 1 - r, s_size - 1 - s, o, g * kg + i]
                            else:
                                value = hwio[r, s, i, g * kg + o]
                            packed[g, b, r, s, i, lane] = value
    return packed.ravel()


@pytest.mark.parametrize("oihw", [False, True])
@pytest.mark.parametrize("flip_transpose", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, groups, lanes", [
    ((3, 3, 5, 12), 1, 8),      # a partial last block
    ((3, 2, 4, 12), 3, 8),      # groups, a non-square kernel
    ((1, 1, 7, 70), 2, 16),
    ((2, 3, 6, 9), 3, 32),      # fewer channels than one block
    ((3, 3, 16, 32), 1, 16),    # whole blocks, one group: HWIO is read in place where aligned
    ((3, 3, 6, 16), 1, 16),     # exactly one block: the same
    ((3, 3, 40, 70), 1, 64),    # flipped: 16 x 16 register blocks of the transpose and scalar edges on both sides
])
def test_pack_matches_its_definition(shape, groups, lanes, dtype, flip_transpose, oihw, rng):
    hwio = rng.standard_normal(shape).astype(dtype)
    weight = np.ascontiguousarray(hwio.transpose(3, 2, 0, 1)) if oihw else hwio
    got = _layout.pack_direct_weights(weight, groups, lanes, flip_transpose=flip_transpose, oihw=oihw)
    assert got.values.dtype == dtype and got.values.flags.c_contiguous and got.finite
    np.testing.assert_array_equal(as_packed(got, hwio.shape, lanes), reference_pack(hwio, groups, lanes,
                                                                                   flip_transpose))


def as_packed(got, hwio_shape, lanes):
    """PackedWeights' values in the packed layout: as they are, or, for HWIO read in place (rows `row` apart),
    each block's lanes of every row."""
    if not got.row:
        return got.values
    r, s, c, k = hwio_shape
    assert got.row == k
    return got.values.reshape(r, s, c, k // lanes, lanes).transpose(3, 0, 1, 2, 4).reshape(-1)


def test_flip_transpose_packs_the_flipped_transposed_kernel(rng):
    hwio = rng.standard_normal((3, 2, 6, 8))
    direct = _layout.pack_direct_weights(_layout.flipped_transposed_hwio(hwio, 2), 2, 8).values
    np.testing.assert_array_equal(_layout.pack_direct_weights(hwio, 2, 8, flip_transpose=True).values, direct)


@pytest.mark.parametrize("oihw", [False, True])
@pytest.mark.parametrize("flip_transpose", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packing_tells_whether_every_weight_is_finite(bad, dtype, flip_transpose, oihw, rng):
    # Huge but finite values (whose sum would overflow): only NaN and infinities count.
    hwio = (rng.uniform(-1, 1, (3, 3, 40, 24)) * np.finfo(dtype).max).astype(dtype)

    def pack(hwio):
        weight = np.ascontiguousarray(hwio.transpose(3, 2, 0, 1)) if oihw else hwio
        return _layout.pack_direct_weights(weight, 2, 16, flip_transpose=flip_transpose, oihw=oihw)

    assert pack(hwio).finite
    for index in [(0, 0, 0, 0), (2, 1, 39, 23), (1, 2, 17, 5)]:
        hit = hwio.copy()
        hit[index] = bad
        assert not pack(hit).finite, index


def aligned_copy(a, offset_bytes=0):
    """A copy of `a` whose data starts `offset_bytes` past a 64-byte boundary."""
    raw = np.empty(a.nbytes + 128, dtype=np.uint8)
    start = -raw.ctypes.data % 64 + offset_bytes
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_block_of_hwio_is_read_in_place_and_still_checked(bad, dtype, rng):
    # One group of exactly `lanes` output channels: the packed layout is HWIO itself, so aligned weights are not
    # copied, and finiteness is learnt when asked (it was a by-product of the copy).
    hwio = aligned_copy((rng.uniform(-1, 1, (3, 3, 40, 16)) * np.finfo(dtype).max).astype(dtype))
    packed = _layout.pack_direct_weights(hwio, 1, 16)
    assert np.shares_memory(packed.values, hwio) and packed.finite
    hit = aligned_copy(hwio)
    hit[2, 1, 39, 15] = bad
    assert not _layout.pack_direct_weights(hit, 1, 16).finite
    # Several whole blocks too, rows K apart; any other layout, group count or partial block is copied.
    wider = aligned_copy(rng.standard_normal((3, 3, 5, 48)).astype(dtype))
    assert np.shares_memory(_layout.pack_direct_weights(wider, 1, 16).values, wider)
    assert _layout.pack_direct_weights(wider, 1, 16).row == 48
    assert not np.shares_memory(_layout.pack_direct_weights(wider, 1, 32).values, wider)
    # Rows wider than HWIO_IN_PLACE_MAX_ROW_BYTES are copied by the kernel, pass by pass (their blocks' runs lie
    # too far apart to be read in place); their finiteness is then learnt as they are copied, or when asked.
    k = 2 * _layout.HWIO_IN_PLACE_MAX_ROW_BYTES // np.dtype(dtype).itemsize
    widest = aligned_copy(np.zeros((1, 1, 2, k), dtype))
    wide_rows = _layout.pack_direct_weights(widest, 1, widest.shape[3] // 2)
    assert wide_rows.row == k and wide_rows.copy_per_pass and np.shares_memory(wide_rows.values, widest)
    assert not wide_rows.finite_known and wide_rows.finite
    widest[0, 0, 1, k - 1] = bad
    assert not _layout.pack_direct_weights(widest, 1, widest.shape[3] // 2).finite
    assert not np.shares_memory(_layout.pack_direct_weights(hwio, 1, 16, flip_transpose=True).values, hwio)
    assert not np.shares_memory(_layout.pack_direct_weights(hwio, 2, 8).values, hwio)


@pytest.mark.parametrize("offset", [8, 16, 40])
@pytest.mark.parametrize("shape, groups, lanes", [((3, 3, 40, 16), 1, 16), ((3, 3, 40, 20), 1, 16),
                                                   ((3, 3, 6, 9), 3, 32)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_weights_start_on_a_cache_line(offset, shape, groups, lanes, dtype, rng):
    # The kernels' vector loads of the weights straddle cache lines otherwise: weights off a line are not read
    # in place, even where the layout would let them; HWIO of one group and whole blocks of lanes spanning at
    # least PER_PASS_MIN_BLOCK_BYTES is copied by the kernel into aligned buffers of its own, pass by pass, and
    # every packed copy is aligned.
    hwio = aligned_copy(rng.standard_normal(shape).astype(dtype), offset)
    packed = _layout.pack_direct_weights(hwio, groups, lanes)
    if (groups == 1 and shape[3] % lanes == 0
            and lanes * np.dtype(dtype).itemsize >= _layout.PER_PASS_MIN_BLOCK_BYTES):
        assert packed.copy_per_pass and packed.row == shape[3] and np.shares_memory(packed.values, hwio)
        return
    assert packed.values.ctypes.data % 64 == 0 and not np.shares_memory(packed.values, hwio)
    np.testing.assert_array_equal(packed.values, reference_pack(hwio, groups, lanes, False).reshape(-1))

