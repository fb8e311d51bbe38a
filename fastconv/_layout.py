"""Layout conversions between Keras's and PyTorch's conventions, in one place.

Activations: NHWC (channels_last) <-> NCHW (channels_first). Conv weights: HWIO <-> OIHW.
All results are C-contiguous copies.
"""
import numpy as np

from fastconv._kernels import layout_transpose, weight_packing
from fastconv._threads import threads_for_bytes

# Element sizes the tiled transpose moves (as unsigned integers of that size), and the size below which NumPy's
# own copy is as fast (no threads to wake).
_TRANSPOSE_UNITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_TRANSPOSE_MIN_BYTES = 1 << 16


def _swap_last_two(x, planes, rows, cols, numpy_axes, result_shape, out=None):
    """x viewed as (planes, rows, cols) -> C-contiguous (planes, cols, rows), reshaped to result_shape, written
    into `out` if given (C-contiguous, that shape and x's dtype). The tiled kernel for C-contiguous arrays of 2-,
    4- or 8-byte elements (bits copied as they are); NumPy otherwise."""
    unit = _TRANSPOSE_UNITS.get(x.dtype.itemsize)
    if unit is None or not x.flags.c_contiguous or x.nbytes < _TRANSPOSE_MIN_BYTES or x.dtype.hasobject:
        if out is None:
            return np.ascontiguousarray(x.transpose(numpy_axes))
        out[...] = x.transpose(numpy_axes)
        return out
    result = np.empty(result_shape, dtype=x.dtype) if out is None else out
    layout_transpose.transpose_batched(x.reshape(planes, rows, cols).view(unit),
                                       result.reshape(planes, cols, rows).view(unit), threads_for_bytes(x.nbytes))
    return result


def nchw_to_nhwc(x):
    n, c, h, w = x.shape
    return _swap_last_two(x, n, c, h * w, (0, 2, 3, 1), (n, h, w, c))


def nhwc_to_nchw(x, out=None):
    n, h, w, c = x.shape
    return _swap_last_two(x, n, h * w, c, (0, 3, 1, 2), (n, c, h, w), out)


def oihw_to_hwio(w):
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def hwio_to_oihw(w):
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


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


def pack_direct_weights(hwio, groups, lanes, *, flip_transpose=False):
    """HWIO weights as the tiled direct kernel reads them: (groups, k_blocks, R, S, C/groups, lanes), each block
    of `lanes` output channels contiguous per input channel, zero-padded past the group's last channel. With
    flip_transpose, those of ``flipped_transposed_hwio(hwio, groups)`` (the stride-1 input gradient's kernel),
    without forming it."""
    r, s, cg, k = hwio.shape
    n_in, n_out = (k // groups, cg) if flip_transpose else (cg, k // groups)
    packed = np.empty(groups * -(-n_out // lanes) * r * s * n_in * lanes, dtype=hwio.dtype)
    if packed.size:
        weight_packing.pack(np.ascontiguousarray(hwio), packed, groups, lanes, flip_transpose,
                            threads_for_bytes(2 * packed.nbytes))
    return packed


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
