"""Layout conversions between Keras's and PyTorch's conventions, in one place.

Activations: NHWC (channels_last) <-> NCHW (channels_first). Conv weights: HWIO <-> OIHW.
All results are C-contiguous copies.
"""
import numpy as np

from fastconv import _memory
from fastconv._kernels import layout_transpose, reductions, weight_packing
from fastconv._threads import threads_for_bytes

# Element sizes the tiled transpose moves (as unsigned integers of that size), and the size below which NumPy's
# own copy is as fast (no threads to wake).
_TRANSPOSE_UNITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_TRANSPOSE_MIN_BYTES = 1 << 16


def _tiled(x):
    """Whether the tiled kernel takes x: C-contiguous, 2-, 4- or 8-byte elements (bits copied as they are), and
    large enough to be worth its threads."""
    return (x.dtype.itemsize in _TRANSPOSE_UNITS and x.flags.c_contiguous and not x.dtype.hasobject
            and x.nbytes >= _TRANSPOSE_MIN_BYTES)


def _swap(x, planes, rows, cols, out=None):
    """C-contiguous x viewed as (planes, rows, cols) -> (planes, cols, rows), flat, in `out` if given."""
    unit = _TRANSPOSE_UNITS[x.dtype.itemsize]
    result = np.empty(x.size, dtype=x.dtype) if out is None else out
    layout_transpose.transpose_batched(x.reshape(planes, rows, cols).view(unit),
                                       result.reshape(planes, cols, rows).view(unit), threads_for_bytes(x.nbytes))
    return result


def _numpy_copy(x, axes, out):
    if out is None:
        return np.ascontiguousarray(x.transpose(axes))
    out[...] = x.transpose(axes)
    return out


def nchw_to_nhwc(x):
    n, c, h, w = x.shape
    return _swap(x, n, c, h * w).reshape(n, h, w, c) if _tiled(x) else _numpy_copy(x, (0, 2, 3, 1), None)


def nhwc_to_nchw(x, out=None):
    """out: C-contiguous, (N, C, H, W), x's dtype."""
    n, h, w, c = x.shape
    if not _tiled(x):
        return _numpy_copy(x, (0, 3, 1, 2), out)
    result = _swap(x, n, h * w, c, out)
    return out if out is not None else result.reshape(n, c, h, w)


def _swap_outer(x, a, b, c):
    """C-contiguous x viewed as (a, b, c) -> (c, b, a), C-contiguous."""
    unit = _TRANSPOSE_UNITS[x.dtype.itemsize]
    result = np.empty((c, b, a), dtype=x.dtype)
    layout_transpose.swap_outer(x.reshape(a, b, c).view(unit), result.view(unit), threads_for_bytes(x.nbytes))
    return result


# Conv weights in one pass of the tiled kernel (a VGG conv5 kernel, 9 MiB: NumPy's single strided copy took 9 ms
# OIHW -> HWIO and 16 ms back, as long as the convolution's arithmetic on it).
def oihw_to_hwio(w):
    k, c, r, s = w.shape
    if not _tiled(w):
        return _numpy_copy(w, (2, 3, 1, 0), None)
    return _swap_outer(w, k, c, r * s).reshape(r, s, c, k)


def hwio_to_oihw(w):
    r, s, c, k = w.shape
    if not _tiled(w):
        return _numpy_copy(w, (3, 2, 0, 1), None)
    return _swap_outer(w, r * s, c, k).reshape(k, c, r, s)


def hwoi_to_oihw(w):
    """(R, S, K, C) -> (K, C, R, S) (the layout channels_first im2col accumulates a weight gradient in): one swap."""
    r, s, k, c = w.shape
    if not _tiled(w):
        return _numpy_copy(w, (2, 3, 0, 1), None)
    return _swap(w, 1, r * s, k * c).reshape(k, c, r, s)


def zero_padded_nhwc(x, padding):
    """NHWC x with ((top, bottom), (left, right)) rows and columns of zeros around each image."""
    (top, bottom), (left, right) = padding
    n, h, w, c = x.shape
    out = np.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
    out[:, top:top + h, left:left + w] = x
    return out


def nhwc_shape(shape, channels_last):
    """(N, H, W, C) from a shape given in either layout."""
    if channels_last:
        return tuple(shape)
    n, c, h, w = shape
    return (n, h, w, c)


def layout_shape(n, h, w, c, channels_last):
    """A (N, H, W, C) description as a shape in the requested layout."""
    return (n, h, w, c) if channels_last else (n, c, h, w)


def hwio_shape(shape, channels_last):
    """(R, S, C/groups, K) from a weight shape given in either layout."""
    if channels_last:
        return tuple(shape)
    k, cg, r, s = shape
    return (r, s, cg, k)


# Widest HWIO row (K channels) the tiled forward reads in place; wider kernels are copied per pass. Measured at 2
# threads, in place against packing on every call: 128 float32 channels 1-2% faster (small_c3 18.1-18.4 -> 17.9-18.0
# ms, small_c4, vgg_conv2_2 level to 1.5%), but 256 channels (1 KiB rows) 3-6% slower (vgg_conv3_2) and 512
# channels 40-70% slower (vgg_conv4_2 12.1 -> 20.0-20.7 ms, vgg_conv5_2 3.4 -> 4.9-5.0): each tap's block then lies
# in runs of 256 bytes spread over 2 KiB rows, which a packed copy reads whole.
HWIO_IN_PLACE_MAX_ROW_BYTES = 512
# ... and the most blocks of lanes such a row may hold: at AVX2 (16 float lanes, 64 bytes) a 128-channel row holds
# 8, and reading each block's 64-byte runs out of 512-byte rows lost to packing (Zen 3, 4-way A/B at 2 threads:
# small_c3 +6-13% packed, small_c4 and vgg_conv2_2 level; 1 thread +1-2%). 64 channels (4 blocks) stay in place:
# packed, vgg_conv1_2 +7% but resnet_stem -2% and small_c1, small_c2, mnist_c2 level or slower.
HWIO_IN_PLACE_MAX_BLOCKS = 4


# HWIO copied per pass gathers one block's run of each row: at AVX2 (16 float lanes) 64 bytes a row, one cache
# line from far away each, and the gather waited on them (Zen 3, 4-way A/B, packing pass against per-pass
# copies: vgg_conv2_2 +7-10%, vgg_conv5_2 +3-9%, vgg_conv3_2/4_2 and small_c3/c4 level, 1 and 2 threads). With
# blocks under this size such kernels are packed instead; AVX-512's 128 and 256-byte runs keep the per-pass copy.
PER_PASS_MIN_BLOCK_BYTES = 128


class PackedWeights:
    """Weights as the tiled direct kernel reads them (pack_direct_weights): `values` in its packed layout (`row`
    0), or HWIO itself (`row` = K, the distance between its rows), read in place or, with `copy_per_pass`, copied
    by each of the kernel's passes into a packed buffer of its own; and whether all of them are finite (learnt
    while packing, or while the kernel copies them, or on first asking where neither ran)."""
    __slots__ = ("values", "row", "copy_per_pass", "oihw", "_finite")

    def __init__(self, values, finite=None, row=0, copy_per_pass=False, oihw=False):
        self.values = values
        self.row = row
        self.copy_per_pass = copy_per_pass
        self.oihw = oihw  # (with copy_per_pass: values is OIHW itself, each pass transposing its block)
        self._finite = finite

    @property
    def finite(self):
        if self._finite is None:
            self._finite = reductions.all_finite(self.values, threads_for_bytes(self.values.nbytes))
        return self._finite

    @finite.setter
    def finite(self, value):
        self._finite = bool(value)

    @property
    def finite_known(self):
        return self._finite is not None


# OIHW kernels above this size are transposed by the tiled forward's passes rather than packed first (float32, at
# the levels with register transposes); below it a packing pass is cheap, and the passes of many small work units
# would transpose every weight many times over.
OIHW_PER_PASS_MIN_BYTES = 1 << 20


def _oihw_per_pass(weight):
    from fastconv._kernels import cpu_dispatch

    return (weight.dtype == np.float32 and weight.nbytes > OIHW_PER_PASS_MIN_BYTES
            and cpu_dispatch.active_isa_name() != "baseline")


def pack_direct_weights(weight, groups, lanes, *, flip_transpose=False, oihw=False):
    """Weights as the tiled direct kernel reads them: (groups, k_blocks, R, S, C/groups, lanes), each block of
    `lanes` output channels contiguous per input channel, zero-padded past the group's last channel. `weight` is
    HWIO, or OIHW with oihw=True (read as it is, no transposed copy). With flip_transpose, the packing of
    ``flipped_transposed_hwio(hwio, groups)`` (the stride-1 input gradient's kernel), without forming it.
    HWIO of one group and a whole number of `lanes` output channels is not packed (`row` = K): the kernel reads
    each block's `lanes` channels out of HWIO's rows, in place where they are 64-byte aligned, at most
    HWIO_IN_PLACE_MAX_ROW_BYTES long and of at most HWIO_IN_PLACE_MAX_BLOCKS blocks, else copying them per pass
    (`copy_per_pass`; packed where blocks span under PER_PASS_MIN_BLOCK_BYTES). Large float32 OIHW of one
    group and whole blocks is not packed either (`oihw`, `copy_per_pass`): each pass transposes its block.
    Returns PackedWeights: finite tells whether every weight is a number (no NaN, no infinity)."""
    if oihw:
        k, cg, r, s = weight.shape
    else:
        r, s, cg, k = weight.shape
    if oihw and not flip_transpose and groups == 1 and k % lanes == 0 and _oihw_per_pass(weight):
        # The packing pass of a large kernel moves it through memory twice (VGG conv5's 9 MiB: 0.65-0.85 ms,
        # 15% of its 2-thread forward on Zen 4); each of the kernel's passes transposes its own block instead,
        # in registers, into its cache.
        return PackedWeights(np.ascontiguousarray(weight).reshape(-1), copy_per_pass=True, oihw=True)
    if not (oihw or flip_transpose) and groups == 1 and k % lanes == 0:
        # HWIO's rows hold every block's channels consecutively. Aligned short rows are read in place (a
        # 64-channel kernel's copy took a quarter of a small convolution's call); the rest are copied by the
        # kernel, pass by pass, into its cache (conv_direct.forward_nhwc_tiled): long rows read in place lost
        # (see HWIO_IN_PLACE_MAX_ROW_BYTES), misaligned ones straddle cache lines (_memory.VECTOR_ALIGNMENT),
        # and a packing pass writes and re-reads every weight once more (vgg_conv5_2, 9 MiB of weights, at 2
        # threads: 3.4 ms packed, 3.0 copied per pass).
        weight = np.ascontiguousarray(weight)
        in_place = (k * weight.dtype.itemsize <= HWIO_IN_PLACE_MAX_ROW_BYTES and k // lanes <= HWIO_IN_PLACE_MAX_BLOCKS
                    and _memory.vector_aligned(weight))
        if in_place or lanes * weight.dtype.itemsize >= PER_PASS_MIN_BLOCK_BYTES:
            return PackedWeights(weight.reshape(-1), row=k, copy_per_pass=not in_place)
    n_in, n_out = (k // groups, cg) if flip_transpose else (cg, k // groups)
    packed = _memory.empty_aligned(groups * -(-n_out // lanes) * r * s * n_in * lanes, weight.dtype)
    finite = True
    if packed.size:
        finite = weight_packing.pack(np.ascontiguousarray(weight), packed, groups, lanes, flip_transpose, oihw,
                                     threads_for_bytes(2 * packed.nbytes))
    return PackedWeights(packed, finite)


def flipped_transposed_hwio(hwio, groups):
    """The kernel whose stride-1 convolution of grad_output gives the input gradient: spatially flipped, each
    group's input and output channels swapped. (R, S, C/groups, K) -> (R, S, K/groups, C)."""
    r, s, cg, k = hwio.shape
    kg = k // groups
    grouped = hwio[::-1, ::-1].reshape(r, s, cg, groups, kg)
    return np.ascontiguousarray(grouped.transpose(0, 1, 4, 3, 2)).reshape(r, s, kg, groups * cg)


def pad_channel_blocks(x, groups, lanes):
    """NHWC activations with each group's channels zero-padded to a whole number of `lanes` (a copy only when
    needed)."""
    n, h, w, k = x.shape
    kg = k // groups
    padded_kg = -(-kg // lanes) * lanes
    if padded_kg == kg:
        return x
    out = np.zeros((n, h, w, groups, padded_kg), dtype=x.dtype)
    out[..., :kg] = x.reshape(n, h, w, groups, kg)
    return out.reshape(n, h, w, groups * padded_kg)
