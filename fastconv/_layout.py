"""Layout conversions between Keras's and PyTorch's conventions, in one place.

Activations: NHWC (channels_last) <-> NCHW (channels_first). Conv weights: HWIO <-> OIHW.
All results are C-contiguous copies.
"""
import numpy as np


def nchw_to_nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def nhwc_to_nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


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


def pack_direct_weights(hwio, groups, lanes):
    """HWIO weights as the tiled direct kernel reads them: (groups, k_blocks, R, S, C/groups, lanes), each block
    of `lanes` output channels contiguous per input channel, zero-padded past the group's last channel."""
    r, s, cg, k = hwio.shape
    kg = k // groups
    k_blocks = -(-kg // lanes)
    grouped = hwio.reshape(r, s, cg, groups, kg).transpose(3, 0, 1, 2, 4)
    padded = np.zeros((groups, r, s, cg, k_blocks * lanes), dtype=hwio.dtype)
    padded[..., :kg] = grouped
    return np.ascontiguousarray(padded.reshape(groups, r, s, cg, k_blocks, lanes).transpose(0, 4, 1, 2, 3, 5)).ravel()
